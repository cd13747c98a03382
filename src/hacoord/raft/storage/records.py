"""Record framing of the write-ahead log.

A record is ``[u32 length][u32 crc32][u8 type][payload]`` (big-endian); ``length``
counts the type byte and the payload, and the CRC covers both. Payloads are msgpack
arrays: an entry is ``[term, index, kind, data]``, a batch of entries a list of those
(written as one record, so a batch is stored whole or not at all), a hard state
``[term, vote, commit]``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import msgpack

from hacoord.raft.types import Entry, EntryKind, HardState

HEADER = struct.Struct(">II")
ENTRY = 1
HARD_STATE = 2
ENTRIES = 3
"""A whole batch of entries in one record: one CRC and one msgpack call per batch."""
MAX_RECORD_BYTES = 256 << 20


def _record(kind: int, payload: bytes) -> bytes:
    body = bytes((kind,)) + payload
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def entry_record(e: Entry) -> bytes:
    """Frame one log entry."""
    packed: bytes = msgpack.packb([e.term, e.index, int(e.kind), e.data])
    return _record(ENTRY, packed)


def entries_record(entries: Sequence[Entry]) -> bytes:
    """Frame a batch of entries as one record."""
    packed: bytes = msgpack.packb([[e.term, e.index, int(e.kind), e.data] for e in entries])
    return _record(ENTRIES, packed)


def decode_entries(payload: bytes) -> list[Entry]:
    """Decode a batch payload (raises ValueError when malformed)."""
    try:
        return [
            Entry(int(t), int(i), EntryKind(k), bytes(d)) for t, i, k, d in msgpack.unpackb(payload)
        ]
    except Exception as exc:
        raise ValueError(f"undecodable entry batch record: {exc}") from exc


def hard_state_record(hs: HardState) -> bytes:
    """Frame a hard state."""
    packed: bytes = msgpack.packb([hs.term, hs.vote, hs.commit])
    return _record(HARD_STATE, packed)


@dataclass(slots=True)
class Damage:
    """Where and how a segment stops being readable."""

    offset: int
    problem: str
    at_end: bool
    """True when nothing readable follows: the signature of a torn last write."""


def decode_entry(payload: bytes) -> Entry:
    """Decode an entry payload (raises ValueError when malformed)."""
    try:
        term, index, kind, data = msgpack.unpackb(payload)
        return Entry(int(term), int(index), EntryKind(kind), bytes(data))
    except Exception as exc:
        raise ValueError(f"undecodable entry record: {exc}") from exc


def decode_hard_state(payload: bytes) -> HardState:
    """Decode a hard-state payload (raises ValueError when malformed)."""
    try:
        term, vote, commit = msgpack.unpackb(payload)
        return HardState(int(term), int(vote), int(commit))
    except Exception as exc:
        raise ValueError(f"undecodable hard-state record: {exc}") from exc


def scan(data: bytes) -> Iterator[tuple[int, int, bytes] | Damage]:
    """Yield ``(offset, type, payload)`` per record, then a :class:`Damage` if any."""
    offset = 0
    size = len(data)
    while offset < size:
        if size - offset < HEADER.size:
            yield Damage(
                offset, f"{size - offset} stray byte(s) shorter than a record header", True
            )
            return
        length, crc = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        if length == 0 or length > MAX_RECORD_BYTES:
            yield Damage(
                offset, f"impossible record length {length}", _nothing_valid_after(data, offset + 1)
            )
            return
        if end > size:
            yield Damage(offset, f"record of {length} bytes cut short at end of file", True)
            return
        body = data[offset + HEADER.size : end]
        if zlib.crc32(body) != crc:
            yield Damage(offset, "checksum mismatch", _nothing_valid_after(data, end))
            return
        yield offset, body[0], bytes(body[1:])
        offset = end


def _nothing_valid_after(data: bytes, start: int) -> bool:
    """Whether no intact record starts anywhere at or after ``start``."""
    size = len(data)
    for pos in range(start, size - HEADER.size):
        length, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if 0 < length <= size and end <= size and zlib.crc32(data[pos + HEADER.size : end]) == crc:
            return False
    return True
