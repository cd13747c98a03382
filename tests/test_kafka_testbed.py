"""The Kafka test bed: real Apache Kafka 4.4 clusters (KRaft) driven through aiokafka.

Three one-node clusters serve the module (each test uses its own topics and leaves every
broker running); the three-node test has a bed of its own. Needs Java 17 and the Kafka jars
(fetched once from Maven Central by ``scripts/test.sh``); without them the tests skip, except
under CI=true, where that is a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from hacoord.adapters.kafka.testbed import KafkaTestBed
from kafka_support import running

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaTestBed]:
    async with running(KafkaTestBed(tmp_path_factory.mktemp("kafka"), clusters=3)) as testbed:
        yield testbed


@asynccontextmanager
async def admin_client(bootstrap: str) -> AsyncIterator[Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def create_topic(bootstrap: str, name: str, partitions: int = 1, rf: int = 1) -> None:
    async with admin_client(bootstrap) as admin:
        response = await admin.create_topics([NewTopic(name, partitions, rf)])
    errors = [t["error_code"] for t in response.to_object()["topic_errors"]]
    assert errors == [0], f"create_topics({name}) answered {response}"


@asynccontextmanager
async def producer(bootstrap: str, **options: Any) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **options)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


@asynccontextmanager
async def consumer(bootstrap: str, *topics: str, **options: Any) -> AsyncIterator[Any]:
    client = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def take(client: Any, count: int, timeout: float = 30) -> list[Any]:
    """Exactly ``count`` records from ``client`` (fails after ``timeout`` seconds)."""
    records: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(records) < count:
            batch = await client.getmany(timeout_ms=500, max_records=count - len(records))
            for partition_records in batch.values():
                records.extend(partition_records)
    return records


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30) -> Any:
    """Poll ``check`` (truthy when done) until it is, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)  # polling the cluster's metadata: there is no event to await


# ------------------------------------------------------------- one-node clusters


async def test_three_clusters_start_and_are_independent(bed: KafkaTestBed) -> None:
    assert sorted(bed.clusters) == ["k1", "k2", "k3"]
    seen_ids = set()
    for cluster in bed.clusters.values():
        [broker] = cluster.brokers
        assert broker.running and not broker.paused
        async with admin_client(cluster.bootstrap) as admin:
            described = await admin.describe_cluster()
            assert described["cluster_id"] == cluster.cluster_id
            assert [(b["node_id"], b["port"]) for b in described["brokers"]] == [
                (1, broker.broker_port)
            ]
            assert await admin.list_topics() == []  # the readiness probe left nothing behind
        seen_ids.add(cluster.cluster_id)
    assert len(seen_ids) == 3

    await create_topic(bed["k1"].bootstrap, "only-in-k1")
    async with admin_client(bed["k1"].bootstrap) as admin:
        assert "only-in-k1" in await admin.list_topics()
    for name in ("k2", "k3"):
        async with admin_client(bed[name].bootstrap) as admin:
            assert "only-in-k1" not in await admin.list_topics(), name


async def test_acks_all_produce_and_consume_resumes_from_committed_offset(
    bed: KafkaTestBed,
) -> None:
    bootstrap = bed["k1"].bootstrap
    await create_topic(bootstrap, "orders")
    tp = TopicPartition("orders", 0)
    async with producer(bootstrap) as client:
        offsets = []
        for i in range(10):
            sent = await client.send_and_wait(
                "orders", f"order-{i}".encode(), key=b"k", headers=[("seq", str(i).encode())]
            )
            offsets.append(sent.offset)
    assert offsets == list(range(10))

    async with consumer(bootstrap, "orders", group_id="billing") as first:
        records = await take(first, 4)
        assert [r.value for r in records] == [f"order-{i}".encode() for i in range(4)]
        assert [r.headers for r in records] == [(("seq", str(i).encode()),) for i in range(4)]
        await first.commit()
        assert await first.committed(tp) == 4

    async with consumer(bootstrap, "orders", group_id="billing") as second:
        rest = await take(second, 6)
        assert [(r.offset, r.value) for r in rest] == [
            (i, f"order-{i}".encode()) for i in range(4, 10)
        ]
        second.seek(tp, 1)
        again = await take(second, 1)
        assert (again[0].offset, again[0].value) == (1, b"order-1")

    async with admin_client(bootstrap) as admin:
        committed = await admin.list_consumer_group_offsets("billing")
    assert committed[tp].offset == 4


async def test_sigkill_and_restart_keeps_acknowledged_messages(bed: KafkaTestBed) -> None:
    cluster = bed["k2"]
    [broker] = cluster.brokers
    bootstrap_before = cluster.bootstrap
    await create_topic(cluster.bootstrap, "ledger")
    tp = TopicPartition("ledger", 0)
    async with producer(cluster.bootstrap, request_timeout_ms=2000) as client:
        for i in range(20):
            await client.send_and_wait("ledger", f"entry-{i}".encode())
        async with consumer(cluster.bootstrap, "ledger", group_id="auditor") as reader:
            await take(reader, 5)
            await reader.commit()

        await broker.kill()
        assert not broker.running
        with pytest.raises(KafkaError):  # NodeNotReadyError after request_timeout_ms
            await client.send_and_wait("ledger", b"lost")

        await broker.restart()
        assert broker.running
        assert cluster.bootstrap == bootstrap_before  # same ports
        # the producer that saw the crash reconnects by itself
        after = await client.send_and_wait("ledger", b"after-restart")
        assert after.offset == 20

    async with consumer(cluster.bootstrap) as reader:
        reader.assign([tp])
        reader.seek(tp, 0)
        everything = await take(reader, 21)
    assert [r.value for r in everything] == [
        *(f"entry-{i}".encode() for i in range(20)),
        b"after-restart",
    ]
    async with consumer(cluster.bootstrap, "ledger", group_id="auditor") as resumed:
        [first] = await take(resumed, 1)
        assert (first.offset, first.value) == (5, b"entry-5")


async def test_sigstop_times_out_produce_while_other_cluster_works(bed: KafkaTestBed) -> None:
    paused, healthy = bed["k3"], bed["k1"]
    [broker] = paused.brokers
    await create_topic(paused.bootstrap, "pings")
    await create_topic(healthy.bootstrap, "pings")
    async with (
        producer(paused.bootstrap, request_timeout_ms=2000) as stalled,
        producer(healthy.bootstrap) as working,
    ):
        await stalled.send_and_wait("pings", b"before")
        broker.pause()
        try:
            assert broker.paused and broker.running
            began = time.monotonic()
            async with asyncio.timeout(20):
                with pytest.raises(KafkaError):  # RequestTimedOutError after 2 s
                    await stalled.send_and_wait("pings", b"while-paused")
            assert time.monotonic() - began < 10
            sent = await working.send_and_wait("pings", b"elsewhere")
            assert sent.offset == 0
        finally:
            broker.resume()
        assert not broker.paused
        recovered = await stalled.send_and_wait("pings", b"after")
    async with consumer(paused.bootstrap) as reader:
        tp = TopicPartition("pings", 0)
        reader.assign([tp])
        reader.seek(tp, 0)
        values = [r.value for r in await take(reader, recovered.offset + 1)]
    assert values[0] == b"before" and values[-1] == b"after"


# ----------------------------------------------------------- a three-node cluster


async def test_three_node_cluster_keeps_acks_all_writes_with_one_node_killed(
    tmp_path: Path,
) -> None:
    async with running(KafkaTestBed.three_node(tmp_path / "kafka3")) as bed:
        await _exercise_three_node_cluster(bed)


async def _exercise_three_node_cluster(bed: KafkaTestBed) -> None:
    cluster = bed["k1"]
    assert (cluster.replication_factor, cluster.min_insync_replicas) == (3, 2)
    assert len(cluster.bootstrap.split(",")) == 3
    await create_topic(cluster.bootstrap, "replicated", partitions=3, rf=3)

    async def partition0() -> dict[str, Any]:
        async with admin_client(cluster.bootstrap) as admin:
            [topic] = await admin.describe_topics(["replicated"])
        by_id: dict[int, dict[str, Any]] = {p["partition"]: p for p in topic["partitions"]}
        return by_id[0]

    async with admin_client(cluster.bootstrap) as admin:
        assert len((await admin.describe_cluster())["brokers"]) == 3
        [topic] = await admin.describe_topics(["replicated"])
        assert all(sorted(p["isr"]) == [1, 2, 3] for p in topic["partitions"]), topic
        [configs] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "replicated")]
        )
    entries = configs.to_object()["resources"][0]["config_entries"]
    assert {e["config_names"]: e["config_value"] for e in entries}["min.insync.replicas"] == "2"

    async with producer(cluster.bootstrap) as client:
        for i in range(10):
            await client.send_and_wait("replicated", f"a{i}".encode(), partition=0)
        leader = (await partition0())["leader"]
        await cluster.broker(leader).kill()
        # acks=all still succeeds once the controller fences the dead leader (3 s) and
        # moves leadership: the ISR of two meets min.insync.replicas=2
        for i in range(10):
            await client.send_and_wait("replicated", f"b{i}".encode(), partition=0)
    state = await partition0()
    assert state["leader"] not in (leader, -1) and leader not in state["isr"], state
    assert len(state["isr"]) == 2, state

    tp = TopicPartition("replicated", 0)
    async with consumer(cluster.bootstrap) as reader:
        reader.assign([tp])
        reader.seek(tp, 0)
        values = [r.value for r in await take(reader, 20)]
    assert values == [f"a{i}".encode() for i in range(10)] + [f"b{i}".encode() for i in range(10)]

    await cluster.broker(leader).restart()

    async def rejoined() -> bool:
        return sorted((await partition0())["isr"]) == [1, 2, 3]

    await eventually(rejoined, f"node {leader} back in the ISR of replicated-0")
