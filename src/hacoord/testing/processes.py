"""Helpers for test beds that run local server processes: ports, binaries, logs, parent death,
pauses.

Shared by the MariaDB, Kubernetes and Kafka test beds and by
:class:`~hacoord.server.local_cluster.LocalCluster`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "EXTRA_BIN_DIRS",
    "file_size",
    "find_binary",
    "free_ports",
    "parent_death_prefix",
    "read_tail",
    "wait_until_stopped",
]

EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/libexec", "/usr/bin", "/usr/local/bin")
"""Directories :func:`find_binary` looks in after ``PATH`` (servers often live in sbin)."""


def find_binary(name: str, extra_dirs: Sequence[str] = EXTRA_BIN_DIRS) -> str | None:
    """The path of executable ``name``, looking in ``PATH`` and then in ``extra_dirs``."""
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_ports(count: int, exclude: Sequence[int] = (), host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports of ``host``, none of them in ``exclude``.

    Every probing socket stays open until all ports are found, so the ports differ; another
    process may still take one before the caller binds it.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
            if port not in exclude and port not in ports:
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def parent_death_prefix() -> list[str]:
    """Command prefix that makes a child get SIGKILL when its parent thread exits (Linux).

    Uses util-linux ``setpriv --pdeathsig`` (it execs the command, so the pid stays the same)
    rather than a ``preexec_fn``, which is unsafe while other threads run. Empty if missing or
    not on Linux. The signal fires when the *thread* that started the child exits: start
    children from a thread that lives as long as they should (an event loop thread normally
    does).
    """
    if not sys.platform.startswith("linux"):
        return []
    setpriv = find_binary("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def read_tail(path: Path, offset: int = 0, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file from byte ``offset`` on ('' if unreadable)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def file_size(path: Path) -> int:
    """The size of ``path`` in bytes, 0 if it does not exist (a log offset to read from)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def wait_until_stopped(pid: int) -> None:
    """Return once child process ``pid`` has stopped after a SIGSTOP (or has exited).

    ``kill`` returns as soon as the signal is queued; the kernel then stops the threads one
    by one as each next runs, so on a busy machine the process goes on working for a while
    (up to 45 ms measured with two busy loops on two cores): long enough for a server to
    answer a request sent after the signal. ``waitid`` reports the stop once every thread
    has stopped; ``WNOWAIT`` leaves the child's status to whoever reaps it (asyncio's child
    watcher, ``Popen.wait``). Blocks the calling thread until then.
    """
    with contextlib.suppress(ChildProcessError):  # already reaped: nothing left to wait for
        os.waitid(os.P_PID, pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
