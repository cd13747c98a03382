"""Stored snapshots keep their data on disk: a read-only view of the file, not a copy."""

from pathlib import Path

from hacoord.raft.storage.disk import DiskStorage
from hacoord.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta

CONF = ConfState(frozenset({1, 2, 3}))


def _storage_with_entries(path: Path, last: int) -> DiskStorage:
    disk = DiskStorage(path, segment_bytes=4096)
    disk.load()
    disk.save(HardState(1, 1, last), [Entry(1, i) for i in range(1, last + 1)])
    return disk


def test_compact_returns_the_snapshot_as_a_view_of_its_file(tmp_path: Path) -> None:
    disk = _storage_with_entries(tmp_path, 10)
    data = bytes(range(256)) * 64
    stored = disk.compact(Snapshot(SnapshotMeta(5, 1, CONF), data))
    assert isinstance(stored.data, memoryview) and stored.data.readonly
    assert stored.data == data and stored.data_bytes() == data
    assert stored.meta == SnapshotMeta(5, 1, CONF)
    disk.close()
    reopened = DiskStorage(tmp_path, segment_bytes=4096)
    snapshot = reopened.load().snapshot
    reopened.close()
    assert snapshot is not None and isinstance(snapshot.data, memoryview)
    assert snapshot.data_bytes() == data


def test_a_replaced_snapshot_stays_readable_after_its_file_is_deleted(tmp_path: Path) -> None:
    # A leader may still be sending the older snapshot when a newer one replaces its file.
    disk = _storage_with_entries(tmp_path, 10)
    old = disk.compact(Snapshot(SnapshotMeta(4, 1, CONF), b"old state" * 1000))
    disk.compact(Snapshot(SnapshotMeta(8, 1, CONF), b"new state" * 1000))
    files = sorted(p.name for p in (tmp_path / "snap").iterdir())
    assert files == ["00000000000000000008-00000000000000000001.snap"]
    assert old.data_bytes() == b"old state" * 1000
    disk.close()


def test_an_empty_snapshot_is_stored_and_read_back(tmp_path: Path) -> None:
    disk = _storage_with_entries(tmp_path, 3)
    assert disk.compact(Snapshot(SnapshotMeta(2, 1, CONF), b"")).data_bytes() == b""
    disk.close()
    reopened = DiskStorage(tmp_path, segment_bytes=4096)
    snapshot = reopened.load().snapshot
    reopened.close()
    assert snapshot is not None and snapshot.data_bytes() == b""
