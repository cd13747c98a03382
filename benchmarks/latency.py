"""Latency summaries shared by the failover benchmarks."""

from __future__ import annotations

import statistics


def latency_ms(values: list[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds of ``values`` (seconds); ``{}`` when there are none."""
    ordered = sorted(values)
    if not ordered:
        return {}
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }
