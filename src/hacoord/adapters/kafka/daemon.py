"""The Kafka adapter daemon: watchdog + control plane (+ HTTP API, + produce proxy).

:class:`KafkaDaemon` runs on top of any :class:`~hacoord.client.Client`; the ``hacoord kafka
serve`` command (:func:`run_daemon`) embeds a full coordinator member in the same process, so
each of the three (or five) coordinator hosts runs one process that is a Raft member, a
watchdog and a control plane candidate. :func:`run_proxy` is a produce proxy on its own, of
which any number can run anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from hacoord.adapters.daemon_support import embedded_member, stop_tasks
from hacoord.adapters.kafka.config import GroupConfig
from hacoord.adapters.kafka.daemon_config import (
    KafkaDaemonConfig,
    ProxySettings,
    load_kafka_config,
)
from hacoord.adapters.kafka.http_api import KafkaHttpApi
from hacoord.adapters.kafka.logs import quiet_aiokafka
from hacoord.adapters.kafka.plane import ControlPlane
from hacoord.adapters.kafka.proxy import ProduceProxy, ProxyLimits
from hacoord.adapters.kafka.topology import TopologyWatcher
from hacoord.adapters.kafka.watchdog import Watchdog
from hacoord.client.client import Client
from hacoord.server.serve import wait_for_termination

log = logging.getLogger("hacoord.adapters.kafka.daemon")

_TOPOLOGY_WAIT_S = 30.0


class KafkaDaemon:
    """The watchdog, the control plane candidate, the HTTP API (and proxy) of one member.

    ``members`` is the number of voting coordinator members (a majority of their watchdogs
    must see a cluster down). With ``[proxy]`` configured, the proxy follows the published
    topology and starts listening once there is one (:attr:`proxy_serving`).
    """

    def __init__(
        self, client: Client, config: KafkaDaemonConfig, member: str, members: int
    ) -> None:
        self.client = client
        self.config = config
        self.member = member
        self.watchdog = Watchdog(
            client,
            config.group,
            member,
            interval_s=config.probe_interval_s,
            probe_timeout_s=config.probe_timeout_s,
            canary_topic=config.canary_topic,
            probe_via=config.probe_via,
        )
        self.plane = ControlPlane(
            client, config.group, member, members, config.timings, config.canary_topic
        )
        self.http = KafkaHttpApi(client, config.group, self.watchdog, self.plane)
        self.topology: TopologyWatcher | None = None
        self.proxy: ProduceProxy | None = None
        if config.proxy is not None:
            self.topology = TopologyWatcher(client, config.group.name)
            self.proxy = make_proxy(config.group, config.proxy, self.topology, f"proxy-{member}")
        self.proxy_serving = asyncio.Event()
        """Set once the proxy listens (never without ``[proxy]``)."""
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Serve HTTP (when configured), start probing and campaigning, then the proxy."""
        quiet_aiokafka()
        if self.config.http is not None:
            await self.http.start(*self.config.http)
        self._tasks = [
            asyncio.create_task(self.watchdog.run(), name="kafka-watchdog"),
            asyncio.create_task(self.plane.run(), name="kafka-control"),
        ]
        if self.proxy is not None:
            self._tasks.append(asyncio.create_task(self._serve_proxy(), name="kafka-proxy"))

    async def _serve_proxy(self) -> None:
        assert self.topology is not None and self.proxy is not None
        assert self.config.proxy is not None
        await follow_topology(self.topology)
        try:
            await self.proxy.start(*self.config.proxy.listen)
        except Exception:
            log.exception("%s: the produce proxy cannot start", self.member)
            raise
        self.proxy_serving.set()
        log.info("%s: produce proxy on port %d", self.member, self.proxy.port)

    async def stop(self) -> None:
        """Stop everything (the control plane resigns, the watchdog's lease is revoked)."""
        await stop_tasks(self._tasks)
        self._tasks = []
        if self.proxy is not None and self.proxy_serving.is_set():
            await self.proxy.close()
            self.proxy_serving.clear()
        if self.topology is not None:
            await self.topology.close()
        await self.http.close()


def make_proxy(
    group: GroupConfig, settings: ProxySettings, topology: TopologyWatcher, name: str
) -> ProduceProxy:
    """A produce proxy for ``group`` as ``settings`` say, following ``topology``."""
    limits = ProxyLimits(max_records=settings.max_records, max_body_bytes=settings.max_body_bytes)
    return ProduceProxy(group, topology, settings.producer, limits, name=name)


async def follow_topology(watcher: TopologyWatcher) -> None:
    """Start ``watcher``, waiting as long as it takes for a topology to be published."""
    while True:
        try:
            await watcher.start(_TOPOLOGY_WAIT_S)
            return
        except TimeoutError as e:
            log.warning("%s; still waiting", e)


async def run_daemon(member_config: Path, kafka_config: Path) -> None:
    """Run a coordinator member with the Kafka daemon until SIGTERM/SIGINT."""
    kafka = load_kafka_config(kafka_config)
    async with embedded_member(member_config) as (client, member, members):
        daemon = KafkaDaemon(client, kafka, member, members)
        await daemon.start()
        log.info(
            "kafka daemon of %s: group %s, %d cluster(s)",
            member,
            kafka.group.name,
            len(kafka.group.clusters),
        )
        try:
            await wait_for_termination()
        finally:
            await daemon.stop()


async def run_proxy(client: Client, config: KafkaDaemonConfig, listen: tuple[str, int]) -> None:
    """Serve the produce proxy on ``listen`` until SIGTERM/SIGINT (``[proxy]`` or defaults).

    A termination signal ends it even while it still waits for a published topology; a proxy
    that cannot listen raises.
    """
    quiet_aiokafka()
    settings = config.proxy or ProxySettings(listen)
    watcher = TopologyWatcher(client, config.group.name)
    proxy = make_proxy(config.group, settings, watcher, f"proxy-{listen[0]}:{listen[1]}")
    listening = False

    async def serve() -> None:
        nonlocal listening
        await follow_topology(watcher)
        await proxy.start(*listen)
        listening = True
        log.info("produce proxy of group %s on %s:%d", config.group.name, listen[0], proxy.port)

    serving = asyncio.create_task(serve(), name="kafka-proxy")
    terminated = asyncio.create_task(wait_for_termination(), name="termination")
    try:
        await asyncio.wait({serving, terminated}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()  # raises what kept the proxy from listening
            await terminated
    finally:
        for task in (serving, terminated):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if listening:
            await proxy.close()
        await watcher.close()
