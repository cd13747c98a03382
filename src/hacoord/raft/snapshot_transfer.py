"""Sending a large snapshot as bounded, checksummed chunks.

The core emits one SNAPSHOT message carrying the whole state. The driver splits it
into chunks of at most ``chunk_bytes`` (each a SNAPSHOT message whose ``context``
holds ``[offset, total, crc32 of the whole]``); the receiving driver reassembles
them and steps the complete message into its core only when every byte arrived and
the checksum matches. A transfer interrupted by a reconnect or a leader change is
simply started again: the leader notices the follower is still behind and resends.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

import msgpack

from hacoord.raft.types import Message, MessageType, NodeId, Snapshot

log = logging.getLogger("hacoord.snapshot")

DEFAULT_CHUNK_BYTES = 1 << 20


def split_snapshot(m: Message, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[Message]:
    """Split a SNAPSHOT message into chunk messages (a small one passes unchanged)."""
    snap = m.snapshot
    if m.type is not MessageType.SNAPSHOT or snap is None or len(snap.data) <= chunk_bytes:
        return [m]
    data = snap.data
    crc = zlib.crc32(data)
    out = []
    for offset in range(0, len(data), chunk_bytes):
        ctx: bytes = msgpack.packb([offset, len(data), crc])
        out.append(
            Message(
                MessageType.SNAPSHOT,
                m.to,
                m.frm,
                m.term,
                context=ctx,
                snapshot=Snapshot(snap.meta, data[offset : offset + chunk_bytes]),
            )
        )
    return out


@dataclass(slots=True)
class _Partial:
    term: int
    index: int
    total: int
    crc: int
    parts: list[bytes] = field(default_factory=list)
    received: int = 0


class SnapshotAssembler:
    """Reassembles chunked snapshots per sender; at most ``max_bytes`` per transfer."""

    def __init__(self, max_bytes: int = 8 << 30) -> None:
        self.max_bytes = max_bytes
        self._partial: dict[NodeId, _Partial] = {}
        self.rejected = 0

    def add(self, m: Message) -> Message | None:
        """Feed one SNAPSHOT message; returns the complete message once assembled."""
        if m.type is not MessageType.SNAPSHOT or not m.context or m.snapshot is None:
            return m
        try:
            offset, total, crc = msgpack.unpackb(m.context)
            offset, total, crc = int(offset), int(total), int(crc)
        except (ValueError, TypeError, msgpack.ExtraData) as exc:
            self._reject(m.frm, f"malformed chunk header: {exc}")
            return None
        if total > self.max_bytes:
            self._reject(m.frm, f"snapshot of {total} bytes exceeds the {self.max_bytes} limit")
            return None
        meta = m.snapshot.meta
        part = self._partial.get(m.frm)
        if offset == 0:
            part = _Partial(m.term, meta.index, total, crc)
            self._partial[m.frm] = part
        if (
            part is None
            or part.received != offset
            or (part.term, part.index, part.total, part.crc) != (m.term, meta.index, total, crc)
        ):
            # A chunk was lost or belongs to another transfer: wait for a fresh start.
            self._partial.pop(m.frm, None)
            return None
        part.parts.append(m.snapshot.data)
        part.received += len(m.snapshot.data)
        if part.received < total:
            return None
        del self._partial[m.frm]
        data = b"".join(part.parts)
        if part.received != total or zlib.crc32(data) != crc:
            self._reject(m.frm, f"snapshot {meta.index} failed its checksum; waiting for a resend")
            return None
        return Message(MessageType.SNAPSHOT, m.to, m.frm, m.term, snapshot=Snapshot(meta, data))

    def _reject(self, frm: NodeId, why: str) -> None:
        self.rejected += 1
        self._partial.pop(frm, None)
        log.warning("snapshot from member %d dropped: %s", frm, why)
