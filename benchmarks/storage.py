"""Write-ahead log throughput with fsync, next to the raw fdatasync rate of the same disk.

    python benchmarks/storage.py [--dir DIR] [--seconds 2]
    python -m benchmarks.storage --seconds 0.05      (the smoke test, well under 1 s)

Prints one JSON object. For 64 B and 1 KiB entries in batches of 1, 16 and 256 (one
fdatasync per batch) it reports appends/s, MB/s and batches/s; for batches of 256 it
also reports the fraction of the fsync-bound limit (raw fsyncs/s x 256) reached.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from hacoord.raft.storage.disk import DiskStorage
from hacoord.raft.types import Entry, HardState

_fdatasync = getattr(os, "fdatasync", os.fsync)


def raw_fsync_rate(directory: Path, seconds: float) -> float:
    """64-byte write + fdatasync in a loop: the disk's bound on synced batches/s."""
    path = directory / "raw.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        n = 0
        end = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < end:
            os.write(fd, b"x" * 64)
            _fdatasync(fd)
            n += 1
        return n / (time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()


def wal_rate(directory: Path, entry_bytes: int, batch: int, seconds: float) -> dict[str, float]:
    """Append batches with one fdatasync each for ``seconds``."""
    disk = DiskStorage(directory)
    disk.load()
    payload = os.urandom(entry_bytes)
    index = 0
    batches = 0
    end = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < end:
        entries = [Entry(1, index + 1 + i, data=payload) for i in range(batch)]
        index += batch
        disk.save(HardState(1, 1, index), entries, sync=True)
        batches += 1
    elapsed = time.perf_counter() - started
    disk.close()
    return {
        "appends_per_s": round(index / elapsed),
        "mb_per_s": round(index * entry_bytes / elapsed / 1e6, 2),
        "batches_per_s": round(batches / elapsed, 1),
    }


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dir", help="directory on the disk to measure (default: a temp dir)")
    p.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    args = p.parse_args()
    if args.seconds <= 0:
        p.error("--seconds must be > 0")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="hacoord-storage-bench-") as tmp:
        base = Path(tmp)
        raw = raw_fsync_rate(base, args.seconds)
        results: dict[str, object] = {
            "benchmark": "storage",
            "raw_fdatasync_per_s": round(raw, 1),
        }
        runs = {}
        for size in (64, 1024):
            for batch in (1, 16, 256):
                run_dir = base / f"wal-{size}-{batch}"
                r = wal_rate(run_dir, size, batch, args.seconds)
                if batch == 256:
                    r["fraction_of_fsync_bound"] = round(r["appends_per_s"] / (raw * 256), 2)
                runs[f"{size}B_batch{batch}"] = r
        results["wal"] = runs
    print(json.dumps(results))


if __name__ == "__main__":
    main()
