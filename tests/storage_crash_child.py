"""Child process for the crash test: appends batches and reports each durable one.

Usage: python storage_crash_child.py DIR SEED. Prints the last index of every batch
after ``save(sync=True)`` returned, one per line, until killed.
"""

import random
import sys

from hacoord.raft.storage.disk import DiskStorage
from hacoord.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta


def main() -> None:
    directory, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    disk = DiskStorage(directory, segment_bytes=16 * 1024)
    state = disk.load()
    last = (
        state.entries[-1].index
        if state.entries
        else (state.snapshot.meta.index if state.snapshot else 0)
    )
    term = state.hard_state.term + 1
    conf = ConfState(frozenset({1}))
    while True:
        count = rng.choice([1, 5, 40])
        batch = [
            Entry(term, last + 1 + i, data=f"{term}:{last + 1 + i}".encode() * rng.randint(1, 20))
            for i in range(count)
        ]
        last += count
        disk.save(HardState(term, 1, last), batch, sync=True)
        print(last, flush=True)
        if rng.random() < 0.05:
            snap = Snapshot(SnapshotMeta(last, term, conf), b"snap@%d" % last)
            disk.compact(snap)


if __name__ == "__main__":
    main()
