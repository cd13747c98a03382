"""Small, dependency-free metric types rendered in the Prometheus text format."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class Histogram:
    """A cumulative histogram with fixed upper bounds (seconds)."""

    __slots__ = ("bounds", "count", "counts", "help", "name", "total")

    def __init__(self, name: str, help_text: str, bounds: Sequence[float] = LATENCY_BUCKETS_S):
        self.name = name
        self.help = help_text
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (0 when empty)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return self.bounds[i] if i < len(self.bounds) else float("inf")
        return float("inf")

    def render(self, labels: str = "") -> Iterable[str]:
        """Prometheus text lines for this histogram."""
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        sep = "," if labels else ""
        cumulative = 0
        for bound, c in zip(self.bounds, self.counts, strict=False):
            cumulative += c
            yield f'{self.name}_bucket{{{labels}{sep}le="{bound:g}"}} {cumulative}'
        yield f'{self.name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}'
        suffix = f"{{{labels}}}" if labels else ""
        yield f"{self.name}_sum{suffix} {self.total:.6f}"
        yield f"{self.name}_count{suffix} {self.count}"


def gauge(name: str, help_text: str, value: float, labels: str = "") -> list[str]:
    """Prometheus text lines for one gauge sample."""
    suffix = f"{{{labels}}}" if labels else ""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{suffix} {value:g}"]


def counter(name: str, help_text: str, value: float, labels: str = "") -> list[str]:
    """Prometheus text lines for one counter sample."""
    suffix = f"{{{labels}}}" if labels else ""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name}{suffix} {value:g}"]
