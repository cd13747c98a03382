"""Changes to an HA group's topology, made only by the holder of the group's control election.

:class:`TopologyControl` is the small, fenced core of the control plane: it publishes the
first topology and then each change (promote a primary, mark a cluster down or up, drain or
undrain it) as a new version under its fencing token. The watchdog and the control plane's
workflows build on it; tests and operators may use it directly.
"""

from __future__ import annotations

import contextlib

from hacoord.adapters.kafka.config import GroupConfig, Mode
from hacoord.adapters.kafka.errors import KafkaAdapterError
from hacoord.adapters.kafka.topology import (
    ClusterState,
    Topology,
    control_election,
    publish_topology,
    read_topology,
)
from hacoord.client.client import Client
from hacoord.client.election import Leadership


class TopologyControl:
    """Writes ``config``'s topology while holding the group's control election."""

    def __init__(self, client: Client, config: GroupConfig, instance: str = "control") -> None:
        self.client = client
        self.config = config
        self.instance = instance
        self.leadership: Leadership | None = None

    async def acquire(self, ttl_s: float = 5.0) -> Leadership:
        """Wait until this instance holds the control election."""
        election = self.client.election(control_election(self.config.name))
        self.leadership = await election.acquire(self.instance.encode(), ttl_s)
        return self.leadership

    async def release(self) -> None:
        """Give the control election up."""
        if self.leadership is not None:
            with contextlib.suppress(Exception):
                await self.leadership.resign()
            self.leadership = None

    async def __aenter__(self) -> TopologyControl:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    def _held(self) -> Leadership:
        if self.leadership is None:
            raise KafkaAdapterError(f"{self.config.name}: control election not held")
        return self.leadership

    async def current(self) -> Topology:
        """The published topology (publishing version 1 first if there is none)."""
        published = await read_topology(self.client, self.config.name)
        if published is not None:
            return published
        return await publish_topology(self._held(), Topology.initial(self.config))

    async def publish(self, topology: Topology) -> Topology:
        """Publish ``topology`` (a ``next`` of the current one) under the held token."""
        return await publish_topology(self._held(), topology)

    async def promote(self, cluster: str, reason: str = "") -> Topology:
        """Make ``cluster`` the primary (``primary`` mode only)."""
        if self.config.mode is not Mode.PRIMARY:
            raise KafkaAdapterError(
                f"{self.config.name}: promote needs mode 'primary' (the group is "
                f"{self.config.mode})"
            )
        self.config.cluster(cluster)
        current = await self.current()
        return await self.publish(current.promoted(cluster, reason or f"promote {cluster}"))

    async def mark(
        self,
        cluster: str,
        *,
        healthy: bool | None = None,
        writable: bool | None = None,
        reason: str = "",
    ) -> Topology:
        """Publish a version with ``cluster``'s health and/or writability changed."""
        self.config.cluster(cluster)
        current = await self.current()
        old = current.clusters[cluster]
        state = ClusterState(
            healthy=old.healthy if healthy is None else healthy,
            writable=old.writable if writable is None else writable,
            reason=reason,
        )
        return await self.publish(
            current.with_cluster(cluster, state, reason or f"{cluster}: {state}")
        )
