"""wait_until_stopped: a SIGSTOPped child is stopped, every thread of it, when it returns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from hacoord.testing.processes import wait_until_stopped

# Four threads spinning in Python (so some of them run whenever the child gets a core),
# the main thread sleeping in a system call: the kernel stops each kind differently.
BUSY_CHILD = """
import threading, time
def spin():
    while True:
        sum(range(1000))
for _ in range(4):
    threading.Thread(target=spin, daemon=True).start()
print("ready", flush=True)
time.sleep(3600)
"""


def thread_states(pid: int) -> list[str]:
    """The scheduler state letter of every thread of ``pid`` (``T``: stopped)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        states.append(stat.rsplit(")", 1)[1].split()[0])
    return states


def test_every_thread_is_stopped_when_it_returns() -> None:
    for _ in range(10):
        child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD], stdout=subprocess.PIPE)
        try:
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
            # Again after each SIGCONT: a later pause must wait for its own stop, not
            # return on the report of the one before.
            for _ in range(3):
                os.kill(child.pid, signal.SIGSTOP)
                wait_until_stopped(child.pid)
                states = thread_states(child.pid)
                assert len(states) == 5 and set(states) == {"T"}, states
                os.kill(child.pid, signal.SIGCONT)
                assert "T" not in thread_states(child.pid)
        finally:
            child.kill()
            child.wait()


def test_an_exited_child_returns_at_once_and_stays_for_its_reaper() -> None:
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    wait_until_stopped(child.pid)  # exited, not stopped: returns without reaping it
    assert child.wait(timeout=30) == 3
    wait_until_stopped(child.pid)  # reaped now: nothing to wait for
