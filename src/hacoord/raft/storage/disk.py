"""``DiskStorage``: the segmented write-ahead log and snapshots of one member.

Layout of the data directory::

    LOCK                                   held (flock) while a process uses it
    wal/0000000000000001-00000000000000000001.wal   segment: sequence number, first index
    snap/00000000000000001000-00000000000000000003.snap   snapshot: index, term

The hard state is a record in the WAL, not a separate file: one batch (entries plus
the new term/vote/commit) is one ``write`` and one ``fdatasync``, and a replay takes
the last hard-state record. Every new segment starts with the current hard state,
so deleting old segments never loses it. An entry whose index is at or below the
last one overwrites that suffix, on disk as in memory: replay applies the same rule.

Recovery truncates a torn final record of the last segment (logged as a warning)
and refuses to start, naming file and offset, on anything else: a bad checksum
followed by intact data, a damaged earlier segment, a missing segment, a gap in
the entry indexes, or a corrupt snapshot that no older snapshot can replace.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hacoord.raft.errors import RaftError, StorageCorruptError
from hacoord.raft.storage import records
from hacoord.raft.storage.snapfile import (
    SnapshotCorrupt,
    SnapshotFile,
    fsync_dir,
    read_snapshot,
    write_snapshot,
)
from hacoord.raft.types import Entry, HardState, PersistedState, Snapshot

log = logging.getLogger("hacoord.storage")

_SEGMENT_RE = re.compile(r"^(\d{16})-(\d{20})\.wal$")
_SNAP_RE = re.compile(r"^(\d{20})-(\d{20})\.snap$")
_fdatasync = getattr(os, "fdatasync", os.fsync)

ADVICE = (
    "Do not edit the file. Restore this member's data directory from a backup, or "
    "remove the member from the cluster and add it back empty so that it copies the "
    "log from the leader."
)


class StorageInUseError(RaftError):
    """Another process holds the data directory."""


@dataclass(slots=True)
class _Segment:
    seq: int
    first_index: int
    path: Path
    size: int


def _segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016d}-{first_index:020d}.wal"


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class DiskStorage:
    """Durable storage in ``directory`` (created if missing). Recovers on open."""

    def __init__(self, directory: Path | str, segment_bytes: int = 64 << 20) -> None:
        if segment_bytes < 4096:
            raise ValueError(f"segment_bytes must be >= 4096, got {segment_bytes}")
        self.dir = Path(directory)
        self.segment_bytes = segment_bytes
        self.wal_dir = self.dir / "wal"
        self.snap_dir = self.dir / "snap"
        for d in (self.dir, self.wal_dir, self.snap_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._lock()
        self._fd = -1
        self._segments: list[_Segment] = []
        self._hard_state = HardState()
        self._snapshot: SnapshotFile | None = None
        self._where: dict[int, tuple[int, int]] = {}
        """entry index -> (segment seq, byte offset of its record)."""
        self._last_index = 0
        self._recovered: PersistedState | None = None
        try:
            self._recover()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- opening

    def _lock(self) -> int:
        path = self.dir / "LOCK"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StorageInUseError(
                f"data directory {self.dir} is in use by another process (pid {holder}); "
                "two members must never share a data directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd

    @property
    def stored_snapshot(self) -> Snapshot | None:
        """The newest snapshot stored, as stored (its data a view of the file)."""
        return self._snapshot.snapshot if self._snapshot else None

    def _base_index(self) -> int:
        return self._snapshot.snapshot.meta.index if self._snapshot else 0

    def _load_snapshot(self) -> tuple[SnapshotFile | None, list[tuple[Path, SnapshotCorrupt]]]:
        for tmp in self.snap_dir.glob("*.tmp"):
            tmp.unlink()
        names = sorted((p for p in self.snap_dir.iterdir() if _SNAP_RE.match(p.name)), reverse=True)
        broken: list[tuple[Path, SnapshotCorrupt]] = []
        for path in names:
            try:
                return read_snapshot(path), broken
            except SnapshotCorrupt as exc:
                broken.append((path, exc))
        return None, broken

    def _list_segments(self) -> list[_Segment]:
        segs = []
        for p in self.wal_dir.iterdir():
            m = _SEGMENT_RE.match(p.name)
            if m:
                segs.append(_Segment(int(m.group(1)), int(m.group(2)), p, p.stat().st_size))
            elif p.suffix == ".wal":
                raise StorageCorruptError(
                    str(p), 0, "segment file name does not follow SEQ-FIRSTINDEX.wal", ADVICE
                )
        segs.sort(key=lambda s: s.seq)
        for a, b in itertools.pairwise(segs):
            if b.seq != a.seq + 1:
                raise StorageCorruptError(
                    str(b.path),
                    0,
                    f"segment {a.seq + 1} is missing between {a.path.name} and {b.path.name}",
                    ADVICE,
                )
        return segs

    def _recover(self) -> None:
        snap, broken = self._load_snapshot()
        self._snapshot = snap
        segs = self._list_segments()
        if snap is not None and snap.replaces_log:
            stale = [s for s in segs if s.seq < snap.first_segment]
            for s in stale:
                s.path.unlink()
            if stale:
                fsync_dir(self.wal_dir)
            segs = [s for s in segs if s.seq >= snap.first_segment]
        base = self._base_index()
        entries: list[Entry] = []
        for i, seg in enumerate(segs):
            self._replay(seg, entries, base, is_last=i == len(segs) - 1)
        if snap is not None and not segs:
            raise StorageCorruptError(
                str(self.wal_dir), 0, "every log segment is missing (the snapshot remains)", ADVICE
            )
        if broken:
            newest, err = broken[0]
            if not entries or entries[0].index != base + 1:
                raise StorageCorruptError(
                    str(newest), err.offset, f"snapshot is corrupt ({err.problem})", ADVICE
                )
            log.warning(
                "snapshot %s is corrupt at offset %d (%s); recovered from older snapshot %s "
                "and the log after it",
                newest,
                err.offset,
                err.problem,
                base,
            )
        if entries and entries[0].index != base + 1:
            first = segs[0]
            raise StorageCorruptError(
                str(first.path),
                0,
                f"the log starts at index {entries[0].index} but the snapshot only covers up "
                f"to {base}: entries {base + 1}..{entries[0].index - 1} are missing",
                ADVICE,
            )
        self._last_index = entries[-1].index if entries else base
        if self._hard_state.commit > self._last_index:
            tail = segs[-1] if segs else None
            raise StorageCorruptError(
                str(tail.path if tail else self.wal_dir),
                tail.size if tail else 0,
                f"the hard state says index {self._hard_state.commit} is committed but the log "
                f"ends at {self._last_index}: acknowledged entries are missing",
                ADVICE,
            )
        self._segments = segs
        if not segs:
            seq = snap.first_segment if snap is not None and snap.replaces_log else 1
            self._open_new_segment(seq, self._last_index + 1)
        else:
            last = segs[-1]
            self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)
        self._recovered = PersistedState(self._hard_state, snap.snapshot if snap else None, entries)

    def _replay(self, seg: _Segment, entries: list[Entry], base: int, is_last: bool) -> None:
        data = seg.path.read_bytes()
        for item in records.scan(data):
            if isinstance(item, records.Damage):
                if is_last and item.at_end:
                    log.warning(
                        "%s: torn write at byte offset %d (%s): truncated %d byte(s) written "
                        "by an interrupted batch",
                        seg.path,
                        item.offset,
                        item.problem,
                        len(data) - item.offset,
                    )
                    os.truncate(seg.path, item.offset)
                    seg.size = item.offset
                    return
                where = "the last segment" if is_last else "a segment that is not the last"
                raise StorageCorruptError(
                    str(seg.path),
                    item.offset,
                    f"{item.problem} in {where}, with intact data after it"
                    if not item.at_end
                    else f"{item.problem} in {where}",
                    ADVICE,
                )
            offset, kind, payload = item
            try:
                if kind == records.HARD_STATE:
                    self._hard_state = records.decode_hard_state(payload)
                    continue
                if kind == records.ENTRIES:
                    batch = records.decode_entries(payload)
                elif kind == records.ENTRY:
                    batch = [records.decode_entry(payload)]
                else:
                    raise ValueError(f"unknown record type {kind}")
            except ValueError as exc:
                raise StorageCorruptError(str(seg.path), offset, str(exc), ADVICE) from None
            for entry in batch:
                self._replay_entry(entry, entries, base, seg, offset)

    def _replay_entry(
        self, entry: Entry, entries: list[Entry], base: int, seg: _Segment, offset: int
    ) -> None:
        if entry.index <= base:
            # Written after the entries collected so far (all above the base), so it
            # truncated them when it was written; the snapshot covers the entry itself.
            for e in entries:
                self._where.pop(e.index, None)
            entries.clear()
            return
        last = entries[-1].index if entries else base
        if entry.index > last + 1 and entries:
            raise StorageCorruptError(
                str(seg.path),
                offset,
                f"gap in the log: entry {entry.index} follows entry {last}",
                ADVICE,
            )
        if entry.index <= last:
            del entries[entry.index - base - 1 :]
            for i in range(entry.index, last + 1):
                self._where.pop(i, None)
        entries.append(entry)
        self._where[entry.index] = (seg.seq, offset)

    def _open_new_segment(self, seq: int, first_index: int) -> None:
        path = self.wal_dir / _segment_name(seq, first_index)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o644)
        self._segments.append(_Segment(seq, first_index, path, 0))
        head = records.hard_state_record(self._hard_state)
        _write_all(self._fd, head)
        self._segments[-1].size = len(head)
        _fdatasync(self._fd)
        fsync_dir(self.wal_dir)

    def _roll(self, first_index: int) -> None:
        _fdatasync(self._fd)
        os.close(self._fd)
        self._open_new_segment(self._segments[-1].seq + 1, first_index)

    # ------------------------------------------------------------ public API

    def load(self) -> PersistedState:
        """What was recovered when this storage was opened."""
        if self._recovered is None:
            raise RaftError("load() may only be called once, right after opening")
        out, self._recovered = self._recovered, None
        return out

    def last_index(self) -> int:
        """Index of the last stored entry (the snapshot index when the log is empty)."""
        return self._last_index

    def first_index(self) -> int:
        """Index of the first stored entry (snapshot index + 1)."""
        return self._base_index() + 1

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        sync: bool = True,
    ) -> None:
        """Persist a Ready batch with a single write and (with ``sync``) one fdatasync."""
        if snapshot is not None:
            self._replace_with_snapshot(snapshot, hard_state)
        if entries:
            first = entries[0].index
            if first > self._last_index + 1:
                raise ValueError(f"gap: appending entry {first} after {self._last_index}")
            if first <= self._base_index():
                raise ValueError(f"entry {first} is covered by the snapshot")
            if self._segments[-1].size >= self.segment_bytes:
                self._roll(first)
        buf = bytearray()
        seg = self._segments[-1]
        if entries:
            first = entries[0].index
            for i in range(first, self._last_index + 1):
                self._where.pop(i, None)
            where = (seg.seq, seg.size)
            for e in entries:
                self._where[e.index] = where
            self._last_index = entries[-1].index
            buf += records.entries_record(entries)
        if hard_state is not None:
            self._hard_state = hard_state
            buf += records.hard_state_record(hard_state)
        if buf:
            _write_all(self._fd, buf)
            seg.size += len(buf)
        if sync:
            _fdatasync(self._fd)

    def sync(self) -> None:
        """Make everything written durable."""
        _fdatasync(self._fd)

    def _replace_with_snapshot(self, snapshot: Snapshot, hard_state: HardState | None) -> None:
        if hard_state is not None:
            self._hard_state = hard_state
        next_seq = self._segments[-1].seq + 1
        sf = write_snapshot(
            self.snap_dir, SnapshotFile(snapshot, replaces_log=True, first_segment=next_seq)
        )
        old = self._segments
        os.close(self._fd)
        self._segments = []
        self._snapshot = sf
        self._where.clear()
        self._last_index = snapshot.meta.index
        self._open_new_segment(next_seq, snapshot.meta.index + 1)
        for seg in old:
            seg.path.unlink()
        fsync_dir(self.wal_dir)
        self._drop_old_snapshots()

    def compact(self, snapshot: Snapshot) -> Snapshot:
        """Store a state-machine snapshot, then delete the segments it fully covers;
        returns the stored snapshot (its data a view of the file)."""
        index = snapshot.meta.index
        if index <= self._base_index():
            return snapshot
        if index > self._last_index:
            raise ValueError(f"snapshot index {index} is beyond the last entry {self._last_index}")
        _fdatasync(self._fd)
        first_seg = self._segments[0].seq
        sf = write_snapshot(
            self.snap_dir, SnapshotFile(snapshot, replaces_log=False, first_segment=first_seg)
        )
        self._snapshot = sf
        live_max: dict[int, int] = {}
        for i, (seq, _) in self._where.items():
            if live_max.get(seq, 0) < i:
                live_max[seq] = i
        removed = False
        while len(self._segments) > 1 and live_max.get(self._segments[0].seq, 0) <= index:
            self._segments.pop(0).path.unlink()
            removed = True
        if removed:
            fsync_dir(self.wal_dir)
        for i in [i for i in self._where if i <= index]:
            del self._where[i]
        self._drop_old_snapshots()
        return sf.snapshot

    def _drop_old_snapshots(self) -> None:
        keep = self._snapshot
        if keep is None:
            return
        meta = keep.snapshot.meta
        for p in self.snap_dir.iterdir():
            m = _SNAP_RE.match(p.name)
            if m and (int(m.group(1)), int(m.group(2))) != (meta.index, meta.term):
                p.unlink()

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Read entries [lo, hi) back from disk (uses the in-memory offset index)."""
        if lo < self.first_index() or hi > self._last_index + 1 or lo > hi:
            raise ValueError(
                f"entries [{lo}, {hi}) are outside the stored range "
                f"[{self.first_index()}, {self._last_index + 1})"
            )
        out: list[Entry] = []
        cache: dict[int, bytes] = {}
        paths = {s.seq: s.path for s in self._segments}
        for i in range(lo, hi):
            seq, offset = self._where[i]
            data = cache.get(seq)
            if data is None:
                data = cache[seq] = paths[seq].read_bytes()
            length, _ = records.HEADER.unpack_from(data, offset)
            body = data[offset + records.HEADER.size : offset + records.HEADER.size + length]
            if body[0] == records.ENTRY:
                out.append(records.decode_entry(bytes(body[1:])))
            else:
                batch = records.decode_entries(bytes(body[1:]))
                out.append(batch[i - batch[0].index])
        return out

    def close(self) -> None:
        """Close the segment and release the directory lock."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1
