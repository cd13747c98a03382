"""Produce and consume through a Kafka cluster kill, with three local clusters as one HA group.

    python examples/kafka_failover.py

Starts three independent Kafka clusters (KRaft, one node each; the jars come from Maven
Central into ~/.cache/hacoord the first time) and a three-member hacoord cluster. The group
runs in primary mode: a watchdog per hacoord member probes every Kafka cluster, a control
plane per member campaigns and the active one publishes the topology; producers write to the
primary, a consumer reads all three clusters. The primary's broker is killed; once a majority
of the watchdogs confirm it, the control plane drains it and promotes another cluster in one
topology version, and the producers follow at once. Prints each step, and at the end how many
acknowledged messages were consumed, lost and dropped as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from pathlib import Path

import hacoord
from hacoord.adapters.kafka import (
    ConsumerOptions,
    GroupConfig,
    HAConsumer,
    HAProducer,
    ProducerOptions,
    TopologyWatcher,
    ensure_topics,
)
from hacoord.adapters.kafka.plane import ControlPlane, ControlTimings, history
from hacoord.adapters.kafka.testbed import KafkaTestBed
from hacoord.adapters.kafka.watchdog import Watchdog
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster

started = time.monotonic()


def say(line: str) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)


async def produce(producer: HAProducer, acked: dict[bytes, str]) -> None:
    """Four senders, each sending as fast as acknowledgements come back."""

    async def sender(n: int) -> None:
        for i in range(1_000_000):
            result = await producer.send("events", f"{n}-{i}".encode())
            acked[result.message_id] = result.cluster

    await asyncio.gather(*(sender(n) for n in range(4)))


async def consume(consumer: HAConsumer, seen: dict[bytes, str]) -> None:
    while True:
        records = await consumer.getmany(timeout=0.5)
        for record in records:
            assert record.message_id is not None
            seen[record.message_id] = record.cluster
        if records:
            await consumer.commit()


async def until(predicate: object, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def main(base: Path) -> None:
    coord = LocalCluster(
        base / "coord", n=3, timing=Timing(heartbeat_ms=50, election_timeout_ms=500)
    )
    coord.start()
    say("starting three Kafka clusters (KRaft, one node each) and a 3-member hacoord cluster")
    async with KafkaTestBed(base / "kafka", clusters=3) as bed:
        try:
            await coord.wait_for_leader()
            config = GroupConfig.from_mapping(
                {
                    "name": "orders",
                    "mode": "primary",
                    "clusters": [
                        {"name": n, "bootstrap": c.bootstrap} for n, c in bed.clusters.items()
                    ],
                    "topics": [{"name": "events", "partitions": 2}],
                }
            )
            created = await ensure_topics(config)
            say(f"physical topics created: {created}")
            timings = ControlTimings(interval_s=0.3, failures_to_confirm=2, readmit_after_s=5)
            async with hacoord.connect(coord.endpoints()) as client:
                members = [f"member-{i}" for i in (1, 2, 3)]
                workers = [
                    Watchdog(client, config, m, interval_s=0.3, probe_timeout_s=2.0)
                    for m in members
                ] + [ControlPlane(client, config, m, len(members), timings) for m in members]
                tasks = [asyncio.create_task(w.run()) for w in workers]
                planes = [w for w in workers if isinstance(w, ControlPlane)]
                await until(lambda: any(p.leading.is_set() for p in planes))
                active = next(p for p in planes if p.leading.is_set())
                say(f"{active.member} is the active control plane (token {active.token})")
                async with (
                    TopologyWatcher(client, "orders") as topology,
                    HAProducer(
                        config, topology, ProducerOptions(attempt_timeout_s=2.0)
                    ) as producer,
                    HAConsumer(
                        config, "example", options=ConsumerOptions(poll_interval_ms=100)
                    ) as consumer,
                ):
                    first = topology.current
                    say(f"topology v{first.version}: primary {first.primary}, token {first.token}")
                    acked: dict[bytes, str] = {}
                    seen: dict[bytes, str] = {}
                    producing = asyncio.create_task(produce(producer, acked))
                    consuming = asyncio.create_task(consume(consumer, seen))
                    await until(lambda: len(acked) >= 200)
                    say(f"{len(acked)} messages acknowledged, all on {set(acked.values())}")

                    killed_at = time.monotonic()
                    await bed["k1"].brokers[0].kill()
                    say("SIGKILL the primary k1's broker")
                    await until(lambda: topology.current.primary != "k1")
                    moved = topology.current
                    say(
                        f"topology v{moved.version}: primary {moved.primary} "
                        f"{time.monotonic() - killed_at:.2f} s after the kill ({moved.reason})"
                    )
                    before = sum(1 for c in acked.values() if c == "k2")
                    await until(lambda: sum(1 for c in acked.values() if c == "k2") > before)
                    say(
                        f"first acknowledgement on k2 {time.monotonic() - killed_at:.2f} s "
                        "after the kill"
                    )
                    await until(lambda: sum(1 for c in acked.values() if c == "k2") >= 200)
                    producing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await producing
                    say(f"producers stopped: {len(acked)} acknowledged, {producer.moved} moved")

                    await bed["k1"].brokers[0].restart()
                    say("k1's broker restarted; the consumer picks it up again")
                    await until(lambda: set(acked) <= set(seen), timeout=90)
                    consuming.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await consuming
                    lost = len(set(acked) - set(seen))
                    by_cluster = {
                        c: list(seen.values()).count(c) for c in sorted(set(seen.values()))
                    }
                    say(f"consumed per cluster: {by_cluster}")
                    for record in reversed(await history(client).history("orders")):
                        say(f"history: {record.id} {record.status}: {record.params['reason']}")
                    print(
                        f"acknowledged: {len(acked)}, consumed: {len(seen)}, lost: {lost}, "
                        f"duplicates dropped: {consumer.duplicates}",
                        flush=True,
                    )
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await coord.close()


if __name__ == "__main__":
    # aiokafka logs every failed reconnection to the dead broker; this example says itself
    # what happens.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="hacoord-kafka-") as tmp:
        asyncio.run(main(Path(tmp)))
