"""PySyncObj as a system under test of the comparison harness.

PySyncObj is a library without a network client, so every member is a
:mod:`benchmarks.compare.pysyncobj_member` process that wraps a ``SyncObj`` node
in a small HTTP server. This module starts those processes and drives them over
HTTP: writes and reads go to the member that currently claims leadership (PySyncObj
has no linearizable read, so reading from the leader is the closest it gets).

Durability caveat: PySyncObj writes its journal through ``mmap`` and never
``fsync``s/``msync``s it while running (there is no option to turn that on), so
"fsync on" in :meth:`System.start` cannot be honoured; entries survive a process
kill, not an OS crash. See :mod:`benchmarks.compare.pysyncobj_member`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import aiohttp

from hacoord.server.local_cluster import free_ports

REPO_ROOT = Path(__file__).resolve().parents[2]
"""Directory the member processes run in (so ``benchmarks`` is importable)."""

MEMBERS = 3
PUT_DEADLINE_S = 10.0
RETRY_BACKOFF_S = 0.02
STATUS_TIMEOUT_S = 1.0
REQUEST_TIMEOUT_S = 3.0
EMBEDDED_WINDOW = 2000
"""Most replicated puts in flight at once in :meth:`PySyncObjSystem.embedded_rate`
(kept well below PySyncObj's 100 000-entry command queue)."""


def ensure_pysyncobj() -> None:
    """Import ``pysyncobj``, installing it with pip first when it is missing."""
    try:
        importlib.import_module("pysyncobj")
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "pysyncobj"],
            check=True,
        )
        importlib.invalidate_caches()
        importlib.import_module("pysyncobj")


class PySyncObjSystem:
    """A 3-member PySyncObj cluster on 127.0.0.1, each member a separate process.

    ``conf_overrides`` are extra ``SyncObjConf`` keyword arguments given to every
    member (and to the embedded cluster), e.g. ``{"appendEntriesUseBatch": False}``.
    """

    name = "pysyncobj"
    supports_leases = False

    def __init__(self, conf_overrides: Mapping[str, Any] | None = None) -> None:
        self._conf_overrides: dict[str, Any] = dict(conf_overrides or {})
        self._base_dir: Path | None = None
        self._election_timeout_ms = 0
        self._raft_ports: list[int] = []
        self._http_ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * MEMBERS
        self._logs: list[IO[bytes] | None] = [None] * MEMBERS
        self._session: aiohttp.ClientSession | None = None
        self._leader: int = -1

    # ------------------------------------------------------------------ lifecycle

    async def start(self, base_dir: Path, election_timeout_ms: int) -> None:
        """Start all three members and return once a leader serves writes.

        PySyncObj cannot fsync its journal (see the module docstring); everything else
        about durability (journal and full-dump files in each member's directory) is on.
        """
        ensure_pysyncobj()
        base_dir.mkdir(parents=True, exist_ok=True)
        self._base_dir = base_dir
        self._election_timeout_ms = election_timeout_ms
        ports = free_ports(2 * MEMBERS)
        self._raft_ports = ports[:MEMBERS]
        self._http_ports = ports[MEMBERS:]
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )
        for member in range(MEMBERS):
            self._spawn(member)
        try:
            await self._put(f"__start__{time.time_ns()}", b"1", deadline_s=60.0)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """SIGTERM every member, SIGKILL those still running after 5 s, close connections."""
        for proc in self._procs:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for i, proc in enumerate(self._procs):
            if proc is None:
                continue
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.to_thread(proc.wait)
            self._procs[i] = None
        for i, log in enumerate(self._logs):
            if log is not None:
                log.close()
            self._logs[i] = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._leader = -1

    def kill(self, member: int) -> None:
        """SIGKILL one member and reap it."""
        proc = self._procs[member]
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        self._procs[member] = None
        if self._leader == member:
            self._leader = -1

    def restart(self, member: int) -> None:
        """Start a killed member again with its data directory and ports."""
        proc = self._procs[member]
        if proc is not None and proc.poll() is None:
            raise RuntimeError(f"member {member} is still running")
        self._spawn(member)

    async def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Return once all three members run and follow one leader."""
        deadline = time.monotonic() + timeout_s
        last: list[dict[str, Any] | None] = []
        while time.monotonic() < deadline:
            if all(p is not None and p.poll() is None for p in self._procs):
                last = await asyncio.gather(*(self._status(m) for m in range(MEMBERS)))
                if all(s is not None for s in last):
                    leaders = {s["leader"] for s in last if s is not None}
                    if len(leaders) == 1 and None not in leaders:
                        (addr,) = leaders
                        lead = self._member_of(addr)
                        lead_status = last[lead] if lead >= 0 else None
                        if lead_status is not None and lead_status["is_leader"]:
                            self._leader = lead
                            return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"pysyncobj cluster not healthy after {timeout_s} s: {last}")

    def pid(self, member: int) -> int | None:
        """PID of a member's process, None when it is not running."""
        proc = self._procs[member]
        if proc is None or proc.poll() is not None:
            return None
        return proc.pid

    # --------------------------------------------------------------- operations

    async def put(self, key: str, value: bytes) -> None:
        """One committed write through the leader, retried across failovers for 10 s."""
        await self._put(key, value, deadline_s=PUT_DEADLINE_S)

    async def get(self, key: str) -> bytes | None:
        """Read ``key`` from the current leader (PySyncObj reads are leader-local)."""
        status, body = await self._on_leader("get", key, None, PUT_DEADLINE_S)
        return body if status == 200 else None

    async def leader(self) -> int:
        """The member that claims leadership with the highest term, or -1."""
        statuses = await asyncio.gather(*(self._status(m) for m in range(MEMBERS)))
        best, best_term = -1, -1
        for member, st in enumerate(statuses):
            if st is not None and st["is_leader"] and st["term"] > best_term:
                best, best_term = member, st["term"]
        self._leader = best
        return best

    async def lease_grant(self, ttl_s: int) -> int:
        """PySyncObj has no leases."""
        raise NotImplementedError("pysyncobj has no leases")

    async def lease_keepalive(self, lease_id: int) -> None:
        """PySyncObj has no leases."""
        raise NotImplementedError("pysyncobj has no leases")

    async def lease_ids(self) -> set[int]:
        """PySyncObj has no leases."""
        raise NotImplementedError("pysyncobj has no leases")

    async def embedded_rate(self, seconds: float, base_dir: Path) -> float | None:
        """Pipelined commits per second of three in-process ``SyncObj`` nodes.

        The nodes use the member configuration (journal and dump files under
        ``base_dir``) on loopback ports. One thread submits replicated puts on the
        leader with a callback, keeping at most ``EMBEDDED_WINDOW`` in flight, for
        ``seconds``; successful callbacks received in that time are counted.
        """
        ensure_pysyncobj()
        timeout_ms = self._election_timeout_ms or 300
        return await asyncio.to_thread(
            _embedded_rate_blocking, seconds, base_dir, timeout_ms, self._conf_overrides
        )

    # ------------------------------------------------------------------ helpers

    def _spawn(self, member: int) -> None:
        assert self._base_dir is not None
        addrs = [f"127.0.0.1:{p}" for p in self._raft_ports]
        data_dir = self._base_dir / f"member{member}"
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.compare.pysyncobj_member",
            "--self",
            addrs[member],
            "--partners",
            *[a for i, a in enumerate(addrs) if i != member],
            "--http-port",
            str(self._http_ports[member]),
            "--data-dir",
            str(data_dir),
            "--election-timeout-ms",
            str(self._election_timeout_ms),
        ]
        if self._conf_overrides:
            cmd += ["--conf-json", json.dumps(self._conf_overrides)]
        old_log = self._logs[member]
        if old_log is not None:
            old_log.close()
        log = open(self._base_dir / f"member{member}.log", "ab")  # noqa: SIM115
        self._logs[member] = log
        self._procs[member] = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("PySyncObjSystem is not started")
        return self._session

    def _url(self, member: int, path: str) -> str:
        return f"http://127.0.0.1:{self._http_ports[member]}{path}"

    def _member_of(self, addr: str | None) -> int:
        if addr is None:
            return -1
        for member, port in enumerate(self._raft_ports):
            if addr == f"127.0.0.1:{port}":
                return member
        return -1

    def _running(self, member: int) -> bool:
        proc = self._procs[member]
        return proc is not None and proc.poll() is None

    async def _status(self, member: int) -> dict[str, Any] | None:
        if not self._running(member):
            return None
        session = self._require_session()
        try:
            async with session.get(
                self._url(member, "/status"),
                timeout=aiohttp.ClientTimeout(total=STATUS_TIMEOUT_S),
            ) as resp:
                if resp.status != 200:
                    return None
                data: dict[str, Any] = await resp.json()
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def _current_leader(self) -> int:
        if self._leader >= 0 and self._running(self._leader):
            return self._leader
        return await self.leader()

    async def _put(self, key: str, value: bytes, deadline_s: float) -> None:
        await self._on_leader("put", key, value, deadline_s)

    async def _on_leader(
        self, method: str, key: str, value: bytes | None, deadline_s: float
    ) -> tuple[int, bytes]:
        """``method`` on ``/kv/key`` of the current leader, retried across failovers until
        it answers 200 (or 404 for a read) or ``deadline_s`` passes."""
        session = self._require_session()
        deadline = time.monotonic() + deadline_s
        last_error = "no leader"
        while True:
            lead = await self._current_leader()
            if lead >= 0:
                try:
                    url = self._url(lead, f"/kv/{key}")
                    async with session.request(method.upper(), url, data=value) as resp:
                        body = await resp.read()
                        if resp.status == 200 or (method == "get" and resp.status == 404):
                            return resp.status, body
                        last_error = f"HTTP {resp.status}: {body.decode(errors='replace')}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last_error = repr(exc)
                self._leader = -1
            if time.monotonic() >= deadline:
                raise RuntimeError(f"pysyncobj {method} {key!r} failed: {last_error}")
            await asyncio.sleep(RETRY_BACKOFF_S)


def _embedded_rate_blocking(
    seconds: float,
    base_dir: Path,
    election_timeout_ms: int,
    overrides: Mapping[str, Any],
) -> float:
    # Imported here: the member module needs pysyncobj at import time.
    from pysyncobj import FAIL_REASON  # type: ignore[import-untyped]

    from benchmarks.compare.pysyncobj_member import KVNode, make_conf

    base_dir.mkdir(parents=True, exist_ok=True)
    addrs = [f"127.0.0.1:{p}" for p in free_ports(MEMBERS)]
    # SyncObj's tick thread exits when the thread that built the node dies, so the nodes
    # are created, driven and destroyed by this one thread.
    nodes: list[KVNode] = []
    try:
        for i, addr in enumerate(addrs):
            conf = make_conf(base_dir / f"node{i}", election_timeout_ms, overrides)
            nodes.append(KVNode(addr, [a for a in addrs if a != addr], conf))
        leader = _wait_embedded_leader(nodes, timeout_s=30.0)

        window = threading.BoundedSemaphore(EMBEDDED_WINDOW)
        lock = threading.Lock()
        counts = {"ok": 0, "failed": 0}
        end = 0.0

        def done(_result: Any, reason: int) -> None:
            now = time.monotonic()
            with lock:
                if reason == FAIL_REASON.SUCCESS:
                    if now <= end:
                        counts["ok"] += 1
                else:
                    counts["failed"] += 1
            window.release()

        value = b"x" * 64
        start = time.monotonic()
        end = start + seconds
        i = 0
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            if not window.acquire(timeout=remaining):
                break
            leader.put(f"k{i % 10_000}", value, done)
            i += 1
        with lock:
            ok = counts["ok"]
        return ok / seconds
    finally:
        for node in nodes:
            node.destroy()


def _wait_embedded_leader(nodes: list[Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for node in nodes:
            if node.is_leader():
                st = node.status()
                if all(n.status()["leader"] == st["self"] for n in nodes):
                    return node
        time.sleep(0.02)
    raise TimeoutError("embedded pysyncobj cluster elected no leader")


__all__ = ["PySyncObjSystem", "ensure_pysyncobj"]
