"""SIGKILL a writer at random moments: every acknowledged entry survives."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from hacoord.raft.storage.disk import DiskStorage

CHILD = Path(__file__).parent / "storage_crash_child.py"


def _run_and_kill(directory: Path, seed: int, rng: random.Random) -> int:
    """Start the child, kill it after a random number of acknowledgements."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), str(seed)],
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert proc.stdout is not None
    acked = 0
    target = rng.randint(1, 60)
    for _ in range(target):
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    # Kill at a random moment, also mid-batch.
    time.sleep(rng.random() * 0.003)
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait()
    for line in rest.split():
        acked = max(acked, int(line))
    return acked


def test_acknowledged_entries_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(20261128)
    kills = 0
    highest_ack = 0
    for _ in range(60):
        acked = _run_and_kill(tmp_path, kills, rng)
        kills += 1
        highest_ack = max(highest_ack, acked)
        disk = DiskStorage(tmp_path, segment_bytes=16 * 1024)
        state = disk.load()
        disk.close()
        base = state.snapshot.meta.index if state.snapshot else 0
        last = state.entries[-1].index if state.entries else base
        assert last >= highest_ack, f"kill {kills}: acknowledged {highest_ack}, recovered {last}"
        indexes = [e.index for e in state.entries]
        assert indexes == list(range(base + 1, last + 1)), "log must be contiguous"
        for e in state.entries:
            assert e.data.startswith(f"{e.term}:{e.index}".encode())
        assert state.hard_state.commit <= last
    assert kills >= 50
