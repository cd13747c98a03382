"""Sending a large snapshot as bounded, checksummed, resumable chunks.

The core emits one SNAPSHOT message carrying the whole state. The leader's driver
hands it to a :class:`SnapshotSender`, which cuts it into chunks of at most
``chunk_bytes`` (SNAPSHOT messages whose ``context`` is ``[offset, total, crc32 of
the whole]``) and keeps at most ``window`` chunks unacknowledged. The follower's
:class:`SnapshotAssembler` accepts chunks in order, answers each with an
acknowledgement (a SNAPSHOT message without snapshot whose context is
``[b"ack", index, term, received]``), and steps the complete snapshot into its core
only when every byte arrived and the checksum matches.

Resuming: when a connection drops mid-transfer, the follower keeps what it has. The
leader's core soon asks for the snapshot again; the sender continues from the last
acknowledged offset (and the assembler answers a chunk it did not expect with its
current offset, so both sides agree where to go on).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

import msgpack

from hacoord.raft.types import Message, MessageType, NodeId, Snapshot

log = logging.getLogger("hacoord.snapshot")

DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_WINDOW = 4
_ACK = b"ack"


def split_snapshot(m: Message, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[Message]:
    """All chunk messages of a SNAPSHOT message (a small one passes unchanged)."""
    snap = m.snapshot
    if m.type is not MessageType.SNAPSHOT or snap is None or len(snap.data) <= chunk_bytes:
        return [m]
    crc = zlib.crc32(snap.data)
    return [_chunk(m, offset, chunk_bytes, crc) for offset in range(0, len(snap.data), chunk_bytes)]


def _chunk(m: Message, offset: int, chunk_bytes: int, crc: int) -> Message:
    assert m.snapshot is not None
    data = m.snapshot.data
    ctx: bytes = msgpack.packb([offset, len(data), crc])
    return Message(
        MessageType.SNAPSHOT,
        m.to,
        m.frm,
        m.term,
        context=ctx,
        snapshot=Snapshot(m.snapshot.meta, data[offset : offset + chunk_bytes]),
    )


def is_ack(m: Message) -> bool:
    """Whether ``m`` is a chunk acknowledgement (for the sender, never for the core).

    The core only ever sends SNAPSHOT messages that carry a snapshot."""
    return m.type is MessageType.SNAPSHOT and m.snapshot is None and bool(m.context)


@dataclass(slots=True)
class _Outgoing:
    message: Message
    crc: int
    acked: int = 0
    sent: int = 0
    acked_at_last_start: int = -1
    rewound_at: int = -1


class SnapshotSender:
    """Leader side: one windowed transfer per follower."""

    def __init__(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES, window: int = DEFAULT_WINDOW):
        self.chunk_bytes = chunk_bytes
        self.window = window
        self._transfers: dict[NodeId, _Outgoing] = {}
        self.chunks_sent = 0

    def start(self, m: Message) -> list[Message]:
        """The core wants ``m`` sent: begin, or resume the same snapshot where it stands."""
        snap = m.snapshot
        assert snap is not None
        if len(snap.data) <= self.chunk_bytes:
            self._transfers.pop(m.to, None)
            return [m]
        current = self._transfers.get(m.to)
        same = (
            current is not None
            and current.message.term == m.term
            and current.message.snapshot is not None
            and current.message.snapshot.meta == snap.meta
        )
        if not same or current is None:
            current = _Outgoing(m, zlib.crc32(snap.data))
            self._transfers[m.to] = current
        if current.acked == current.acked_at_last_start:
            # No progress since the core last asked: chunks were lost, resend from the
            # last acknowledged offset. (While acks flow, the core's repeated requests
            # must not make us send the window twice.)
            current.sent = current.acked
        current.acked_at_last_start = current.acked
        return self._fill(current)

    def on_ack(self, m: Message) -> list[Message]:
        """A follower acknowledged bytes; returns the chunks that may go out now."""
        try:
            _, index, term, received = msgpack.unpackb(m.context)
        except (ValueError, TypeError, msgpack.ExtraData):
            return []
        current = self._transfers.get(m.frm)
        if current is None or current.message.snapshot is None:
            return []
        meta = current.message.snapshot.meta
        if (index, term) != (meta.index, meta.term):
            return []
        total = len(current.message.snapshot.data)
        if received >= total:
            del self._transfers[m.frm]
            return []
        if received < current.acked or received > current.sent:
            current.sent = received  # the follower lost its partial copy: follow it
        elif received == current.acked and current.rewound_at != received:
            # The first repeated position means a chunk went missing: resend from there,
            # once (the other chunks already in flight repeat the same position).
            current.sent = received
            current.rewound_at = received
        current.acked = received
        return self._fill(current)

    def _fill(self, t: _Outgoing) -> list[Message]:
        assert t.message.snapshot is not None
        total = len(t.message.snapshot.data)
        out = []
        while t.sent < total and t.sent < t.acked + self.window * self.chunk_bytes:
            out.append(_chunk(t.message, t.sent, self.chunk_bytes, t.crc))
            t.sent = min(total, t.sent + self.chunk_bytes)
        self.chunks_sent += len(out)
        return out

    def in_progress(self, peer: NodeId) -> bool:
        """Whether a transfer to ``peer`` is under way."""
        return peer in self._transfers


@dataclass(slots=True)
class _Partial:
    term: int
    index: int
    total: int
    crc: int
    parts: list[bytes] = field(default_factory=list)
    received: int = 0


class SnapshotAssembler:
    """Follower side: reassembles chunks per sender; at most ``max_bytes`` per snapshot."""

    def __init__(self, max_bytes: int = 8 << 30) -> None:
        self.max_bytes = max_bytes
        self._partial: dict[NodeId, _Partial] = {}
        self.rejected = 0

    def add(self, m: Message) -> tuple[Message | None, Message | None]:
        """Feed one SNAPSHOT message: ``(complete snapshot message or None, ack or None)``."""
        if m.type is not MessageType.SNAPSHOT or not m.context or m.snapshot is None:
            return m, None
        try:
            offset, total, crc = msgpack.unpackb(m.context)
            offset, total, crc = int(offset), int(total), int(crc)
        except (ValueError, TypeError, msgpack.ExtraData) as exc:
            self._reject(m.frm, f"malformed chunk header: {exc}")
            return None, None
        if total > self.max_bytes:
            self._reject(m.frm, f"snapshot of {total} bytes exceeds the {self.max_bytes} limit")
            return None, None
        meta = m.snapshot.meta
        part = self._partial.get(m.frm)
        identity = (meta.index, total, crc)
        if part is None or (part.index, part.total, part.crc) != identity:
            if offset != 0:
                return None, self._ack(m, meta.index, meta.term, 0)
            part = _Partial(m.term, meta.index, total, crc)
            self._partial[m.frm] = part
        if offset != part.received:
            # A duplicate, or a chunk after a gap: tell the sender where we are.
            return None, self._ack(m, meta.index, meta.term, part.received)
        part.parts.append(m.snapshot.data_bytes())
        part.received += len(m.snapshot.data)
        ack = self._ack(m, meta.index, meta.term, part.received)
        if part.received < total:
            return None, ack
        del self._partial[m.frm]
        data = b"".join(part.parts)
        if part.received != total or zlib.crc32(data) != crc:
            self._reject(m.frm, f"snapshot {meta.index} failed its checksum; waiting for a resend")
            return None, self._ack(m, meta.index, meta.term, 0)
        full = Message(MessageType.SNAPSHOT, m.to, m.frm, m.term, snapshot=Snapshot(meta, data))
        return full, ack

    @staticmethod
    def _ack(m: Message, index: int, term: int, received: int) -> Message:
        ctx: bytes = msgpack.packb([_ACK, index, term, received])
        return Message(MessageType.SNAPSHOT, m.frm, m.to, m.term, context=ctx)

    def _reject(self, frm: NodeId, why: str) -> None:
        self.rejected += 1
        self._partial.pop(frm, None)
        log.warning("snapshot from member %d dropped: %s", frm, why)
