"""The produce proxy against three real Kafka clusters: batches, topology changes, bad input."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from coordinator import local_client, single_member
from hacoord.adapters.kafka import (
    ConsumerOptions,
    GroupConfig,
    HAConsumer,
    HARecord,
    Mode,
    ProducerOptions,
    StaticTopology,
    Topology,
    TopologyControl,
    TopologyWatcher,
    ensure_topics,
)
from hacoord.adapters.kafka.proxy import ProduceProxy, ProxyLimits
from hacoord.adapters.kafka.testbed import KafkaTestBed
from kafka_support import running

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAST = ProducerOptions(attempt_timeout_s=2.0, delivery_timeout_s=20.0, backoff_s=0.5)
POLL = ConsumerOptions(poll_interval_ms=100, request_timeout_s=3.0, session_timeout_ms=6000)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaTestBed]:
    base = tmp_path_factory.mktemp("kafka-proxy")
    async with running(KafkaTestBed(base / "kafka", clusters=3)) as started:
        yield started


def group_of(bed: KafkaTestBed, name: str, mode: Mode = Mode.MULTI_PRIMARY) -> GroupConfig:
    return GroupConfig.from_mapping(
        {
            "name": name,
            "mode": str(mode),
            "clusters": [{"name": n, "bootstrap": c.bootstrap} for n, c in bed.clusters.items()],
            "topics": [{"name": "events", "physical": f"{name}-events", "partitions": 2}],
        }
    )


@contextlib.asynccontextmanager
async def proxy(
    config: GroupConfig,
    topology: Any = None,
    limits: ProxyLimits | None = None,
    options: ProducerOptions = FAST,
) -> AsyncIterator[tuple[ProduceProxy, str]]:
    server = ProduceProxy(
        config, topology or StaticTopology(Topology.initial(config)), options, limits
    )
    await server.start("127.0.0.1", 0)
    try:
        yield server, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def post(url: str, body: Any) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as session:
        kwargs = {"data": body} if isinstance(body, bytes | str) else {"json": body}
        async with session.post(url, **kwargs) as response:  # type: ignore[arg-type]
            return response.status, await response.json(), response


async def read_back(config: GroupConfig, ids: set[str], group: str) -> dict[str, HARecord]:
    found: dict[str, HARecord] = {}
    async with HAConsumer(config, group, options=POLL) as consumer, asyncio.timeout(60):
        while not ids <= set(found):
            for record in await consumer.getmany(timeout=0.5):
                assert record.message_id is not None
                found[record.message_id.decode()] = record
    return found


async def test_a_batch_is_acknowledged_and_read_back_with_ids_keys_and_headers(
    bed: KafkaTestBed,
) -> None:
    config = group_of(bed, "plain")
    await ensure_topics(config)
    async with proxy(config) as (_, url):
        records = [
            {"value": f"v{i}", "key": f"k{i}", "headers": {"source": "test"}, "id": f"id-{i}"}
            for i in range(20)
        ]
        records.append({"value_b64": base64.b64encode(b"\x00\xffbin").decode(), "id": "bin"})
        records.append({"value": None, "key_b64": base64.b64encode(b"\x01").decode()})
        status, body, _ = await post(f"{url}/topics/events", {"records": records})
        assert status == 200, body
        assert body["topic"] == "events" and body["topology_version"] == 1
        results = body["results"]
        assert [r["id"] for r in results[:21]] == [f"id-{i}" for i in range(20)] + ["bin"]
        assert results[21]["id"]  # the proxy made one
        assert {r["cluster"] for r in results} <= {"k1", "k2", "k3"}
        assert all(isinstance(r["offset"], int) for r in results)

        found = await read_back(config, {r["id"] for r in results}, "plain-readers")
        assert found["id-3"].value == b"v3" and found["id-3"].key == b"k3"
        assert ("source", b"test") in found["id-3"].headers
        assert found["bin"].value == b"\x00\xffbin"
        tombstone = found[results[21]["id"]]
        assert tombstone.value is None and tombstone.key == b"\x01"
        for r in results:
            assert (found[r["id"]].cluster, found[r["id"]].offset) == (r["cluster"], r["offset"])

        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/v1/proxy/status") as response:
                state = await response.json()
            async with session.get(f"{url}/metrics") as response:
                metrics = await response.text()
        # the batch and the status request were answered 200 by the time of /metrics
        assert state["records_acked"] == 22 and state["records_failed"] == 0
        assert state["writable"] == ["k1", "k2", "k3"]
        assert 'hacoord_kafka_proxy_requests_total{group="plain",proxy="proxy",code="200"} 2' in (
            metrics
        )
        acked = [
            int(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("hacoord_kafka_proxy_records_acked_total")
        ]
        assert sum(acked) == 22


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "body is not JSON"),
        ([1, 2], 400, "body must be a JSON object"),
        ({}, 400, "'records' must be a list"),
        ({"records": []}, 400, "'records' is empty"),
        ({"records": [{"value": "a"}], "extra": 1}, 400, "unknown field(s) ['extra']"),
        ({"records": ["text"]}, 400, "record 0: must be an object"),
        ({"records": [{"value": "a", "colour": "red"}]}, 400, "record 0: unknown field(s)"),
        ({"records": [{"value": "a", "value_b64": "YQ=="}]}, 400, "exactly one of 'value'"),
        ({"records": [{"key": "a"}]}, 400, "exactly one of 'value'"),
        ({"records": [{"value_b64": "***"}]}, 400, "'value_b64' is not valid base64"),
        ({"records": [{"value": 5}]}, 400, "'value' must be a string"),
        ({"records": [{"value": "a", "headers": {"h": 1}}]}, 400, "'headers' must be"),
        ({"records": [{"value": "a", "id": 7}]}, 400, "'id' must be a non-empty string"),
        ({"records": [{"value": "a"}] * 6}, 413, "6 records in one batch, over the proxy's"),
        ({"records": [{"value": "x" * 5000}]}, 413, "body over the proxy's limit of 4096"),
    ],
)
async def test_bad_batches_are_refused_with_the_problem_named_and_nothing_sent(
    bed: KafkaTestBed, body: Any, status: int, message: str
) -> None:
    config = group_of(bed, "refusals")
    await ensure_topics(config)
    async with proxy(config, limits=ProxyLimits(max_records=5, max_body_bytes=4096)) as (
        server,
        url,
    ):
        got, answer, _ = await post(f"{url}/topics/events", body)
        assert got == status, answer
        assert message in answer["error"]
        assert server.producer.stats() and all(
            s.acked == 0 and s.failed == 0 for s in server.producer.stats().values()
        )
        got, answer, _ = await post(f"{url}/topics/nope", {"records": [{"value": "a"}]})
        assert got == 404
        assert "no logical topic 'nope'" in answer["error"] and "events" in answer["error"]


async def test_no_writable_cluster_answers_503_with_each_record_failed_then_recovers(
    bed: KafkaTestBed, tmp_path: Path
) -> None:
    config = group_of(bed, "outage")
    await ensure_topics(config)
    short = ProducerOptions(attempt_timeout_s=1.0, delivery_timeout_s=2.0, backoff_s=0.2)
    async with single_member(tmp_path / "coord") as service:
        client = local_client(service)
        async with TopologyControl(client, config) as control:
            await control.current()
            async with TopologyWatcher(client, "outage") as watcher:
                for name in ("k1", "k2", "k3"):
                    await control.mark(name, writable=False, reason="test drain")
                await watcher.newer_than(3, 10)
                assert watcher.current.writable() == []
                async with proxy(config, watcher, options=short) as (server, url):
                    records = [{"value": "a", "id": "a"}, {"value": "b", "id": "b"}]
                    status, body, response = await post(
                        f"{url}/topics/events", {"records": records}
                    )
                    assert status == 503
                    assert response.headers["Retry-After"] == "1"
                    assert body["error"] == "2 of 2 records were not acknowledged"
                    assert [r["id"] for r in body["results"]] == ["a", "b"]
                    assert all("no cluster could take" in r["error"] for r in body["results"])
                    assert server.failed == 2

                    await control.mark("k2", writable=True, reason="back")
                    await watcher.newer_than(4, 10)
                    status, body, _ = await post(f"{url}/topics/events", {"records": records})
                    assert status == 200, body
                    assert [r["cluster"] for r in body["results"]] == ["k2", "k2"]


async def test_proxies_follow_the_topology_through_a_promotion_and_a_dead_primary(
    bed: KafkaTestBed, tmp_path: Path
) -> None:
    config = group_of(bed, "moving", Mode.PRIMARY)
    await ensure_topics(config)
    async with single_member(tmp_path / "coord") as service:
        client = local_client(service)
        control = TopologyControl(client, config)
        await control.acquire()
        await control.current()  # version 1
        async with (
            TopologyWatcher(client, "moving") as first_watcher,
            TopologyWatcher(client, "moving") as second_watcher,
            proxy(config, first_watcher) as (_, first),
            proxy(config, second_watcher) as (_, second),
        ):
            acked: dict[str, str] = {}

            async def batch(url: str, tag: str, cluster: str) -> None:
                records = [{"value": tag, "id": f"{tag}-{i}"} for i in range(10)]
                status, body, _ = await post(f"{url}/topics/events", {"records": records})
                assert status == 200, body
                assert {r["cluster"] for r in body["results"]} == {cluster}
                acked.update({r["id"]: r["cluster"] for r in body["results"]})

            assert first_watcher.current.primary == "k1"
            await batch(first, "a", "k1")
            await batch(second, "b", "k1")

            promoted = await control.promote("k2", "test")
            for watcher in (first_watcher, second_watcher):
                await watcher.newer_than(promoted.version - 1, 10)
            await batch(first, "c", "k2")
            await batch(second, "d", "k2")

            broker = bed["k2"].brokers[0]
            await broker.kill()
            try:
                moved = await control.promote("k3", "k2 killed")
                for watcher in (first_watcher, second_watcher):
                    await watcher.newer_than(moved.version - 1, 10)
                await asyncio.gather(batch(first, "e", "k3"), batch(second, "f", "k3"))
            finally:
                await broker.restart()
            found = await read_back(config, set(acked), "moving-readers")
            assert {i: r.cluster for i, r in found.items() if i in acked} == acked
