"""Runs blocking storage calls on one dedicated thread, off the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from hacoord.raft.storage.base import LogStorage
from hacoord.raft.types import Entry, HardState, Snapshot


class AsyncStorageWriter:
    """Serializes writes to ``storage`` on a single thread.

    At most ``max_pending`` calls may be queued; further callers wait (back-pressure),
    so a slow disk slows proposals down instead of growing memory without bound.
    Ticks keep running meanwhile, because the event loop does not block on fsync:
    only :meth:`submit` with ``may_block`` syncs on the caller's thread, and only
    while the last sync took at most ``inline_sync_s``.
    """

    def __init__(
        self, storage: LogStorage, max_pending: int = 4, inline_sync_s: float = 0.002
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.storage = storage
        self.inline_sync_s = inline_sync_s
        """:meth:`submit` with ``may_block`` syncs on the caller's thread while the last
        sync took at most this long (seconds; 0: never)."""
        self.last_sync_s = 0.0
        """How long the last sync took, wherever it ran."""
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
                    self._executor, self._save, hard_state, entries, snapshot, sync
                )
            finally:
                self.pending -= 1

    def submit(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        sync: bool = True,
        may_block: bool = False,
    ) -> asyncio.Future[None]:
        """Hand a batch to the writer thread at once; the future completes once it is durable.

        Unlike :meth:`save` this does not wait for a free slot, so the caller keeps
        running while the batch is written (the node applies committed entries
        meanwhile). Callers bound their own queueing: the node has one batch in flight.

        With nothing queued on the thread, two kinds of batch are written right here
        instead, which is cheaper than the two thread switches (on a small machine those
        cost as much as an fsync): one that needs no sync (only the commit index
        changed: a small write to the page cache), and, with ``may_block``, a synced
        one while the last sync took at most ``inline_sync_s``.
        """
        loop = asyncio.get_running_loop()
        inline = not sync and not entries and snapshot is None
        if may_block and snapshot is None and self.inline_sync_s > 0:
            inline = inline or self.last_sync_s <= self.inline_sync_s
        if inline and not self.pending:
            done: asyncio.Future[None] = loop.create_future()
            try:
                self._save(hard_state, entries, snapshot, sync)
            except Exception as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)
            return done
        self.pending += 1
        self.max_seen_pending = max(self.max_seen_pending, self.pending)
        fut = loop.run_in_executor(self._executor, self._save, hard_state, entries, snapshot, sync)
        fut.add_done_callback(self._done)
        return fut

    def _save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool,
    ) -> None:
        started = time.perf_counter()
        self.storage.save(hard_state, entries, snapshot, sync)
        if sync:
            self.last_sync_s = time.perf_counter() - started

    def _done(self, _: asyncio.Future[None]) -> None:
        self.pending -= 1

    async def compact(self, snapshot: Snapshot) -> Snapshot:
        """Store a snapshot and compact the log, on the writer thread; the snapshot as
        stored (see :meth:`LogStorage.compact`)."""
        async with self._slots:
            self.pending += 1
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    self._executor, self.storage.compact, snapshot
                )
            finally:
                self.pending -= 1

    async def close(self) -> None:
        """Finish queued work and stop the thread (the storage itself stays open)."""
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
