"""The produce proxy against three real Kafka clusters: batches, failures, topology changes.

One test bed serves the whole module; each test has its own group (and so its own physical
topic), and a test that kills or pauses a broker brings it back before it ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from coordinator import local_client, single_member
from hacoord.adapters.kafka import (
    BufferFullError,
    ConsumerOptions,
    GroupConfig,
    HAConsumer,
    HARecord,
    Mode,
    ProducerOptions,
    StaticTopology,
    Topology,
    TopologyControl,
    TopologySource,
    TopologyWatcher,
    ensure_topics,
)
from hacoord.adapters.kafka.proxy import ProduceProxy, ProxyLimits
from hacoord.adapters.kafka.testbed import KafkaTestBed
from kafka_support import running

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAST = ProducerOptions(attempt_timeout_s=2.0, delivery_timeout_s=20.0, backoff_s=0.5)
SHORT = ProducerOptions(
    attempt_timeout_s=1.0, delivery_timeout_s=2.0, backoff_s=0.2, max_backoff_s=0.5
)
POLL = ConsumerOptions(poll_interval_ms=100, request_timeout_s=3.0, session_timeout_ms=6000)
EVERY_COPY = replace(POLL, dedup_window=0)
"""Keeps duplicates: a record acknowledged after a timed-out attempt elsewhere has two."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaTestBed]:
    base = tmp_path_factory.mktemp("kafka-proxy")
    async with running(KafkaTestBed(base / "kafka", clusters=3)) as started:
        yield started


async def group_of(bed: KafkaTestBed, name: str, mode: Mode = Mode.MULTI_PRIMARY) -> GroupConfig:
    config = GroupConfig.from_mapping(
        {
            "name": name,
            "mode": str(mode),
            "clusters": [{"name": n, "bootstrap": c.bootstrap} for n, c in bed.clusters.items()],
            "topics": [{"name": "events", "physical": f"{name}-events", "partitions": 2}],
        }
    )
    await ensure_topics(config)
    return config


@contextlib.asynccontextmanager
async def proxy(
    config: GroupConfig,
    topology: TopologySource | None = None,
    limits: ProxyLimits | None = None,
    options: ProducerOptions = FAST,
    name: str = "proxy",
) -> AsyncIterator[tuple[ProduceProxy, str]]:
    server = ProduceProxy(
        config, topology or StaticTopology(Topology.initial(config)), options, limits, name
    )
    await server.start("127.0.0.1", 0)
    try:
        yield server, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def post(url: str, body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST ``body``: bytes as they are, a callable's async generator chunked, else JSON."""
    if isinstance(body, bytes):
        kwargs: dict[str, Any] = {"data": body}
    elif callable(body):
        kwargs = {"data": body()}
    else:
        kwargs = {"json": body}
    async with aiohttp.ClientSession() as session, session.post(url, **kwargs) as response:
        return response.status, await response.json(), dict(response.headers)


async def get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


async def status_of(url: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(await get(f"{url}/v1/proxy/status"))
    return state


async def read_back(
    config: GroupConfig, ids: set[str], group: str, options: ConsumerOptions = EVERY_COPY
) -> dict[str, list[HARecord]]:
    """Every copy an HAConsumer hands over, by id, once every id in ``ids`` was seen."""
    found: dict[str, list[HARecord]] = {}
    async with HAConsumer(config, group, options=options) as consumer, asyncio.timeout(60):
        while not ids <= set(found):
            for record in await consumer.getmany(timeout=0.5):
                assert record.message_id is not None
                found.setdefault(record.message_id.decode(), []).append(record)
    return found


def assert_stored_where_reported(results: list[dict[str, Any]], found: dict[str, Any]) -> None:
    """Each acknowledged record has a copy at the cluster, partition and offset answered."""
    for r in results:
        copies = {(c.cluster, c.partition, c.offset) for c in found[r["id"]]}
        assert (r["cluster"], r["partition"], r["offset"]) in copies, (r, copies)


async def until(predicate: Callable[[], bool], timeout: float = 30) -> None:
    """Wait for a condition that no event announces (counters of the proxy and producer)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} in:\n{text}")


async def test_a_batch_is_acknowledged_and_read_back_with_ids_keys_and_headers(
    bed: KafkaTestBed,
) -> None:
    config = await group_of(bed, "plain")
    async with proxy(config) as (_, url):
        records: list[dict[str, Any]] = [
            {"value": f"v{i}", "key": f"k{i}", "headers": {"source": "test"}, "id": f"id-{i}"}
            for i in range(20)
        ]
        records.append({"value_b64": base64.b64encode(b"\x00\xffbin").decode(), "id": "bin"})
        records.append({"value": None, "key_b64": base64.b64encode(b"\x01\x80").decode()})
        records.append({"value": "ünïcode", "headers": {"h1": "a", "h2": ""}})
        status, body, _ = await post(f"{url}/topics/events", {"records": records})
        assert status == 200, body
        assert body["topic"] == "events" and body["topology_version"] == 1
        results = body["results"]
        assert [r["id"] for r in results[:21]] == [f"id-{i}" for i in range(20)] + ["bin"]
        made = {results[21]["id"], results[22]["id"]}
        assert len(made) == 2 and "" not in made  # the proxy made an id for each
        assert {r["cluster"] for r in results} == {"k1", "k2", "k3"}  # rotated over them

        found = await read_back(config, {r["id"] for r in results}, "plain-readers")
        assert_stored_where_reported(results, found)
        for i in range(20):
            copy = found[f"id-{i}"][0]
            assert (copy.value, copy.key) == (f"v{i}".encode(), f"k{i}".encode())
            assert ("source", b"test") in copy.headers
        assert found["bin"][0].value == b"\x00\xffbin" and found["bin"][0].key is None
        tombstone = found[results[21]["id"]][0]
        assert tombstone.value is None and tombstone.key == b"\x01\x80"
        text = found[results[22]["id"]][0]
        assert text.value == "ünïcode".encode() and text.key is None
        assert [h for h in text.headers if h[0] in ("h1", "h2")] == [("h1", b"a"), ("h2", b"")]

        state = await status_of(url)
        metrics = await get(f"{url}/metrics")
    assert (state["name"], state["group"], state["mode"]) == ("proxy", "plain", "multi-primary")
    assert state["topology_version"] == 1 and state["writable"] == ["k1", "k2", "k3"]
    assert state["records_acked"] == 23 and state["records_failed"] == 0
    assert state["requests"] == {"200": 1} and state["batches_in_flight"] == 0
    assert sum(c["acked"] for c in state["clusters"].values()) == 23
    labels = {"group": "plain", "proxy": "proxy"}
    assert metric(metrics, "hacoord_kafka_proxy_requests_total", **labels, code="200") == 2
    assert metric(metrics, "hacoord_kafka_proxy_records_failed_total", **labels) == 0
    assert metric(metrics, "hacoord_kafka_proxy_topology_version", **labels) == 1
    per_cluster = {
        c: metric(metrics, "hacoord_kafka_proxy_records_acked_total", **labels, cluster=c)
        for c in ("k1", "k2", "k3")
    }
    assert per_cluster == {
        c: sum(1 for r in results if r["cluster"] == c) for c in ("k1", "k2", "k3")
    }


async def _chunked_5000_bytes() -> AsyncIterator[bytes]:
    for _ in range(5):
        yield b" " * 1000  # whitespace: JSON, if it were read


BAD_BATCHES: list[tuple[Any, int, str]] = [
    (b"{not json", 400, "body is not JSON"),
    ([1, 2], 400, "body must be a JSON object"),
    ({}, 400, "the body has no 'records'"),
    ({"records": {"value": "a"}}, 400, "'records' must be a list of records"),
    ({"records": []}, 400, "'records' is empty"),
    ({"records": [{"value": "a"}], "extra": 1}, 400, "unknown field(s) ['extra']"),
    ({"records": [{"value": "a"}, "text"]}, 400, "record 1: must be an object"),
    ({"records": [{"value": "a", "colour": "red"}]}, 400, "record 0: unknown field(s) ['colour']"),
    ({"records": [{"value": "a", "value_b64": "YQ=="}]}, 400, "exactly one of 'value' and"),
    ({"records": [{"key": "a"}]}, 400, "record 0: give exactly one of 'value' and 'value_b64'"),
    ({"records": [{"value": "a", "key": "k", "key_b64": "aw=="}]}, 400, "at most one of 'key'"),
    ({"records": [{"value": "a"}, {"value_b64": "***"}]}, 400, "'value_b64' is not valid base64"),
    ({"records": [{"value": "a", "key_b64": 5}]}, 400, "'key_b64' must be a base64 string"),
    ({"records": [{"value": 5}]}, 400, "'value' must be a string (use 'value_b64'"),
    ({"records": [{"value": "\ud800"}]}, 400, "'value' is not valid Unicode text"),
    ({"records": [{"value": None}]}, 400, "a tombstone (a null 'value') needs a 'key'"),
    ({"records": [{"value": "a", "headers": {"h": 1}}]}, 400, "'headers' must be an object of"),
    ({"records": [{"value": "a", "headers": ["h"]}]}, 400, "'headers' must be an object of"),
    ({"records": [{"value": "a", "headers": {"hacoord-id": "x"}}]}, 400, "'hacoord-id' is the"),
    ({"records": [{"value": "a", "id": 7}]}, 400, "record 0: 'id' must be a non-empty string"),
    ({"records": [{"value": "a", "id": ""}]}, 400, "'id' must be a non-empty string"),
    (
        {"records": [{"value": "a", "id": "x"}, {"value": "b", "id": "x"}]},
        400,
        "record 1: id 'x' is also record 0's",
    ),
    ({"records": [{"value": "a"}] * 6}, 413, "6 records in one batch, over the proxy's limit of 5"),
    ({"records": [{"value": "x" * 3000}]}, 413, "over the 2048 the producer may send"),
    ({"records": [{"value": "x" * 5000}]}, 413, "body over the proxy's limit of 4096 bytes"),
    (_chunked_5000_bytes, 413, "body over the proxy's limit of 4096 bytes"),
]


async def test_bad_batches_are_refused_with_the_problem_named_and_nothing_sent(
    bed: KafkaTestBed,
) -> None:
    config = await group_of(bed, "refusals")
    limits = ProxyLimits(max_records=5, max_body_bytes=4096)
    options = replace(FAST, client_options={"max_request_size": 2048})
    async with proxy(config, limits=limits, options=options) as (server, url):
        for body, status, message in BAD_BATCHES:
            got, answer, _ = await post(f"{url}/topics/events", body)
            assert (got, message in answer.get("error", "")) == (status, True), (body, answer)
        got, answer, _ = await post(f"{url}/topics/nope", {"records": [{"value": "a"}]})
        assert got == 404
        assert answer["error"] == "no logical topic 'nope' in the group (topics: events)"
        assert all(s.acked == s.failed == 0 for s in server.producer.stats().values())
        assert server.responses == Counter(s for _, s, _ in BAD_BATCHES) + Counter({404: 1})

        # Markers on every partition of every cluster: had any refused record been sent, it
        # would come before a marker on its partition.
        markers = [{"value": "marker", "key": f"m{i}", "id": f"marker-{i}"} for i in range(60)]
        spread = set()
        for start in range(0, len(markers), limits.max_records):
            batch = {"records": markers[start : start + limits.max_records]}
            status, sent, _ = await post(f"{url}/topics/events", batch)
            assert status == 200, sent
            spread |= {(r["cluster"], r["partition"]) for r in sent["results"]}
        assert spread == {(c, p) for c in ("k1", "k2", "k3") for p in (0, 1)}
    found = await read_back(config, {m["id"] for m in markers}, "refusals-readers")
    assert set(found) == {m["id"] for m in markers}
    assert {c.value for copies in found.values() for c in copies} == {b"marker"}


async def test_no_writable_cluster_answers_503_with_each_record_failed_then_recovers(
    bed: KafkaTestBed, tmp_path: Path
) -> None:
    config = await group_of(bed, "outage")
    async with (
        single_member(tmp_path / "coord") as service,
        local_client(service) as client,
        TopologyControl(client, config) as control,
    ):
        await control.current()
        async with TopologyWatcher(client, "outage") as watcher:
            for name in ("k1", "k2", "k3"):
                await control.mark(name, writable=False, reason="test drain")
            assert await watcher.newer_than(3, 10)
            assert watcher.current.writable() == []
            async with proxy(config, watcher, options=SHORT) as (server, url):
                records: list[dict[str, Any]] = [{"value": "a", "id": "a"}, {"value": "b"}]
                status, body, headers = await post(f"{url}/topics/events", {"records": records})
                assert status == 503, body
                assert headers["Retry-After"] == "1"
                assert body["error"].startswith("2 of 2 records were not acknowledged")
                assert body["topology_version"] == 4
                first, second = body["results"]
                assert first["id"] == "a" and second["id"] not in ("", None, "a")
                for r in (first, second):
                    assert set(r) == {"id", "error"}
                    assert "no cluster could take the message" in r["error"]
                    assert "k1: test drain" in r["error"]
                assert server.failed == 2 and not server.acked

                await control.mark("k2", writable=True, reason="back")
                assert await watcher.newer_than(4, 10)
                records[1]["id"] = second["id"]  # resend with the ids of the failed ones
                status, body, _ = await post(f"{url}/topics/events", {"records": records})
                assert status == 200, body
                assert [(r["id"], r["cluster"]) for r in body["results"]] == [
                    ("a", "k2"),
                    (second["id"], "k2"),
                ]
                metrics = await get(f"{url}/metrics")
    labels = {"group": "outage", "proxy": "proxy"}
    assert metric(metrics, "hacoord_kafka_proxy_requests_total", **labels, code="503") == 1
    assert metric(metrics, "hacoord_kafka_proxy_records_failed_total", **labels) == 2
    assert metric(metrics, "hacoord_kafka_proxy_records_acked_total", **labels, cluster="k2") == 2
    assert metric(metrics, "hacoord_kafka_proxy_topology_version", **labels) == 5


async def test_a_paused_primary_answers_503_and_a_resend_with_the_same_ids_is_read_once(
    bed: KafkaTestBed,
) -> None:
    config = await group_of(bed, "paused", Mode.PRIMARY)
    async with proxy(config, options=SHORT) as (_, url):
        status, warm, _ = await post(f"{url}/topics/events", {"records": [{"value": "warm"}]})
        assert status == 200 and warm["results"][0]["cluster"] == "k1", warm
        records: list[dict[str, Any]] = [{"value": "a", "id": "p-a"}, {"value": "b"}]
        broker = bed["k1"].brokers[0]
        broker.pause()
        try:
            status, body, headers = await post(f"{url}/topics/events", {"records": records})
        finally:
            broker.resume()
        await broker.wait_ready(30)
        assert status == 503, body
        assert headers["Retry-After"] == "1"
        made = body["results"][1]["id"]
        assert body["results"][0]["id"] == "p-a" and made not in ("", None, "p-a")
        for r in body["results"]:
            assert "no cluster could take the message (k1: " in r["error"], r
        records[1]["id"] = made
        status, again, _ = await post(f"{url}/topics/events", {"records": records})
        assert status == 200, again
        assert [(r["id"], r["cluster"]) for r in again["results"]] == [
            (rec["id"], "k1") for rec in records
        ]
    # The timed-out sends may have landed too once k1 went on: the consumer hands over one.
    ids = {"p-a", records[1]["id"], warm["results"][0]["id"]}
    found = await read_back(config, ids, "paused-readers", options=POLL)
    assert set(found) == ids and all(len(copies) == 1 for copies in found.values())
    assert [found[r["id"]][0].value for r in records] == [b"a", b"b"]


async def test_a_partly_failed_batch_reports_each_record_and_only_the_failed_are_resent(
    bed: KafkaTestBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = await group_of(bed, "partial")
    async with proxy(config) as (server, url):
        send = server.producer.send
        refusing = True

        async def refuse_some(topic: str, value: bytes | None, *args: Any, **kwargs: Any) -> Any:
            if refusing and value == b"refused":
                raise BufferFullError("injected: the buffer stayed full")
            return await send(topic, value, *args, **kwargs)

        monkeypatch.setattr(server.producer, "send", refuse_some)
        records: list[dict[str, Any]] = [
            {"value": "ok", "id": "ok-1"},
            {"value": "refused", "id": "no-1"},
            {"value": "ok"},
            {"value": "refused"},
            {"value": "ok", "id": "ok-2"},
        ]
        status, body, headers = await post(f"{url}/topics/events", {"records": records})
        assert status == 503, body
        assert "Retry-After" in headers
        assert body["error"].startswith("2 of 5 records were not acknowledged")
        results = body["results"]
        assert [r["id"] for r in results][:2] == ["ok-1", "no-1"] and results[4]["id"] == "ok-2"
        failed = [i for i, r in enumerate(results) if "error" in r]
        assert failed == [1, 3]
        assert all(results[i]["error"] == "injected: the buffer stayed full" for i in failed)
        acked = [results[i] for i in (0, 2, 4)]
        assert all(set(r) == {"id", "cluster", "partition", "offset"} for r in acked)
        assert len({r["id"] for r in results}) == 5

        refusing = False
        resend = [dict(records[i], id=results[i]["id"]) for i in failed]
        status, again, _ = await post(f"{url}/topics/events", {"records": resend})
        assert status == 200, again
        assert [r["id"] for r in again["results"]] == [results[i]["id"] for i in failed]
        state = await status_of(url)
    assert state["records_acked"] == 5 and state["records_failed"] == 2
    assert state["requests"] == {"200": 1, "503": 1}
    found = await read_back(config, {r["id"] for r in results}, "partial-readers")
    assert {i: {c.value for c in copies} for i, copies in found.items()} == {
        r["id"]: {rec["value"].encode()} for r, rec in zip(results, records, strict=True)
    }
    assert_stored_where_reported([*acked, *again["results"]], found)


async def test_proxies_follow_the_topology_through_a_dead_primary_and_a_promotion(
    bed: KafkaTestBed, tmp_path: Path
) -> None:
    config = await group_of(bed, "moving", Mode.PRIMARY)
    async with (
        single_member(tmp_path / "coord") as service,
        local_client(service) as client,
        TopologyControl(client, config) as control,
    ):
        await control.current()  # version 1, primary k1
        async with (
            TopologyWatcher(client, "moving") as first_watcher,
            TopologyWatcher(client, "moving") as second_watcher,
            proxy(config, first_watcher, name="p1") as (first, first_url),
            proxy(config, second_watcher, name="p2") as (second, second_url),
        ):
            acked: list[dict[str, Any]] = []

            async def batch(url: str, tag: str) -> dict[str, Any]:
                records = [{"value": tag, "id": f"{tag}-{i}"} for i in range(10)]
                status, body, _ = await post(f"{url}/topics/events", {"records": records})
                assert status == 200, body
                assert [r["id"] for r in body["results"]] == [r["id"] for r in records]
                acked.extend(body["results"])
                return body

            for body in await asyncio.gather(batch(first_url, "a"), batch(second_url, "b")):
                assert {r["cluster"] for r in body["results"]} == {"k1"}

            broker = bed["k1"].brokers[0]
            await broker.kill()
            try:
                # Both batches wait in their proxies, having found k1 dead, until k2 is promoted.
                during = [
                    asyncio.create_task(batch(first_url, "c")),
                    asyncio.create_task(batch(second_url, "d")),
                ]
                await until(
                    lambda: all(
                        p.in_flight == 1 and p.producer.stats()["k1"].failed > 0
                        for p in (first, second)
                    )
                )
                assert not any(task.done() for task in during)
                promoted = await control.promote("k2", "k1 killed")
                for body in await asyncio.gather(*during):
                    assert body["topology_version"] == promoted.version
                    assert {r["cluster"] for r in body["results"]} == {"k2"}
                assert first.producer.moved == second.producer.moved == 10

                for body in await asyncio.gather(batch(first_url, "e"), batch(second_url, "f")):
                    assert {r["cluster"] for r in body["results"]} == {"k2"}
            finally:
                await broker.restart()
    found = await read_back(config, {r["id"] for r in acked}, "moving-readers")
    assert len(acked) == 60
    assert_stored_where_reported(acked, found)
