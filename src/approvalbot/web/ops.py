"""Health and Prometheus metrics, computed from Redis so every web process reports the same."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from rq import Queue

from approvalbot.core.models import Status
from approvalbot.store import keys
from approvalbot.store.requests import LATENCY_BUCKETS
from approvalbot.web.context import services

routes = web.RouteTableDef()
# Sum of the fair lanes' lengths (KEYS[1] the ring of lanes, ARGV[1] the lane key prefix).
_LANE_DEPTH = """
local total = 0
for _, lane in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do total = total + redis.call('LLEN', ARGV[1] .. lane) end
return total
"""


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Pings over the probe's own connection (web/health.py): a busy pool does not read as Redis down."""
    if not await services(request).health.redis_up():
        return web.json_response({"status": "unavailable", "redis": "down"}, status=503)
    return web.json_response({"status": "ok", "redis": "up"})


class _Snapshot:
    """A prometheus collector over figures already read from Redis."""

    def __init__(self, stats: dict[str, int], pending: int, queued: dict[str, int]):
        self.stats, self.pending, self.queued = stats, pending, queued

    def collect(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("approvalbot_requests", "Requests by current status", labels=["status"])
        for status in Status:
            by_status.add_metric([status.value], self.stats.get(f"status:{status}", 0))
        yield by_status
        decided = CounterMetricFamily(
            "approvalbot_decisions", "Requests that reached a final status", labels=["status"]
        )
        for status in Status:
            if status.final:
                decided.add_metric([status.value], self.stats.get(f"decided:{status}", 0))
        yield decided
        total = sum(self.stats.get(f"decided:{s}", 0) for s in Status if s.final)
        latency_sum = sum(self.stats.get(f"latency_ms:{s}", 0) for s in Status if s.final) / 1000
        buckets = [(str(float(b)), self.stats.get(f"latency_le:{b}", 0)) for b in LATENCY_BUCKETS]
        buckets.append(("+Inf", total))
        yield HistogramMetricFamily(
            "approvalbot_decision_latency_seconds",
            "Time from request to final outcome",
            buckets=buckets,
            sum_value=latency_sum,
        )
        depth = GaugeMetricFamily("approvalbot_queue_depth", "Work waiting", labels=["queue"])
        depth.add_metric(["pending_requests"], self.pending)
        depth.add_metric(["jobs"], sum(self.queued.values()))  # every queue together, as before the split
        for name, count in self.queued.items():
            depth.add_metric([name], count)
        yield depth


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    ctx = services(request)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.hgetall(keys.STATS)
    pipe.zcard(keys.PENDING)
    base = ctx.settings.queue_name
    for kind in keys.QUEUE_KINDS:
        pipe.llen(Queue.redis_queue_namespace_prefix + keys.rq_queue(base, kind))
    # Delivery jobs waiting in the fair lanes (jobs.fair) count as delivery work waiting too.
    pipe.eval(
        _LANE_DEPTH,
        1,
        keys.fair_ring(keys.rq_queue(base, keys.DELIVERY_QUEUE)),
        keys.fair_lane_prefix(keys.rq_queue(base, keys.DELIVERY_QUEUE)),
    )
    raw, pending, *depths, waiting = await pipe.execute()
    queued = dict(zip(keys.QUEUE_KINDS, (int(d) for d in depths), strict=True))
    queued["delivery_waiting"] = int(waiting)
    stats = {k.decode(): int(v) for k, v in raw.items()}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(stats, pending, queued))
    return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")
