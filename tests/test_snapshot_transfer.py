"""Chunked snapshot transfer: bounded chunks, a window, checksums, resuming."""

import random

import pytest

from hacoord.raft.snapshot_transfer import (
    SnapshotAssembler,
    SnapshotSender,
    is_ack,
    split_snapshot,
)
from hacoord.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMeta

META = SnapshotMeta(100, 3, ConfState(frozenset({1, 2, 3})))
CHUNK = 1000


def _snapshot_message(size: int) -> Message:
    data = random.Random(size).randbytes(size)
    return Message(MessageType.SNAPSHOT, 2, 1, 3, snapshot=Snapshot(META, data))


def _offset(chunk: Message) -> int:
    import msgpack

    return int(msgpack.unpackb(chunk.context)[0])


def _run(
    sender: SnapshotSender,
    asm: SnapshotAssembler,
    first: list[Message],
    drop: set[int] | None = None,
) -> tuple[Message | None, int]:
    """Deliver chunks and acks until quiet; returns (snapshot, chunks sent)."""
    queue = list(first)
    sent = 0
    done = None
    while queue:
        chunk = queue.pop(0)
        sent += 1
        if drop and _offset(chunk) in drop:
            drop.discard(_offset(chunk))  # lost once
            continue
        full, ack = asm.add(chunk)
        if full is not None:
            done = full
        if ack is not None:
            assert is_ack(ack) and ack.to == 1 and ack.frm == 2
            queue.extend(sender.on_ack(ack))
    return done, sent


def test_large_snapshot_travels_in_bounded_chunks_within_a_window() -> None:
    m = _snapshot_message(10_000)
    sender, asm = SnapshotSender(chunk_bytes=CHUNK, window=3), SnapshotAssembler()
    first = sender.start(m)
    assert len(first) == 3, "only a window of chunks goes out before acknowledgements"
    assert all(c.snapshot is not None and len(c.snapshot.data) <= CHUNK for c in first)
    full, sent = _run(sender, asm, first)
    assert full is not None and full.snapshot == m.snapshot and full.context == b""
    assert sent == 10
    assert not sender.in_progress(2)


def test_small_snapshot_is_sent_whole() -> None:
    m = _snapshot_message(100)
    assert SnapshotSender(chunk_bytes=CHUNK).start(m) == [m]
    assert split_snapshot(m, chunk_bytes=CHUNK) == [m]
    assert SnapshotAssembler().add(m) == (m, None)


def test_a_lost_chunk_is_resent_without_restarting() -> None:
    m = _snapshot_message(8000)
    sender, asm = SnapshotSender(chunk_bytes=CHUNK, window=4), SnapshotAssembler()
    full, sent = _run(sender, asm, sender.start(m), drop={2000})
    assert full is not None and full.snapshot == m.snapshot
    assert sent < 16, f"resending the whole snapshot would take 16 chunks, took {sent}"


def test_an_interrupted_transfer_resumes_where_it_stopped() -> None:
    m = _snapshot_message(8000)
    sender, asm = SnapshotSender(chunk_bytes=CHUNK, window=2), SnapshotAssembler()
    queue = sender.start(m)
    for _ in range(4):  # four chunks arrive, then the connection drops
        chunk = queue.pop(0)
        _, ack = asm.add(chunk)
        assert ack is not None
        queue.extend(sender.on_ack(ack))
    # The core asks again twice (a probe round without progress): resume at 4000.
    sender.start(m)
    again = sender.start(m)
    assert _offset(again[0]) == 4000
    full, sent = _run(sender, asm, again)
    assert full is not None and full.snapshot == m.snapshot
    assert sent == 4


def test_corrupted_chunk_fails_the_checksum(caplog: pytest.LogCaptureFixture) -> None:
    m = _snapshot_message(3000)
    chunks = split_snapshot(m, chunk_bytes=CHUNK)
    bad = chunks[1].snapshot
    assert bad is not None
    chunks[1].snapshot = Snapshot(bad.meta, b"\xff" + bad.data[1:])
    asm = SnapshotAssembler()
    assert [asm.add(c)[0] for c in chunks] == [None, None, None]
    assert asm.rejected == 1
    assert "checksum" in caplog.text
