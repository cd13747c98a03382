"""The five workloads, each run against one system; every figure lands in a dict."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.compare.system import System

VALUE = b"v" * 64


@dataclass(frozen=True)
class Plan:
    """How long and how hard each workload runs (``--quick`` shrinks everything)."""

    serial_writes: int = 1000
    concurrencies: tuple[int, ...] = (1, 16, 64, 256)
    throughput_s: float = 10.0
    kills: int = 20
    leases: int = 10_000
    lease_ttl_s: int = 5
    lease_s: float = 60.0
    reads_s: float = 10.0
    read_concurrency: int = 64
    embedded_s: float = 5.0

    @classmethod
    def quick(cls) -> Plan:
        """A few seconds per workload: exercises the harness, measures little."""
        return cls(
            serial_writes=30,
            concurrencies=(1, 64),
            throughput_s=1.0,
            kills=2,
            leases=200,
            lease_ttl_s=2,
            lease_s=3.0,
            reads_s=1.0,
            read_concurrency=16,
            embedded_s=1.0,
        )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 1]); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds of a list of durations in seconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": round(percentile(ms, 0.5), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        "max_ms": round(max(ms, default=0.0), 3),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else 0.0,
    }


def progress(system: str, text: str) -> None:
    """One progress line on stderr (the run takes minutes)."""
    print(f"[{time.strftime('%H:%M:%S')}] {system:>9}: {text}", file=sys.stderr, flush=True)


async def serial_latency(system: System, plan: Plan) -> dict[str, Any]:
    """One client, sequential 64-byte writes."""
    latencies = []
    for i in range(plan.serial_writes):
        start = time.perf_counter()
        await system.put(f"serial/{i % 100}", VALUE)
        latencies.append(time.perf_counter() - start)
    progress(system.name, f"serial p50 {percentile(latencies, 0.5) * 1000:.2f} ms")
    return {"writes": len(latencies), **summary_ms(latencies), "samples_ms": _ms(latencies)}


async def _closed_loop(
    system: System, concurrency: int, seconds: float, read: bool
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    end = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        n = 0
        while time.monotonic() < end:
            n += 1
            key = f"load/{w}/{n % 10}"
            start = time.perf_counter()
            try:
                if read:
                    await system.get(key)
                else:
                    await system.put(key, VALUE)
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)

    started = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.monotonic() - started
    return {
        "concurrency": concurrency,
        "ops_per_s": round(len(latencies) / elapsed, 1),
        "errors": errors,
        **summary_ms(latencies),
    }


async def throughput(system: System, plan: Plan) -> list[dict[str, Any]]:
    """Concurrent writers over the network at each concurrency."""
    out = []
    for c in plan.concurrencies:
        result = await _closed_loop(system, c, plan.throughput_s, read=False)
        progress(system.name, f"throughput c={c}: {result['ops_per_s']:.0f} ops/s")
        out.append(result)
    return out


async def reads(system: System, plan: Plan) -> dict[str, Any]:
    """Linearizable reads at a fixed concurrency."""
    await system.put("load/0/0", VALUE)
    result = await _closed_loop(system, plan.read_concurrency, plan.reads_s, read=True)
    progress(system.name, f"reads c={plan.read_concurrency}: {result['ops_per_s']:.0f} ops/s")
    return result


async def failover(system: System, plan: Plan, election_timeout_ms: int) -> dict[str, Any]:
    """SIGKILL the leader; time until a new write commits."""
    times = []
    for i in range(plan.kills):
        await system.wait_healthy()
        leader = await system.leader()
        if leader < 0:
            raise RuntimeError(f"{system.name}: no leader before kill {i + 1}")
        system.kill(leader)
        killed = time.perf_counter()
        await system.put(f"failover/{i}", VALUE)
        times.append(time.perf_counter() - killed)
        system.restart(leader)
        progress(system.name, f"failover {i + 1}/{plan.kills}: {times[-1] * 1000:.0f} ms")
    await system.wait_healthy()
    summary = summary_ms(times)
    return {
        "kills": len(times),
        "election_timeout_ms": election_timeout_ms,
        **summary,
        "p99_x_election_timeout": round(summary["p99_ms"] / election_timeout_ms, 2),
        "max_x_election_timeout": round(summary["max_ms"] / election_timeout_ms, 2),
        "samples_ms": _ms(times),
    }


def _cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def leases(system: System, plan: Plan) -> dict[str, Any]:
    """Many leases kept alive every second: spurious expiries, leader CPU, latency.

    Leases are granted 64 at a time while the renewal loop already runs (granting
    10,000 takes longer than their TTL); CPU and latency are measured over the
    ``lease_s`` seconds after the last grant.
    """
    granted: list[int] = []
    latencies: list[float] = []
    batch = getattr(system, "lease_keepalive_many", None)
    sem = asyncio.Semaphore(256)
    failures = 0
    late_rounds = 0
    measuring = False

    async def renew(lease_id: int) -> None:
        nonlocal failures
        async with sem:
            start = time.perf_counter()
            try:
                await system.lease_keepalive(lease_id)
            except Exception:  # an expired lease stays expired: counted at the end
                failures += 1
                return
            if measuring:
                latencies.append(time.perf_counter() - start)

    async def renew_all() -> None:
        nonlocal failures
        ids = list(granted)
        if batch is None:
            await asyncio.gather(*(renew(lid) for lid in ids))
            return
        for i in range(0, len(ids), 1000):
            start = time.perf_counter()
            try:
                await batch(ids[i : i + 1000])
            except Exception:
                failures += 1
                continue
            if measuring:
                latencies.append(time.perf_counter() - start)

    async def keep_renewing(stop: asyncio.Event) -> None:
        nonlocal late_rounds
        while not stop.is_set():
            round_start = time.monotonic()
            await renew_all()
            took = time.monotonic() - round_start
            if measuring and took > 1.0:
                late_rounds += 1  # the client could not renew every lease within a second
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, 1.0 - took)):
                    await stop.wait()

    stop = asyncio.Event()
    renewer = asyncio.create_task(keep_renewing(stop))
    grant_sem = asyncio.Semaphore(64)

    async def grant() -> None:
        async with grant_sem:
            granted.append(await system.lease_grant(plan.lease_ttl_s))

    try:
        await asyncio.gather(*(grant() for _ in range(plan.leases)))
        progress(system.name, f"{len(granted)} leases granted")
        leader = await system.leader()
        pid = system.pid(leader)
        measuring = True
        cpu_before, wall_before = _cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(plan.lease_s)
        cpu = (_cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before) * 100
    finally:
        stop.set()
        await renewer
    alive = await system.lease_ids()
    expired = len(set(granted) - alive)
    progress(system.name, f"leases: {expired} spurious expiries, leader CPU {cpu:.0f}%")
    return {
        "leases": len(granted),
        "ttl_s": plan.lease_ttl_s,
        "seconds": plan.lease_s,
        "spurious_expiries": expired,
        "leader_cpu_percent": round(cpu, 1),
        "keepalive_batched": batch is not None,
        "keepalive_failures": failures,
        "keepalive_rounds_late": late_rounds,
        "keepalive_p99_ms": summary_ms(latencies)["p99_ms"],
    }


def _ms(seconds: list[float]) -> list[float]:
    return [round(s * 1000, 3) for s in seconds]
