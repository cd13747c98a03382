"""Atomic, checksummed snapshot files.

Layout: ``b"HACOSNAP"`` magic, ``u32`` header length, msgpack header
``[index, term, voters, learners, outgoing, replaces_log, first_segment, data_len,
data_crc]``, ``u32`` header CRC, then the data. Files are written to a temporary
name, synced, renamed into place, and the directory is synced.

A stored snapshot's data is a read-only memory map of its file, not a copy in memory: a
member holding a large state keeps the serialized form on disk (the page cache holds it
while it is read, e.g. to send it to a follower). Snapshot files are never modified in
place, and one deleted while mapped stays readable until its map is dropped.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgpack

from hacoord.raft.types import ConfState, Snapshot, SnapshotMeta

MAGIC = b"HACOSNAP"
_U32 = struct.Struct(">I")


@dataclass(slots=True, frozen=True)
class SnapshotFile:
    """A snapshot plus how it relates to the log segments."""

    snapshot: Snapshot
    replaces_log: bool
    """True when a leader's snapshot replaced the whole log (segments before
    ``first_segment`` belong to the discarded log)."""
    first_segment: int


class SnapshotCorrupt(Exception):
    """A snapshot file failed validation; ``offset`` locates the problem."""

    def __init__(self, offset: int, problem: str) -> None:
        super().__init__(problem)
        self.offset = offset
        self.problem = problem


def file_name(index: int, term: int) -> str:
    """Snapshot files sort by index."""
    return f"{index:020d}-{term:020d}.snap"


def fsync_dir(directory: Path) -> None:
    """Make a rename or file creation in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mapped(path: Path) -> memoryview:
    """The whole file, as a read-only view of a memory map of it."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


def write_snapshot(directory: Path, sf: SnapshotFile) -> SnapshotFile:
    """Write ``sf`` atomically into ``directory``; returns it as stored (its data a view
    of the new file)."""
    meta = sf.snapshot.meta
    data = sf.snapshot.data
    header: bytes = msgpack.packb(
        [
            meta.index,
            meta.term,
            sorted(meta.conf.voters),
            sorted(meta.conf.learners),
            sorted(meta.conf.voters_outgoing),
            sf.replaces_log,
            sf.first_segment,
            len(data),
            zlib.crc32(data),
        ]
    )
    head = MAGIC + _U32.pack(len(header)) + header + _U32.pack(zlib.crc32(header))
    final = directory / file_name(meta.index, meta.term)
    tmp = final.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        # Head and data written apart: joining them would copy a large snapshot while
        # holding the GIL, stalling the event loop for that long.
        for part in (head, data):
            view = memoryview(part)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(directory)
    stored = Snapshot(meta, _mapped(final)[len(head) :])
    return SnapshotFile(stored, sf.replaces_log, sf.first_segment)


def read_snapshot(path: Path) -> SnapshotFile:
    """Read and verify a snapshot file (raises SnapshotCorrupt); its data is a view of
    the file."""
    raw = _mapped(path)
    if bytes(raw[: len(MAGIC)]) != MAGIC:
        raise SnapshotCorrupt(0, "not a hacoord snapshot (bad magic)")
    pos = len(MAGIC)
    if len(raw) < pos + 4:
        raise SnapshotCorrupt(pos, "file ends inside the header length")
    (hlen,) = _U32.unpack_from(raw, pos)
    pos += 4
    header = bytes(raw[pos : pos + hlen])
    if len(header) != hlen or len(raw) < pos + hlen + 4:
        raise SnapshotCorrupt(pos, "file ends inside the header")
    (hcrc,) = _U32.unpack_from(raw, pos + hlen)
    if zlib.crc32(header) != hcrc:
        raise SnapshotCorrupt(pos, "header checksum mismatch")
    try:
        index, term, voters, learners, outgoing, replaces, first_seg, dlen, dcrc = msgpack.unpackb(
            header
        )
    except Exception as exc:
        raise SnapshotCorrupt(pos, f"undecodable header: {exc}") from exc
    data_at = pos + hlen + 4
    data = raw[data_at:]
    if len(data) != dlen:
        raise SnapshotCorrupt(data_at, f"data is {len(data)} bytes, header says {dlen}")
    if zlib.crc32(data) != dcrc:
        raise SnapshotCorrupt(data_at, "data checksum mismatch")
    conf = ConfState(frozenset(voters), frozenset(learners), frozenset(outgoing))
    snap = Snapshot(SnapshotMeta(index, term, conf), data)
    return SnapshotFile(snap, bool(replaces), int(first_seg))
