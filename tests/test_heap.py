"""release_free_heap: freed memory the allocator kept goes back to the system."""

from __future__ import annotations

import gc

import pytest

from hacoord.raft import heap


def _resident_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_release_returns_the_pages_of_values_freed_between_survivors() -> None:
    if heap._malloc_trim() is None:
        pytest.skip("the C library has no malloc_trim (not glibc): release is a no-op")
    # 1 KiB values come from malloc, not Python's small-object arenas; keeping every
    # 16th one leaves runs of freed pages inside the heap that free() alone keeps.
    values = [bytes([i % 251]) * 1024 for i in range(160_000)]
    survivors = values[::16]
    del values
    gc.collect()
    before = _resident_bytes()
    assert heap.release_free_heap()
    released = before - _resident_bytes()
    assert released > 64 * 1024 * 1024, f"only {released} bytes went back"
    assert len(survivors) == 10_000 and survivors[-1] == bytes([159_984 % 251]) * 1024
