"""The monitor in every coordinator member: probes every server itself, reads the agents.

Each member publishes its own view (an observation, bound to its lease) so the
orchestrator can require that a *majority of members independently* failed to reach
a primary. The monitor also compares each agent's consecutive reports and raises
alerts for threshold breaches (lag, disk, broken replication, a missing agent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hacoord.adapters.mysql.config import ClusterConfig, Host
from hacoord.adapters.mysql.keys import agents_prefix, observers_prefix, read_entries
from hacoord.adapters.mysql.server import MySQLServer
from hacoord.adapters.observations import LeasedReports
from hacoord.client.client import Client

log = logging.getLogger("hacoord.adapters.mysql.monitor")


def observer_key(cluster: str, member: str) -> str:
    """The key of ``member``'s observation of ``cluster``."""
    return observers_prefix(cluster) + member


def agent_alerts(
    cfg: ClusterConfig, previous: Mapping[str, Any] | None, current: Mapping[str, Any] | None
) -> list[str]:
    """Alerts from one agent's consecutive reports (``None``: no report)."""
    if current is None:
        return ["agent report missing (agent down or cut off)"] if previous is not None else []
    alerts = []
    if not current.get("up", False):
        alerts.append(f"mysqld down: {current.get('error', '')}")
    repl = current.get("replication") or {}
    if repl.get("sql_error"):
        alerts.append(f"replication broken: {repl['sql_error']}")
    elif repl and not repl.get("io_running", True):
        alerts.append(f"replication IO thread not running: {repl.get('io_error', '')}")
    lag = repl.get("lag_s")
    if lag is not None and lag > cfg.max_lag_s:
        alerts.append(f"replication lag {lag} s above {cfg.max_lag_s} s")
    disk = current.get("disk_used_pct")
    if disk is not None and disk > cfg.max_disk_pct:
        alerts.append(f"disk {disk}% used, above {cfg.max_disk_pct}%")
    if previous is not None and previous.get("read_only") != current.get("read_only"):
        alerts.append(
            f"read_only changed {previous.get('read_only')} -> {current.get('read_only')}"
        )
    return alerts


@dataclass
class _HostState:
    up: bool = True
    failures: int = 0
    error: str = ""


class Monitor:
    """Probes each cluster's servers every ``interval_s`` and publishes what it saw.

    ``probe_addresses`` maps a host (``host:port``) to the address this member
    actually dials, for members that reach servers through another path (and for
    tests that put a fault proxy in between).
    """

    def __init__(
        self,
        client: Client,
        clusters: list[ClusterConfig],
        member: str,
        interval_s: float = 1.0,
        probe_timeout_s: float = 1.0,
        ttl_s: float | None = None,
        probe_addresses: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        self.client = client
        self.clusters = clusters
        self.member = member
        self.interval_s = interval_s
        self.probe_timeout_s = probe_timeout_s
        self.ttl_s = ttl_s if ttl_s is not None else max(3.0, 3 * interval_s)
        self.probe_addresses = dict(probe_addresses or {})
        self.rounds = 0
        self.views: dict[str, dict[str, _HostState]] = {c.name: {} for c in clusters}
        self.alerts: dict[str, dict[str, list[str]]] = {c.name: {} for c in clusters}
        self._agents: dict[str, dict[str, Any]] = {c.name: {} for c in clusters}
        self._round_done = asyncio.Condition()

    def _server(self, cfg: ClusterConfig, host: Host) -> MySQLServer:
        dial = self.probe_addresses.get(host.name)
        target = Host(*dial, host.promotion) if dial else host
        return MySQLServer(target, cfg.admin, cfg.dialect, self.probe_timeout_s)

    async def _probe(self, cfg: ClusterConfig, host: Host) -> tuple[bool, str]:
        server = self._server(cfg, host)
        try:
            async with asyncio.timeout(self.probe_timeout_s * 2):
                await server.query("SELECT 1")
            return True, ""
        except Exception as e:
            return False, str(e) or type(e).__name__

    async def probe_round(self) -> None:
        """Probe every server once, update the views and alerts, publish changes."""
        for cfg in self.clusters:
            results = await asyncio.gather(*(self._probe(cfg, h) for h in cfg.hosts))
            view = self.views[cfg.name]
            for host, (up, error) in zip(cfg.hosts, results, strict=True):
                state = view.setdefault(host.name, _HostState())
                state.up, state.error = up, error
                state.failures = 0 if up else state.failures + 1
            await self._check_agents(cfg)
        self.rounds += 1
        async with self._round_done:
            self._round_done.notify_all()

    async def _check_agents(self, cfg: ClusterConfig) -> None:
        reports = await read_entries(self.client, agents_prefix(cfg.name), linearizable=False)
        previous = self._agents[cfg.name]
        alerts: dict[str, list[str]] = {}
        for host in cfg.host_names():
            found = agent_alerts(cfg, previous.get(host), reports.get(host))
            if found:
                alerts[host] = found
            if found != self.alerts[cfg.name].get(host, []):
                for alert in found:
                    log.warning("%s %s: %s", cfg.name, host, alert)
        self.alerts[cfg.name] = alerts
        self._agents[cfg.name] = reports

    def observation(self, cluster: str) -> dict[str, Any]:
        """This member's current view of ``cluster`` (the published form)."""
        return {
            "member": self.member,
            "hosts": {
                name: {"up": s.up, "failures": s.failures, "error": s.error}
                for name, s in self.views[cluster].items()
            },
            "alerts": self.alerts[cluster],
        }

    async def wait_rounds(self, count: int) -> None:
        """Wait until ``count`` more probe rounds have completed (for callers and tests)."""
        target = self.rounds + count
        async with self._round_done:
            await self._round_done.wait_for(lambda: self.rounds >= target)

    async def run(self) -> None:
        """Probe and publish until cancelled."""
        reports = LeasedReports(self.client, self.ttl_s)
        try:
            while True:
                started = time.monotonic()
                await self.probe_round()
                for cfg in self.clusters:
                    await reports.publish(
                        observer_key(cfg.name, self.member), self.observation(cfg.name)
                    )
                elapsed = time.monotonic() - started
                await asyncio.sleep(max(0.0, self.interval_s - elapsed))  # the probe period
        finally:
            await reports.close()
