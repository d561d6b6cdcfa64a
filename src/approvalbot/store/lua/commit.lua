-- Apply one state transition of one request, and append its audit records, atomically.
--
-- KEYS[1]  the request hash (fields: doc, ver)
-- KEYS[2]  the audit log (list of canonical JSON bodies; position = sequence number)
-- KEYS[3]  the request's own list of audit sequence numbers
-- KEYS[4]  the idempotency key, or a dummy key when there is none
-- KEYS[5]  the audit hash chain (read only: to hand the caller what sealing needs)
-- KEYS[6..] index keys the plan refers to by position
-- ARGV[1]  expected version ("0": the request must not exist yet)
-- ARGV[2]  the new document (JSON)
-- ARGV[3]  the plan (JSON): zadd/zrem/zremrangebyscore/hincr on indexed keys, audit bodies, publish,
--          idempotency, for a new request the agent's quota (see below), and `people`: {key index of
--          the people version, the version the request's persons were resolved at}
-- ARGV[4]  this commit attempt's nonce (kept as field "cid": recognises a retried, already-applied commit)
--
-- Returns {"ok", first_seq, last_seq, seal_hint}, {"conflict", current_version},
-- {"duplicate", stored_value}, {"people_changed"} or {"refused", code, retry_after_seconds, first_of_burst}. seal_hint is {chain length, last hash, unsealed bodies} when few
-- records wait to be chained, so the caller can seal without another read; else empty.
local plan = cjson.decode(ARGV[3])

if plan.idem then
  local existing = redis.call("GET", KEYS[4])
  if existing then
    return {"duplicate", existing}
  end
end

-- The requester persons were resolved (or remembered) at a people version; if people changed
-- since, they may be wrong: nothing is written, the caller resolves them again.
if plan.people and (redis.call("GET", KEYS[plan.people[1]]) or "0") ~= plan.people[2] then
  return {"people_changed"}
end

local current = redis.call("HGET", KEYS[1], "ver")
if (current or "0") ~= ARGV[1] then
  -- A retry (after a lost reply or a failover) of a commit that did apply: the request is exactly
  -- one version ahead and carries this attempt's nonce. Report success again, apply nothing twice.
  if tonumber(current or "0") == tonumber(ARGV[1]) + 1 and redis.call("HGET", KEYS[1], "cid") == ARGV[4] then
    local seq = tonumber(redis.call("LINDEX", KEYS[3], -1) or "0")
    return {"ok", seq, seq, {}}
  end
  return {"conflict", current or "0"}
end

-- Quotas, checked after the idempotency check (a replay never counts) and before any write.
-- plan.quota: pending = key index of the agent's pending set (scored by expiry), max = its limit
-- (0: none, or the request is settled at once and will not be pending), bucket = key index of the
-- token bucket, rate = tokens per second (0: no rate limit), burst = bucket size, notice = key
-- indexes {quota_exceeded, rate_limited} of the once-per-burst markers, window = their TTL, and
-- stats = key index of the counters. Only Redis 7.0 commands are used.
local q = plan.quota
if q then
  local clock = redis.call("TIME")
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  local function refuse(code, notice, retry_ms)
    local first = redis.call("SET", KEYS[notice], "1", "NX", "EX", q.window)
    redis.call("HINCRBY", KEYS[q.stats], "refused:" .. code, 1)
    return {"refused", code, math.max(1, math.ceil(retry_ms / 1000)), first and 1 or 0}
  end
  if q.max > 0 and redis.call("ZCARD", KEYS[q.pending]) >= q.max then
    local first_expiry = redis.call("ZRANGE", KEYS[q.pending], 0, 0, "WITHSCORES")
    local retry = 60000
    if first_expiry[2] then retry = math.min(retry, tonumber(first_expiry[2]) - now) end
    return refuse("quota_exceeded", q.notice[1], retry)
  end
  if q.rate > 0 then
    -- The bucket is one string "tokens at_ms", written with its TTL in the same SET: once it
    -- would be full again it may as well not exist.
    local tokens, at = q.burst, now
    local bucket = redis.call("GET", KEYS[q.bucket])
    if bucket then
      local t, a = string.match(bucket, "^(%S+) (%S+)$")
      tokens, at = tonumber(t) or q.burst, tonumber(a) or now
    end
    if now > at then tokens = math.min(q.burst, tokens + (now - at) * q.rate / 1000) end
    if tokens < 1 then
      return refuse("rate_limited", q.notice[2], (1 - tokens) * 1000 / q.rate)
    end
    redis.call("SET", KEYS[q.bucket], (tokens - 1) .. " " .. now, "PX", math.ceil(q.burst * 1000 / q.rate) + 1000)
  end
end

local new_version = tonumber(ARGV[1]) + 1
redis.call("HSET", KEYS[1], "doc", ARGV[2], "ver", new_version, "cid", ARGV[4])

if plan.idem then
  redis.call("SET", KEYS[4], plan.idem[1], "EX", plan.idem[2])
end
for _, op in ipairs(plan.zadd or {}) do
  redis.call("ZADD", KEYS[op[1]], op[2], op[3])
end
for _, op in ipairs(plan.zrem or {}) do
  redis.call("ZREM", KEYS[op[1]], op[2])
end
for _, op in ipairs(plan.zremrangebyscore or {}) do
  redis.call("ZREMRANGEBYSCORE", KEYS[op[1]], op[2], op[3])
end
for _, op in ipairs(plan.hincr or {}) do
  redis.call("HINCRBY", KEYS[op[1]], op[2], op[3])
end

local first, last = 0, 0
for i, body in ipairs(plan.audit or {}) do
  last = redis.call("RPUSH", KEYS[2], body)
  if i == 1 then first = last end
  redis.call("RPUSH", KEYS[3], last)
end

for _, msg in ipairs(plan.publish or {}) do
  redis.call("PUBLISH", msg[1], msg[2])
end

local hint = {}
if last > 0 then
  local sealed = redis.call("LLEN", KEYS[5])
  if last - sealed <= 8 then
    local prev = ""
    if sealed > 0 then prev = redis.call("LINDEX", KEYS[5], sealed - 1) end
    hint = {sealed, prev, redis.call("LRANGE", KEYS[2], sealed, last - 1)}
  end
end
return {"ok", first, last, hint}
