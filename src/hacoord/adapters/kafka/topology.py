"""The topology record: which clusters of an HA group are healthy and writable, and the primary.

One record per group, stored in hacoord at :func:`topology_key`. Its :attr:`Topology.version`
only grows, and every write carries the fencing token of the control plane that made it
(:func:`publish_topology` checks both inside one transaction), so a stale control plane can
never overwrite a newer topology. Clients (:class:`TopologyWatcher`) adopt a record only when
its version is higher than the one they hold, and switch at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from hacoord.adapters.fenced_record import publish_fenced
from hacoord.adapters.kafka.config import GroupConfig, Mode
from hacoord.adapters.kafka.errors import StaleTopologyError, UnknownClusterError
from hacoord.adapters.kafka.keys import KEY_PREFIX
from hacoord.client.client import Client
from hacoord.client.election import Leadership
from hacoord.coord.results import EventType

log = logging.getLogger(__name__)


def topology_key(group: str) -> str:
    """Where the topology record of ``group`` lives."""
    return f"{KEY_PREFIX}/{group}/topology"


def control_election(group: str) -> str:
    """The election whose holder alone writes ``group``'s topology."""
    return f"kafka/{group}/control"


@dataclass(frozen=True, slots=True)
class ClusterState:
    """What the control plane says of one cluster."""

    healthy: bool = True
    """Whether the cluster answers (consumers read every cluster regardless)."""
    writable: bool = True
    """Whether producers may write to it (``False``: drained)."""
    reason: str = ""
    """Why it is unhealthy or drained."""


@dataclass(frozen=True, slots=True)
class Topology:
    """One version of an HA group's topology."""

    group: str
    version: int
    mode: Mode
    clusters: Mapping[str, ClusterState]
    """Every cluster of the group, in configuration order."""
    primary: str = ""
    """The cluster producers write to in ``primary`` mode ('' in multi-primary mode)."""
    token: int = 0
    """The fencing token of the control plane that published it (0: never published)."""
    updated_at: float = field(default=0.0, compare=False)
    reason: str = ""
    """Why this version was made."""

    @staticmethod
    def initial(config: GroupConfig) -> Topology:
        """Version 1 of ``config``'s group: every cluster healthy and writable."""
        return Topology(
            group=config.name,
            version=1,
            mode=config.mode,
            clusters={name: ClusterState() for name in config.cluster_names},
            primary=config.primary if config.mode is Mode.PRIMARY else "",
            updated_at=time.time(),
            reason="initial topology",
        )

    def writable(self) -> list[str]:
        """The clusters producers may write to now, in preference order."""
        if self.mode is Mode.PRIMARY:
            state = self.clusters.get(self.primary)
            return [self.primary] if state is not None and state.writable else []
        return [n for n, s in self.clusters.items() if s.healthy and s.writable]

    def next(self, reason: str, **changes: Any) -> Topology:
        """The following version with ``changes`` made (fields of :class:`Topology`)."""
        return replace(
            self, version=self.version + 1, updated_at=time.time(), reason=reason, **changes
        )

    def with_cluster(self, name: str, state: ClusterState, reason: str) -> Topology:
        """The following version with cluster ``name`` in ``state``."""
        if name not in self.clusters:
            raise UnknownClusterError(name, list(self.clusters))
        clusters = dict(self.clusters)
        clusters[name] = state
        return self.next(reason, clusters=clusters)

    def promoted(self, name: str, reason: str) -> Topology:
        """The following version with ``name`` the primary (and writable)."""
        if name not in self.clusters:
            raise UnknownClusterError(name, list(self.clusters))
        clusters = dict(self.clusters)
        clusters[name] = ClusterState(healthy=True, writable=True)
        return self.next(reason, primary=name, clusters=clusters)

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps(
            {
                "group": self.group,
                "version": self.version,
                "mode": str(self.mode),
                "primary": self.primary,
                "token": self.token,
                "updated_at": self.updated_at,
                "reason": self.reason,
                "clusters": {
                    n: {"healthy": s.healthy, "writable": s.writable, "reason": s.reason}
                    for n, s in self.clusters.items()
                },
            },
            sort_keys=True,
        ).encode()

    @staticmethod
    def from_json(data: bytes) -> Topology:
        """Decode a stored record; ``ValueError`` names what is wrong."""
        try:
            raw = json.loads(data)
            return Topology(
                group=str(raw["group"]),
                version=int(raw["version"]),
                mode=Mode(raw["mode"]),
                primary=str(raw["primary"]),
                token=int(raw["token"]),
                updated_at=float(raw["updated_at"]),
                reason=str(raw["reason"]),
                clusters={
                    str(n): ClusterState(bool(s["healthy"]), bool(s["writable"]), str(s["reason"]))
                    for n, s in raw["clusters"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"not a topology record: {e!r}") from e


async def read_topology(client: Client, group: str) -> Topology | None:
    """The published topology of ``group`` (linearizable), or ``None``."""
    kv = await client.get(topology_key(group))
    return None if kv is None else Topology.from_json(kv.value)


async def publish_topology(leadership: Leadership, topology: Topology) -> Topology:
    """Publish ``topology`` under ``leadership``'s token; returns it as stored.

    Refused with :class:`StaleTopologyError` when the stored version is not older, and with
    :class:`~hacoord.workflow.FencedOutError` when a newer control plane wrote it or the
    leadership ended.
    """
    stored = replace(topology, token=leadership.token)
    key = topology_key(topology.group)

    def refuse_over(current_bytes: bytes) -> str | None:
        current = Topology.from_json(current_bytes)
        if current.token > stored.token:
            return (
                f"{key}: v{current.version} was published under a newer token "
                f"{current.token} (ours {stored.token})"
            )
        if current.version >= stored.version:
            raise StaleTopologyError(
                f"{key}: v{stored.version} is not newer than the stored v{current.version}"
            )
        return None

    await publish_fenced(
        leadership, key, stored.to_json(), refuse_over, f"topology/{topology.group}"
    )
    return stored


class TopologySource(Protocol):
    """Where producers and consumers learn the topology from."""

    @property
    def current(self) -> Topology:
        """The newest topology adopted."""
        ...

    async def newer_than(self, version: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a version above ``version``; whether one came."""
        ...


class StaticTopology:
    """A fixed topology, for producers and consumers run without a coordinator."""

    def __init__(self, topology: Topology) -> None:
        self._topology = topology

    @property
    def current(self) -> Topology:
        """The topology."""
        return self._topology

    async def newer_than(self, version: int, timeout: float) -> bool:
        """Never: a static topology does not change (waits ``timeout`` when asked)."""
        if self._topology.version > version:
            return True
        await asyncio.sleep(timeout)
        return False


class TopologyWatcher:
    """Follows a group's published topology; adopts only versions newer than its own.

    ``async with TopologyWatcher(client, group) as topology:`` reads the record (waiting
    for it to be published) and then watches it. :attr:`current` is always the highest
    version seen; an older record (a stale write, a lagging read) is counted in
    :attr:`stale_refused` and ignored.
    """

    def __init__(self, client: Client, group: str) -> None:
        self.client = client
        self.group = group
        self._current: Topology | None = None
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.stale_refused = 0
        """How many records older than the adopted one were seen and ignored."""

    @property
    def current(self) -> Topology:
        """The newest topology adopted (start the watcher first)."""
        if self._current is None:
            raise RuntimeError(f"topology of {self.group}: the watcher has not started")
        return self._current

    async def start(self, timeout: float = 30.0) -> None:
        """Begin watching; returns once a published topology has been adopted."""
        self._task = asyncio.create_task(self._follow(), name=f"topology-{self.group}")
        try:
            adopted = await self.newer_than(0, timeout)
        except BaseException:
            await self.close()
            raise
        if not adopted:
            await self.close()
            raise TimeoutError(
                f"topology of {self.group}: nothing published at {topology_key(self.group)} "
                f"within {timeout:.0f} s (is a control plane running?)"
            )

    async def close(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> TopologyWatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def adopt(self, topology: Topology) -> bool:
        """Take ``topology`` if it is newer than the current one; whether it was."""
        if topology.group != self.group:
            raise ValueError(
                f"topology of {topology.group!r} offered to the watcher of {self.group!r}"
            )
        if self._current is not None and topology.version <= self._current.version:
            if topology.version < self._current.version:
                self.stale_refused += 1
                log.warning(
                    "%s: ignored topology v%d, older than the adopted v%d",
                    self.group,
                    topology.version,
                    self._current.version,
                )
            return False
        self._current = topology
        async with self._changed:
            self._changed.notify_all()
        return True

    async def newer_than(self, version: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a version above ``version``; whether one came."""

        def newer() -> bool:
            return self._current is not None and self._current.version > version

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(newer)
        return newer()

    async def wait_for(self, predicate: Callable[[Topology], bool], timeout: float) -> Topology:
        """The adopted topology once ``predicate`` holds for it (at once if it does now);
        ``TimeoutError`` after ``timeout`` seconds."""

        def holds() -> bool:
            return self._current is not None and predicate(self._current)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(holds)
        return self.current

    async def _follow(self) -> None:
        key = topology_key(self.group)
        while True:
            try:
                result = await self.client.range(key)
                if result.kvs:
                    await self.adopt(Topology.from_json(result.kvs[0].value))
                async for event in self.client.watch(key, False, result.revision + 1):
                    if event.type is EventType.PUT:
                        await self.adopt(Topology.from_json(event.kv.value))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("%s: topology watch failed (%s); watching again", self.group, e)
                await asyncio.sleep(0.5)
