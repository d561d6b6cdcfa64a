"""Masking benchmark: CPU per request of core.masking, next to pydantic-validating the same body.

    .venv/bin/python bench/masking.py [--seconds 2]

In-process and single-threaded: the figures are the cost intake would add per request. The
baseline is `RequestCreate.model_validate` of the same body, measured in the same run, because
intake already pays it and absolute microseconds on a shared machine say little on their own.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from common import machine
from intake import BODY

from approvalbot.core.masking import mask_request
from approvalbot.core.models import Detect, RequestCreate

KEY = b"bench-fingerprint-key"
SENSITIVE = ["*password*", "*secret*", "*token*", "credentials", "context.*token*"]


def large_body() -> dict[str, Any]:
    """50 params of the kinds agents send: ids, counts, flags, paths, prose, a few secrets and PII."""
    params: dict[str, Any] = {}
    for i in range(10):
        params[f"count_{i}"] = i * 1000
        params[f"flag_{i}"] = i % 2 == 0
        params[f"path_{i}"] = f"s3://warehouse/exports/2024/q{i % 4 + 1}/part-{i:05d}.parquet"
        params[f"note_{i}"] = f"refresh the churn model for region eu-{i} after the nightly load, ticket OPS-{4000 + i}"
    for i in range(5):
        params[f"commit_{i}"] = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        params[f"owner_{i}"] = f"owner{i}@example.com"
    params |= {
        "db": {"host": "db.internal", "port": 5432, "user": "etl", "password": "hunter2"},
        "rotate": "rotate AKIAIOSFODNN7EXAMPLE before friday",
        "servers": [{"host": f"web-{i}", "ip": f"10.0.0.{i}"} for i in range(8)],
    }
    body = {**BODY, "params": params}
    body["context"] = {**BODY["context"], "ci_token": "abc123", "requested_by": "alice@example.com"}
    return body


def per_call(fn: Callable[[], object], seconds: float) -> float:
    """Median of five timed batches, in microseconds per call."""
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 10:
        fn()
        n += 1
    results = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        results.append((time.perf_counter() - start) / n * 1e6)
    return sorted(results)[2]


def measure(name: str, body: dict[str, Any], seconds: float) -> None:
    n_params = len(body["params"])

    def validate() -> object:
        return RequestCreate.model_validate(body)

    def mask(detect: Detect) -> Callable[[], object]:
        def run() -> object:
            return mask_request(
                params=body["params"],
                context=body.get("context"),
                justification=body.get("justification"),
                resource=body.get("resource"),
                sensitive=SENSITIVE,
                detect=detect,
                key=KEY,
            )

        return run

    base = per_call(validate, seconds)
    paths_only = per_call(mask(Detect(secrets=False, pii=[])), seconds)
    full = per_call(mask(Detect()), seconds)
    print(f"{name} ({n_params} params):")
    print(f"  pydantic RequestCreate validation (baseline) {base:8.1f} us")
    print(f"  masking, policy paths only                   {paths_only:8.1f} us  ({paths_only / base:.2f}x baseline)")
    print(f"  masking, all detectors                       {full:8.1f} us  ({full / base:.2f}x baseline)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=2)
    args = p.parse_args()
    print(f"machine: {machine()}")
    measure("typical body (bench/intake.py BODY)", BODY, args.seconds)
    measure("large body", large_body(), args.seconds)


if __name__ == "__main__":
    main()
