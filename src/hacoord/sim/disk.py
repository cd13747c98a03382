"""An in-memory disk for the simulator that loses unsynced writes on a crash.

Writes land in a volatile copy; ``sync`` makes them durable. ``crash`` throws the
volatile copy away, except for a random prefix of the unsynced entries (a real disk
may have flushed some of them), which is how torn tails reach the recovery path.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from hacoord.raft.types import Entry, HardState, PersistedState, Snapshot


@dataclass(slots=True)
class _State:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def copy(self) -> _State:
        return _State(self.hard_state, self.snapshot, list(self.entries))


class SimDisk:
    """Raft storage for one simulated node (implements ``LogStorage``)."""

    def __init__(self) -> None:
        self._volatile = _State()
        self._durable = _State()

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        sync: bool = True,
    ) -> None:
        """Write a Ready batch (snapshot replaces the log; entries overwrite a suffix)."""
        v = self._volatile
        if snapshot is not None:
            v.snapshot = snapshot
            v.entries = []
        if entries:
            first = entries[0].index
            base = v.snapshot.meta.index if v.snapshot else 0
            del v.entries[max(0, first - base - 1) :]
            v.entries.extend(entries)
        if hard_state is not None:
            v.hard_state = hard_state
        if sync:
            self.sync()

    def sync(self) -> None:
        """Make everything written so far durable."""
        self._durable = self._volatile.copy()

    def compact(self, snapshot: Snapshot) -> Snapshot:
        """Durably store ``snapshot`` and drop the entries it covers; returns it."""
        for state in (self._volatile, self._durable):
            state.snapshot = snapshot
            state.entries = [e for e in state.entries if e.index > snapshot.meta.index]
        return snapshot

    def crash(self, rng: random.Random | None = None) -> None:
        """Lose what was not synced; with ``rng``, a random prefix of new entries survives."""
        survived = self._durable.copy()
        if rng is not None and self._volatile.snapshot is self._durable.snapshot:
            base = survived.snapshot.meta.index if survived.snapshot else 0
            durable_last = base + len(survived.entries)
            unsynced = [e for e in self._volatile.entries if e.index > durable_last]
            # Only a pure extension can survive: an overwritten suffix is all-or-nothing.
            if unsynced and self._volatile.entries[: len(survived.entries)] == survived.entries:
                survived.entries.extend(unsynced[: rng.randint(0, len(unsynced))])
        self._durable = survived
        self._volatile = survived.copy()

    def close(self) -> None:
        """Nothing to release in memory."""

    def load(self) -> PersistedState:
        """What a restarting node recovers."""
        d = self._durable
        return PersistedState(d.hard_state, d.snapshot, list(d.entries))
