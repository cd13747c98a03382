"""The failover daemon: monitor + orchestrator (+ HTTP API) beside a coordinator member.

:class:`MySQLDaemon` runs on top of any :class:`~hacoord.client.Client`; the
``hacoord mysql daemon`` command (:func:`run_daemon`) embeds a full coordinator member
in the same process, so each of the three (or five) coordinator hosts runs one
process that is a Raft member, a monitor and an orchestrator candidate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

from hacoord.adapters.daemon_support import embedded_member, stop_tasks
from hacoord.adapters.mysql.adapter import MySQLAdapter
from hacoord.adapters.mysql.daemon_config import DaemonConfig, load_daemon_config
from hacoord.adapters.mysql.http_api import MySQLHttpApi
from hacoord.adapters.mysql.monitor import Monitor
from hacoord.adapters.mysql.orchestrator import Orchestrator
from hacoord.client.client import Client
from hacoord.server.serve import wait_for_termination

log = logging.getLogger("hacoord.adapters.mysql.daemon")


class MySQLDaemon:
    """The monitor, the orchestrator candidate and the HTTP API of one member."""

    def __init__(
        self,
        client: Client,
        config: DaemonConfig,
        member: str,
        members: int,
        probe_addresses: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.adapter = MySQLAdapter(config.clusters)
        self.monitor = Monitor(
            client,
            list(config.clusters),
            member,
            interval_s=config.probe_interval_s,
            probe_timeout_s=config.probe_timeout_s,
            probe_addresses=probe_addresses if probe_addresses is not None else config.probe_via,
        )
        self.orchestrator = Orchestrator(client, self.adapter, member, members, config.timings)
        self.http = MySQLHttpApi(client, self.adapter, self.monitor, self.orchestrator)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start monitoring, campaigning and (when configured) serving HTTP."""
        if self.config.http is not None:
            await self.http.start(*self.config.http)
        self._tasks = [
            asyncio.create_task(self.monitor.run(), name="mysql-monitor"),
            asyncio.create_task(self.orchestrator.run(), name="mysql-orchestrator"),
        ]

    async def stop(self) -> None:
        """Stop everything (the orchestrator resigns, leases are revoked)."""
        await stop_tasks(self._tasks)
        self._tasks = []
        await self.http.close()


async def run_daemon(member_config: Path, mysql_config: Path) -> None:
    """Run a coordinator member with the MySQL daemon until SIGTERM/SIGINT."""
    mysql = load_daemon_config(mysql_config)
    async with embedded_member(member_config) as (client, member, members):
        daemon = MySQLDaemon(client, mysql, member, members)
        await daemon.start()
        log.info("mysql daemon of %s: %d cluster(s)", member, len(mysql.clusters))
        try:
            await wait_for_termination()
        finally:
            await daemon.stop()
