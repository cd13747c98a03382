"""A three-node Kafka cluster as one member of an HA group: one node lost, nothing lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hacoord.adapters.kafka import (
    ConsumerOptions,
    GroupConfig,
    HAConsumer,
    HAProducer,
    ensure_topics,
)
from hacoord.adapters.kafka.testbed import KafkaTestBed
from kafka_support import running


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[KafkaTestBed]:
    async with running(KafkaTestBed.three_node(tmp_path / "kafka")) as started:
        yield started


async def test_replicated_cluster_keeps_taking_acks_all_with_a_node_down(
    bed: KafkaTestBed,
) -> None:
    cluster = bed["k1"]
    config = GroupConfig.from_mapping(
        {
            "name": "replicated",
            "clusters": [
                {"name": "k1", "bootstrap": cluster.bootstrap_servers, "replication_factor": 3}
            ],
            "topics": [{"name": "events", "partitions": 3}],
        }
    )
    assert await ensure_topics(config) == {"k1": ["events"]}
    async with HAProducer(config) as producer:
        ids = {(await producer.send("events", f"a{i}".encode())).message_id for i in range(20)}
        await cluster.brokers[2].kill()
        # min.insync.replicas is 2: with one of three nodes gone, acks=all still succeeds.
        ids |= {(await producer.send("events", f"b{i}".encode())).message_id for i in range(20)}
    got: set[bytes] = set()
    async with HAConsumer(config, "readers", options=ConsumerOptions(poll_interval_ms=100)) as c:
        async with asyncio.timeout(60):
            while not ids <= got:
                got |= {r.message_id for r in await c.getmany(timeout=30) if r.message_id}
    assert ids <= got and len(ids) == 40
