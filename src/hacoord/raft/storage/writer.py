"""Runs blocking storage calls on one dedicated thread, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from hacoord.raft.storage.base import LogStorage
from hacoord.raft.types import Entry, HardState, Snapshot


class AsyncStorageWriter:
    """Serializes writes to ``storage`` on a single thread.

    At most ``max_pending`` calls may be queued; further callers wait (back-pressure),
    so a slow disk slows proposals down instead of growing memory without bound.
    Ticks keep running meanwhile, because the event loop never blocks on fsync.
    """

    def __init__(self, storage: LogStorage, max_pending: int = 4) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.storage = storage
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hacoord-wal")
        self._slots = asyncio.Semaphore(max_pending)
        self.max_pending = max_pending
        self.pending = 0
        self.max_seen_pending = 0

    async def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        sync: bool = True,
    ) -> None:
        """Persist a batch on the writer thread; returns once it is durable."""
        async with self._slots:
            self.pending += 1
            self.max_seen_pending = max(self.max_seen_pending, self.pending)
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, self.storage.save, hard_state, entries, snapshot, sync
                )
            finally:
                self.pending -= 1

    async def compact(self, snapshot: Snapshot) -> None:
        """Store a snapshot and compact the log, on the writer thread."""
        async with self._slots:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self.storage.compact, snapshot
            )

    async def close(self) -> None:
        """Finish queued work and stop the thread (the storage itself stays open)."""
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
