"""Chunked snapshot transfer: bounded chunks, checksums, restart after a loss."""

import random

from hacoord.raft.snapshot_transfer import SnapshotAssembler, split_snapshot
from hacoord.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMeta

META = SnapshotMeta(100, 3, ConfState(frozenset({1, 2, 3})))


def _snapshot_message(size: int) -> Message:
    data = random.Random(size).randbytes(size)
    return Message(MessageType.SNAPSHOT, 2, 1, 3, snapshot=Snapshot(META, data))


def test_large_snapshot_travels_in_bounded_chunks_and_reassembles() -> None:
    m = _snapshot_message(10_000)
    chunks = split_snapshot(m, chunk_bytes=1024)
    assert len(chunks) == 10
    assert all(c.snapshot is not None and len(c.snapshot.data) <= 1024 for c in chunks)
    asm = SnapshotAssembler()
    results = [asm.add(c) for c in chunks]
    assert results[:-1] == [None] * 9
    full = results[-1]
    assert full is not None and full.snapshot == m.snapshot and full.context == b""


def test_small_snapshot_is_not_split() -> None:
    m = _snapshot_message(100)
    assert split_snapshot(m, chunk_bytes=1024) == [m]
    assert SnapshotAssembler().add(m) is m


def test_a_lost_chunk_discards_the_transfer_and_a_resend_succeeds() -> None:
    m = _snapshot_message(5000)
    chunks = split_snapshot(m, chunk_bytes=1000)
    asm = SnapshotAssembler()
    for c in chunks[:2] + chunks[3:]:
        assert asm.add(c) is None
    results = [asm.add(c) for c in chunks]
    assert results[-1] is not None and results[-1].snapshot == m.snapshot


def test_corrupted_chunk_fails_the_checksum(caplog) -> None:  # type: ignore[no-untyped-def]
    m = _snapshot_message(3000)
    chunks = split_snapshot(m, chunk_bytes=1000)
    bad = chunks[1].snapshot
    assert bad is not None
    chunks[1].snapshot = Snapshot(bad.meta, b"\xff" + bad.data[1:])
    asm = SnapshotAssembler()
    assert [asm.add(c) for c in chunks] == [None, None, None]
    assert asm.rejected == 1
    assert "checksum" in caplog.text
