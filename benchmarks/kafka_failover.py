"""Kafka HA group failover on three real KRaft clusters: kill to new primary to acks, and costs.

    python -m benchmarks.kafka_failover --kills 5 --out benchmarks/kafka_failover
    python -m benchmarks.kafka_failover --quick      (the smoke test)

Three one-node Kafka clusters (``k1``..``k3``, from :class:`KafkaTestBed`), a three-member
hacoord cluster of real processes, and in this process three :class:`Watchdog` s and three
:class:`ControlPlane` s run one HA group in primary mode. Two producer paths write at a
steady rate while the primary's broker is SIGKILLed ``--kills`` times:

* **embedded**: an :class:`HAProducer` following a :class:`TopologyWatcher`, one send task
  per message;
* **proxy**: an aiohttp client posting small batches to a :class:`ProduceProxy` (with its
  own watcher), resending the records of a 503 with the same ids.

Per kill: kill to the control plane's decision and to the published topology (from the
workflow record), kill to the watcher seeing the new primary, and kill to each path's first
acknowledgement on another cluster. The killed broker is then restarted and the next kill
waits until it is readmitted. At the end an :class:`HAConsumer` with its dedup off reads
everything back: acknowledged ids never consumed are *lost* (goal 0); duplicates are
counted before any dedup (copies of an id beyond the first, ids on two clusters or twice
on one), next to ids acknowledged twice.

Separately: **throughput** of an :class:`HAProducer` against a plain
``AIOKafkaProducer(acks="all")`` on one cluster (same message size, the same number of
concurrent senders each awaiting its send, the two alternated several times; goal: ratio >=
0.9), and of ``HAProducer.send_many`` against the plain producer's own batching (a batch of
``send()`` calls, then each future awaited; the same batch size and senders), alternated
with the other two, and **consumer stall** in multi-primary mode: a steady stream into all
three clusters, one broker SIGKILLed, and the longest gap between consecutive deliveries
from the live clusters in the window after the kill, next to the same figure before it and
the consumer's poll interval (goal: no gap longer than about one poll interval beyond the
normal gap). Two consumers are measured at once: one committing after every batch (as the
example and the tests do) and one that never commits. The kill comes right after the
committing one took records from the doomed cluster, before it commits them (a busy
consumer nearly always holds such records; killing at a random moment makes the figure
depend on luck). The consumers share this process's event loop, so the phase also reports
how late that loop ran and its longest garbage collection: a gap in both consumers at once
is the loop not running (other jobs on the machine), not a consumer waiting on the dead
cluster.

Prints one JSON object on stdout (progress on stderr); ``--out DIR`` also writes
``results.json`` and PNG plots there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

import hacoord
from benchmarks.latency import latency_ms
from hacoord.adapters.kafka import (
    MESSAGE_ID_HEADER,
    ConsumerOptions,
    ControlPlane,
    ControlTimings,
    GroupConfig,
    HAConsumer,
    HAProducer,
    Health,
    KafkaAdapterError,
    ProducerOptions,
    TopologyWatcher,
    Watchdog,
    ensure_topics,
)
from hacoord.adapters.kafka.plan import ChangeKind
from hacoord.adapters.kafka.plane import history
from hacoord.adapters.kafka.proxy import ProduceProxy
from hacoord.adapters.kafka.testbed import KafkaTestBed
from hacoord.client import Client
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster

GROUP = "orders"
TOPIC = "events"
THROUGHPUT_TOPIC = "throughput"
STALL_GROUP = "stall"
STALL_TOPIC = "stall"
MEMBERS = ("member-1", "member-2", "member-3")

started = time.monotonic()


def say(line: str) -> None:
    """Progress on stderr, stamped with the seconds since the start."""
    print(f"[{time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True)


async def until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait until ``check()`` holds, polling every 10 ms; ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- acknowledgements


@dataclass
class Acks:
    """Acknowledgements seen by one produce path, and its first one after a kill."""

    name: str
    ids: dict[bytes, str] = field(default_factory=dict)
    """Message id -> the cluster that acknowledged it."""
    timeline: list[tuple[float, str]] = field(default_factory=list)
    """(wall time, cluster) of every acknowledgement, for the plots."""
    twice: int = 0
    """Ids acknowledged a second time."""
    failed: int = 0
    """Sends that gave up (no cluster took them in the delivery timeout)."""
    resent: int = 0
    """Records resent after a 503 (proxy only)."""
    responses: dict[int, int] = field(default_factory=dict)
    """HTTP answers by status (proxy only)."""
    _away_from: str = ""
    moved_at: float | None = None
    """Wall time of the first acknowledgement on another cluster than :meth:`arm`'s."""

    def arm(self, old: str) -> None:
        """Watch for the first acknowledgement on a cluster other than ``old``."""
        self._away_from, self.moved_at = old, None

    def add(self, mid: bytes, cluster: str, at: float) -> None:
        """Record one acknowledgement at wall time ``at``."""
        if mid in self.ids:
            self.twice += 1
        self.ids[mid] = cluster
        self.timeline.append((at, cluster))
        if self._away_from and cluster != self._away_from and self.moved_at is None:
            self.moved_at = at

    def count_on(self, cluster: str, since: float) -> int:
        """Acknowledgements on ``cluster`` at or after wall time ``since``."""
        n = 0
        for at, name in reversed(self.timeline):
            if at < since:
                break
            n += name == cluster
        return n


class Paced:
    """Starts ``send(n)`` as a task every ``interval_s`` until :meth:`stop`."""

    def __init__(self, interval_s: float, send: Callable[[int], Coroutine[Any, Any, None]]) -> None:
        self.interval_s = interval_s
        self.send = send
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sending."""
        self._loop = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        n = 0
        while not self._stopping.is_set():
            task = asyncio.create_task(self.send(n))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            n += 1
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def stop(self, timeout_s: float) -> None:
        """Stop starting sends; wait up to ``timeout_s`` for those in flight, then cancel."""
        self._stopping.set()
        if self._loop is not None:
            await self._loop
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def embedded_sender(
    producer: HAProducer, acks: Acks, payload: bytes
) -> Callable[[int], Coroutine[Any, Any, None]]:
    """One message per call through ``producer``, recorded in ``acks``."""

    async def send(n: int) -> None:
        mid = f"e-{n}".encode()
        try:
            result = await producer.send(TOPIC, payload, message_id=mid)
        except KafkaAdapterError:
            acks.failed += 1
            return
        acks.add(mid, result.cluster, time.time())

    return send


def proxy_sender(
    session: aiohttp.ClientSession, url: str, acks: Acks, batch: int, payload: str
) -> Callable[[int], Coroutine[Any, Any, None]]:
    """One batch of ``batch`` records per call, POSTed to the proxy, 503s resent."""

    async def send(n: int) -> None:
        records = [{"id": f"p-{n}-{i}", "value": payload} for i in range(batch)]
        while records:
            try:
                async with session.post(url, json={"records": records}) as response:
                    status = response.status
                    body = await response.json()
                    retry_after = float(response.headers.get("Retry-After", "1"))
            except (aiohttp.ClientError, ValueError):
                await asyncio.sleep(0.1)  # the proxy is in this process: should not happen
                continue
            acks.responses[status] = acks.responses.get(status, 0) + 1
            if status not in (200, 503):
                raise RuntimeError(f"proxy answered {status}: {body}")
            now = time.time()
            again = []
            for record, result in zip(records, body["results"], strict=True):
                if "cluster" in result:
                    acks.add(str(result["id"]).encode(), str(result["cluster"]), now)
                else:
                    again.append(record)
            if again:
                acks.resent += len(again)
                await asyncio.sleep(retry_after)
            records = again

    return send


# ---------------------------------------------------------------- the group


def group_config(bed: KafkaTestBed) -> GroupConfig:
    """The primary-mode group: the failover topic and the throughput topic."""
    return GroupConfig.from_mapping(
        {
            "name": GROUP,
            "mode": "primary",
            "clusters": [{"name": n, "bootstrap": c.bootstrap} for n, c in bed.clusters.items()],
            "topics": [
                {"name": TOPIC, "partitions": 2},
                {"name": THROUGHPUT_TOPIC, "partitions": 2},
            ],
        }
    )


def stall_config(bed: KafkaTestBed) -> GroupConfig:
    """The multi-primary group of the consumer stall phase."""
    return GroupConfig.from_mapping(
        {
            "name": STALL_GROUP,
            "mode": "multi-primary",
            "clusters": [{"name": n, "bootstrap": c.bootstrap} for n, c in bed.clusters.items()],
            "topics": [{"name": STALL_TOPIC, "partitions": 2}],
        }
    )


def producer_options(args: argparse.Namespace) -> ProducerOptions:
    """The options of every :class:`HAProducer` of the benchmark (the proxy's too)."""
    return ProducerOptions(attempt_timeout_s=args.attempt_timeout_s)


class Control:
    """Three watchdogs and three control planes in this process, as three daemons would run."""

    def __init__(self, client: Client, config: GroupConfig, args: argparse.Namespace) -> None:
        timings = ControlTimings(
            interval_s=args.interval_s,
            failures_to_confirm=args.failures,
            readmit_after_s=args.readmit_after_s,
        )
        self.watchdogs = [
            Watchdog(
                client, config, m, interval_s=args.interval_s, probe_timeout_s=args.probe_timeout_s
            )
            for m in MEMBERS
        ]
        self.planes = [ControlPlane(client, config, m, len(MEMBERS), timings) for m in MEMBERS]
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Run every watchdog and control plane."""
        runs = [w.run() for w in self.watchdogs] + [p.run() for p in self.planes]
        self.tasks = [asyncio.create_task(run) for run in runs]

    async def stop(self) -> None:
        """Cancel them all."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def record_topology(watcher: TopologyWatcher, changes: list[tuple[float, int, str]]) -> None:
    """Append (wall time, version, primary) each time ``watcher`` adopts a new version."""
    version = watcher.current.version
    while True:
        if await watcher.newer_than(version, 3600.0):
            current = watcher.current
            changes.append((time.time(), current.version, current.primary))
            version = current.version


# ---------------------------------------------------------------- (c) throughput


async def _rate(
    send: Callable[[], Awaitable[None]], concurrency: int, seconds: float, per_call: int = 1
) -> dict[str, float]:
    """Messages/s of ``concurrency`` senders each awaiting ``send()`` (``per_call``
    messages) for ``seconds``."""
    count = 0
    deadline = time.monotonic() + seconds

    async def sender() -> None:
        nonlocal count
        while time.monotonic() < deadline:
            await send()
            count += per_call

    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    cpu, elapsed = time.process_time() - cpu0, time.monotonic() - t0
    return {
        "msgs_per_s": round(count / elapsed, 1),
        "cpu_us_per_msg": round(cpu / max(count, 1) * 1e6, 1),
        "messages": count,
    }


async def throughput(
    config: GroupConfig, watcher: TopologyWatcher, args: argparse.Namespace
) -> dict[str, Any]:
    """HAProducer vs a plain acks=all AIOKafkaProducer on the primary, alternated."""
    primary = watcher.current.primary
    physical = config.topic(THROUGHPUT_TOPIC).physical
    options = producer_options(args)
    payload = b"x" * args.message_bytes
    plain = AIOKafkaProducer(
        bootstrap_servers=config.cluster(primary).bootstrap_servers,
        acks="all",
        linger_ms=options.linger_ms,
        max_batch_size=options.max_batch_size,
        request_timeout_ms=int(options.attempt_timeout_s * 1000),
    )
    ha = HAProducer(config, watcher, options, client_id="bench-throughput")
    await plain.start()
    await ha.start()

    async def ha_send() -> None:
        await ha.send(THROUGHPUT_TOPIC, payload)

    async def plain_send() -> None:
        await plain.send_and_wait(physical, payload)

    batch = [payload] * args.batch

    async def ha_send_many() -> None:
        await ha.send_many(THROUGHPUT_TOPIC, batch)

    async def plain_send_batch() -> None:
        futures = [await plain.send(physical, value) for value in batch]
        for future in futures:
            await future

    drivers = {
        "ha": ha_send,
        "plain": plain_send,
        "ha_many": ha_send_many,
        "plain_batch": plain_send_batch,
    }

    async def rate(name: str, seconds: float) -> dict[str, float]:
        if name.endswith(("_many", "_batch")):
            return await _rate(drivers[name], args.batch_concurrency, seconds, args.batch)
        return await _rate(drivers[name], args.concurrency, seconds)

    rounds: list[dict[str, Any]] = []
    try:
        for name in drivers:  # warm-up: connections, metadata, JIT in the broker
            await rate(name, args.warmup_s)
        for i in range(args.throughput_rounds):
            order = list(drivers) if i % 2 == 0 else list(drivers)[::-1]
            for name in order:
                run = await rate(name, args.throughput_s)
                rounds.append({"round": i, "producer": name, **run})
                say(f"throughput round {i}: {name} {run['msgs_per_s']:.0f} msg/s")
    finally:
        await ha.close()
        await plain.stop()

    def median(name: str) -> float:
        return statistics.median(r["msgs_per_s"] for r in rounds if r["producer"] == name)

    ha_rate, plain_rate = median("ha"), median("plain")
    many_rate, batch_rate = median("ha_many"), median("plain_batch")
    return {
        "cluster": primary,
        "message_bytes": args.message_bytes,
        "concurrency": args.concurrency,
        "seconds_per_run": args.throughput_s,
        "runs_each": args.throughput_rounds,
        "ha_msgs_per_s": round(ha_rate, 1),
        "plain_msgs_per_s": round(plain_rate, 1),
        "ratio": round(ha_rate / plain_rate, 3) if plain_rate else 0.0,
        "goal_ratio": 0.9,
        "batch": args.batch,
        "batch_concurrency": args.batch_concurrency,
        "ha_many_msgs_per_s": round(many_rate, 1),
        "plain_batch_msgs_per_s": round(batch_rate, 1),
        "batch_ratio": round(many_rate / batch_rate, 3) if batch_rate else 0.0,
        "ha_many_to_plain_send_ratio": round(many_rate / plain_rate, 3) if plain_rate else 0.0,
        "rounds": rounds,
    }


# ---------------------------------------------------------------- (a, b) failover


@dataclass
class Raw:
    """What the plots are drawn from (not printed)."""

    kills_at: list[float] = field(default_factory=list)
    topology: list[tuple[float, int, str]] = field(default_factory=list)
    acks: dict[str, Acks] = field(default_factory=dict)
    stall_kill_at: float = 0.0
    stall_deliveries: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    stall_killed: str = ""
    stall_lags: list[tuple[float, float]] = field(default_factory=list)
    stall_commits: list[tuple[float, float]] = field(default_factory=list)


async def _drain_record(client: Client, old: str, killed_at: float) -> Any:
    """The finished drain of ``old`` decided after ``killed_at`` (polls the history)."""
    deadline = time.monotonic() + 30
    while True:
        for record in await history(client).history(GROUP, limit=10):
            params = record.params
            if (
                record.kind == ChangeKind.DRAIN
                and params.get("cluster") == old
                and params.get("decided_at", 0) >= killed_at
                and record.finished_at
            ):
                return record
        if time.monotonic() > deadline:
            raise TimeoutError(f"no finished drain of {old} in the history")
        await asyncio.sleep(0.05)  # polling the history: the record is written once


def _readmitted(watcher: TopologyWatcher, name: str) -> bool:
    state = watcher.current.clusters[name]
    return state.healthy and state.writable


async def one_kill(
    number: int,
    bed: KafkaTestBed,
    client: Client,
    watcher: TopologyWatcher,
    paths: list[Acks],
    raw: Raw,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """SIGKILL the primary's broker under load; time the failover; restart and readmit it."""
    old = watcher.current.primary
    since = time.time()
    await asyncio.sleep(args.settle_s)
    await until(
        lambda: all(p.count_on(old, since) > 0 for p in paths), 30, f"acknowledgements on {old}"
    )
    for path in paths:
        path.arm(old)
    killed_at = time.time()
    raw.kills_at.append(killed_at)
    await bed[old].brokers[0].kill()

    def seen() -> list[tuple[float, int, str]]:
        return [c for c in raw.topology if c[0] >= killed_at and c[2] != old]

    await until(lambda: bool(seen()), 60, f"a topology without {old} as the primary")
    seen_at, version, new = seen()[0]
    await until(
        lambda: all(p.moved_at is not None for p in paths), 60, "acknowledgements elsewhere"
    )
    record = await _drain_record(client, old, killed_at)
    publish = next(s for s in record.steps if s.name == "publish")
    sample: dict[str, Any] = {
        "kill": number,
        "killed": old,
        "new_primary": new,
        "topology_version": version,
        "detection_s": round(record.params["decided_at"] - killed_at, 3),
        "topology_published_s": round(publish.finished_at - killed_at, 3),
        "topology_seen_s": round(seen_at - killed_at, 3),
        **{f"first_ack_{p.name}_s": round((p.moved_at or 0) - killed_at, 3) for p in paths},
    }
    say(
        f"kill {number}: {old} -> {new}: decided {sample['detection_s']:.2f} s, seen "
        f"{sample['topology_seen_s']:.2f} s, first ack embedded "
        f"{sample['first_ack_embedded_s']:.2f} s, proxy {sample['first_ack_proxy_s']:.2f} s"
    )
    began = time.monotonic()
    await bed[old].brokers[0].restart()
    sample["restart_s"] = round(time.monotonic() - began, 2)
    began = time.monotonic()
    await until(lambda: _readmitted(watcher, old), 120, f"{old} readmitted")
    sample["readmitted_after_restart_s"] = round(time.monotonic() - began, 2)
    say(
        f"kill {number}: {old} restarted in {sample['restart_s']:.1f} s, readmitted "
        f"{sample['readmitted_after_restart_s']:.1f} s later"
    )
    return sample


async def failover(
    bed: KafkaTestBed,
    client: Client,
    config: GroupConfig,
    watcher: TopologyWatcher,
    raw: Raw,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Both produce paths at a steady rate through ``args.kills`` kills of the primary."""
    options = producer_options(args)
    embedded, via_proxy = Acks("embedded"), Acks("proxy")
    raw.acks = {"embedded": embedded, "proxy": via_proxy}
    recorder = asyncio.create_task(record_topology(watcher, raw.topology))
    samples: list[dict[str, Any]] = []
    async with (
        TopologyWatcher(client, GROUP) as proxy_topology,
        HAProducer(config, watcher, options, client_id="bench-embedded") as producer,
        aiohttp.ClientSession() as session,
    ):
        proxy = ProduceProxy(config, proxy_topology, options, name="bench-proxy")
        await proxy.start("127.0.0.1", 0)
        url = f"http://127.0.0.1:{proxy.port}/topics/{TOPIC}"
        payload = "x" * args.message_bytes
        pacers = [
            Paced(1 / args.rate, embedded_sender(producer, embedded, payload.encode())),
            Paced(
                args.proxy_batch / args.rate,
                proxy_sender(session, url, via_proxy, args.proxy_batch, payload),
            ),
        ]
        try:
            for pacer in pacers:
                pacer.start()
            for number in range(1, args.kills + 1):
                samples.append(
                    await one_kill(number, bed, client, watcher, [embedded, via_proxy], raw, args)
                )
            await asyncio.sleep(args.settle_s)
        finally:
            for pacer in pacers:
                await pacer.stop(options.delivery_timeout_s + 5)
            await proxy.close()
            recorder.cancel()
            await asyncio.gather(recorder, return_exceptions=True)
    keys = ["detection", "topology_published", "topology_seen", "first_ack_embedded"]
    keys.append("first_ack_proxy")
    report: dict[str, Any] = {"kills": len(samples)}
    for key in keys:
        report[key] = latency_ms([s[f"{key}_s"] for s in samples])
    report["restart"] = latency_ms([s["restart_s"] for s in samples])
    readmitted = [s["readmitted_after_restart_s"] for s in samples]
    report["readmitted_after_restart"] = latency_ms(readmitted)
    report["samples"] = samples
    return report


async def verify(
    config: GroupConfig, paths: list[Acks], args: argparse.Namespace
) -> dict[str, Any]:
    """Read the failover topic back from every cluster; what was acknowledged and not read.

    The consumer keeps every copy (``dedup_window=0``), so duplicates are counted here
    before any dedup: copies of an id beyond its first, and ids read from more than one
    cluster or twice from one.
    """
    acked: dict[bytes, str] = {}
    for path in paths:
        acked.update(path.ids)
    missing = set(acked)
    copies: dict[bytes, dict[str, int]] = {}  # id -> cluster -> copies read
    options = ConsumerOptions(poll_interval_ms=100, dedup_window=0)
    async with HAConsumer(config, "bench-verify", topics=[TOPIC], options=options) as consumer:
        last_new = time.monotonic()
        while time.monotonic() - last_new < (args.verify_idle_s if missing else 2.0):
            records = await consumer.getmany(timeout=0.5)
            if records:
                last_new = time.monotonic()
            for r in records:
                if r.message_id is not None:
                    on = copies.setdefault(r.message_id, {})
                    on[r.cluster] = on.get(r.cluster, 0) + 1
            missing.difference_update(r.message_id for r in records if r.message_id)
        await consumer.commit()
    lost = sorted(missing)
    return {
        "acknowledged": {p.name: len(p.ids) for p in paths},
        "consumed_unique": len(copies),
        "consumed_copies": sum(sum(on.values()) for on in copies.values()),
        "consumed_not_acknowledged": sum(1 for i in copies if i not in acked),
        "lost": len(lost),
        "lost_ids": [i.decode() for i in lost[:20]],
        "lost_by_cluster": {
            c: sum(1 for i in lost if acked[i] == c) for c in sorted({acked[i] for i in lost})
        },
        "duplicate_copies": sum(sum(on.values()) - 1 for on in copies.values()),
        "ids_on_two_clusters_or_more": sum(1 for on in copies.values() if len(on) > 1),
        "ids_twice_on_one_cluster": sum(1 for on in copies.values() if max(on.values()) > 1),
        "acknowledged_twice": sum(p.twice for p in paths),
        "send_failures": {p.name: p.failed for p in paths},
        "proxy_responses": {str(k): v for k, v in sorted(paths[-1].responses.items())},
        "proxy_records_resent": paths[-1].resent,
    }


# ---------------------------------------------------------------- (d) consumer stall


def _gaps(times: list[float], start: float, end: float, before: float | None) -> list[float]:
    """Gaps between consecutive ``times`` in [start, end], counting the gap from ``before``
    (the last delivery before ``start``) to the first one and from the last one to ``end``."""
    inside = [t for t in times if start <= t <= end]
    points = ([before] if before is not None else []) + inside
    gaps = [b - a for a, b in itertools.pairwise(points)]
    if points:
        gaps.append(end - points[-1])
    return gaps


def _stall_figures(
    deliveries: list[tuple[float, str]], killed: str, kill_at: float, window_s: float
) -> dict[str, Any]:
    live = sorted(t for t, c in deliveries if c != killed)
    before = [t for t in live if kill_at - window_s <= t < kill_at]
    normal = [b - a for a, b in itertools.pairwise(before)]
    after = _gaps(live, kill_at, kill_at + window_s, before[-1] if before else None)
    by_cluster: dict[str, int] = {}
    for t, c in deliveries:
        if kill_at <= t <= kill_at + window_s:
            by_cluster[c] = by_cluster.get(c, 0) + 1
    longest_after = max(after, default=window_s)
    longest_before = max(normal, default=0.0)
    return {
        "max_gap_ms_after_kill": round(longest_after * 1000, 1),
        "max_gap_ms_before_kill": round(longest_before * 1000, 1),
        "median_gap_ms_before_kill": round(statistics.median(normal) * 1000, 2) if normal else None,
        "excess_ms": round((longest_after - longest_before) * 1000, 1),
        "delivered_after_kill": by_cluster,
    }


async def loop_lag(into: list[tuple[float, float]], period_s: float = 0.01) -> None:
    """Append (monotonic time, seconds late) of a ``period_s`` sleep, until cancelled."""
    while True:
        began = time.monotonic()
        await asyncio.sleep(period_s)
        into.append((began, time.monotonic() - began - period_s))


class _GcTimer:
    """A ``gc.callbacks`` entry appending (start, seconds, generation) of every collection."""

    def __init__(self, into: list[tuple[float, float, int]]) -> None:
        self.into = into
        self.began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.began = time.monotonic()
        else:
            self.into.append((self.began, time.monotonic() - self.began, info["generation"]))


async def stall(bed: KafkaTestBed, raw: Raw, args: argparse.Namespace) -> dict[str, Any]:
    """Multi-primary: a stream into every cluster, one broker SIGKILLed; delivery gaps."""
    config = stall_config(bed)
    await ensure_topics(config)
    physical = config.topic(STALL_TOPIC).physical
    killed = args.stall_kill
    producers = {
        c.name: AIOKafkaProducer(bootstrap_servers=c.bootstrap_servers, acks="all")
        for c in config.clusters
    }
    for producer in producers.values():
        await producer.start()

    def sender(name: str) -> Callable[[int], Coroutine[Any, Any, None]]:
        producer = producers[name]

        async def send(n: int) -> None:
            mid = f"{name}-{n}".encode()
            with contextlib.suppress(Exception):  # the killed cluster's last sends fail
                await producer.send_and_wait(
                    physical, b"x" * args.message_bytes, headers=[(MESSAGE_ID_HEADER, mid)]
                )

        return send

    options = ConsumerOptions(poll_interval_ms=args.poll_interval_ms)
    consumers = {
        "with_commit": HAConsumer(config, "bench-stall-commit", options=options),
        "without_commit": HAConsumer(config, "bench-stall-plain", options=options),
    }
    deliveries: dict[str, list[tuple[float, str]]] = {name: [] for name in consumers}
    commits: list[tuple[float, float]] = []  # (monotonic start, seconds) of every commit
    committing: list[float] = []  # the monotonic start of the commit in progress, if one is
    refused: dict[str, int] = {}  # cluster -> commits that did not take after the kill
    kill_at = float("inf")
    armed, gone = asyncio.Event(), asyncio.Event()

    async def consume(name: str, consumer: HAConsumer) -> None:
        nonlocal kill_at
        into = deliveries[name]
        while True:
            records = await consumer.getmany(timeout=0.05)
            now = time.monotonic()
            into.extend((now, r.cluster) for r in records)
            if name != "with_commit" or not records:
                continue
            if armed.is_set() and any(r.cluster == killed for r in records):
                # The broker dies while this consumer holds records from it not committed
                # yet: what happens whenever a cluster dies under a busy consumer.
                armed.clear()
                kill_at = time.monotonic()
                await bed[killed].brokers[0].kill()
                gone.set()
            began = time.monotonic()
            committing.append(began)
            done = await consumer.commit()
            committing.clear()
            commits.append((began, time.monotonic() - began))
            if began >= kill_at:
                for cluster, ok in done.items():
                    refused[cluster] = refused.get(cluster, 0) + (not ok)

    pacers = {name: Paced(1 / args.stall_rate, sender(name)) for name in producers}
    lags: list[tuple[float, float]] = []
    collections: list[tuple[float, float, int]] = []
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(loop_lag(lags))]
    timer = _GcTimer(collections)
    gc.callbacks.append(timer)
    try:
        for consumer in consumers.values():
            await consumer.start()
        tasks += [asyncio.create_task(consume(n, c)) for n, c in consumers.items()]
        for pacer in pacers.values():
            pacer.start()

        def warm() -> bool:
            return all({c for _, c in got} >= set(producers) for got in deliveries.values())

        await until(warm, 60, "deliveries from every cluster to both consumers")
        await asyncio.sleep(args.stall_window_s)  # the "before" window
        # The killed cluster's producer goes on (its sends fail once it is dead); the kill
        # comes from the committing consumer, right after it took records from that cluster.
        armed.set()
        await asyncio.wait_for(gone.wait(), 10)
        say(f"stall: SIGKILL {killed}, watching deliveries for {args.stall_window_s:g} s")
        await asyncio.sleep(max(0.0, kill_at + args.stall_window_s - time.monotonic()))
    finally:
        ended_at = time.monotonic()
        in_progress = list(committing)
        gc.callbacks.remove(timer)
        for name, pacer in pacers.items():
            await pacer.stop(0 if name == killed else 5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for consumer in consumers.values():
            await consumer.close(commit=False)
        for producer in producers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)
    raw.stall_kill_at, raw.stall_killed, raw.stall_deliveries = kill_at, killed, deliveries
    raw.stall_lags = lags
    raw.stall_commits = commits + [(t, ended_at - t) for t in in_progress]
    report: dict[str, Any] = {
        "killed": killed,
        "rate_per_cluster": args.stall_rate,
        "poll_interval_ms": args.poll_interval_ms,
        "window_s": args.stall_window_s,
    }
    for name, got in deliveries.items():
        report[name] = _stall_figures(got, killed, kill_at, args.stall_window_s)
    # Both consumers share this process's event loop: a gap in both at once is the loop
    # not running (CPU starved, or a long collection), not a consumer waiting on a cluster.
    for label, lo, hi in (
        ("before_kill", kill_at - args.stall_window_s, kill_at),
        ("after_kill", kill_at, kill_at + args.stall_window_s),
    ):
        chosen = [lag for at, lag in lags if lo <= at < hi]
        report[f"loop_lag_max_ms_{label}"] = round(max(chosen, default=0.0) * 1000, 1)
        pauses = [d for at, d, _ in collections if lo <= at < hi]
        report[f"gc_max_ms_{label}"] = round(max(pauses, default=0.0) * 1000, 1)
    # By when a commit ended; one still waiting when the window ended counts with the
    # time it had waited.
    unfinished = [(t, ended_at - t) for t in in_progress]
    for label, chosen in (
        ("before_kill", [d for t, d in commits + unfinished if t + d < kill_at]),
        ("after_kill", [d for t, d in commits + unfinished if t + d >= kill_at]),
    ):
        report["with_commit"][f"commit_max_ms_{label}"] = round(max(chosen, default=0) * 1000, 1)
    report["with_commit"]["commits_after_kill"] = sum(1 for t, _ in commits if t >= kill_at)
    report["with_commit"]["commit_unfinished_at_end_ms"] = (
        round(unfinished[0][1] * 1000, 1) if unfinished else None
    )
    report["with_commit"]["commits_refused_after_kill"] = dict(sorted(refused.items()))
    for name in consumers:
        figures = report[name]
        figures["goal_met"] = figures["excess_ms"] <= args.poll_interval_ms
    return report


# ---------------------------------------------------------------- plots


def plot(report: dict[str, Any], raw: Raw, out: Path) -> list[str]:
    """Write the PNG plots into ``out``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    clusters = sorted({c for acks in raw.acks.values() for _, c in acks.timeline})
    colors = {c: f"C{i}" for i, c in enumerate(clusters)}
    samples = report["failover"]["samples"]
    bin_s = 0.1

    rows = max(1, len(raw.kills_at))
    fig, axes = plt.subplots(rows, 2, figsize=(12, 2.4 * rows + 0.6), squeeze=False, sharex=True)
    for row, (killed_at, sample) in enumerate(zip(raw.kills_at, samples, strict=False)):
        lo, hi = -2.0, max(6.0, sample["first_ack_proxy_s"] + 3, sample["first_ack_embedded_s"] + 3)
        edges = [lo + i * bin_s for i in range(int((hi - lo) / bin_s) + 1)]
        for col, name in enumerate(("embedded", "proxy")):
            ax = axes[row][col]
            bottom = [0.0] * (len(edges) - 1)
            for cluster in clusters:
                counts = [0.0] * (len(edges) - 1)
                for at, c in raw.acks[name].timeline:
                    x = at - killed_at
                    if c == cluster and lo <= x < edges[-1]:
                        counts[min(len(counts) - 1, int((x - lo) / bin_s))] += 1 / bin_s
                ax.bar(edges[:-1], counts, width=bin_s, bottom=bottom, align="edge",
                       color=colors[cluster], label=cluster)  # fmt: skip
                bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
            ax.axvline(0, color="k", lw=1)
            ax.axvline(sample["topology_seen_s"], color="k", ls="--", lw=1)
            ax.set_title(
                f"kill {sample['kill']} ({sample['killed']}), {name}: first ack on "
                f"{sample['new_primary']} {sample[f'first_ack_{name}_s']:.2f} s",
                fontsize=9,
            )
            ax.set_ylabel("acks/s")
    axes[0][0].legend(fontsize=8, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("s after SIGKILL (solid); dashed: watcher saw the new topology")
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=90)
    plt.close(fig)
    names.append("timeline.png")

    keys = [
        ("detection_s", "decision"),
        ("topology_published_s", "topology published"),
        ("topology_seen_s", "watcher saw it"),
        ("first_ack_embedded_s", "first ack, embedded"),
        ("first_ack_proxy_s", "first ack, proxy"),
    ]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        ax.bar([s["kill"] + (i - 2) * width for s in samples], [s[key] * 1000 for s in samples],
               width=width, label=label)  # fmt: skip
    ax.set_xlabel("kill")
    ax.set_ylabel("ms after SIGKILL")
    ax.set_xticks([s["kill"] for s in samples])
    ax.legend(fontsize=8)
    ax.set_title("Kill of the primary's broker to ...")
    fig.tight_layout()
    fig.savefig(out / "kill_to_ack.png", dpi=90)
    plt.close(fig)
    names.append("kill_to_ack.png")

    runs = report["throughput"]["rounds"]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.bar(range(len(runs)), [r["msgs_per_s"] for r in runs],
           color=[{"ha": "C0", "plain": "C1", "ha_many": "C2"}.get(r["producer"], "C3")
                  for r in runs])  # fmt: skip
    ax.set_xticks(range(len(runs)), [f"{r['producer']}\nround {r['round']}" for r in runs],
                  fontsize=8)  # fmt: skip
    ax.set_ylabel("messages/s")
    tp = report["throughput"]
    ax.set_title(
        f"HAProducer vs AIOKafkaProducer(acks='all'), {tp['concurrency']} senders, "
        f"{tp['message_bytes']} B: ratio {tp['ratio']:.2f}; send_many vs plain batches of "
        f"{tp['batch']}: {tp['batch_ratio']:.2f}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=90)
    plt.close(fig)
    names.append("throughput.png")

    window = report["stall"]["window_s"]
    poll_ms = report["stall"]["poll_interval_ms"]
    fig, axes = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True, squeeze=False)
    for ax, (name, got) in zip(axes[:, 0], raw.stall_deliveries.items(), strict=False):
        live = sorted(t - raw.stall_kill_at for t, c in got if c != raw.stall_killed)
        live = [x for x in live if -window <= x <= window]
        gaps = [(b, (b - a) * 1000) for a, b in itertools.pairwise(live) if b > a]  # log scale
        ax.plot([x for x, _ in gaps], [g for _, g in gaps], ".", ms=3, color="C0",
                label="gap between deliveries from live clusters")  # fmt: skip
        if live and window - live[-1] > 2 * poll_ms / 1000:  # still waiting at the end
            ax.plot([window], [(window - live[-1]) * 1000], "o", mfc="none", color="C0",
                    label="no delivery since, at the window's end")  # fmt: skip
        lags = [(t - raw.stall_kill_at, lag * 1000) for t, lag in raw.stall_lags]
        lags = [(x, ms) for x, ms in lags if -window <= x <= window and ms >= 5]
        ax.plot([x for x, _ in lags], [ms for _, ms in lags], "x", ms=3, color="C1",
                label="event loop late by (>= 5 ms)")  # fmt: skip
        if name == "with_commit":
            spans = [(t - raw.stall_kill_at, d * 1000) for t, d in raw.stall_commits]
            spans = [(x, ms) for x, ms in spans if -window <= x <= window and ms >= 5]
            ax.plot([x for x, _ in spans], [ms for _, ms in spans], "^", ms=4, color="C2",
                    label="commit() took (>= 5 ms), at its start")  # fmt: skip
        figures = report["stall"][name]
        ax.axhline(figures["max_gap_ms_before_kill"] + poll_ms, color="C3", ls="--", lw=1,
                   label="longest gap before the kill + one poll interval")  # fmt: skip
        ax.axvline(0, color="k", lw=1)
        ax.set_title(
            f"{name}: longest gap after the kill {figures['max_gap_ms_after_kill']:.0f} ms, "
            f"before {figures['max_gap_ms_before_kill']:.0f} ms (poll interval {poll_ms} ms)",
            fontsize=9,
        )
        ax.set_yscale("log")
        ax.set_ylabel("ms since the previous\ndelivery from a live cluster", fontsize=8)
        ax.legend(fontsize=8, loc="upper left")
    axes[-1][0].set_xlabel(f"s after SIGKILL of {raw.stall_killed} (multi-primary)")
    fig.tight_layout()
    fig.savefig(out / "stall.png", dpi=90)
    plt.close(fig)
    names.append("stall.png")
    return names


# ---------------------------------------------------------------- main


async def _all_up(control: Control) -> bool:
    for plane in control.planes:
        if plane.leading.is_set():
            verdicts = plane.state.verdicts
            return len(verdicts) == 3 and all(v.health is Health.UP for v in verdicts.values())
    return False


async def run(args: argparse.Namespace, base: Path, raw: Raw) -> dict[str, Any]:
    """The whole benchmark under ``base``; the report."""
    load_start = os.getloadavg()
    coord = LocalCluster(
        base / "coord", n=3, timing=Timing(heartbeat_ms=50, election_timeout_ms=500)
    )
    coord.start()
    say("starting three Kafka clusters (KRaft, one node each) and a 3-member hacoord cluster")
    try:
        async with KafkaTestBed(base / "kafka", clusters=3) as bed:
            await coord.wait_for_leader()
            config = group_config(bed)
            await ensure_topics(config)
            async with hacoord.connect(coord.endpoints()) as client:
                control = Control(client, config, args)
                control.start()
                try:
                    deadline = time.monotonic() + 60
                    while not await _all_up(control):
                        if time.monotonic() > deadline:
                            raise TimeoutError("the control plane never saw all three clusters up")
                        await asyncio.sleep(0.05)
                    async with TopologyWatcher(client, GROUP) as watcher:
                        first = watcher.current
                        say(f"topology v{first.version}: primary {first.primary}")
                        say("throughput: HAProducer vs plain AIOKafkaProducer, alternated")
                        throughput_report = await throughput(config, watcher, args)
                        say(f"failover: {args.kills} kill(s) of the primary under load")
                        failover_report = await failover(bed, client, config, watcher, raw, args)
                finally:
                    await control.stop()
                say("reading everything back")
                delivery = await verify(config, list(raw.acks.values()), args)
                say(f"lost {delivery['lost']}, duplicate copies {delivery['duplicate_copies']}")
            say("consumer stall: multi-primary, one broker killed")
            stall_report = await stall(bed, raw, args)
    finally:
        await coord.close()
    ratio = throughput_report["ratio"]
    return {
        "benchmark": "kafka_failover",
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_start": [round(x, 2) for x in load_start],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {
            "clusters": 3,
            "coordinator_members": 3,
            "mode": "primary",
            "rate_per_path_msgs_per_s": args.rate,
            "proxy_batch": args.proxy_batch,
            "message_bytes": args.message_bytes,
            "probe_interval_s": args.interval_s,
            "probe_timeout_s": args.probe_timeout_s,
            "failures_to_confirm": args.failures,
            "readmit_after_s": args.readmit_after_s,
            "attempt_timeout_s": args.attempt_timeout_s,
            "settle_s": args.settle_s,
        },
        "failover": failover_report,
        "delivery": delivery,
        "throughput": throughput_report,
        "stall": stall_report,
        "goals": {
            "lost (goal 0)": delivery["lost"],
            "duplicate copies read (reported; delivery is at least once)": delivery[
                "duplicate_copies"
            ],
            "throughput ratio HAProducer / plain (goal >= 0.9)": ratio,
            "throughput ratio send_many / plain batches (goal >= 0.9)": throughput_report[
                "batch_ratio"
            ],
            "stall excess ms with commit (goal <= poll interval)": stall_report["with_commit"][
                "excess_ms"
            ],
            "stall excess ms without commit (goal <= poll interval)": stall_report[
                "without_commit"
            ]["excess_ms"],
        },
    }


QUICK = {
    "kills": 1,
    "throughput_s": 1.0,
    "throughput_rounds": 2,
    "warmup_s": 0.3,
    "settle_s": 0.5,
    "stall_window_s": 3.0,
    "verify_idle_s": 10.0,
}


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--rate", type=float, default=200.0, help="messages/s of each produce path")
    p.add_argument("--proxy-batch", type=int, default=10, help="records per proxy request")
    p.add_argument("--message-bytes", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=64, help="senders of the throughput runs")
    p.add_argument("--throughput-s", type=float, default=3.0, help="length of one throughput run")
    p.add_argument("--throughput-rounds", type=int, default=4, help="runs of each producer")
    p.add_argument("--batch", type=int, default=100, help="messages per send_many / plain batch")
    p.add_argument("--batch-concurrency", type=int, default=8, help="senders of the batch runs")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--interval-s", type=float, default=0.3, help="probe and control interval")
    p.add_argument("--probe-timeout-s", type=float, default=1.0)
    p.add_argument("--failures", type=int, default=2, help="failed probes in a row = down")
    p.add_argument("--readmit-after-s", type=float, default=3.0)
    p.add_argument("--attempt-timeout-s", type=float, default=2.0)
    p.add_argument("--settle-s", type=float, default=2.0, help="steady traffic before a kill")
    p.add_argument("--verify-idle-s", type=float, default=30.0)
    p.add_argument("--poll-interval-ms", type=int, default=100, help="consumer poll interval")
    p.add_argument("--stall-rate", type=float, default=100.0, help="messages/s per cluster")
    p.add_argument("--stall-window-s", type=float, default=10.0)
    p.add_argument("--stall-kill", default="k2", help="the cluster killed in the stall phase")
    p.add_argument("--quick", action="store_true", help="1 kill, short phases (the smoke test)")
    p.add_argument("--out", type=Path, help="also write results.json and PNG plots here")
    p.add_argument("--dir", type=Path, help="keep logs and data here (default: a temporary one)")
    args = p.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.kills < 1:
        p.error("--kills must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # aiokafka logs an ERROR for every failed reconnection to a dead broker (every ~100 ms).
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    raw = Raw()
    with contextlib.ExitStack() as stack:
        base = args.dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="hacoord-kafka-bench-"))
        )
        report = asyncio.run(run(args, base, raw))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report["plots"] = plot(report, raw, args.out)
        (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
