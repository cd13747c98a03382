"""A whole failover site on one machine: MariaDB servers, BIND9 and three daemons.

Used by the daemon example, the failover benchmark and the soak: three ``hacoord mysql
daemon`` processes (each a coordinator member with a monitor and an orchestrator
candidate), a :class:`~hacoord.adapters.mysql.testbed.MariaDBTestBed`, and (when
``dns=True``) a BIND9 server the orchestrator updates by RFC 2136.

Every server listens on 127.0.0.1 with its own port, so DNS publishes a CNAME to a
per-server name (``db<N>.<zone>``); :meth:`LocalSite.port_of_name` maps it back to the
port, standing in for "every host listens on 3306".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hacoord.adapters.mysql.daemon_config import DaemonConfig, load_daemon_config
from hacoord.adapters.mysql.testbed import MariaDBTestBed
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster

ZONE = "db.test."
RECORD = "orders"
CLUSTER = "orders"


@dataclass
class SiteTimings:
    """The daemon's detection settings written into ``mysql.toml``."""

    probe_interval_s: float = 0.5
    probe_timeout_s: float = 1.0
    failures_to_confirm: int = 3
    block_period_s: float = 3600.0
    orchestrator_ttl_s: float = 3.0


@dataclass
class LocalSite:
    """Start with ``async with LocalSite(base) as site``; everything stops on leaving."""

    base: Path
    dns: bool = True
    timings: SiteTimings = field(default_factory=SiteTimings)
    election_timeout_ms: int = 500

    def __post_init__(self) -> None:
        self.bed = MariaDBTestBed(self.base / "mariadb")
        self.bind: Any = None
        self.coordinator: LocalCluster | None = None
        self.config_path = self.base / "mysql.toml"
        self.env: dict[str, str] = {}
        """The secrets the daemons read from their environment."""

    def name(self, index: int) -> str:
        """``host:port`` of MariaDB server ``index``."""
        s = self.bed.servers[index]
        return f"{s.host}:{s.port}"

    def dns_name(self, index: int) -> str:
        """The DNS name published for server ``index``."""
        return f"db{index}.{ZONE}"

    def port_of_name(self, dns_name: str) -> int:
        """The port of the server a DNS name stands for."""
        for i, s in enumerate(self.bed.servers):
            if self.dns_name(i) == dns_name:
                return s.port
        raise KeyError(f"no server is published as {dns_name}")

    async def __aenter__(self) -> LocalSite:
        self.base.mkdir(parents=True, exist_ok=True)
        await self.bed.start()
        try:
            env = self.env
            env["HACOORD_MYSQL_ADMIN_PW"] = self.bed.admin_password
            env["HACOORD_MYSQL_REPL_PW"] = self.bed.repl_password
            if self.dns:
                from hacoord.adapters.dns_testbed import Bind9TestServer

                self.bind = Bind9TestServer(self.base / "bind", zone=ZONE)
                await self.bind.start()
                env["HACOORD_TSIG_SECRET"] = self.bind.tsig_secret
            self.config_path.write_text(self._render_config())
            self.coordinator = LocalCluster(
                self.base / "coord",
                3,
                Timing(
                    heartbeat_ms=self.election_timeout_ms / 10,
                    election_timeout_ms=self.election_timeout_ms,
                ),
                command=("mysql", "daemon", "--mysql-config", str(self.config_path), "--member"),
                env=env,
            )
            self.coordinator.start()
            await self.coordinator.wait_for_leader()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the daemons, BIND9 and MariaDB."""
        if self.coordinator is not None:
            await self.coordinator.close()
        if self.bind is not None:
            await self.bind.stop()
        await self.bed.close()

    def daemon_config(self) -> DaemonConfig:
        """The daemons' configuration, as they load it."""
        return load_daemon_config(self.config_path, {**os.environ, **self.env})

    def endpoints(self) -> list[str]:
        """HTTP endpoints of the coordinator members."""
        assert self.coordinator is not None
        return self.coordinator.endpoints()

    def _render_config(self) -> str:
        t = self.timings
        hosts = ", ".join(f'{{ host = "{s.host}", port = {s.port} }}' for s in self.bed.servers)
        lines = [
            "[daemon]",
            f"probe_interval_s = {t.probe_interval_s}",
            f"probe_timeout_s = {t.probe_timeout_s}",
            f"failures_to_confirm = {t.failures_to_confirm}",
            f"block_period_s = {t.block_period_s}",
            f"orchestrator_ttl_s = {t.orchestrator_ttl_s}",
            "",
            "[[clusters]]",
            f'name = "{CLUSTER}"',
            f"hosts = [{hosts}]",
            f'admin_user = "{self.bed.admin_user}"',
            'admin_password_env = "HACOORD_MYSQL_ADMIN_PW"',
            f'replication_user = "{self.bed.repl_user}"',
            'replication_password_env = "HACOORD_MYSQL_REPL_PW"',
            "relay_log_wait_s = 10",
            "catch_up_wait_s = 10",
        ]
        if self.bind is not None:
            targets = ", ".join(
                f'"{self.name(i)}" = "{self.dns_name(i)}"' for i in range(len(self.bed.servers))
            )
            lines += [
                "",
                "[clusters.dns]",
                f'server = "{self.bind.host}"',
                f"port = {self.bind.port}",
                f'zone = "{ZONE}"',
                f'record = "{RECORD}"',
                "ttl = 5",
                f'tsig_name = "{self.bind.tsig_name}"',
                'tsig_secret_env = "HACOORD_TSIG_SECRET"',
                f"targets = {{ {targets} }}",
            ]
        return "\n".join(lines) + "\n"

    def describe(self) -> str:
        """One JSON line: the servers, DNS and coordinator endpoints."""
        return json.dumps(
            {
                "mysql": [self.name(i) for i in range(len(self.bed.servers))],
                "dns": f"{self.bind.host}:{self.bind.port}" if self.bind else None,
                "coordinator": self.endpoints(),
                "config": str(self.config_path),
                "pid": os.getpid(),
            }
        )
