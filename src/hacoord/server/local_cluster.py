"""Run a cluster of ``hacoord serve`` processes on 127.0.0.1.

Used by ``hacoord demo``, the multi-process tests and the failover benchmark.
Every member is a real OS process with its own data directory, so SIGKILL,
SIGSTOP and restarts behave exactly as in production.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from hacoord.raft.timing import Timing
from hacoord.server.config_file import Member, ServerConfig, TlsFiles, render_config
from hacoord.testing.processes import wait_until_stopped
from hacoord.transport.tcp import make_ssl_contexts


def free_ports(count: int) -> list[int]:
    """Ports that were free on 127.0.0.1 a moment ago."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(slots=True)
class WriteResult:
    """Outcome of :meth:`LocalCluster.put`."""

    leader: int
    index: int


class LocalCluster:
    """``n`` member processes sharing a base directory; ids are 1..n."""

    def __init__(
        self,
        base_dir: Path,
        n: int = 3,
        timing: Timing | None = None,
        cluster_id: str = "local",
        snapshot_entries: int = 10_000,
        log_level: str = "INFO",
        raft_ports: dict[int, int] | None = None,
        peer_addresses: dict[tuple[int, int], tuple[str, int]] | None = None,
        tls: TlsFiles | None = None,
        command: Sequence[str] = ("serve", "--config"),
        env: Mapping[str, str] | None = None,
        event_loop: str = "auto",
    ) -> None:
        """``peer_addresses[(i, j)]`` overrides where member ``i`` dials member ``j``
        (tests put a fault-injecting proxy there). Each member runs ``python -m hacoord
        <command> <its config file>`` with ``env`` added to the environment, on the
        ``event_loop`` its file names."""
        self.base_dir = base_dir
        self.n = n
        self.timing = timing or Timing(heartbeat_ms=50, election_timeout_ms=500)
        self.cluster_id = cluster_id
        ports = free_ports(2 * n)
        self.members = {
            i: Member(
                i,
                ("127.0.0.1", (raft_ports or {}).get(i, ports[2 * (i - 1)])),
                ("127.0.0.1", ports[2 * (i - 1) + 1]),
            )
            for i in range(1, n + 1)
        }
        self.snapshot_entries = snapshot_entries
        self.log_level = log_level
        self.peer_addresses = dict(peer_addresses or {})
        self.tls = tls
        self.client_ssl: ssl.SSLContext | None = None
        if tls is not None:
            self.client_ssl = make_ssl_contexts(str(tls.ca), str(tls.cert), str(tls.key))[1]
        self.command = tuple(command)
        self.env = dict(env or {})
        self.event_loop = event_loop
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._session: aiohttp.ClientSession | None = None

    def config_path(self, nid: int) -> Path:
        """Where member ``nid``'s TOML file lives."""
        return self.base_dir / f"member{nid}.toml"

    def log_path(self, nid: int) -> Path:
        """Where member ``nid``'s log output goes."""
        return self.base_dir / f"member{nid}.log"

    def write_configs(self) -> None:
        """Lay out one TOML file and data directory per member."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for nid in self.members:
            view = {
                j: Member(j, self.peer_addresses.get((nid, j), m.raft), m.http)
                for j, m in self.members.items()
            }
            cfg = ServerConfig(
                cluster_id=self.cluster_id,
                node_id=nid,
                data_dir=self.base_dir / f"data{nid}",
                members=view,
                timing=self.timing,
                snapshot_entries=self.snapshot_entries,
                log_level=self.log_level,
                event_loop=self.event_loop,
                tls=self.tls,
            )
            self.config_path(nid).write_text(render_config(cfg))

    def add_member_process(self, nid: int) -> Member:
        """Lay out and start a new member that joins the running cluster.

        Its configuration lists the current members plus itself, with ``join = true``;
        the leader still has to add it (``hacoord member add``).
        """
        if nid in self.members:
            raise RuntimeError(f"member {nid} already exists")
        raft_port, http_port = free_ports(2)
        member = Member(nid, ("127.0.0.1", raft_port), ("127.0.0.1", http_port))
        self.members[nid] = member
        cfg = ServerConfig(
            cluster_id=self.cluster_id,
            node_id=nid,
            data_dir=self.base_dir / f"data{nid}",
            members=dict(self.members),
            timing=self.timing,
            snapshot_entries=self.snapshot_entries,
            log_level=self.log_level,
            event_loop=self.event_loop,
            tls=self.tls,
            join=True,
        )
        self.config_path(nid).write_text(render_config(cfg))
        self.start(nid)
        return member

    def start(self, nid: int | None = None) -> None:
        """Start one member (or all of them)."""
        if nid is None:
            self.write_configs()
            for i in self.members:
                self.start(i)
            return
        old = self.procs.get(nid)
        if old is not None and old.poll() is None:
            raise RuntimeError(f"member {nid} is already running (pid {old.pid})")
        out = self.log_path(nid).open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.procs[nid] = subprocess.Popen(
            [sys.executable, "-m", "hacoord", *self.command, str(self.config_path(nid))],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        out.close()

    def signal(self, nid: int, sig: int) -> None:
        """Send ``sig`` to member ``nid``; for SIGSTOP, return once it has stopped."""
        proc = self.procs[nid]
        proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            wait_until_stopped(proc.pid)

    def kill(self, nid: int) -> None:
        """SIGKILL member ``nid`` and reap it."""
        proc = self.procs[nid]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def running(self) -> list[int]:
        """Members whose process is alive."""
        return [i for i, p in self.procs.items() if p.poll() is None]

    async def close(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL after 5 s) and the HTTP session."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGCONT)
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------- HTTP

    def http(self) -> aiohttp.ClientSession:
        """The shared HTTP session (TLS-enabled when the cluster uses TLS)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=2),
                connector=aiohttp.TCPConnector(ssl=self.client_ssl or False),
            )
        return self._session

    def url(self, nid: int, path: str) -> str:
        """URL of ``path`` on member ``nid``'s HTTP API."""
        host, port = self.members[nid].http
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{port}{path}"

    def endpoints(self) -> list[str]:
        """``host:port`` of every member's HTTP API, for :func:`hacoord.connect`."""
        return [f"{m.http[0]}:{m.http[1]}" for m in self.members.values()]

    async def status(self, nid: int) -> dict[str, Any] | None:
        """``/status`` of a member, or None when it does not answer."""
        try:
            async with self.http().get(self.url(nid, "/status")) as resp:
                data: dict[str, Any] = await resp.json()
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def leader(self, exclude: set[int] | None = None) -> int:
        """The leader as seen by the running members (0 when none or disputed)."""
        seen = set()
        for nid in self.running():
            if exclude and nid in exclude:
                continue
            st = await self.status(nid)
            if st and st["role"] == "leader":
                seen.add((st["term"], nid))
        return max(seen)[1] if seen else 0

    async def wait_for_leader(self, timeout: float = 20.0, exclude: set[int] | None = None) -> int:
        """Poll until a running member reports itself leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = await self.leader(exclude)
            if leader:
                return leader
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no leader within {timeout:.0f}s; logs in {self.base_dir}")

    async def wait_in_sync(self, timeout: float = 20.0) -> int:
        """Poll until every member runs, follows one leader and has applied its commit
        index as it was when the wait began; returns the leader."""
        deadline = time.monotonic() + timeout
        target = -1
        while time.monotonic() < deadline:
            statuses = [await self.status(nid) for nid in self.members]
            if all(statuses):
                leaders = {st["leader"] for st in statuses if st}
                leader_status = [st for st in statuses if st and st["role"] == "leader"]
                if len(leaders) == 1 and len(leader_status) == 1:
                    if target < 0:
                        target = leader_status[0]["commit_index"]
                    if all(st and st["applied_index"] >= target for st in statuses):
                        return int(leader_status[0]["id"])
            await asyncio.sleep(0.02)
        raise TimeoutError(f"members not in sync within {timeout:.0f}s; logs in {self.base_dir}")

    async def put(self, key: str, value: str, timeout: float = 20.0) -> WriteResult:
        """Write through whichever member leads, following redirects and retrying."""
        deadline = time.monotonic() + timeout
        target = 0
        last_error = ""
        while time.monotonic() < deadline:
            running = self.running()
            candidates = [target] if target in running else running
            for nid in candidates:
                try:
                    async with self.http().put(
                        self.url(nid, f"/v1/kv/{key}"), data=value.encode()
                    ) as resp:
                        body = await resp.json()
                        if resp.status == 200:
                            return WriteResult(nid, int(body["index"]))
                        last_error = body.get("error", str(resp.status))
                        target = int(body.get("leader") or 0)
                        if target == nid:
                            target = 0
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    last_error = repr(exc)
                    target = 0
            await asyncio.sleep(0.01)
        raise TimeoutError(f"write of {key!r} not acknowledged in {timeout:.0f}s: {last_error}")

    async def get(self, nid: int, key: str, linearizable: bool = True) -> str | None:
        """Read ``key`` from member ``nid`` (None when absent)."""
        consistency = "linearizable" if linearizable else "serializable"
        async with self.http().get(
            self.url(nid, f"/v1/kv/{key}?consistency={consistency}")
        ) as resp:
            body = await resp.json()
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise RuntimeError(f"member {nid}: {body.get('error')}")
            value: str = body["value"]
            return value
