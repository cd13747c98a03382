"""A simulated network: latency, loss, duplication, reordering and partitions."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hacoord.raft.types import NodeId


@dataclass(slots=True)
class NetworkModel:
    """Per-message behaviour; times in virtual milliseconds."""

    min_latency: float = 0.5
    max_latency: float = 5.0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    spike_rate: float = 0.0
    """Chance that a message takes an extra ``spike_latency`` (reorders messages)."""
    spike_latency: float = 40.0
    blocked: set[tuple[NodeId, NodeId]] = field(default_factory=set)
    """Directed pairs (from, to) whose messages are dropped."""

    def delays(self, rng: random.Random, frm: NodeId, to: NodeId) -> list[float]:
        """Delivery delays for one send: empty when dropped, two when duplicated."""
        if (frm, to) in self.blocked or rng.random() < self.drop_rate:
            return []
        out = [self._one_delay(rng)]
        if rng.random() < self.duplicate_rate:
            out.append(self._one_delay(rng))
        return out

    def _one_delay(self, rng: random.Random) -> float:
        delay = rng.uniform(self.min_latency, self.max_latency)
        if rng.random() < self.spike_rate:
            delay += rng.uniform(0, self.spike_latency)
        return delay

    def partition(self, groups: list[set[NodeId]]) -> None:
        """Block all traffic between different groups (both directions)."""
        for a in groups:
            for b in groups:
                if a is b:
                    continue
                for x in a:
                    for y in b:
                        self.blocked.add((x, y))

    def block_one_way(self, frm: set[NodeId], to: set[NodeId]) -> None:
        """Drop traffic from ``frm`` to ``to`` only (an asymmetric partition)."""
        for x in frm:
            for y in to:
                if x != y:
                    self.blocked.add((x, y))

    def heal(self) -> None:
        """Remove every partition."""
        self.blocked.clear()
