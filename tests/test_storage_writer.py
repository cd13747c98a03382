"""AsyncStorageWriter: ordered writes off the event loop, with bounded queueing."""

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

from hacoord.raft.storage.disk import DiskStorage
from hacoord.raft.storage.writer import AsyncStorageWriter
from hacoord.raft.types import Entry, HardState, PersistedState, Snapshot


class BlockingStorage:
    """Records saves; each waits until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.saved: list[int] = []

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        sync: bool = True,
    ) -> None:
        self.gate.wait(10)
        self.saved.append(entries[0].index)

    def load(self) -> PersistedState:
        return PersistedState()

    def compact(self, snapshot: Snapshot) -> None:
        pass

    def close(self) -> None:
        pass


async def test_writes_are_ordered_and_queueing_is_bounded() -> None:
    storage = BlockingStorage()
    writer = AsyncStorageWriter(storage, max_pending=2)
    tasks = [asyncio.create_task(writer.save(None, [Entry(1, i)])) for i in range(1, 11)]
    await asyncio.sleep(0)  # let every task reach the semaphore
    assert writer.pending == 2, "only max_pending batches may be queued on the thread"
    ticks = 0
    while ticks < 5:  # the event loop keeps running while the disk is stuck
        await asyncio.sleep(0)
        ticks += 1
    storage.gate.set()
    await asyncio.gather(*tasks)
    assert storage.saved == list(range(1, 11))
    assert writer.max_seen_pending == 2
    await writer.close()


async def test_writer_persists_to_disk(tmp_path: Path) -> None:
    disk = DiskStorage(tmp_path)
    disk.load()
    writer = AsyncStorageWriter(disk)
    await writer.save(HardState(2, 1, 0), [Entry(2, 1, data=b"a"), Entry(2, 2, data=b"b")])
    await writer.close()
    disk.close()
    again = DiskStorage(tmp_path)
    state = again.load()
    again.close()
    assert [e.data for e in state.entries] == [b"a", b"b"]
    assert state.hard_state == HardState(2, 1, 0)
