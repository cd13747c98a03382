"""What every member's watcher (the MySQL monitor, the Kafka watchdog) shares.

Each coordinator member probes the resources itself and publishes what it saw as an
:class:`Observation`, under a key bound to its own lease, so that a decision can require
that a *majority of members independently* failed to reach a resource, and a member that
dies stops counting once its lease expires. :class:`LeasedReports` is that publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hacoord.client.client import Client
from hacoord.client.leases import Lease


@dataclass(frozen=True, slots=True)
class HostView:
    """One member's latest view of one resource (a server, a cluster)."""

    up: bool
    failures: int = 0
    """Consecutive failed probes (0 when up)."""
    error: str = ""


@dataclass(frozen=True, slots=True)
class Observation:
    """One coordinator member's report: its view of every resource it probes."""

    member: str
    hosts: Mapping[str, HostView]

    def sees_down(self, host: str, failures_needed: int) -> bool:
        """Whether this member has failed to reach ``host`` enough times in a row."""
        view = self.hosts.get(host)
        return view is not None and not view.up and view.failures >= failures_needed

    def sees_up(self, host: str) -> bool:
        """Whether this member's last probe of ``host`` succeeded."""
        view = self.hosts.get(host)
        return view is not None and view.up


def observation_from_json(member: str, raw: Mapping[str, object]) -> Observation:
    """Rebuild an :class:`Observation` from its stored JSON form (``{"hosts": {...}}``)."""
    hosts = raw.get("hosts", {})
    if not isinstance(hosts, dict):
        raise ValueError(f"observation of {member}: 'hosts' must be a table")
    return Observation(
        member,
        {
            str(name): HostView(bool(v["up"]), int(v.get("failures", 0)), str(v.get("error", "")))
            for name, v in hosts.items()
        },
    )


async def read_reports(client: Client, prefix: str, linearizable: bool = True) -> dict[str, Any]:
    """The JSON values under ``prefix``, by the rest of their key (a host or a member)."""
    result = await client.range(prefix, prefix=True, linearizable=linearizable)
    return {kv.key[len(prefix) :]: json.loads(kv.value) if kv.value else {} for kv in result.kvs}


class LeasedReports:
    """Writes reports under keys bound to one lease, each only when it changed.

    The lease is granted on the first :meth:`publish` and again when it was lost (every
    key is then written anew); :meth:`close` revokes it, so the reports vanish at once
    instead of at the lease's expiry.
    """

    def __init__(self, client: Client, ttl_s: float) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._lease: Lease | None = None
        self._published: dict[str, bytes] = {}

    async def publish(self, key: str, report: Mapping[str, Any]) -> None:
        """Write ``report`` (as JSON) at ``key`` unless it is what was written last."""
        if self._lease is None or self._lease.is_lost:
            self._lease = await self.client.grant(self.ttl_s)
            self._published.clear()
        data = json.dumps(report, sort_keys=True).encode()
        if self._published.get(key) == data:
            return  # unchanged: the lease keeps the key alive
        await self.client.put(key, data, lease=self._lease.id)
        self._published[key] = data

    async def close(self) -> None:
        """Revoke the lease (best effort), removing every report."""
        lease, self._lease = self._lease, None
        if lease is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.client.revoke(lease.id))
