"""etcd 3.4 as a :class:`~benchmarks.compare.system.System` under comparison.

Three ``etcd`` processes (the Debian ``etcd-server`` package) run on 127.0.0.1 with
fsync on, and the benchmark drives them through etcd's v3 JSON gateway (HTTP/JSON,
base64 keys and values) over one shared ``aiohttp`` session. Requests go round-robin
to the running members; followers forward writes to the leader themselves.

Gateway calls used (etcd 3.4 serves them under ``/v3/``, all ``POST``):

* ``/v3/kv/put`` ``{"key": b64, "value": b64}``
* ``/v3/kv/range`` ``{"key": b64}`` (linearizable unless ``serializable`` is set)
* ``/v3/lease/grant`` ``{"TTL": n, "ID": id}``
* ``/v3/lease/keepalive`` ``{"ID": id}`` (a stream; one ``{"result": ...}`` line back)
* ``/v3/lease/leases`` ``{}``
* ``/v3/maintenance/status`` ``{}`` (``leader`` and ``header.member_id``)

64-bit ids travel as JSON strings and are converted to ``int`` here.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from hacoord.server.local_cluster import free_ports

__all__ = ["ETCD_PACKAGE", "EtcdSystem", "ensure_etcd"]

ETCD_PACKAGE = "etcd-server"
"""Debian package that provides ``/usr/bin/etcd`` (3.4.23 on bookworm)."""

MEMBERS = 3
REQUEST_TIMEOUT_S = 2.0
RETRY_WINDOW_S = 10.0
RETRY_BACKOFF_S = 0.02
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
PROBE_TIMEOUT_S = 5.0
PROBE_INTERVAL_S = 0.05
CONNECTION_LIMIT = 512

_T = TypeVar("_T")


def ensure_etcd() -> str:
    """Return the path of the ``etcd`` binary, installing ``etcd-server`` via apt if needed.

    Raises :class:`RuntimeError` when etcd is missing and cannot be installed (no
    ``apt-get``, not root, no network, ...). The package's own systemd unit is never
    used; :class:`EtcdSystem` starts its own processes on free ports.
    """
    found = shutil.which("etcd")
    if found is not None:
        return found
    if shutil.which("apt-get") is None:
        raise RuntimeError(
            f"etcd is not installed and apt-get is unavailable to install {ETCD_PACKAGE}"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    steps = (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", ETCD_PACKAGE],
    )
    for step in steps:
        try:
            done = subprocess.run(
                step, env=env, capture_output=True, text=True, timeout=900, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"could not install etcd: {' '.join(step)} failed: {exc}") from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()[-2000:]
            raise RuntimeError(
                f"could not install etcd: {' '.join(step)} exited {done.returncode}: {detail}"
            )
    found = shutil.which("etcd")
    if found is None:
        raise RuntimeError(f"installed {ETCD_PACKAGE} but no etcd binary is on PATH")
    return found


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Transient(Exception):
    """A request that may succeed when repeated (connection failure, timeout, 5xx, 429)."""


class _Rejected(RuntimeError):
    """etcd answered with a client error (4xx); repeating the request will not help."""

    def __init__(self, path: str, status: int, body: str) -> None:
        super().__init__(f"etcd {path} -> HTTP {status}: {body.strip()[:500]}")
        self.status = status
        self.body = body


class EtcdSystem:
    """A 3-member etcd 3.4 cluster on 127.0.0.1, driven over the v3 JSON gateway."""

    name: str = "etcd"
    supports_leases: bool = True

    def __init__(
        self, binary: str | None = None, request_timeout_s: float = REQUEST_TIMEOUT_S
    ) -> None:
        """Use ``binary`` as the etcd executable, or find/install it on :meth:`start`.

        ``request_timeout_s`` bounds each HTTP request; a write that reached a member
        just as the leader died is only retried once this expires.
        """
        self._binary = binary
        self._request_timeout_s = request_timeout_s
        self._base_dir: Path | None = None
        self._election_timeout_ms = 0
        self._heartbeat_ms = 0
        self._token = ""
        self._client_ports: list[int] = []
        self._peer_ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * MEMBERS
        self._member_of_id: dict[int, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._rr = itertools.count()
        # Members that answered a request since they were last launched. A booting etcd
        # accepts connections before it serves them, so requests sent there would hang.
        self._ready: set[int] = set()
        self._probes: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, base_dir: Path, election_timeout_ms: int) -> None:
        """Start three etcd members in ``base_dir`` and return once a leader serves writes."""
        heartbeat_ms = max(10, election_timeout_ms // 6)
        if election_timeout_ms < 5 * heartbeat_ms:
            raise ValueError(
                f"etcd needs election timeout >= 5x heartbeat; {election_timeout_ms} ms is "
                f"too short for a {heartbeat_ms} ms heartbeat"
            )
        if self._session is not None:
            raise RuntimeError("EtcdSystem already started")
        if self._binary is None:
            self._binary = await asyncio.to_thread(ensure_etcd)
        self._base_dir = Path(base_dir)
        self._base_dir.mkdir(parents=True, exist_ok=True)
        self._election_timeout_ms = election_timeout_ms
        self._heartbeat_ms = heartbeat_ms
        ports = free_ports(2 * MEMBERS)
        self._client_ports = ports[:MEMBERS]
        self._peer_ports = ports[MEMBERS:]
        self._token = f"hacoord-bench-{os.getpid()}-{secrets.token_hex(4)}"
        self._member_of_id = {}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTION_LIMIT),
            timeout=aiohttp.ClientTimeout(total=self._request_timeout_s),
        )
        try:
            for member in range(MEMBERS):
                self._launch(member)
            await self._await_ready()
        except BaseException:
            await self.stop()
            raise

    async def _await_ready(self) -> None:
        """Learn every member's id, then wait for a write to commit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        last: BaseException | None = None
        while loop.time() < deadline:
            self._check_alive_during_start()
            if len(self._member_of_id) < MEMBERS:
                # Members that are still booting hang rather than refuse, so ask all at once.
                await self._statuses(PROBE_TIMEOUT_S)
            if len(self._member_of_id) == MEMBERS:
                try:
                    await self._post(
                        next(self._rr) % MEMBERS,
                        "/v3/kv/put",
                        {"key": _b64(b"__bench_ready__"), "value": _b64(b"1")},
                        self._request_timeout_s,
                    )
                    return
                except (_Transient, _Rejected) as exc:
                    last = exc
            await asyncio.sleep(PROBE_INTERVAL_S)
        raise TimeoutError(
            f"etcd cluster not serving writes within {START_TIMEOUT_S:.0f}s "
            f"(member ids known: {len(self._member_of_id)}, last error: {last}); "
            f"logs in {self._base_dir}"
        )

    def _check_alive_during_start(self) -> None:
        for member, proc in enumerate(self._procs):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"etcd member m{member} exited with {proc.returncode} during start:\n"
                    f"{self._log_tail(member)}"
                )

    async def stop(self) -> None:
        """SIGTERM every member, SIGKILL those still up after 5 s, and close the session.

        Members are stopped one at a time, leader first. A stopping etcd leader hands
        leadership to a connected follower before exiting; when its followers are
        stopping at the same time that handover hangs until etcd's own request timeout
        (about 5 s), whereas with a live follower it finishes within a few heartbeats.
        """
        for task in list(self._probes):
            task.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE_S
        while loop.time() < deadline:
            running = [m for m in range(MEMBERS) if self._running(m)]
            if not running:
                break
            member = await self.leader() if self._session is not None else -1
            proc = self._procs[member if member in running else running[0]]
            assert proc is not None
            proc.send_signal(signal.SIGTERM)
            while loop.time() < deadline and proc.poll() is None:
                await asyncio.sleep(0.02)
        for proc in self._procs:
            if proc is None:
                continue
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self._procs = [None] * MEMBERS
        self._ready.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def kill(self, member: int) -> None:
        """SIGKILL one member and reap it."""
        proc = self._procs[member]
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._procs[member] = None
        self._ready.discard(member)

    def restart(self, member: int) -> None:
        """Start a stopped member again with the same command line and data directory.

        etcd ignores the ``--initial-cluster*`` flags once its data directory holds a
        WAL, so the original command rejoins the existing cluster. Requests are routed
        to the member again once it answers; when called inside a running event loop a
        background probe finds out when that is.
        """
        if self._running(member):
            proc = self._procs[member]
            assert proc is not None
            raise RuntimeError(f"etcd member m{member} is already running (pid {proc.pid})")
        self._launch(member)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: leader()/wait_healthy() mark the member ready later
        task = loop.create_task(self._probe_until_ready(member))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe_until_ready(self, member: int) -> None:
        """Poll a (re)started member's status until it serves requests or exits."""
        while self._running(member) and member not in self._ready and self._session is not None:
            try:
                await self._post(member, "/v3/maintenance/status", {}, PROBE_TIMEOUT_S)
            except (_Transient, _Rejected):
                await asyncio.sleep(PROBE_INTERVAL_S)

    def pid(self, member: int) -> int | None:
        """PID of a member's etcd process, or None when it is not running."""
        proc = self._procs[member]
        if proc is None or proc.poll() is not None:
            return None
        return proc.pid

    # -- process handling ------------------------------------------------------------

    def _command(self, member: int) -> list[str]:
        assert self._binary is not None and self._base_dir is not None
        client = f"http://127.0.0.1:{self._client_ports[member]}"
        peer = f"http://127.0.0.1:{self._peer_ports[member]}"
        cluster = ",".join(
            f"m{i}=http://127.0.0.1:{port}" for i, port in enumerate(self._peer_ports)
        )
        return [
            self._binary,
            "--name",
            f"m{member}",
            "--data-dir",
            str(self._base_dir / f"etcd-m{member}"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            self._token,
            "--election-timeout",
            str(self._election_timeout_ms),
            "--heartbeat-interval",
            str(self._heartbeat_ms),
            "--logger",
            "zap",
            "--log-level",
            "error",
        ]

    def _log_path(self, member: int) -> Path:
        assert self._base_dir is not None
        return self._base_dir / f"etcd-m{member}.log"

    def _log_tail(self, member: int) -> str:
        try:
            return self._log_path(member).read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def _launch(self, member: int) -> None:
        # Flags win over ETCD_* variables, but etcd still complains about them; drop them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        self._ready.discard(member)
        with self._log_path(member).open("ab") as log:
            self._procs[member] = subprocess.Popen(
                self._command(member),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def _running(self, member: int) -> bool:
        proc = self._procs[member]
        return proc is not None and proc.poll() is None

    def _next_member(self) -> int | None:
        """Round-robin over running members that serve requests (any running one if none)."""
        running = [m for m in range(MEMBERS) if self._running(m)]
        serving = [m for m in running if m in self._ready] or running
        if not serving:
            return None
        return serving[next(self._rr) % len(serving)]

    # -- HTTP ------------------------------------------------------------------------

    async def _post(
        self, member: int, path: str, body: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        """One gateway call to one member; the JSON reply (the first line of a stream)."""
        if self._session is None:
            raise RuntimeError("EtcdSystem is not started")
        url = f"http://127.0.0.1:{self._client_ports[member]}{path}"
        try:
            async with self._session.post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                status = resp.status
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Transient(f"{url}: {type(exc).__name__}: {exc}") from exc
        if status >= 500 or status == 429:
            raise _Transient(f"{url} -> HTTP {status}: {text.strip()[:300]}")
        if status != 200:
            raise _Rejected(path, status, text)
        first = next((line for line in text.splitlines() if line.strip()), "")
        try:
            reply = json.loads(first)
        except ValueError as exc:
            raise _Transient(f"{url}: unreadable reply {first[:300]!r}") from exc
        if not isinstance(reply, dict):
            raise _Transient(f"{url}: unexpected reply {first[:300]!r}")
        self._ready.add(member)
        return reply

    async def _with_retries(self, what: str, attempt: Callable[[int, float], Awaitable[_T]]) -> _T:
        """Run ``attempt(member, timeout)`` on running members until it succeeds.

        Transient failures move on to the next member after a short back-off; after
        10 s without success a :class:`RuntimeError` is raised.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_WINDOW_S
        last: BaseException | None = None
        while True:
            remaining = deadline - loop.time()
            member = self._next_member()
            if member is not None and remaining > 0:
                try:
                    return await attempt(member, min(self._request_timeout_s, remaining))
                except _Transient as exc:
                    last = exc
            elif member is None:
                last = RuntimeError("no etcd member is running")
            if loop.time() + RETRY_BACKOFF_S >= deadline:
                raise RuntimeError(
                    f"etcd {what} failed for {RETRY_WINDOW_S:.0f}s: {last}"
                ) from last
            await asyncio.sleep(RETRY_BACKOFF_S)

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async def attempt(member: int, timeout_s: float) -> dict[str, Any]:
            return await self._post(member, path, body, timeout_s)

        return await self._with_retries(path, attempt)

    # -- key/value -------------------------------------------------------------------

    async def put(self, key: str, value: bytes) -> None:
        """Commit ``key = value``, retrying across failures for up to 10 s."""
        await self._call("/v3/kv/put", {"key": _b64(key.encode()), "value": _b64(value)})

    async def get(self, key: str) -> bytes | None:
        """Linearizable read of ``key`` (None when absent), retried like :meth:`put`."""
        reply = await self._call("/v3/kv/range", {"key": _b64(key.encode())})
        kvs = reply.get("kvs") or []
        if not kvs:
            return None
        # proto3 JSON leaves out empty fields, so an empty value has no "value" at all.
        return base64.b64decode(kvs[0].get("value", ""))

    # -- leadership ------------------------------------------------------------------

    async def _statuses(
        self, timeout_s: float = 1.0, members: Sequence[int] = tuple(range(MEMBERS))
    ) -> list[dict[str, Any] | None]:
        """Running ``members``' statuses, asked concurrently (None where none came)."""

        async def one(member: int) -> dict[str, Any] | None:
            if not self._running(member):
                return None
            try:
                status = await self._post(member, "/v3/maintenance/status", {}, timeout_s)
            except (_Transient, _Rejected):
                return None
            self._member_of_id[int(status["header"]["member_id"])] = member
            return status

        return list(await asyncio.gather(*(one(m) for m in members)))

    async def leader(self) -> int:
        """The leader's member number as reported by the running members, or -1.

        When members disagree, the report from the highest raft term wins; a leader
        whose process is not running counts as unknown. A restarted member that does
        not serve requests yet is not asked (it would only stall the answer).
        """
        running = [m for m in range(MEMBERS) if self._running(m)]
        asked = [m for m in running if m in self._ready] or running
        best_term = -1
        best = -1
        for status in await self._statuses(members=asked):
            if status is None:
                continue
            leader_id = int(status.get("leader", 0))
            term = int(status.get("raftTerm", 0))
            member = self._member_of_id.get(leader_id, -1)
            # A report naming a member we killed is stale: no live leader is known yet.
            if member >= 0 and self._running(member) and term > best_term:
                best_term = term
                best = member
        return best

    async def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Return once all three members run and report the same known leader."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        seen: list[int] = []
        while loop.time() < deadline:
            if all(self._running(m) for m in range(MEMBERS)):
                statuses = await self._statuses()
                seen = [int(s.get("leader", 0)) if s else 0 for s in statuses]
                if seen[0] != 0 and seen[0] in self._member_of_id and len(set(seen)) == 1:
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError(
            f"etcd not healthy within {timeout_s:.0f}s (running "
            f"{[self._running(m) for m in range(MEMBERS)]}, leaders seen {seen}); "
            f"logs in {self._base_dir}"
        )

    # -- leases ----------------------------------------------------------------------

    async def lease_grant(self, ttl_s: int) -> int:
        """Grant a lease of ``ttl_s`` seconds and return its id.

        The id is chosen here, so a retry after an ambiguous failure cannot create a
        second lease: "lease already exists" on a retry means the first try committed.
        """
        lease_id = secrets.randbits(62) + 1
        tries = 0

        async def attempt(member: int, timeout_s: float) -> int:
            nonlocal tries
            tries += 1
            body = {"ID": str(lease_id), "TTL": ttl_s}
            try:
                reply = await self._post(member, "/v3/lease/grant", body, timeout_s)
            except _Rejected as exc:
                if tries > 1 and "lease already exists" in exc.body:
                    return lease_id
                raise
            if reply.get("error"):
                raise _Transient(f"lease grant: {reply['error']}")
            return int(reply["ID"])

        return await self._with_retries("/v3/lease/grant", attempt)

    async def lease_keepalive(self, lease_id: int) -> None:
        """Renew a lease once; RuntimeError when etcd no longer knows the lease."""

        async def attempt(member: int, timeout_s: float) -> int:
            reply = await self._post(
                member, "/v3/lease/keepalive", {"ID": str(lease_id)}, timeout_s
            )
            if "error" in reply:
                raise _Transient(f"lease keepalive: {reply['error']}")
            return int(reply.get("result", {}).get("TTL", 0))

        ttl = await self._with_retries("/v3/lease/keepalive", attempt)
        if ttl <= 0:
            raise RuntimeError(f"etcd lease {lease_id} does not exist (expired or revoked)")

    async def lease_ids(self) -> set[int]:
        """Ids of the leases the cluster holds now, as the leader knows them.

        etcd answers this from the asked member's own lessor (not linearizable): a
        member restarted a moment ago may not have applied the latest grants yet.
        """
        leader = await self.leader()
        if leader >= 0:
            try:
                reply = await self._post(leader, "/v3/lease/leases", {}, self._request_timeout_s)
            except _Transient:
                reply = await self._call("/v3/lease/leases", {})
        else:
            reply = await self._call("/v3/lease/leases", {})
        return {int(lease["ID"]) for lease in reply.get("leases") or []}

    # -- misc ------------------------------------------------------------------------

    async def embedded_rate(self, seconds: float, base_dir: Path) -> float | None:
        """etcd has no in-process mode here, so there is no embedded rate."""
        return None
