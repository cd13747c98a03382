"""RaftNode on its own: proposal back-pressure, results, failures, shutdown."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hacoord.raft.errors import NotLeaderError, RaftError
from hacoord.raft.node import NodeConfig, RaftNode, Transport
from hacoord.raft.timing import Timing
from hacoord.raft.types import Entry, Message, NodeId


class NoNetwork:
    """A transport for a single-member cluster."""

    def send(self, m: Message) -> None:
        raise AssertionError(f"a lone member sent {m}")

    def update_peers(self, peers: dict[NodeId, tuple[str, int]]) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


class Log:
    def __init__(self) -> None:
        self.items: list[bytes] = []

    def apply(self, entry: Entry) -> Any:
        if entry.data == b"boom":
            raise ValueError("state machine refuses boom")
        self.items.append(entry.data)
        return len(self.items)

    def snapshot(self) -> bytes:
        return b"\n".join(self.items)

    def restore(self, data: bytes) -> None:
        self.items = data.split(b"\n") if data else []


def _factory(
    on_messages: Callable[[list[Message]], None], on_unreachable: Callable[[NodeId], None]
) -> Transport:
    return NoNetwork()


def _node(tmp_path: Path, sm: Log, **kw: Any) -> RaftNode:
    cfg = NodeConfig(
        node_id=1,
        cluster_id="unit",
        data_dir=tmp_path,
        voters=frozenset({1}),
        timing=Timing(heartbeat_ms=10, election_timeout_ms=50),
        **kw,
    )
    return RaftNode(cfg, sm, _factory, rng=random.Random(1))


async def _restarted(tmp_path: Path, sm: Log, **kw: Any) -> RaftNode:
    """Open the member in ``tmp_path`` again with ``sm``, read up to date, and stop it."""
    node = _node(tmp_path, sm, **kw)
    await node.start()
    try:
        await node.wait_for_leader(5)
        await node.read_index()
    finally:
        await node.stop()
    return node


async def test_proposals_wait_for_queue_space_while_the_disk_is_busy(tmp_path: Path) -> None:
    sm = Log()
    node = _node(tmp_path, sm, max_pending_proposals=2)
    await node.start()
    try:
        await node.wait_for_leader(5)
        gate = asyncio.Event()
        real_submit = node._writer.submit

        async def slow_save(*args: Any, **kwargs: Any) -> None:
            await gate.wait()
            await real_submit(*args, **kwargs)

        def slow_submit(*args: Any, **kwargs: Any) -> asyncio.Future[None]:
            return asyncio.ensure_future(slow_save(*args, **kwargs))

        node._writer.submit = slow_submit  # type: ignore[method-assign]
        first = asyncio.create_task(node.propose(b"first"))
        while not node._inflight:  # "first" is now in a batch stuck on the disk
            await asyncio.sleep(0)
        tasks = [asyncio.create_task(node.propose(b"p%d" % i)) for i in range(5)]
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(node._queue) == 2, "only max_pending_proposals may queue"
        assert not any(t.done() for t in tasks)
        gate.set()
        results = await asyncio.gather(first, *tasks)
        assert results == [1, 2, 3, 4, 5, 6]
        assert sm.items == [b"first"] + [b"p%d" % i for i in range(5)]
    finally:
        await node.stop()


async def test_a_state_machine_error_fails_only_that_proposal(tmp_path: Path) -> None:
    sm = Log()
    node = _node(tmp_path, sm)
    await node.start()
    try:
        await node.wait_for_leader(5)
        with pytest.raises(ValueError, match="refuses boom"):
            await node.propose(b"boom")
        assert await node.propose(b"fine") == 1
    finally:
        await node.stop()


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    sm = Log()
    node = _node(tmp_path, sm, snapshot_entries=3)
    await node.start()
    await node.wait_for_leader(5)
    for i in range(7):
        await node.propose(b"v%d" % i)
    await node.stop()
    again = Log()
    node = await _restarted(tmp_path, again, snapshot_entries=3)
    assert again.items == [b"v%d" % i for i in range(7)]
    with pytest.raises(RaftError, match="stopping"):
        await node.propose(b"after stop")


def test_follower_refuses_proposals_with_the_leader_hint(tmp_path: Path) -> None:
    cfg = NodeConfig(node_id=1, cluster_id="c", data_dir=tmp_path, voters=frozenset({1, 2, 3}))
    node = RaftNode(cfg, Log(), _factory, rng=random.Random(1))
    try:
        with pytest.raises(NotLeaderError, match="no leader is known"):
            asyncio.run(node.propose(b"x"))
    finally:
        node._storage.close()


async def test_committed_entries_are_answered_while_the_next_batch_is_written(
    tmp_path: Path,
) -> None:
    sm = Log()
    node = _node(tmp_path, sm)
    await node.start()
    try:
        await node.wait_for_leader(5)
        real_submit = node._writer.submit
        gates: list[asyncio.Event] = []

        def gated_submit(*args: Any, **kwargs: Any) -> asyncio.Future[None]:
            gate = asyncio.Event()
            gates.append(gate)

            async def when_opened() -> None:
                await gate.wait()
                await real_submit(*args, **kwargs)

            return asyncio.ensure_future(when_opened())

        node._writer.submit = gated_submit  # type: ignore[method-assign]
        first = asyncio.create_task(node.propose(b"a"))
        async with asyncio.timeout(5):
            while not gates:  # the batch with "a" is on its way to the disk
                await asyncio.sleep(0)
            second = asyncio.create_task(node.propose(b"b"))
            while not node._queue:
                await asyncio.sleep(0)
            gates[0].set()
            while len(gates) < 2:  # the batch with "b" (and "a" committed) is handled
                await asyncio.sleep(0)
        for _ in range(3):
            await asyncio.sleep(0)
        assert first.done() and first.result() == 1, "answered before b's batch is durable"
        assert not second.done()
        node._writer.submit = real_submit  # type: ignore[method-assign]
        for gate in gates:
            gate.set()
        assert await second == 2
        assert sm.items == [b"a", b"b"]
    finally:
        await node.stop()


class SlowSnapshotLog(Log):
    """Serializes its snapshots on the node's thread only once the test lets it."""

    def __init__(self) -> None:
        super().__init__()
        self.serializing = threading.Event()
        self.go_on = threading.Event()

    def capture(self) -> Callable[[], bytes]:
        view = list(self.items)

        def serialize() -> bytes:
            self.serializing.set()
            assert self.go_on.wait(10), "the test never let the snapshot finish"
            return b"\n".join(view)

        return serialize


async def test_a_snapshot_is_serialized_while_the_member_goes_on_committing(
    tmp_path: Path,
) -> None:
    sm = SlowSnapshotLog()
    node = _node(tmp_path, sm, snapshot_entries=5)
    await node.start()
    try:
        await node.wait_for_leader(5)
        for i in range(5):
            await node.propose(b"v%d" % i)
        assert await asyncio.to_thread(sm.serializing.wait, 10)
        for i in range(5, 20):  # commit and apply while the snapshot is held up
            await node.propose(b"v%d" % i)
        assert node.metrics.snapshots == 0
        assert node.core.log.snapshot_index == 0
        sm.go_on.set()
        # The first snapshot (at 5) lands; the next one starts at once, the log having
        # grown past the interval meanwhile.
        await node.wait_compacted(20, timeout=5)
        assert node.metrics.snapshots >= 2
    finally:
        sm.go_on.set()
        await node.stop()
    again = SlowSnapshotLog()
    again.go_on.set()
    await _restarted(tmp_path, again, snapshot_entries=5)
    assert again.items == [b"v%d" % i for i in range(20)]


async def test_a_failed_snapshot_stops_the_member_with_the_reason(tmp_path: Path) -> None:
    class Broken(Log):
        def capture(self) -> Callable[[], bytes]:
            def serialize() -> bytes:
                raise OSError("disk on fire")

            return serialize

    node = _node(tmp_path, Broken(), snapshot_entries=2)
    await node.start()
    try:
        await node.wait_for_leader(5)
        await node.propose(b"a")
        with pytest.raises(RaftError):
            await node.propose(b"b")
            await node.propose(b"c")
        assert isinstance(node.fatal, OSError)
    finally:
        await node.stop()


async def test_a_snapshot_hands_the_freed_heap_back_after_compacting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot_index_at_release: list[int] = []
    node = _node(tmp_path, Log(), snapshot_entries=1_000)

    def release() -> bool:
        snapshot_index_at_release.append(node.core.log.snapshot_index)
        return True

    monkeypatch.setattr("hacoord.raft.node.release_free_heap", release)
    await node.start()
    try:
        await node.wait_for_leader(5)
        for i in range(5):
            await node.propose(b"v%d" % i)
        assert snapshot_index_at_release == []
        applied = await node.take_snapshot()
        assert snapshot_index_at_release == [applied]  # once, after the log was compacted
    finally:
        await node.stop()


async def test_take_snapshot_compacts_the_log_to_what_was_applied(tmp_path: Path) -> None:
    node = _node(tmp_path, Log(), snapshot_entries=1_000)
    await node.start()
    try:
        await node.wait_for_leader(5)
        for i in range(7):
            await node.propose(b"v%d" % i)
        applied = node.core.log.last_index()
        await node.wait_applied(applied, timeout=5)
        assert node.core.log.snapshot_index == 0
        assert await node.take_snapshot() == applied
        assert node.core.log.snapshot_index == applied
        assert node.metrics.snapshots == 1
        assert node.metrics.snapshot_bytes == len(b"\n".join(b"v%d" % i for i in range(7)))
        assert await node.take_snapshot() == applied  # nothing new: no second snapshot
        assert node.metrics.snapshots == 1
    finally:
        await node.stop()
