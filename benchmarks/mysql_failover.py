"""MySQL failover time on real MariaDB, BIND9 and three daemon processes.

    python benchmarks/mysql_failover.py --kills 10
    python -m benchmarks.mysql_failover --kills 1     (the smoke test, ~10 s)

For each kill, a fresh site (three MariaDB servers, BIND9, three daemon processes):
SIGKILL the primary while a client writes continuously, then time (a) detection (the
orchestrator's decision), (b) the new primary taking a write from the client, (c) DNS
answering the new primary's name. Prints one JSON object with every sample,
p50/p99/max, and the acknowledged writes lost (0 expected with semi-sync).

A fresh site per kill: a primary killed under load usually holds a transaction it
had written but no replica had acknowledged; on restart it is (rightly) quarantined
rather than rejoined, so it cannot simply serve the next round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hacoord
from benchmarks.latency import latency_ms
from hacoord.adapters.mysql.adapter import FAILOVER, NAMESPACE
from hacoord.adapters.mysql.local_site import RECORD, ZONE, LocalSite, SiteTimings
from hacoord.adapters.mysql.primary import PrimaryRecord, read_primary, watch_primary
from hacoord.client import Client
from hacoord.workflow import WorkflowStore


class Writer:
    """Inserts rows into whichever server the published record names."""

    def __init__(self, site: LocalSite) -> None:
        self.site = site
        self.primary: PrimaryRecord | None = None
        self.acked: dict[int, int] = {}  # id -> server index
        self.first_ok_at: dict[int, float] = {}  # server index -> wall time of 1st ack

    def index(self, host: str) -> int:
        """The test bed index of the server published as ``host``."""
        return next(i for i in range(len(self.site.bed.servers)) if self.site.name(i) == host)

    async def follow(self, client: Client) -> None:
        """Keep :attr:`primary` on the published primary record (runs until cancelled)."""
        async for record in watch_primary(client, "orders"):
            self.primary = record

    async def write(self) -> None:
        """Insert rows one by one into :attr:`primary`, recording each acknowledged id."""
        next_id = 0
        conn: Any = None
        conn_index = -1
        while True:
            if self.primary is None:
                await asyncio.sleep(0.01)
                continue
            index = self.index(self.primary.host)
            next_id += 1
            try:
                if conn is None or conn_index != index:
                    if conn is not None:
                        conn.close()
                    conn, conn_index = None, -1
                    conn = await self.site.bed.connect(index, user="app", db="app")
                    conn_index = index
                async with conn.cursor() as cur:
                    await cur.execute("INSERT INTO writes VALUES (%s, 'b')", (next_id,))
            except Exception:
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn, conn_index = None, -1
                await asyncio.sleep(0.01)  # retry against the (maybe new) primary
                continue
            self.acked[next_id] = index
            self.first_ok_at.setdefault(index, time.time())


async def _until(predicate: Any, timeout: float, poll_s: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(poll_s)


async def one_kill(
    args: argparse.Namespace, base: Path, samples: dict[str, list[float]]
) -> tuple[int, int]:
    """A fresh site; SIGKILL its primary under load; returns (acked writes, lost)."""
    timings = SiteTimings(
        probe_interval_s=args.probe_interval_s,
        probe_timeout_s=args.probe_timeout_s,
        failures_to_confirm=args.failures,
        block_period_s=args.block_period_s,
    )
    site = LocalSite(base, dns=not args.no_dns, timings=timings)
    async with site, hacoord.connect(site.endpoints()) as client:
        await _until(lambda: read_primary(client, "orders"), 60)
        writer = Writer(site)
        tasks = [asyncio.create_task(writer.follow(client)), asyncio.create_task(writer.write())]
        try:
            record = await read_primary(client, "orders")
            assert record is not None
            old = writer.index(record.host)
            await _until(lambda: _acked_on(writer, old, 50), 30)
            writer.first_ok_at.clear()
            killed_at = time.time()
            site.bed.kill(old)
            await _until(lambda: _new_primary_writable(writer, old), 60)
            new = next(i for i in writer.first_ok_at if i != old)
            samples["writable"].append(writer.first_ok_at[new] - killed_at)
            if site.bind is not None:
                name, target = f"{RECORD}.{ZONE}", site.dns_name(new)
                await _until(lambda: _dns_is(site, name, target), 30)
                samples["dns"].append(time.time() - killed_at)
            run_record = (await WorkflowStore(client, NAMESPACE).history("orders", 1))[0]
            assert run_record.kind == FAILOVER, run_record
            samples["detection"].append(run_record.params["detected_at"] - killed_at)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        rows = await site.bed.execute(new, "SELECT id FROM app.writes")
        on_new = {int(str(r[0])) for r in rows}
        lost = [i for i, s in writer.acked.items() if s == old and i not in on_new]
    return len(writer.acked), len(lost)


async def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    """Run ``args.kills`` rounds, each on a fresh site under ``base``; return the figures."""
    samples: dict[str, list[float]] = {"detection": [], "writable": [], "dns": []}
    acked_total = lost_total = 0
    for kill in range(args.kills):
        acked, lost = await one_kill(args, base / f"kill{kill}", samples)
        acked_total += acked
        lost_total += lost
        print(
            f"kill {kill + 1}: detected after {samples['detection'][-1]:.2f} s, writable after"
            f" {samples['writable'][-1]:.2f} s"
            + (f", DNS after {samples['dns'][-1]:.2f} s" if samples["dns"] else "")
            + f", acknowledged writes lost {lost}",
            file=sys.stderr,
        )
    return {
        "kills": args.kills,
        "settings": {
            "probe_interval_s": args.probe_interval_s,
            "probe_timeout_s": args.probe_timeout_s,
            "failures_to_confirm": args.failures,
            "block_period_s": args.block_period_s,
            "semi_sync": "AFTER_SYNC",
        },
        "detection": latency_ms(samples["detection"]),
        "new_primary_writable": latency_ms(samples["writable"]),
        "dns_answers_new_primary": latency_ms(samples["dns"]),
        "acknowledged_writes": acked_total,
        "acknowledged_writes_lost": lost_total,
        "samples_s": {k: [round(v, 3) for v in vs] for k, vs in samples.items()},
    }


async def _acked_on(writer: Writer, index: int, count: int) -> bool:
    return sum(1 for s in writer.acked.values() if s == index) >= count


async def _new_primary_writable(writer: Writer, old: int) -> bool:
    return any(i != old for i in writer.first_ok_at)


async def _dns_is(site: LocalSite, name: str, target: str) -> bool:
    return target in await site.bind.resolve(name)


async def _replicating(site: LocalSite, index: int) -> bool:
    status = await site.bed.replica_status(index)
    return status is not None and status["Slave_IO_Running"] == "Yes"


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--probe-interval-s", type=float, default=0.5)
    p.add_argument("--probe-timeout-s", type=float, default=1.0)
    p.add_argument("--failures", type=int, default=3, help="failed probes in a row = down")
    p.add_argument("--block-period-s", type=float, default=3600.0)
    p.add_argument("--no-dns", action="store_true", help="skip BIND9")
    p.add_argument("--dir", help="keep logs and data here (default: a temporary directory)")
    args = p.parse_args()
    if args.kills < 1:
        p.error("--kills must be >= 1")
    if args.dir:
        print(json.dumps(asyncio.run(run(args, Path(args.dir))), indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="hacoord-mysql-bench-") as tmp:
        print(json.dumps(asyncio.run(run(args, Path(tmp))), indent=2))


if __name__ == "__main__":
    main()
