"""HAProducer and HAConsumer against three real Kafka clusters: kills, hangs, restarts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coordinator import local_client, single_member
from hacoord.adapters.kafka import (
    BufferFullError,
    ConsumerOptions,
    GroupConfig,
    HAConsumer,
    HAProducer,
    HARecord,
    MessageTooLargeError,
    Mode,
    NoClusterAvailableError,
    ProducerOptions,
    SendResult,
    TopicMissingError,
    TopologyControl,
    TopologyWatcher,
    UnknownTopicError,
    check_topics,
    ensure_topics,
)
from hacoord.adapters.kafka.testbed import KafkaTestBed
from kafka_support import running

FAST = ProducerOptions(attempt_timeout_s=2.0, delivery_timeout_s=30.0, backoff_s=0.5)
POLL = ConsumerOptions(poll_interval_ms=100, request_timeout_s=3.0, session_timeout_ms=6000)


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[KafkaTestBed]:
    async with running(KafkaTestBed(tmp_path / "kafka", clusters=3)) as started:
        yield started


def group_of(bed: KafkaTestBed, mode: Mode = Mode.MULTI_PRIMARY) -> GroupConfig:
    return GroupConfig.from_mapping(
        {
            "name": "orders",
            "mode": str(mode),
            "clusters": [{"name": n, "bootstrap": c.bootstrap} for n, c in bed.clusters.items()],
            "topics": [{"name": "events", "partitions": 2}],
        }
    )


@dataclass
class Collected:
    """What a consumer task has taken, and events to wait on."""

    by_id: dict[bytes, list[HARecord]] = field(default_factory=dict)
    per_cluster: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(predicate)


async def consume(consumer: HAConsumer, into: Collected) -> None:
    while True:
        records = await consumer.getmany(timeout=0.5)
        for r in records:
            assert r.message_id is not None
            into.by_id.setdefault(r.message_id, []).append(r)
            into.per_cluster[r.cluster] = into.per_cluster.get(r.cluster, 0) + 1
        if records:
            await consumer.commit()
            async with into.changed:
                into.changed.notify_all()


@dataclass
class Sent:
    acked: dict[bytes, str] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def on(self, cluster: str) -> int:
        return sum(1 for c in self.acked.values() if c == cluster)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(predicate)


async def produce(producer: HAProducer, sent: Sent, senders: int = 8) -> None:
    async def one(n: int) -> None:
        i = 0
        while True:
            i += 1
            try:
                result = await producer.send("events", f"{n}-{i}".encode())
            except Exception as e:
                sent.errors.append(e)
                raise
            sent.acked[result.message_id] = result.cluster
            async with sent.changed:
                sent.changed.notify_all()

    await asyncio.gather(*(one(n) for n in range(senders)))


async def stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_kill_and_hang_lose_no_acknowledged_message(bed: KafkaTestBed) -> None:
    config = group_of(bed)
    created = await ensure_topics(config)
    assert created == {"k1": ["events"], "k2": ["events"], "k3": ["events"]}
    sent, got = Sent(), Collected()
    async with (
        HAProducer(config, options=FAST) as producer,
        HAConsumer(config, "readers", options=POLL) as consumer,
    ):
        producing = asyncio.create_task(produce(producer, sent))
        consuming = asyncio.create_task(consume(consumer, got))
        await sent.wait_for(lambda: all(sent.on(c) >= 20 for c in ("k1", "k2", "k3")))

        await bed["k1"].brokers[0].kill()
        k2_before, k3_before = sent.on("k2"), sent.on("k3")
        await sent.wait_for(
            lambda: sent.on("k2") > k2_before + 50 and sent.on("k3") > k3_before + 50
        )

        bed["k2"].brokers[0].pause()
        k3_before = sent.on("k3")
        await sent.wait_for(lambda: sent.on("k3") > k3_before + 100)
        # The consumer keeps delivering from the live cluster while one is dead, one hung.
        live_before = got.per_cluster.get("k3", 0)
        await got.wait_for(lambda: got.per_cluster.get("k3", 0) > live_before + 100)

        await bed["k1"].brokers[0].restart()
        bed["k2"].brokers[0].resume()
        k1_after = sent.on("k1")
        await sent.wait_for(lambda: sent.on("k1") > k1_after + 20 and len(sent.acked) > 0)
        await stop(producing)
        assert not sent.errors, sent.errors[:3]

        acked = dict(sent.acked)
        await got.wait_for(lambda: set(acked) <= set(got.by_id), timeout=90)
        await stop(consuming)
    lost = set(acked) - set(got.by_id)
    assert not lost
    # Every cluster carried messages, and each id was handed over once (duplicates dropped).
    assert all(got.per_cluster.get(c, 0) > 0 for c in ("k1", "k2", "k3"))
    assert all(len(copies) == 1 for copies in got.by_id.values())
    assert producer.moved > 0


async def test_primary_mode_follows_the_topology(bed: KafkaTestBed, tmp_path: Path) -> None:
    config = group_of(bed, Mode.PRIMARY)
    await ensure_topics(config)
    async with (
        single_member(tmp_path / "coord") as service,
        local_client(service) as client,
        TopologyControl(client, config) as control,
    ):
        await control.current()
        async with (
            TopologyWatcher(client, "orders") as topology,
            HAProducer(config, topology, options=FAST) as producer,
        ):
            first = await producer.send("events", b"before")
            assert first.cluster == "k1"
            await bed["k1"].brokers[0].kill()
            # A send now waits for the topology: in primary mode nobody else is writable.
            pending = asyncio.create_task(producer.send("events", b"during"))
            await topology.newer_than(0, 0.1)
            assert not pending.done()
            promoted = await control.promote("k2", "k1 killed")
            during = await pending
            assert during.cluster == "k2" and topology.current.version == promoted.version
            after = [await producer.send("events", f"after-{i}".encode()) for i in range(5)]
            assert {r.cluster for r in after} == {"k2"}


async def test_consumer_restart_skips_a_dead_cluster_and_picks_it_up(bed: KafkaTestBed) -> None:
    config = group_of(bed)
    await ensure_topics(config)
    async with HAProducer(config, options=FAST) as producer:
        ids = {(await producer.send("events", f"m{i}".encode())).message_id for i in range(30)}
    await bed["k1"].brokers[0].kill()
    got = Collected()
    async with HAConsumer(config, "restart", options=POLL) as consumer:
        task = asyncio.create_task(consume(consumer, got))
        await got.wait_for(
            lambda: got.per_cluster.get("k2", 0) > 0 and got.per_cluster.get("k3", 0) > 0
        )
        assert "k1" not in got.per_cluster
        await bed["k1"].brokers[0].restart()
        await got.wait_for(lambda: ids <= set(got.by_id), timeout=90)
        await stop(task)
    # Offsets were committed per cluster: the next consumer of the group starts after them.
    async with HAConsumer(config, "restart", options=POLL) as again:
        stats = again.stats()
        await asyncio.wait_for(_all_reading(again), timeout=60)
        assert await again.getmany(timeout=1.0) == []
        assert all(s.failures == 0 for s in stats.values())


async def test_commit_does_not_wait_on_a_dead_cluster(bed: KafkaTestBed) -> None:
    config = group_of(bed)
    await ensure_topics(config)
    async with HAProducer(config, options=FAST) as producer:
        first = [await producer.send("events", f"a{i}".encode()) for i in range(30)]
    assert {r.cluster for r in first} == {"k1", "k2", "k3"}
    # A live cluster commits well within commit_timeout_s even on a loaded machine; the
    # dead one's commit waits for its request timeout.
    options = ConsumerOptions(
        poll_interval_ms=100, request_timeout_s=3.0, session_timeout_ms=6000, commit_timeout_s=1.0
    )
    held: list[HARecord] = []
    async with HAConsumer(config, "commits", options=options) as consumer:
        while {r.cluster for r in held} != {"k1", "k2", "k3"}:
            held += await consumer.getmany(timeout=1.0)
        # k1 dies while this consumer holds its records, not yet committed.
        await bed["k1"].brokers[0].kill()
        answered = await consumer.commit()
        assert answered == {"k1": False, "k2": True, "k3": True}
        k1 = consumer.stats()["k1"]
        assert k1.commit_slow
        # k1's commit goes on in the background; the next call does not wait for it.
        again = await consumer.commit()
        assert again == {"k1": False}
        assert k1.commit_slow and k1.committed == 0

        # The live clusters go on delivering to a loop that commits after every batch.
        async with HAProducer(config, options=FAST) as producer:
            later = [await producer.send("events", f"b{i}".encode()) for i in range(40)]
        assert {r.cluster for r in later} == {"k2", "k3"}
        got = Collected()
        task = asyncio.create_task(consume(consumer, got))
        await got.wait_for(lambda: {r.message_id for r in later} <= set(got.by_id))
        assert "k1" not in got.per_cluster

        # k1 returns: its kept offsets are committed by a later call.
        await bed["k1"].brokers[0].restart()
        await stop(task)
        async with asyncio.timeout(60):
            while not (await consumer.commit()).get("k1", True):
                await consumer.wait_for_commits()
        assert not k1.commit_slow and k1.committed >= 1
    # Nothing taken before is delivered again to the group's next consumer.
    async with HAConsumer(config, "commits", options=options) as again_consumer:
        await asyncio.wait_for(_all_reading(again_consumer), timeout=60)
        assert await again_consumer.getmany(timeout=1.0) == []


async def _all_reading(consumer: HAConsumer) -> None:
    while not all(s.last_fetch_at > 0 for s in consumer.stats().values()):
        await asyncio.sleep(0.05)


async def test_send_many_moves_a_failed_batch_and_loses_nothing(bed: KafkaTestBed) -> None:
    config = group_of(bed)
    await ensure_topics(config)
    batches: list[list[SendResult]] = []
    async with HAProducer(config, options=FAST) as producer:
        for b in range(3):  # one batch per cluster (sends rotate over the clusters)
            values = [f"a{b}-{i}".encode() for i in range(50)]
            batches.append(await producer.send_many("events", values))
        assert {r.cluster for batch in batches for r in batch} == {"k1", "k2", "k3"}
        assert all(len({r.cluster for r in batch}) == 1 for batch in batches)
        await bed["k1"].brokers[0].kill()
        keys = [b"k"] * 50
        after = [
            await producer.send_many("events", [f"b{b}-{i}".encode() for i in range(50)], keys)
            for b in range(3)
        ]
        # The batch that went to the dead cluster was sent again, message by message.
        assert {r.cluster for batch in after for r in batch} <= {"k2", "k3"}
        assert any(r.attempts == 2 for batch in after for r in batch)
        assert producer.moved > 0
        batches += after
        with pytest.raises(ValueError, match="2 keys for 3 values"):
            await producer.send_many("events", [b"x"] * 3, keys=[b"k"] * 2)
        with pytest.raises(ValueError, match="needs a key or a value"):
            await producer.send_many("events", [b"x", None])
    ids = [r.message_id for batch in batches for r in batch]
    assert len(set(ids)) == len(ids) == 300
    got = Collected()
    async with HAConsumer(config, "batches", options=POLL) as consumer:
        task = asyncio.create_task(consume(consumer, got))
        acked_live = {r.message_id for batch in batches for r in batch if r.cluster != "k1"}
        await got.wait_for(lambda: acked_live <= set(got.by_id))
        await bed["k1"].brokers[0].restart()
        await got.wait_for(lambda: set(ids) <= set(got.by_id), timeout=90)
        await stop(task)


async def test_bad_input_gets_clear_errors(bed: KafkaTestBed) -> None:
    config = group_of(bed)
    with pytest.raises(
        TopicMissingError, match=r"topic 'events': no physical topic in cluster\(s\) k1, k2, k3"
    ):
        await check_topics(config)
    with pytest.raises(TopicMissingError):
        await HAProducer(config).start()
    await ensure_topics(config, ["k1"])
    with pytest.raises(TopicMissingError, match=r"cluster\(s\) k2, k3"):
        await check_topics(config)
    await ensure_topics(config)
    async with HAProducer(config, options=FAST) as producer:
        with pytest.raises(UnknownTopicError, match="no logical topic 'nope'"):
            await producer.send("nope", b"x")
        with pytest.raises(ValueError, match="topic 'events': a message needs a key or a value"):
            await producer.send("events", None)
        # Too large for any cluster: refused at once, and no cluster is blamed for it.
        with pytest.raises(MessageTooLargeError, match="topic 'events': message refused"):
            await producer.send("events", b"x" * 2_000_000)
        assert all(s.failed == 0 for s in producer.stats().values()), producer.stats()
        assert (await producer.send("events", b"small")).attempts == 1
    nowhere = GroupConfig.from_mapping(
        {
            "name": "nowhere",
            "clusters": [{"name": "gone", "bootstrap": ["127.0.0.1:1"]}],
            "topics": [{"name": "events"}],
        }
    )
    options = ProducerOptions(attempt_timeout_s=1.0, delivery_timeout_s=2.0)
    async with HAProducer(nowhere, options=options) as producer:
        with pytest.raises(NoClusterAvailableError, match="gone: cannot connect"):
            await producer.send("events", b"x")


async def test_a_full_buffer_pushes_back_then_says_so(bed: KafkaTestBed) -> None:
    config = GroupConfig.from_mapping(
        {
            "name": "one",
            "clusters": [{"name": "k1", "bootstrap": bed["k1"].bootstrap}],
            "topics": [{"name": "events"}],
        }
    )
    await ensure_topics(config)
    options = ProducerOptions(
        attempt_timeout_s=2.0, delivery_timeout_s=30.0, max_pending=1, buffer_timeout_s=0.2
    )
    async with HAProducer(config, options=options) as producer:
        await producer.send("events", b"warm")
        bed["k1"].brokers[0].pause()
        try:
            stuck = asyncio.create_task(producer.send("events", b"stuck"))
            await asyncio.sleep(0)  # let it take the only slot
            with pytest.raises(BufferFullError, match="1 sends in flight"):
                await producer.send("events", b"refused")
            assert producer.buffer_full == 1
        finally:
            bed["k1"].brokers[0].resume()
        result = await stuck
        assert result.cluster == "k1"
    # Slots pass from finishing sends to waiting ones; a batch larger than the free room
    # goes message by message; no slot is left taken.
    roomy = ProducerOptions(attempt_timeout_s=5.0, max_pending=2, buffer_timeout_s=30.0)
    async with HAProducer(config, options=roomy) as producer:
        singles = [producer.send("events", f"s{i}".encode()) for i in range(20)]
        batch = producer.send_many("events", [f"b{i}".encode() for i in range(5)])
        *sent, batched = await asyncio.gather(*singles, batch)
        assert len(sent) == 20 and len(batched) == 5
        assert len({r.message_id for r in [*sent, *batched]}) == 25
        assert producer.in_flight == 0 and producer.buffer_full == 0
