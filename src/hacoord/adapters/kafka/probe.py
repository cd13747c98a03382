"""One watchdog's health check of one Kafka cluster: metadata, controller, canary round trip.

A cluster is healthy for producers only when all three pass within the timeout:

* ``metadata``: a broker answers a metadata request;
* ``controller``: that answer names a live controller (a cluster without one cannot elect
  partition leaders, so writes stall once a leader moves);
* ``canary``: a record produced with ``acks=all`` to the canary topic is read back at the
  offset the cluster acknowledged.

The clients are kept between probes (connecting is most of a probe's cost) and dropped after
any failure, so a cluster that comes back is probed with fresh connections.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from hacoord.adapters.kafka.clients import stop_quietly
from hacoord.adapters.kafka.config import ClusterConfig
from hacoord.adapters.kafka.topics import TOPIC_ALREADY_EXISTS

CHECKS = ("metadata", "controller", "canary")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe: every check's answer (``"ok"`` or what failed)."""

    ok: bool
    checks: dict[str, str] = field(default_factory=dict)
    latency_s: float = 0.0

    @property
    def error(self) -> str:
        """The first failed check and why ('' when healthy)."""
        for name in CHECKS:
            answer = self.checks.get(name, "not run")
            if answer != "ok":
                return f"{name}: {answer}"
        return ""


class ClusterProbe:
    """Probes one cluster; ``bootstrap`` overrides the configured addresses (another path)."""

    def __init__(
        self,
        cluster: ClusterConfig,
        canary_topic: str,
        timeout_s: float,
        client_id: str,
        bootstrap: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.canary_topic = canary_topic
        self.timeout_s = timeout_s
        self.client_id = client_id
        self.bootstrap = bootstrap or cluster.bootstrap_servers
        self._admin: AIOKafkaAdminClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._canary_ready = False
        self._sequence = itertools.count()
        self._closing: set[asyncio.Task[None]] = set()

    async def probe(self) -> ProbeResult:
        """Run the three checks, each bounded by the timeout; never raises."""
        started = time.monotonic()
        checks: dict[str, str] = {}
        step = "metadata"
        try:
            async with asyncio.timeout(self.timeout_s):
                admin = await self._admin_client()
                described = await admin.describe_cluster()
                checks["metadata"] = "ok"
                step = "controller"
                checks["controller"] = _controller_answer(described)
                if checks["controller"] != "ok":
                    raise _CheckFailed
                step = "canary"
                await self._ensure_canary(admin)
                checks["canary"] = await self._round_trip()
        except _CheckFailed:
            pass
        except TimeoutError:
            checks[step] = f"no answer within {self.timeout_s:g} s"
        except Exception as e:
            checks[step] = _describe(e)
        ok = all(checks.get(name) == "ok" for name in CHECKS)
        if not ok:
            # Closing clients of a hung cluster takes up to a timeout each: done aside, so
            # that the next probe (of this and of every other cluster) is not held up.
            task = asyncio.create_task(self._close_clients(self._drop_clients()))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return ProbeResult(ok, checks, time.monotonic() - started)

    async def close(self) -> None:
        """Drop the clients (their connections are given up if the cluster hangs)."""
        await self._close_clients(self._drop_clients())
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _drop_clients(self) -> list[Any]:
        clients = [c for c in (self._producer, self._consumer, self._admin) if c is not None]
        self._admin = self._producer = self._consumer = None
        self._canary_ready = False
        return clients

    async def _close_clients(self, clients: list[Any]) -> None:
        for client in clients:
            if isinstance(client, AIOKafkaAdminClient):
                await _close_admin(client, self.timeout_s)
            else:
                await stop_quietly(client, self.timeout_s)

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                request_timeout_ms=int(self.timeout_s * 1000),
                client_id=f"{self.client_id}-admin",
            )
            self._admin = admin
            await admin.start()
        return self._admin

    async def _ensure_canary(self, admin: AIOKafkaAdminClient) -> None:
        if self._canary_ready:
            return
        if self.canary_topic not in await admin.list_topics():
            topic = NewTopic(self.canary_topic, 1, self.cluster.replication_factor)
            response = await admin.create_topics([topic], timeout_ms=int(self.timeout_s * 1000))
            for name, code, *rest in response.topic_errors:
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    detail = rest[0] if rest and rest[0] else f"error code {code}"
                    raise RuntimeError(f"cannot create canary topic {name!r}: {detail}")
        self._canary_ready = True

    async def _round_trip(self) -> str:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                request_timeout_ms=int(self.timeout_s * 1000),
                client_id=f"{self.client_id}-canary",
            )
            self._producer = producer
            await producer.start()
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                request_timeout_ms=int(self.timeout_s * 1000),
                client_id=f"{self.client_id}-canary-reader",
            )
            self._consumer = consumer
            await consumer.start()
            # Assigned once per client: aiokafka logs every assignment at INFO.
            consumer.assign([TopicPartition(self.canary_topic, 0)])
        value = f"{self.client_id} {next(self._sequence)} {time.time():.3f}".encode()
        sent = await self._producer.send_and_wait(self.canary_topic, value, partition=0)
        partition = TopicPartition(self.canary_topic, 0)
        self._consumer.seek(partition, sent.offset)
        record = await self._consumer.getone(partition)
        if record.offset != sent.offset or record.value != value:
            return f"read back offset {record.offset}, not the acknowledged {sent.offset}"
        return "ok"


class _CheckFailed(Exception):
    """A check answered, negatively (its answer is already recorded)."""


def _controller_answer(described: dict[str, object]) -> str:
    controller = described.get("controller_id", -1)
    brokers = described.get("brokers")
    if not isinstance(controller, int) or controller < 0:
        return "the cluster names no controller"
    listed = brokers if isinstance(brokers, list) else []
    ids = {b.get("node_id") for b in listed if isinstance(b, dict)}
    if ids and controller not in ids:
        return f"controller {controller} is not among the live brokers {sorted(map(str, ids))}"
    return "ok"


def _describe(error: Exception) -> str:
    name, text = type(error).__name__, str(error)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


async def _close_admin(admin: AIOKafkaAdminClient, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            await admin.close()
    except Exception:
        pass  # a hung cluster: its connections are given up
