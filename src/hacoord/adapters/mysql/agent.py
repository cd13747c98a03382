"""The agent beside each mysqld: reports the server's health into the coordinator.

Each report is a key bound to the agent's lease, so an agent that dies (or loses the
coordinator) disappears from the cluster when its lease expires: a missing agent is
visible, not silently stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from hacoord.adapters.mysql.config import ClusterConfig
from hacoord.adapters.mysql.keys import agents_prefix
from hacoord.adapters.mysql.server import MySQLServer
from hacoord.client.client import Client
from hacoord.client.leases import Lease

log = logging.getLogger("hacoord.adapters.mysql.agent")


def agent_key(cluster: str, host: str) -> str:
    """The key of ``host``'s agent report."""
    return agents_prefix(cluster) + host


async def health_report(server: MySQLServer, data_dir: Path | None) -> dict[str, Any]:
    """What the agent reports about its server (JSON-able)."""
    report: dict[str, Any] = {"host": server.name, "at": time.time()}
    if data_dir is not None:
        try:
            usage = shutil.disk_usage(data_dir)
            report["disk_used_pct"] = round(100 * usage.used / usage.total, 1)
        except OSError as e:
            report["disk_error"] = str(e)
    probe = await server.probe()
    if probe.state is None:
        return {**report, "up": False, "error": probe.error}
    s = probe.state
    report.update(up=True, read_only=s.read_only, executed=s.executed, server_id=s.server_id)
    if s.replica is not None:
        r = s.replica
        report["replication"] = {
            "source": f"{r.source_host}:{r.source_port}",
            "io_running": r.io_running,
            "sql_running": r.sql_running,
            "io_error": f"{r.io_errno}: {r.io_error}" if r.io_errno else "",
            "sql_error": f"{r.sql_errno}: {r.sql_error}" if r.sql_errno else "",
            "lag_s": r.seconds_behind,
            "received": r.received,
        }
    return report


class Agent:
    """Reports one server's health every ``interval_s`` under a lease of ``ttl_s``."""

    def __init__(
        self,
        client: Client,
        cluster: ClusterConfig,
        host: str,
        interval_s: float = 1.0,
        ttl_s: float | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.cluster = cluster
        self.server = MySQLServer(
            cluster.host(host), cluster.admin, cluster.dialect, cluster.connect_timeout_s
        )
        self.interval_s = interval_s
        self.ttl_s = ttl_s if ttl_s is not None else max(3.0, 3 * interval_s)
        self.data_dir = data_dir
        self.reports = 0

    async def run(self) -> None:
        """Report until cancelled; a lost lease is replaced by a new one."""
        key = agent_key(self.cluster.name, self.server.name)
        lease: Lease | None = None
        try:
            while True:
                if lease is None or lease.is_lost:
                    lease = await self.client.grant(self.ttl_s)
                report = await health_report(self.server, self.data_dir)
                await self.client.put(key, json.dumps(report).encode(), lease=lease.id)
                self.reports += 1
                await asyncio.sleep(self.interval_s)  # the reporting period
        finally:
            if lease is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.client.revoke(lease.id))
