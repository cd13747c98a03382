"""The storage protocol shared by the disk implementation and the simulator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hacoord.raft.types import Entry, HardState, PersistedState, Snapshot


class LogStorage(Protocol):
    """Where a member keeps its hard state, log and snapshot."""

    def load(self) -> PersistedState:
        """Recover: the newest valid snapshot, the hard state and the entries after it."""

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        sync: bool = True,
    ) -> None:
        """Persist one Ready batch.

        A ``snapshot`` replaces the whole log (the log restarts after it); ``entries``
        whose first index is at or below the last stored index overwrite that suffix;
        with ``sync`` everything is durable on return (one sync for the batch).
        """

    def compact(self, snapshot: Snapshot) -> Snapshot:
        """Durably store a state-machine snapshot and drop the log it covers.

        Returns the snapshot as stored: its data may be a view of the stored file rather
        than the bytes given, so that the caller can let those go.
        """

    def close(self) -> None:
        """Release files and locks."""
