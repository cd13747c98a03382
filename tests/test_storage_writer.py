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

    def compact(self, snapshot: Snapshot) -> Snapshot:
        return snapshot

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


class RecordingStorage(BlockingStorage):
    """Records on which thread each save ran; blocks only while the gate is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        sync: bool = True,
    ) -> None:
        self.threads.append(threading.current_thread().name)
        self.gate.wait(10)
        self.saved.append(entries[0].index if entries else 0)


async def test_submit_starts_the_write_at_once_and_keeps_order() -> None:
    storage = RecordingStorage()
    writer = AsyncStorageWriter(storage)
    first = writer.submit(None, [Entry(1, 1)])
    second = writer.submit(None, [Entry(1, 2)], may_block=True)  # the thread is busy
    for _ in range(5):  # the event loop runs while the disk is stuck
        await asyncio.sleep(0)
    assert not first.done() and writer.pending == 2
    storage.gate.set()
    await asyncio.gather(first, second)
    assert storage.saved == [1, 2] and writer.pending == 0
    assert all(name.startswith("hacoord-wal") for name in storage.threads)
    await writer.close()


async def test_only_cheap_writes_run_on_the_callers_thread() -> None:
    storage = RecordingStorage()
    storage.gate.set()
    writer = AsyncStorageWriter(storage, inline_sync_s=0.002)
    here = threading.current_thread().name
    commit_only = writer.submit(HardState(1, 1, 5), [], sync=False)
    assert commit_only.done(), "a commit-index change needs no thread"
    fast = writer.submit(None, [Entry(1, 1)], may_block=True)
    assert fast.done() and storage.threads == [here, here]
    await writer.submit(None, [Entry(1, 2)])  # without may_block: the writer thread
    writer.last_sync_s = 0.5  # the disk became slow: stop blocking the caller
    slow = writer.submit(None, [Entry(1, 3)], may_block=True)
    assert not slow.done()
    await slow
    assert here not in storage.threads[2:]
    never = AsyncStorageWriter(storage, inline_sync_s=0)
    await never.submit(None, [Entry(1, 4)], may_block=True)
    assert storage.threads[-1] != here
    assert storage.saved == [0, 1, 2, 3, 4]
    await writer.close()
    await never.close()
