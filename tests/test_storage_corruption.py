"""Damaged data directories: a torn tail is repaired, anything else is refused clearly."""

import logging
from pathlib import Path

import pytest

from hacoord.raft.errors import StorageCorruptError
from hacoord.raft.storage.disk import DiskStorage, StorageInUseError
from hacoord.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta

CONF = ConfState(frozenset({1, 2, 3}))


def _fill(path: Path, batches: int = 30, per_batch: int = 10) -> int:
    disk = DiskStorage(path, segment_bytes=4096)
    disk.load()
    last = 0
    for _ in range(batches):
        batch = [
            Entry(1, last + 1 + i, data=b"payload-%d" % (last + 1 + i) * 10)
            for i in range(per_batch)
        ]
        last += per_batch
        disk.save(HardState(1, 1, last), batch)
    disk.close()
    return last


def _segments(path: Path) -> list[Path]:
    return sorted((path / "wal").glob("*.wal"))


def test_torn_tail_is_truncated_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    last = _fill(tmp_path)
    tail = _segments(tmp_path)[-1]
    size = tail.stat().st_size
    with tail.open("r+b") as f:
        f.truncate(size - 7)  # the final hard-state record is cut short
    with caplog.at_level(logging.WARNING, "hacoord.storage"):
        disk = DiskStorage(tmp_path, segment_bytes=4096)
        state = disk.load()
    assert state.entries[-1].index == last
    assert "torn write" in caplog.text and tail.name in caplog.text
    disk.save(HardState(1, 1, last), [Entry(1, last + 1, data=b"after repair")])
    disk.close()
    again = DiskStorage(tmp_path)
    assert again.load().entries[-1].data == b"after repair"
    again.close()


def test_garbage_appended_to_the_tail_is_truncated(tmp_path: Path) -> None:
    last = _fill(tmp_path)
    with _segments(tmp_path)[-1].open("ab") as f:
        f.write(b"\x00\x00\x10\x00garbage from a torn write")
    disk = DiskStorage(tmp_path)
    assert disk.load().entries[-1].index == last
    disk.close()


def test_flipped_byte_in_the_middle_names_file_and_offset(tmp_path: Path) -> None:
    _fill(tmp_path)
    seg = _segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptError) as exc:
        DiskStorage(tmp_path)
    assert exc.value.path == str(seg)
    assert 0 < exc.value.offset <= len(data) // 2
    assert "checksum" in str(exc.value) and "Restore" in str(exc.value)


def test_flipped_byte_in_the_last_segment_with_data_after_it_is_refused(tmp_path: Path) -> None:
    _fill(tmp_path)
    seg = _segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[40] ^= 0x01
    seg.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptError, match="intact data after it"):
        DiskStorage(tmp_path)


def test_truncated_earlier_segment_is_refused(tmp_path: Path) -> None:
    _fill(tmp_path)
    seg = _segments(tmp_path)[1]
    with seg.open("r+b") as f:
        f.truncate(seg.stat().st_size - 5)
    with pytest.raises(StorageCorruptError) as exc:
        DiskStorage(tmp_path)
    assert exc.value.path == str(seg)
    assert "not the last" in str(exc.value)


def test_missing_segment_is_refused_naming_the_gap(tmp_path: Path) -> None:
    _fill(tmp_path)
    segs = _segments(tmp_path)
    segs[2].unlink()
    with pytest.raises(StorageCorruptError, match="segment 3 is missing"):
        DiskStorage(tmp_path)


def test_missing_first_segment_is_refused_as_a_log_gap(tmp_path: Path) -> None:
    _fill(tmp_path)
    _segments(tmp_path)[0].unlink()
    with pytest.raises(StorageCorruptError, match=r"entries 1\.\.\d+ are missing"):
        DiskStorage(tmp_path)


def _compacted(path: Path) -> int:
    last = _fill(path)
    disk = DiskStorage(path, segment_bytes=4096)
    disk.load()
    disk.compact(Snapshot(SnapshotMeta(last - 5, 1, CONF), b"state"))
    disk.close()
    return last


def test_corrupt_snapshot_is_refused_when_the_log_cannot_replace_it(tmp_path: Path) -> None:
    _compacted(tmp_path)
    snap = next((tmp_path / "snap").glob("*.snap"))
    data = bytearray(snap.read_bytes())
    data[-1] ^= 0xFF
    snap.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptError) as exc:
        DiskStorage(tmp_path)
    assert exc.value.path == str(snap)
    assert "snapshot is corrupt (data checksum mismatch)" in str(exc.value)


def test_snapshot_survives_reopen_and_covers_the_compacted_log(tmp_path: Path) -> None:
    last = _compacted(tmp_path)
    assert len(_segments(tmp_path)) < 10
    disk = DiskStorage(tmp_path)
    state = disk.load()
    assert state.snapshot is not None and state.snapshot.meta.index == last - 5
    assert [e.index for e in state.entries] == list(range(last - 4, last + 1))
    disk.close()


def test_a_second_process_cannot_open_the_same_directory(tmp_path: Path) -> None:
    first = DiskStorage(tmp_path)
    with pytest.raises(StorageInUseError, match="in use by another process"):
        DiskStorage(tmp_path)
    first.close()
    DiskStorage(tmp_path).close()


def test_appending_with_a_gap_is_a_programming_error(tmp_path: Path) -> None:
    disk = DiskStorage(tmp_path)
    disk.load()
    with pytest.raises(ValueError, match="gap"):
        disk.save(None, [Entry(1, 5)])
    disk.close()
