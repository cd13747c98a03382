"""The watchdog in every coordinator member: probes every cluster itself and publishes it.

Each member's watchdog writes one observation of the whole group (every cluster's up/down,
consecutive failures and the failed check) at ``observers/<member>``, bound to its own
lease, so the control plane can require that a majority of members *independently* saw a
cluster fail (:func:`hacoord.adapters.kafka.detect.judge`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hacoord.adapters.kafka.config import GroupConfig
from hacoord.adapters.kafka.keys import observers_prefix
from hacoord.adapters.kafka.probe import ClusterProbe, ProbeResult
from hacoord.adapters.observations import LeasedReports
from hacoord.client.client import Client

log = logging.getLogger(__name__)

DEFAULT_CANARY_TOPIC = "hacoord-canary"


def observer_key(group: str, member: str) -> str:
    """The key of ``member``'s observation of ``group``."""
    return observers_prefix(group) + member


@dataclass(slots=True)
class ClusterView:
    """This member's running view of one cluster."""

    up: bool = False
    failures: int = 0
    error: str = "not probed yet"
    checks: dict[str, str] = field(default_factory=dict)
    latency_s: float = 0.0
    probes: int = 0


class Watchdog:
    """Probes each cluster of ``config`` every ``interval_s`` and publishes what it saw.

    ``probe_via`` maps a cluster to the bootstrap servers this member dials instead of the
    configured ones (a member that reaches a cluster through another path, or a test that
    cuts one member off).
    """

    def __init__(
        self,
        client: Client,
        config: GroupConfig,
        member: str,
        interval_s: float = 1.0,
        probe_timeout_s: float = 2.0,
        canary_topic: str = DEFAULT_CANARY_TOPIC,
        ttl_s: float | None = None,
        probe_via: Mapping[str, str] | None = None,
    ) -> None:
        if interval_s <= 0 or probe_timeout_s <= 0:
            raise ValueError("watchdog interval_s and probe_timeout_s must be > 0")
        via = dict(probe_via or {})
        for name in via:
            config.cluster(name)
        self.client = client
        self.config = config
        self.member = member
        self.interval_s = interval_s
        self.ttl_s = ttl_s if ttl_s is not None else max(3.0, 3 * interval_s)
        self.probes = {
            c.name: ClusterProbe(
                c, canary_topic, probe_timeout_s, f"hacoord-watchdog-{member}", via.get(c.name)
            )
            for c in config.clusters
        }
        self.views = {c.name: ClusterView() for c in config.clusters}
        self.rounds = 0
        self._round_done = asyncio.Condition()

    async def probe_round(self) -> None:
        """Probe every cluster once (concurrently) and update the views."""
        results = await asyncio.gather(*(p.probe() for p in self.probes.values()))
        for name, result in zip(self.probes, results, strict=True):
            self._update(name, result)
        self.rounds += 1
        async with self._round_done:
            self._round_done.notify_all()

    def _update(self, cluster: str, result: ProbeResult) -> None:
        view = self.views[cluster]
        if view.probes and view.up != result.ok:
            level = logging.INFO if result.ok else logging.WARNING
            state = "reachable again" if result.ok else f"failing ({result.error})"
            log.log(level, "%s: %s sees %s %s", self.config.name, self.member, cluster, state)
        view.up, view.error, view.checks = result.ok, result.error, result.checks
        view.failures = 0 if result.ok else view.failures + 1
        view.latency_s = result.latency_s
        view.probes += 1

    def observation(self) -> dict[str, Any]:
        """This member's view of every cluster (the published form)."""
        return {
            "member": self.member,
            "hosts": {
                name: {
                    "up": v.up,
                    "failures": v.failures,
                    "error": v.error,
                    "checks": v.checks,
                }
                for name, v in self.views.items()
                if v.probes
            },
        }

    async def wait_rounds(self, count: int) -> None:
        """Wait until ``count`` more probe rounds have completed (for callers and tests)."""
        target = self.rounds + count
        async with self._round_done:
            await self._round_done.wait_for(lambda: self.rounds >= target)

    async def run(self) -> None:
        """Probe and publish until cancelled; the observation goes with the lease at the end."""
        reports = LeasedReports(self.client, self.ttl_s)
        key = observer_key(self.config.name, self.member)
        try:
            while True:
                started = time.monotonic()
                await self.probe_round()
                try:
                    await reports.publish(key, self.observation())
                except Exception as e:
                    log.warning("%s: cannot publish the observation (%s)", self.member, e)
                elapsed = time.monotonic() - started
                await asyncio.sleep(max(0.0, self.interval_s - elapsed))  # the probe period
        finally:
            await reports.close()
            for probe in self.probes.values():
                await probe.close()
