"""The HA group's config and topology record: checked on load, fenced, versions only grow."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coordinator import local_client, single_member
from hacoord.adapters.kafka import (
    ClusterState,
    ConfigError,
    GroupConfig,
    Mode,
    PromotePendingError,
    StaleTopologyError,
    Topology,
    TopologyControl,
    TopologyWatcher,
    UnknownClusterError,
    UnknownTopicError,
    publish_topology,
    read_topology,
)
from hacoord.adapters.kafka.keys import promote_request_key
from hacoord.adapters.kafka.plane import request_promote
from hacoord.adapters.kafka.topology import control_election
from hacoord.client import Client
from hacoord.workflow import FencedOutError


def raw_group(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "orders",
        "mode": "primary",
        "clusters": [
            {"name": "k1", "bootstrap": ["127.0.0.1:9092"]},
            {"name": "k2", "bootstrap": "127.0.0.1:9093,127.0.0.1:9094"},
            {"name": "k3", "bootstrap": ["127.0.0.1:9095"], "replication_factor": 3},
        ],
        "topics": [{"name": "events", "partitions": 3}, {"name": "audit", "physical": "ha.audit"}],
    }
    raw.update(changes)
    return raw


def group(**changes: Any) -> GroupConfig:
    return GroupConfig.from_mapping(raw_group(**changes))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    async with single_member(tmp_path) as service, local_client(service) as c:
        yield c


def test_config_reads_every_setting() -> None:
    config = group()
    assert config.mode is Mode.PRIMARY and config.primary == "k1"
    assert config.cluster("k2").bootstrap == ("127.0.0.1:9093", "127.0.0.1:9094")
    assert config.cluster("k3").replication_factor == 3
    assert config.topic("events").physical == "events" and config.topic("events").partitions == 3
    assert config.topic("audit").physical == "ha.audit"
    assert config.logical_topic("ha.audit") == "audit"
    assert group(mode="multi-primary", primary="k2").primary == "k2"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "active"}, "mode 'active' must be one of primary, multi-primary"),
        ({"primary": "k9"}, "primary 'k9' is not one of its clusters"),
        ({"clusters": []}, "needs at least one cluster"),
        ({"topics": []}, "needs at least one topic"),
        ({"clusters": [{"name": "k1"}]}, "cluster k1: missing setting 'bootstrap'"),
        ({"clusters": [{"name": "k1", "bootstrap": []}]}, "bootstrap lists no broker"),
        (
            {"clusters": [{"name": "k1", "bootstrap": ["localhost"]}]},
            "'localhost' must be host:port",
        ),
        (
            {"clusters": [{"name": "k1", "bootstrap": ["h:1"], "replication": 3}]},
            "did you mean 'replication_factor'",
        ),
        (
            {
                "clusters": [
                    {"name": "k1", "bootstrap": ["h:1"]},
                    {"name": "k1", "bootstrap": ["h:2"]},
                ]
            },
            "listed twice",
        ),
        ({"topics": [{"name": "bad topic"}]}, "not a valid Kafka topic name"),
        ({"topics": [{"name": "t", "partitions": 0}]}, "partitions must be >= 1"),
        ({"topics": [{"name": "t", "partitions": "3"}]}, "partitions must be an integer"),
        (
            {"topics": [{"name": "a", "physical": "x"}, {"name": "b", "physical": "x"}]},
            "share a physical",
        ),
        ({"clusters": {"name": "k1"}}, "clusters must be a list of tables"),
        ({"name": ""}, "group ''"),
        ({"colour": "red"}, "group: unknown setting 'colour'"),
    ],
)
def test_config_errors_name_the_setting(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        group(**changes)


def test_unknown_names_list_the_known_ones() -> None:
    config = group()
    with pytest.raises(
        UnknownClusterError, match=r"no cluster 'k9' in the group \(clusters: k1, k2, k3\)"
    ):
        config.cluster("k9")
    with pytest.raises(UnknownTopicError, match=r"no logical topic 'nope'.*events, audit"):
        config.topic("nope")


def test_topology_versions_and_writable_clusters() -> None:
    first = Topology.initial(group())
    assert first.version == 1 and first.writable() == ["k1"]
    promoted = first.promoted("k2", "k1 died")
    assert promoted.version == 2 and promoted.writable() == ["k2"] and promoted.reason == "k1 died"
    multi = Topology.initial(group(mode="multi-primary"))
    assert multi.primary == "" and multi.writable() == ["k1", "k2", "k3"]
    drained = multi.with_cluster("k2", ClusterState(writable=False, reason="drain"), "drain k2")
    assert drained.writable() == ["k1", "k3"] and drained.version == 2
    down = drained.with_cluster("k3", ClusterState(healthy=False), "k3 down")
    assert down.writable() == ["k1"]
    assert Topology.from_json(down.to_json()) == down
    with pytest.raises(UnknownClusterError):
        multi.promoted("k9", "no")
    with pytest.raises(ValueError, match="not a topology record"):
        Topology.from_json(b'{"group": "orders"}')


async def test_publish_is_fenced_and_versions_only_grow(client: Client) -> None:
    config = group()
    first = await client.election(control_election("orders")).acquire(b"a", ttl_s=5)
    v1 = await publish_topology(first, Topology.initial(config))
    assert v1.token == first.token
    with pytest.raises(StaleTopologyError, match="v1 is not newer than the stored v1"):
        await publish_topology(first, Topology.initial(config))
    await first.resign()

    second = await client.election(control_election("orders")).acquire(b"b", ttl_s=5)
    v2 = await publish_topology(second, v1.promoted("k2", "failover"))
    # The first control plane, fenced out, cannot write even a higher version.
    with pytest.raises(FencedOutError, match=r"v2 was published under a newer token"):
        await publish_topology(first, v2.promoted("k3", "stale"))
    stored = await read_topology(client, "orders")
    assert stored == v2 and stored.primary == "k2" and stored.token == second.token
    await second.resign()
    with pytest.raises(FencedOutError, match="leadership ended"):
        await publish_topology(second, v2.promoted("k3", "after resigning"))
    assert await read_topology(client, "orders") == v2


async def test_watcher_adopts_newer_versions_only(client: Client) -> None:
    config = group(mode="multi-primary")
    async with TopologyControl(client, config) as control:
        await control.current()
        async with TopologyWatcher(client, "orders") as watcher:
            assert watcher.current.version == 1
            published = await control.mark("k2", healthy=False, reason="k2 down")
            assert await watcher.newer_than(1, timeout=10)
            assert watcher.current == published and watcher.current.writable() == ["k1", "k3"]
            # An older record (a lagging read, a stale writer's copy) is never adopted.
            assert not await watcher.adopt(Topology.initial(config))
            assert watcher.stale_refused == 1 and watcher.current.version == 2
            with pytest.raises(ValueError, match="offered to the watcher"):
                await watcher.adopt(Topology.initial(group(name="other")))


async def test_watcher_says_when_nothing_is_published(client: Client) -> None:
    watcher = TopologyWatcher(client, "nothing")
    with pytest.raises(TimeoutError, match="nothing published at /hacoord/kafka/nothing/topology"):
        await watcher.start(timeout=0.3)


async def test_control_refuses_promote_in_multi_primary_mode(client: Client) -> None:
    async with TopologyControl(client, group(mode="multi-primary")) as control:
        with pytest.raises(Exception, match="promote needs mode 'primary'"):
            await control.promote("k2")
        with pytest.raises(UnknownClusterError):
            await control.mark("k9", healthy=False)


async def test_one_promote_request_waits_at_a_time(client: Client) -> None:
    config = group()
    first = await request_promote(client, config, "k2")
    # Asking again for the same cluster waits for the same outcome ...
    assert await request_promote(client, config, "k2") == first
    # ... and another cluster is refused, naming the waiting request, which stays as it was.
    with pytest.raises(PromotePendingError, match=f"a promotion of k2 \\({first}\\) is still"):
        await request_promote(client, config, "k3")
    stored = await client.get(promote_request_key(config.name))
    assert stored is not None and json.loads(stored.value)["cluster"] == "k2"
    await client.delete(promote_request_key(config.name))  # what the control plane does
    assert await request_promote(client, config, "k3") != first
