"""The Kafka adapter daemon: its configuration, log filter, status text, HTTP API and CLI.

The HTTP tests run three in-process :class:`KafkaDaemon` (the members of a three-member
coordinator, here one in-process coordinator member) against three real Kafka clusters
shared by the module; the CLI test runs ``hacoord kafka serve`` as a process and drives it
with ``hacoord kafka ...`` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

import hacoord
from coordinator import local_client, single_member
from hacoord.adapters.kafka import GroupConfig, ensure_topics
from hacoord.adapters.kafka.daemon import KafkaDaemon
from hacoord.adapters.kafka.daemon_config import (
    KafkaDaemonConfig,
    ProxySettings,
    load_kafka_config,
    parse_kafka_config,
)
from hacoord.adapters.kafka.logs import AIOKAFKA_LOGGER, CHATTY, RepeatFilter, quiet_aiokafka
from hacoord.adapters.kafka.status_view import render_status
from hacoord.adapters.kafka.testbed import KafkaTestBed
from hacoord.adapters.kafka.topology import Topology, TopologyWatcher
from hacoord.client import Client
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster
from hacoord.testing.processes import free_ports, parent_death_prefix
from kafka_support import running

EXAMPLE = Path(__file__).parent.parent / "examples" / "kafka.toml"
MEMBERS = ("m1", "m2", "m3")
GROUP = "orders"
on_the_bed = pytest.mark.asyncio(loop_scope="module")

# ----------------------------------------------------------------- configuration


def test_the_example_config_loads() -> None:
    config = load_kafka_config(EXAMPLE)
    assert config.group.name == "orders" and str(config.group.mode) == "primary"
    assert config.group.cluster_names == ["k1", "k2", "k3"] and config.group.primary == "k1"
    assert config.http == ("127.0.0.1", 8470)
    assert config.probe_interval_s == 0.5 and config.timings.failures_to_confirm == 2
    assert config.timings.readmit_after_s == 30 and config.timings.ttl_s == 3
    assert config.proxy is not None and config.proxy.listen == ("127.0.0.1", 8471)
    assert config.proxy.max_records == 1000 and config.proxy.producer.attempt_timeout_s == 5
    assert config.group.topic("audit").physical == "orders-audit"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "probe_interval_s = 0.5",
            "probe_intervl_s = 0.5",
            "[daemon]: unknown setting 'probe_intervl_s' (did you mean 'probe_interval_s'?)",
        ),
        ("[proxy]", "[proxi]", "unknown setting 'proxi' (did you mean 'proxy'?)"),
        ("max_records = 1000", "max_record = 1000", "did you mean 'max_records'?"),
        ("probe_interval_s = 0.5", "probe_interval_s = -0.5", "probe_interval_s must be > 0"),
        ("probe_timeout_s = 2.0", 'probe_timeout_s = "2s"', "probe_timeout_s must be a number"),
        ("readmit_after_s = 30", "readmit_after_s = -1", "readmit_after_s must be >= 0"),
        ("failures_to_confirm = 2", "failures_to_confirm = 0", "failures_to_confirm must be >= 1"),
        ("control_ttl_s = 3", "control_ttl_s = true", "control_ttl_s must be a number"),
        ('http = "127.0.0.1:8470"', 'http = "localhost"', "[daemon] http must be a 'host:port'"),
        ('listen = "127.0.0.1:8471"', 'listen = "127.0.0.1:99999"', "listen: port 99999"),
        ("max_body_bytes = 8388608", "max_body_bytes = 0", "max_body_bytes must be >= 1"),
        ("delivery_timeout_s = 30", "delivery_timeout_s = 1", "must not exceed delivery_timeout"),
        ('canary_topic = "hacoord-canary"', 'canary_topic = "a b"', "canary_topic 'a b'"),
        ("# probe_via = { k1", "probe_via = { k9", "probe_via: no cluster 'k9'"),
        ("# probe_via = { k1", "probe_via = { k1 = 'x' } #", "probe_via k1 must be a 'host:port'"),
        ('mode = "primary"', 'mode = "sideways"', "[group]: group orders: mode 'sideways'"),
        ('primary = "k1"', 'primary = "k7"', "primary 'k7' is not one of its clusters"),
        ("partitions = 6", "partitions = 0", "topic events: partitions must be >= 1"),
        ('bootstrap = ["127.0.0.1:9093"]', 'bootstrap = ["nowhere"]', "address 'nowhere'"),
        ('name = "orders"', 'nam = "orders"', "did you mean 'name'?"),
        ("[group]", "[groups]", "unknown setting 'groups' (did you mean 'group'?)"),
        ("[daemon]", "[daemon", "not valid TOML"),
    ],
)
def test_each_bad_setting_is_refused_naming_it(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / "kafka.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ValueError) as refused:
        load_kafka_config(path)
    assert message in str(refused.value)
    assert str(path) in str(refused.value)


def test_a_missing_group_is_refused() -> None:
    with pytest.raises(ValueError, match=r"k\.toml: no \[group\] configured"):
        parse_kafka_config({"daemon": {}}, "k.toml")


def test_probe_via_accepts_a_list_or_a_comma_separated_string() -> None:
    group = {
        "name": "g",
        "clusters": [{"name": "a", "bootstrap": "h:1"}, {"name": "b", "bootstrap": "h:2"}],
        "topics": [{"name": "t"}],
    }
    via = {"a": ["x:1", "y:2"], "b": "z:3, w:4"}
    config = parse_kafka_config({"daemon": {"probe_via": via}, "group": group}, "k.toml")
    assert config.probe_via == {"a": "x:1,y:2", "b": "z:3,w:4"}
    assert config.proxy is None and config.http is None


# ----------------------------------------------------------------- the log filter


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured(logger: logging.Logger) -> Any:
    handler = Captured()
    logger.addHandler(handler)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def test_repeats_within_the_window_are_dropped_and_errors_demoted() -> None:
    now = [1000.0]
    logger = logging.getLogger("test.kafka.repeats")
    repeat = RepeatFilter(window_s=30, clock=lambda: now[0])
    logger.addFilter(repeat)
    try:
        with captured(logger) as records:
            for _ in range(50):
                logger.error("Unable connect to node with id %s: %s", 1, "refused")
                now[0] += 0.1
            logger.error("Unable connect to node with id %s: %s", 2, "refused")
            for _ in range(3):
                logger.info("metadata refreshed")
            now[0] += 30
            logger.error("Unable connect to node with id %s: %s", 1, "refused")
    finally:
        logger.removeFilter(repeat)
    shown = [(r.levelname, r.getMessage()) for r in records]
    assert shown == [
        ("WARNING", "Unable connect to node with id 1: refused"),
        ("WARNING", "Unable connect to node with id 2: refused"),
        ("INFO", "metadata refreshed"),
        ("INFO", "metadata refreshed"),
        ("INFO", "metadata refreshed"),
        ("WARNING", "Unable connect to node with id 1: refused (and 49 times more in 30 s)"),
    ]
    assert repeat.dropped == 49


def test_quiet_aiokafka_installs_one_filter_on_the_aiokafka_logger() -> None:
    logger = logging.getLogger(AIOKAFKA_LOGGER)
    chatty = [logging.getLogger(name) for name in CHATTY]
    levels = [c.level for c in chatty]
    for c in chatty:
        c.setLevel(logging.NOTSET)
    installed = quiet_aiokafka()
    try:
        assert quiet_aiokafka() is installed
        assert [f for f in logger.filters if isinstance(f, RepeatFilter)] == [installed]
        with captured(logger) as records:
            for _ in range(5):
                logger.error('Unable connect to "%s:%s": %s', "127.0.0.1", 9, "refused")
        assert [r.levelno for r in records] == [logging.WARNING]
        assert [c.getEffectiveLevel() for c in chatty] == [logging.WARNING] * len(chatty)
    finally:
        logger.removeFilter(installed)
        for c, level in zip(chatty, levels, strict=True):
            c.setLevel(level)


# ----------------------------------------------------------------- the status text


def hand_built_status() -> dict[str, Any]:
    def cluster(**fields: Any) -> dict[str, Any]:
        base = {
            "healthy": True,
            "writable": True,
            "primary": False,
            "reason": "",
            "drained": None,
            "verdict": "up",
            "verdict_reason": "3 of 3 members reach it",
            "views": {m: {"up": True, "failures": 0, "error": ""} for m in MEMBERS},
        }
        return {**base, **fields}

    down = {"up": False, "failures": 4, "error": "metadata: connection refused"}
    return {
        "group": "orders",
        "mode": "primary",
        "active": "m2",
        "active_token": 7,
        "topology": {
            "version": 5,
            "token": 7,
            "primary": "k2",
            "mode": "primary",
            "reason": "drain k1, promote k2: disk swap",
            "updated_at": 0.0,
        },
        "decided_by": "m2",
        "decided_at": 0.0,
        "clusters": {
            "k1": cluster(writable=False, reason="disk swap", drained="disk swap"),
            "k2": cluster(primary=True),
            "k3": cluster(
                healthy=False,
                writable=False,
                reason="3 of 3 members cannot reach k3",
                verdict="down",
                verdict_reason="3 of 3 members cannot reach k3",
                views={m: down for m in MEMBERS},
            ),
        },
    }


def test_render_status_has_a_line_per_cluster_then_the_member_views() -> None:
    lines = render_status(hand_built_status()).splitlines()
    assert lines[0] == (
        "group orders (primary): topology v5 (token 7), primary k2; control plane m2 (token 7)"
    )
    assert lines[1] == "  last change: drain k1, promote k2: disk swap"
    assert lines[2] == (
        "  k1  healthy, NOT WRITABLE (disk swap)  drained by an operator: disk swap"
        "  verdict up: 3 of 3 members reach it"
    )
    assert lines[3].startswith("  k2  healthy, writable  PRIMARY  verdict up")
    assert lines[4].startswith("  k3  UNHEALTHY, NOT WRITABLE (3 of 3 members cannot reach k3)")
    assert lines[4].endswith("verdict down: 3 of 3 members cannot reach k3")
    assert lines[5] == "member views:"
    assert lines[6] == "  m1: k1 up, k2 up, k3 DOWN x4 (metadata: connection refused)"
    assert len(lines) == 9


def test_render_status_before_anything_was_published() -> None:
    status = hand_built_status()
    status.update(topology=None, active=None, active_token=None)
    for c in status["clusters"].values():
        c.update(healthy=None, writable=None, primary=False, verdict=None, drained=None, views={})
    text = render_status(status)
    assert text.splitlines()[0] == (
        "group orders (primary): no topology published yet; no active control plane"
    )
    assert "  k1  not in the topology  no verdict yet" in text
    assert "member views" not in text


# ----------------------------------------------------------------- against real Kafka

TIMINGS = {
    "probe_interval_s": 0.3,
    "probe_timeout_s": 2.0,
    "failures_to_confirm": 2,
    "readmit_after_s": 600,
    "control_ttl_s": 2,
}


def group_table(bed: KafkaTestBed) -> dict[str, Any]:
    return {
        "name": GROUP,
        "mode": "primary",
        "clusters": [{"name": n, "bootstrap": c.bootstrap} for n, c in bed.clusters.items()],
        "topics": [{"name": "events", "partitions": 2}],
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaTestBed]:
    bed = KafkaTestBed(tmp_path_factory.mktemp("kafka"), clusters=3)
    async with running(bed) as started:
        await ensure_topics(GroupConfig.from_mapping(group_table(started)))
        yield started


@dataclass
class Deployment:
    """Three members' daemons on one coordinator, an observer client and a watcher."""

    client: Client
    config: KafkaDaemonConfig
    daemons: dict[str, KafkaDaemon]
    watcher: TopologyWatcher
    http: aiohttp.ClientSession

    def url(self, path: str, member: str = "m1") -> str:
        return f"http://127.0.0.1:{self.daemons[member].http.port}{path}"

    async def active(self) -> KafkaDaemon:
        waits = {asyncio.ensure_future(d.plane.leading.wait()): d for d in self.daemons.values()}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return waits[next(iter(done))]

    async def rounds_until(
        self, predicate: Callable[[], Awaitable[bool]], timeout: float = 60
    ) -> None:
        """Wait, a control round at a time, until ``predicate`` holds."""
        async with asyncio.timeout(timeout):
            while not await predicate():
                await (await self.active()).plane.wait_rounds(1)

    async def topology(
        self, predicate: Callable[[Topology], bool], timeout: float = 60
    ) -> Topology:
        return await self.watcher.wait_for(predicate, timeout)

    async def get(self, path: str, member: str = "m1") -> tuple[int, Any]:
        async with self.http.get(self.url(path, member)) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body

    async def post(self, path: str, body: Any, member: str = "m1") -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.http.post(self.url(path, member), data=data) as r:
            return r.status, await r.json()

    async def all_up(self) -> bool:
        """Whether every member reaches every cluster, as the active plane has noted."""
        status, body = await self.get("/v1/kafka/status")
        return status == 200 and all(
            c["verdict_reason"] == f"{len(MEMBERS)} of {len(MEMBERS)} members reach {name}"
            for name, c in body["clusters"].items()
        )


@contextlib.asynccontextmanager
async def deployment(
    tmp_path: Path, bed: KafkaTestBed, proxy_on: str = ""
) -> AsyncIterator[Deployment]:
    raw = {"daemon": {**TIMINGS, "http": "127.0.0.1:1"}, "group": group_table(bed)}
    config = replace(parse_kafka_config(raw, "test"), http=("127.0.0.1", 0))
    async with single_member(tmp_path / "coord") as service, contextlib.AsyncExitStack() as stack:
        daemons = {}
        for member in MEMBERS:
            client = local_client(service)
            stack.push_async_callback(client.close)
            proxy = ProxySettings(("127.0.0.1", 0), max_records=3) if member == proxy_on else None
            daemon = KafkaDaemon(client, replace(config, proxy=proxy), member, len(MEMBERS))
            await daemon.start()
            stack.push_async_callback(daemon.stop)
            daemons[member] = daemon
        observer = local_client(service)
        stack.push_async_callback(observer.close)
        watcher = TopologyWatcher(observer, GROUP)
        await watcher.start()
        stack.push_async_callback(watcher.close)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        d = Deployment(observer, config, daemons, watcher, http)
        await d.rounds_until(d.all_up)
        yield d


@on_the_bed
async def test_status_over_http_shows_every_cluster_up_and_the_primary(
    tmp_path: Path, kafka: KafkaTestBed
) -> None:
    async with deployment(tmp_path, kafka) as d:
        active = await d.active()
        for member in MEMBERS:
            status, body = await d.get("/v1/kafka/status", member)
            assert status == 200
            assert body["active"] == active.member and body["active_token"] == active.plane.token
            assert body["topology"]["version"] == 1 and body["topology"]["primary"] == "k1"
            assert body["topology"]["token"] == active.plane.token
            assert list(body["clusters"]) == ["k1", "k2", "k3"]
            for name, cluster in body["clusters"].items():
                assert cluster["healthy"] and cluster["writable"] and cluster["drained"] is None
                assert cluster["primary"] == (name == "k1")
                assert cluster["verdict"] == "up"
                assert cluster["verdict_reason"] == f"3 of 3 members reach {name}"
                assert set(cluster["views"]) == set(MEMBERS)
                assert all(v["up"] and v["failures"] == 0 for v in cluster["views"].values())


@on_the_bed
async def test_drain_undrain_promote_and_history_through_the_http_api(
    tmp_path: Path, kafka: KafkaTestBed
) -> None:
    async with deployment(tmp_path, kafka) as d:
        status, drained = await d.post("/v1/kafka/drain", {"cluster": "k1", "reason": "disk swap"})
        assert (status, drained) == (200, {"cluster": "k1", "drained": True, "reason": "disk swap"})
        moved = await d.topology(lambda t: t.primary != "k1")
        assert moved.primary == "k2" and not moved.clusters["k1"].writable
        _, shown = await d.get("/v1/kafka/status", "m3")
        assert shown["clusters"]["k1"]["drained"] == "disk swap"
        assert shown["clusters"]["k2"]["primary"] and not shown["clusters"]["k1"]["writable"]

        status, undrained = await d.post("/v1/kafka/undrain", {"cluster": "k1"}, "m2")
        assert status == 200 and undrained["was_drained"] is True
        back = await d.topology(lambda t: t.clusters["k1"].writable)
        assert back.primary == "k2", "undraining does not take the primary back"

        status, record = await d.post("/v1/kafka/promote", {"cluster": "k3", "wait_s": 30})
        assert status == 200, record
        assert record["status"] == "succeeded" and record["kind"] == "kafka-promote"
        assert record["params"]["cluster"] == "k3" and record["params"]["automatic"] is False
        assert (await d.topology(lambda t: t.primary == "k3")).clusters["k3"].writable

        status, runs = await d.get("/v1/kafka/history?limit=10", "m2")
        assert status == 200
        assert [(r["kind"], r["params"]["cluster"]) for r in runs] == [
            ("kafka-promote", "k3"),
            ("kafka-readmit", "k1"),
            ("kafka-drain", "k1"),
        ]
        assert runs[0]["id"] == record["id"]
        _, newest = await d.get("/v1/kafka/history?limit=1")
        assert [r["id"] for r in newest] == [record["id"]]

        active = await d.active()
        metrics = parse_metrics((await d.get("/metrics", active.member))[1])
        g = f'group="{GROUP}"'
        counted = f'{g},kind="kafka-drain",status="succeeded"'
        assert metrics[f"hacoord_kafka_reconfigurations_total{{{counted}}}"] == 1
        assert metrics[f'hacoord_kafka_cluster_primary{{{g},cluster="k3"}}'] == 1
        assert metrics[f'hacoord_kafka_cluster_primary{{{g},cluster="k2"}}'] == 0
        assert metrics[f"hacoord_kafka_topology_version{{{g}}}"] == back.version + 1


def parse_metrics(text: str) -> dict[str, float]:
    """``series{labels}`` -> value, for every sample line of a Prometheus text page."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


@on_the_bed
async def test_metrics_name_every_series_with_plausible_values(
    tmp_path: Path, kafka: KafkaTestBed
) -> None:
    async with deployment(tmp_path, kafka) as d:
        active = await d.active()
        g = f'group="{GROUP}"'
        pages = {m: (await d.get("/metrics", m)) for m in MEMBERS}
        assert all(status == 200 for status, _ in pages.values())
        samples = {m: parse_metrics(page) for m, (_, page) in pages.items()}
        for member, metrics in samples.items():
            for cluster in ("k1", "k2", "k3"):
                labels = f'{g},member="{member}",cluster="{cluster}"'
                assert metrics[f"hacoord_kafka_probe_up{{{labels}}}"] == 1
                assert metrics[f"hacoord_kafka_probe_failures{{{labels}}}"] == 0
                assert 0 < metrics[f"hacoord_kafka_probe_latency_seconds{{{labels}}}"] < 2.0
                one = f'{g},cluster="{cluster}"'
                assert metrics[f"hacoord_kafka_cluster_healthy{{{one}}}"] == 1
                assert metrics[f"hacoord_kafka_cluster_writable{{{one}}}"] == 1
                assert metrics[f"hacoord_kafka_cluster_primary{{{one}}}"] == int(cluster == "k1")
                for health in ("up", "down", "suspect", "unknown"):
                    series = f'hacoord_kafka_verdict{{{one},health="{health}"}}'
                    assert metrics[series] == int(health == "up")
            assert metrics[f"hacoord_kafka_topology_version{{{g}}}"] == 1
            active_series = f'hacoord_kafka_control_active{{{g},member="{member}"}}'
            assert metrics[active_series] == int(member == active.member)
        page = pages[active.member][1]
        assert "# TYPE hacoord_kafka_reconfigurations_total counter" in page
        assert "hacoord_kafka_reconfigurations_total{" not in page, "nothing was reconfigured"


@on_the_bed
async def test_unknown_clusters_are_404_and_bad_bodies_400(
    tmp_path: Path, kafka: KafkaTestBed
) -> None:
    async with deployment(tmp_path, kafka) as d:
        for path in ("/v1/kafka/drain", "/v1/kafka/undrain", "/v1/kafka/promote"):
            status, body = await d.post(path, {"cluster": "k9"})
            assert status == 404
            assert body["error"] == "no cluster 'k9' in the group (clusters: k1, k2, k3)"
            status, body = await d.post(path, {"reason": "no cluster named"})
            assert status == 400 and '"cluster"' in body["error"]
            status, body = await d.post(path, b"{not json")
            assert status == 400 and "not JSON" in body["error"]
            status, body = await d.post(path, [1, 2])
            assert status == 400 and "JSON object" in body["error"]
        status, body = await d.post("/v1/kafka/drain", {"cluster": "k1", "reason": 5})
        assert status == 400 and "reason must be a string" in body["error"]
        for wait in ("soon", -1, True):
            status, body = await d.post("/v1/kafka/promote", {"cluster": "k2", "wait_s": wait})
            assert status == 400 and "wait_s" in body["error"]
        for limit in ("many", "0"):
            status, body = await d.get(f"/v1/kafka/history?limit={limit}")
            assert status == 400 and "limit" in body["error"]
        status, body = await d.get("/v1/kafka/nothing")
        assert status == 404
        assert d.watcher.current.version == 1, "no refused request changed anything"

        status, queued = await d.post("/v1/kafka/promote", {"cluster": "k2", "wait_s": 0})
        assert status == 202 and queued["status"] == "queued"
        assert queued["request"].startswith("req-")
        promoted = await d.topology(lambda t: t.primary == "k2")
        assert promoted.clusters["k2"].writable


@on_the_bed
async def test_the_daemons_proxy_takes_a_batch_and_follows_the_topology(
    tmp_path: Path, kafka: KafkaTestBed
) -> None:
    async with deployment(tmp_path, kafka, proxy_on="m2") as d:
        daemon = d.daemons["m2"]
        assert d.daemons["m1"].proxy is None and daemon.proxy is not None
        await daemon.proxy_serving.wait()
        proxy = f"http://127.0.0.1:{daemon.proxy.port}/topics/events"
        batch = {"records": [{"value": "one", "id": "a-1"}, {"value": "two", "key": "k"}]}
        async with d.http.post(proxy, json=batch) as r:
            assert r.status == 200, await r.text()
            sent = await r.json()
        assert sent["topology_version"] == 1
        assert [x["cluster"] for x in sent["results"]] == ["k1", "k1"]
        assert sent["results"][0]["id"] == "a-1" and sent["results"][1]["offset"] >= 0
        too_many = {"records": [{"value": str(i)} for i in range(4)]}
        async with d.http.post(proxy, json=too_many) as r:
            assert r.status == 413 and "limit of 3" in (await r.json())["error"]

        status, _ = await d.post("/v1/kafka/drain", {"cluster": "k1"})
        assert status == 200
        assert daemon.topology is not None
        await until_topology(daemon.topology, lambda t: t.primary == "k2")
        async with d.http.post(proxy, json={"records": [{"value": "three"}]}) as r:
            assert r.status == 200, await r.text()
            moved = await r.json()
        assert moved["topology_version"] == 2 and moved["results"][0]["cluster"] == "k2"
    assert not daemon.proxy_serving.is_set(), "the proxy stopped with its daemon"


# ----------------------------------------------------------------- the CLI end to end


def kafka_toml(bed: KafkaTestBed, http_port: int) -> str:
    clusters = "\n".join(
        f'[[group.clusters]]\nname = "{n}"\nbootstrap = ["{c.bootstrap}"]\n'
        for n, c in bed.clusters.items()
    )
    daemon = "\n".join(f"{k} = {v}" for k, v in TIMINGS.items())
    return f"""
[daemon]
http = "127.0.0.1:{http_port}"
{daemon}

[group]
name = "{GROUP}"
mode = "primary"

{clusters}
[[group.topics]]
name = "events"
partitions = 2
"""


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def hacoord_cli(*args: str, endpoints: list[str], config: Path) -> Ran:
    """Run ``hacoord kafka ARGS --endpoints ... --kafka-config ...`` to completion."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hacoord", "kafka", *args,
        "--endpoints", ",".join(endpoints), "--kafka-config", str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def answered(url: str, http: aiohttp.ClientSession, post: Any = None) -> Any:
    """The JSON at ``url`` (POSTing ``post`` if given), or ``None`` while it does not answer."""
    try:
        async with http.request("GET" if post is None else "POST", url, json=post) as r:
            return await r.json() if r.status == 200 else None
    except aiohttp.ClientError:
        return None


@on_the_bed
async def test_the_cli_serves_and_drives_a_daemon_process(
    tmp_path: Path, kafka: KafkaTestBed
) -> None:
    http_port, proxy_port = free_ports(2)
    path = tmp_path / "kafka.toml"
    path.write_text(kafka_toml(kafka, http_port))
    load_kafka_config(path)  # what the daemon will read, checked here first
    coord = LocalCluster(
        tmp_path / "coord",
        n=1,
        timing=Timing(heartbeat_ms=50, election_timeout_ms=500),
        command=("kafka", "serve", "--kafka-config", str(path), "--member"),
    )
    coord.start()
    endpoints = coord.endpoints()
    status_url = f"http://127.0.0.1:{http_port}/v1/kafka/status"
    proxy_log = (tmp_path / "proxy.log").open("w")
    proxy = subprocess.Popen(
        [
            *parent_death_prefix(), sys.executable, "-m", "hacoord", "kafka", "proxy",
            "--listen", f"127.0.0.1:{proxy_port}", "--kafka-config", str(path),
            "--endpoints", ",".join(endpoints),
        ],
        stdout=proxy_log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http, hacoord.connect(endpoints) as client:
            async with asyncio.timeout(60):
                # A process: nothing to await but its answers.
                while not (
                    (status := await answered(status_url, http))
                    and all(c["verdict"] == "up" for c in status["clusters"].values())
                ):
                    await asyncio.sleep(0.1)
            watcher = TopologyWatcher(client, GROUP)
            await watcher.start()
            try:
                await drive_the_cli(watcher, endpoints, path)
            finally:
                await watcher.close()
            batch = {"records": [{"value": "through the proxy process"}]}
            async with asyncio.timeout(60):
                while (
                    sent := await answered(
                        f"http://127.0.0.1:{proxy_port}/topics/events", http, batch
                    )
                ) is None:
                    await asyncio.sleep(0.1)  # a process: nothing to await but its answers
            assert [r["cluster"] for r in sent["results"]] == ["k3"], "it follows the topology"
    finally:
        proc = coord.procs[1]
        for process in (proxy, proc):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 30)
            await asyncio.to_thread(proxy.wait, 30)
        finally:
            proxy.kill()
            proxy_log.close()
            await coord.close()
    assert proc.returncode == 0, coord.log_path(1).read_text()[-3000:]
    assert proxy.returncode == 0, (tmp_path / "proxy.log").read_text()[-3000:]


async def drive_the_cli(watcher: TopologyWatcher, endpoints: list[str], path: Path) -> None:
    async def cli(*args: str, config: Path = path) -> Ran:
        return await hacoord_cli(*args, endpoints=endpoints, config=config)

    shown = await cli("status")
    assert shown.returncode == 0, shown.stderr
    assert "topology v1 (token" in shown.stdout and "primary k1" in shown.stdout
    assert "control plane member-1" in shown.stdout
    assert shown.stdout.count("verdict up: 1 of 1 members reach") == 3
    assert "  member-1: k1 up, k2 up, k3 up" in shown.stdout

    drained = await cli("drain", "k1", "--reason", "disk swap")
    assert drained.returncode == 0 and "k1: drained" in drained.stdout
    await until_topology(watcher, lambda t: t.primary == "k2")

    undrained = await cli("undrain", "k1")
    assert undrained.returncode == 0 and "k1: undrained" in undrained.stdout
    await until_topology(watcher, lambda t: t.clusters["k1"].writable)

    promoted = await cli("promote", "k3", "--wait", "30")
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.splitlines()[-1].endswith(": succeeded")
    await until_topology(watcher, lambda t: t.primary == "k3")

    bad = path.with_name("bad.toml")
    bad.write_text(path.read_text().replace("control_ttl_s", "control_ttl"))
    listed, as_json, status_json, unknown, refused = await asyncio.gather(
        cli("history"),
        cli("history", "--limit", "1", "--json"),
        cli("status", "--json"),
        cli("promote", "k9"),
        cli("status", config=bad),
    )
    assert listed.returncode == 0, listed.stderr
    kinds = [line.split()[1:3] for line in listed.stdout.splitlines()]
    assert kinds == [["kafka-promote", "k3"], ["kafka-readmit", "k1"], ["kafka-drain", "k1"]]
    assert "(operator: drained by an operator: disk swap)  succeeded" in listed.stdout
    [newest] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert newest["kind"] == "kafka-promote" and newest["status"] == "succeeded"
    assert json.loads(status_json.stdout)["topology"]["primary"] == "k3"
    assert unknown.returncode == 1 and "no cluster 'k9'" in unknown.stderr
    assert refused.returncode == 1
    assert refused.stderr.startswith("hacoord kafka: configuration error: ")
    assert "unknown setting 'control_ttl' (did you mean 'control_ttl_s'?)" in refused.stderr


async def until_topology(watcher: TopologyWatcher, predicate: Callable[[Topology], bool]) -> None:
    await watcher.wait_for(predicate, 60)
