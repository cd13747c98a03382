"""The watchdogs and the control plane against three real Kafka clusters.

Three watchdogs (the members of a three-member coordinator) probe the clusters; the control
plane drains a dead cluster only when a majority of them confirm it, promotes the next
primary in the same topology version, readmits a cluster only after it stayed up, carries
out operators' drains and promotions, creates missing topics, and a successor continues a
reconfiguration its predecessor left unfinished.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coordinator import local_client, single_member
from hacoord.adapters.kafka import GroupConfig, Mode, ensure_topics, read_topology
from hacoord.adapters.kafka.detect import Health
from hacoord.adapters.kafka.plan import ChangeKind
from hacoord.adapters.kafka.plane import (
    ControlPlane,
    ControlTimings,
    drain,
    history,
    request_promote,
    undrain,
)
from hacoord.adapters.kafka.testbed import KafkaTestBed
from hacoord.adapters.kafka.topics import physical_topics
from hacoord.adapters.kafka.topology import Topology, TopologyWatcher, publish_topology
from hacoord.adapters.kafka.watchdog import Watchdog
from hacoord.client import Client
from hacoord.server.local_cluster import free_ports
from hacoord.workflow import FencedOutError, Status, WorkflowRecord
from kafka_support import running

MEMBERS = ("m1", "m2", "m3")
TIMINGS = ControlTimings(
    interval_s=0.3, failures_to_confirm=2, readmit_after_s=3.0, ttl_s=2.0, probe_timeout_s=2.0
)


def group_of(bed: KafkaTestBed, mode: Mode, topics: list[str] | None = None) -> GroupConfig:
    return GroupConfig.from_mapping(
        {
            "name": "orders",
            "mode": str(mode),
            "clusters": [{"name": n, "bootstrap": c.bootstrap} for n, c in bed.clusters.items()],
            "topics": [{"name": t} for t in topics or ["events"]],
        }
    )


@dataclass
class Group:
    """A running group: its coordinator client, watchdogs, planes and a topology watcher."""

    client: Client
    config: GroupConfig
    watcher: TopologyWatcher
    watchdogs: dict[str, Watchdog] = field(default_factory=dict)
    planes: list[ControlPlane] = field(default_factory=list)
    tasks: dict[object, asyncio.Task[None]] = field(default_factory=dict)

    def start(self, worker: Watchdog | ControlPlane) -> None:
        self.tasks[worker] = asyncio.create_task(worker.run())

    async def stop(self, worker: Watchdog | ControlPlane) -> None:
        task = self.tasks.pop(worker)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def plane(self, timings: ControlTimings = TIMINGS, member: str = "m1") -> ControlPlane:
        plane = ControlPlane(self.client, self.config, member, len(MEMBERS), timings)
        self.planes.append(plane)
        self.start(plane)
        return plane

    async def topology(
        self, predicate: Callable[[Topology], bool], timeout: float = 60
    ) -> Topology:
        return await self.watcher.wait_for(predicate, timeout)

    async def records(self) -> list[WorkflowRecord]:
        return list(reversed(await history(self.client).history(self.config.name)))


@contextlib.asynccontextmanager
async def group(
    tmp_path: Path,
    bed: KafkaTestBed,
    mode: Mode,
    via: dict[str, dict[str, str]] | None = None,
    topics: list[str] | None = None,
    create_in: list[str] | None = None,
) -> AsyncIterator[Group]:
    config = group_of(bed, mode, topics)
    await ensure_topics(config, create_in)
    async with single_member(tmp_path / "coord") as service:
        client = local_client(service)
        watcher = TopologyWatcher(client, config.name)
        g = Group(client, config, watcher)
        for member in MEMBERS:
            watchdog = Watchdog(
                client,
                config,
                member,
                interval_s=TIMINGS.interval_s,
                probe_timeout_s=2.0,
                probe_via=(via or {}).get(member),
            )
            g.watchdogs[member] = watchdog
            g.start(watchdog)
        try:
            yield g
        finally:
            for worker in list(g.tasks):
                await g.stop(worker)  # type: ignore[arg-type]
            await watcher.close()


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[KafkaTestBed]:
    async with running(KafkaTestBed(tmp_path / "kafka", clusters=3)) as started:
        yield started


async def test_dead_primary_is_drained_and_the_next_promoted_then_readmitted_later(
    tmp_path: Path, bed: KafkaTestBed
) -> None:
    async with group(tmp_path, bed, Mode.PRIMARY) as g:
        plane = g.plane()
        await plane.leading.wait()
        await g.watcher.start()
        assert g.watcher.current.primary == "k1"
        await plane.wait_rounds(2)

        await bed["k1"].brokers[0].kill()
        moved = await g.topology(lambda t: t.primary != "k1")
        assert moved.primary == "k2"
        assert not moved.clusters["k1"].healthy and not moved.clusters["k1"].writable
        assert moved.token == plane.token
        await plane.wait_rounds(1)  # the round that published it has committed its record
        drains = [r for r in await g.records() if r.kind == ChangeKind.DRAIN]
        assert len(drains) == 1 and drains[0].status is Status.SUCCEEDED
        assert drains[0].params["new_primary"] == "k2" and drains[0].params["automatic"]
        assert re.match(r"[23] of 3 members cannot reach k1", drains[0].params["reason"])

        await bed["k1"].brokers[0].restart()
        restarted_at = time.monotonic()
        back = await g.topology(lambda t: t.clusters["k1"].writable)
        waited = time.monotonic() - restarted_at
        assert back.primary == "k2", "a readmitted cluster does not take the primary back"
        assert back.clusters["k1"].healthy
        await plane.wait_rounds(1)
        readmits = [r for r in await g.records() if r.kind == ChangeKind.READMIT]
        assert [r.params["cluster"] for r in readmits] == ["k1"]
        assert readmits[0].status is Status.SUCCEEDED
        assert "has been up for" in readmits[0].params["reason"]
        assert waited >= TIMINGS.readmit_after_s  # anti-flapping held it back


async def test_a_member_cut_off_from_a_cluster_changes_nothing(
    tmp_path: Path, bed: KafkaTestBed
) -> None:
    closed = f"127.0.0.1:{free_ports(1)[0]}"
    async with group(tmp_path, bed, Mode.MULTI_PRIMARY, via={"m3": {"k1": closed}}) as g:
        plane = g.plane()
        await plane.leading.wait()
        await g.watcher.start()
        first = g.watcher.current
        await g.watchdogs["m3"].wait_rounds(TIMINGS.failures_to_confirm + 1)
        await plane.wait_rounds(3)
        assert g.watchdogs["m3"].views["k1"].failures >= TIMINGS.failures_to_confirm
        assert "metadata" in g.watchdogs["m3"].views["k1"].error
        assert plane.state.verdicts["k1"].health is Health.SUSPECT
        assert plane.state.verdicts["k1"].down == ("m3",)
        assert plane.state.verdicts["k2"].health is Health.UP
        assert g.watcher.current.version == first.version
        assert (await read_topology(g.client, "orders")) == first

        bed["k2"].brokers[0].pause()
        try:
            hung = await g.topology(lambda t: not t.clusters["k2"].writable)
            assert not hung.clusters["k2"].healthy
            assert hung.clusters["k1"].writable and hung.clusters["k3"].writable
            assert hung.writable() == ["k1", "k3"]
            assert plane.state.verdicts["k2"].health is Health.DOWN
        finally:
            bed["k2"].brokers[0].resume()


async def test_operators_drain_undrain_and_promote(tmp_path: Path, bed: KafkaTestBed) -> None:
    patient = ControlTimings(
        interval_s=0.3, failures_to_confirm=2, readmit_after_s=600.0, probe_timeout_s=2.0
    )
    async with group(tmp_path, bed, Mode.PRIMARY) as g:
        plane = g.plane(patient)
        await plane.leading.wait()
        await g.watcher.start()

        await drain(g.client, g.config, "k1", "disk replacement")
        drained = await g.topology(lambda t: t.primary != "k1")
        assert drained.primary == "k2"
        assert drained.clusters["k1"].healthy and not drained.clusters["k1"].writable
        assert "disk replacement" in drained.clusters["k1"].reason

        promote = await request_promote(g.client, g.config, "k1")
        refused = await _request_outcome(g, promote)
        assert refused.status is Status.FAILED
        assert refused.error is not None and "drained by an operator" in refused.error
        assert g.watcher.current.primary == "k2"

        assert await undrain(g.client, g.config, "k1")
        back = await g.topology(lambda t: t.clusters["k1"].writable)
        assert back.primary == "k2"  # undrained at once: it was up all along (no 600 s wait)

        ok = await _request_outcome(g, await request_promote(g.client, g.config, "k3"))
        assert ok.status is Status.SUCCEEDED and ok.params["automatic"] is False
        assert (await g.topology(lambda t: t.primary == "k3")).clusters["k3"].writable

        await bed["k1"].brokers[0].kill()
        await g.topology(lambda t: not t.clusters["k1"].healthy)
        dead = await _request_outcome(g, await request_promote(g.client, g.config, "k1"))
        assert dead.status is Status.FAILED and dead.failed_step == "check"
        assert dead.error is not None and "failed its check" in dead.error
        assert g.watcher.current.primary == "k3"
        with pytest.raises(KeyError, match="no cluster 'k9'"):
            await drain(g.client, g.config, "k9")


async def _request_outcome(g: Group, request_id: str) -> WorkflowRecord:
    async with asyncio.timeout(60):
        while True:
            for record in await g.records():
                if record.params.get("request") == request_id and record.finished_at:
                    return record
            await g.planes[-1].wait_rounds(1)


async def test_a_successor_finishes_an_unfinished_reconfiguration_and_fences_the_old_one(
    tmp_path: Path, bed: KafkaTestBed
) -> None:
    async with group(tmp_path, bed, Mode.PRIMARY) as g:
        old = g.plane()
        await old.leading.wait()
        await g.watcher.start()
        leadership = old.control.leadership
        assert leadership is not None
        old_token = leadership.token
        # The old control plane decided a promotion and died before doing any of it.
        engine = old.engine(leadership)
        unfinished = await engine.create(
            ChangeKind.PROMOTE,
            "orders",
            {
                "cluster": "k3",
                "reason": "test",
                "automatic": False,
                "healthy": False,
                "new_primary": "",
            },
        )
        await g.stop(old)

        new = g.plane(member="m2")
        await new.leading.wait()
        promoted = await g.topology(lambda t: t.primary == "k3")
        assert promoted.token == new.token > old_token
        record = await history(g.client).get(unfinished.id)
        assert record is not None and record.status is Status.SUCCEEDED
        assert [t.token for t in record.takeovers] == [new.token]
        assert [s.name for s in record.steps] == ["check", "topics", "publish"]
        with pytest.raises(FencedOutError):
            await publish_topology(leadership, promoted.next("a stale control plane"))


async def test_missing_physical_topics_are_created_in_up_clusters(
    tmp_path: Path, bed: KafkaTestBed
) -> None:
    async with group(
        tmp_path, bed, Mode.MULTI_PRIMARY, topics=["events", "audit"], create_in=["k1"]
    ) as g:
        plane = g.plane()
        await plane.leading.wait()
        async with asyncio.timeout(60):
            while not any(r.kind == "kafka-topics" and r.finished_at for r in await g.records()):
                await plane.wait_rounds(1)
        (record,) = [r for r in await g.records() if r.kind == "kafka-topics"]
        assert record.status is Status.SUCCEEDED
        assert record.params["clusters"] == ["k2", "k3"]
        assert record.output("create")["created"] == {
            "k2": ["events", "audit"],
            "k3": ["events", "audit"],
        }
        for name in ("k2", "k3"):
            assert {"events", "audit"} <= set(await physical_topics(g.config.cluster(name)))
