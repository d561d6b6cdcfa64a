"""Fair delivery: chat jobs wait in one lane per agent and enter the delivery queue round-robin.

Without this, one agent that files its whole quota at once puts hundreds of card jobs in
front of everyone else's, and a chat service that posts about one message a second makes
the next agent's card wait minutes. So the outbox does not enqueue delivery jobs directly:

- `FairLanes.add` saves the RQ job and appends its id to its agent's lane (a Redis list);
  an agent whose lane was empty joins the ring (a list of agents with waiting jobs);
- `FairLanes.feed` moves jobs into the RQ queue while that queue holds fewer than `window`
  jobs, taking ONE job from the agent at the ring's head and rotating it to the back, so
  every agent with waiting work gets a turn before any agent gets a second.

Both steps are single Lua scripts: the invariant "an agent is in the ring iff its lane is
non-empty" cannot be broken by concurrent feeders, and a job moves from lane to queue in
one step (no crash window in which it would sit in neither). Feeding happens on every
ticker tick, right after the outbox dispatch, and in every delivery worker before it takes
a job, so throughput is not capped by the tick. A newly arrived agent's first job waits
behind at most `window` queued jobs plus one job per other waiting agent: bounded, and
independent of how many jobs any one agent has waiting.

Retries (RQ's scheduled jobs) go straight back to the queue: they were admitted already.
Jobs of one request may run in any order across lanes; the delivery engine converges.
"""

from __future__ import annotations

import redis as sync_redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job
from rq.utils import now

from approvalbot.store import keys

WINDOW = 8  # jobs allowed in the RQ delivery queue at once; the rest wait in their lanes
OTHER_LANE = "_"  # records whose request names no agent (should not happen; kept safe)

# KEYS: ring, lane, rq:queues set, queue key. ARGV: lane name, job ids...
_ADD = """
local n = redis.call('RPUSH', KEYS[2], unpack(ARGV, 2))
if n == #ARGV - 1 then redis.call('RPUSH', KEYS[1], ARGV[1]) end
redis.call('SADD', KEYS[3], KEYS[4])
return n
"""

# KEYS: ring, queue key. ARGV: window, lane key prefix. Lane keys are built here, from the ring's
# members: RQ and approvalbot run against one Redis node, never a cluster.
_FEED = """
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[2])
local moved = 0
while room > 0 do
  local lane = redis.call('LMOVE', KEYS[1], KEYS[1], 'LEFT', 'RIGHT')
  if not lane then break end
  local lane_key = ARGV[2] .. lane
  local id = redis.call('LPOP', lane_key)
  if redis.call('LLEN', lane_key) == 0 then redis.call('LREM', KEYS[1], 0, lane) end
  if id then
    redis.call('RPUSH', KEYS[2], id)
    moved = moved + 1
    room = room - 1
  end
end
return moved
"""

# KEYS: request keys. Returns each request's agent_id ('' if missing), decoded server-side so
# only ids cross the wire (a document may be tens of kilobytes).
_AGENTS = """
local out = {}
for i, key in ipairs(KEYS) do
  local doc = redis.call('HGET', key, 'doc')
  local agent = ''
  if doc then
    local ok, parsed = pcall(cjson.decode, doc)
    if ok and type(parsed) == 'table' and type(parsed['agent_id']) == 'string' then agent = parsed['agent_id'] end
  end
  out[i] = agent
end
return out
"""


class FairLanes:
    """The lanes in front of one RQ queue (the delivery queue)."""

    def __init__(self, queue: Queue, window: int = WINDOW):
        self.queue = queue
        self.window = window
        connection: sync_redis.Redis = queue.connection
        self._add = connection.register_script(_ADD)
        self._feed = connection.register_script(_FEED)
        self._agents = connection.register_script(_AGENTS)

    def agents_of(self, request_ids: list[str]) -> dict[str, str]:
        """request id -> the agent that filed it (one round trip for a whole outbox batch)."""
        unique = sorted(set(request_ids))
        if not unique:
            return {}
        found = self._agents(keys=[keys.request(r) for r in unique])
        return {
            rid: (a.decode() if isinstance(a, bytes) else str(a)) or OTHER_LANE
            for rid, a in zip(unique, found, strict=True)
        }

    def add(self, lane: str, job: Job) -> None:
        """Save the job (status queued, not yet in the queue) and append it to the lane, in one transaction."""
        job.enqueued_at = now()
        pipe: Pipeline = self.queue.connection.pipeline(transaction=True)
        job.save(pipeline=pipe)
        self._add(
            keys=[
                keys.fair_ring(self.queue.name),
                keys.fair_lane(self.queue.name, lane),
                Queue.redis_queues_keys,
                self.queue.key,
            ],
            args=[lane, job.id],
            client=pipe,
        )
        pipe.execute()

    def feed(self) -> int:
        """Move waiting jobs into the queue, one per agent per turn, up to the window; how many moved."""
        moved = self._feed(
            keys=[keys.fair_ring(self.queue.name), self.queue.key],
            args=[self.window, keys.fair_lane_prefix(self.queue.name)],
        )
        return int(moved)

    def waiting(self) -> int:
        """Jobs waiting in lanes (for tests and metrics)."""
        ring = [
            m.decode() if isinstance(m, bytes) else str(m)
            for m in self.queue.connection.lrange(keys.fair_ring(self.queue.name), 0, -1)
        ]
        if not ring:
            return 0
        pipe = self.queue.connection.pipeline(transaction=False)
        for lane in ring:
            pipe.llen(keys.fair_lane(self.queue.name, lane))
        return sum(int(n) for n in pipe.execute())
