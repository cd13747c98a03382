"""Soak: random coordinator member kills, no MySQL fault: there must be no failover.

    python benchmarks/mysql_soak.py --minutes 10        (make soak-mysql; not in CI)
    python -m benchmarks.mysql_soak --quick             (smoke test: 2 kills, ~15 s)

Runs a LocalSite (three MariaDB servers, three ``hacoord mysql daemon`` processes,
BIND9 unless ``--no-dns``) with the daemon's default detection settings, writes
continuously to the published primary, and every 15-30 s SIGKILLs a random daemon
process (a coordinator member with its monitor and orchestrator candidate), bringing
it back 3-8 s later and waiting until it has caught up, so one member at most is down
at a time. ``--quick`` shortens both intervals to 1-2 s and stops after 2 kills
(``--kills`` overrides that). Prints JSON: kills, failovers (must be 0), the verdicts
read after each kill, acknowledged writes and writes lost; exits 1 unless both
failovers and writes lost are 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hacoord
from hacoord.adapters.mysql.adapter import FAILOVER, NAMESPACE
from hacoord.adapters.mysql.keys import decision_key
from hacoord.adapters.mysql.local_site import LocalSite
from hacoord.adapters.mysql.primary import read_primary
from hacoord.workflow import WorkflowStore

if not __package__:  # run as a script: python benchmarks/mysql_soak.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.mysql_failover import Writer


async def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    """Run the soak in ``base`` and return its figures."""
    rng = random.Random(args.seed)
    gap_s, down_s = ((1.0, 2.0), (1.0, 2.0)) if args.quick else ((15.0, 30.0), (3.0, 8.0))
    site = LocalSite(base, dns=not args.no_dns)
    verdicts: dict[str, int] = {}
    kills = 0
    async with site, hacoord.connect(site.endpoints()) as client:
        while await read_primary(client, "orders") is None:
            await asyncio.sleep(0.1)
        writer = Writer(site)
        tasks = [asyncio.create_task(writer.follow(client)), asyncio.create_task(writer.write())]
        coordinator = site.coordinator
        assert coordinator is not None
        end = time.monotonic() + args.minutes * 60
        try:
            while time.monotonic() < end and (args.kills is None or kills < args.kills):
                await asyncio.sleep(rng.uniform(*gap_s))  # the soak's fault schedule
                member = rng.choice(coordinator.running())
                coordinator.kill(member)
                kills += 1
                print(f"killed member {member}", file=sys.stderr)
                await asyncio.sleep(rng.uniform(*down_s))
                coordinator.start(member)
                kv = await client.get(decision_key("orders"))
                if kv is not None:
                    verdict = json.loads(kv.value)["verdict"]
                    verdicts[verdict] = verdicts.get(verdict, 0) + 1
                await coordinator.wait_in_sync(timeout=60)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        history = await WorkflowStore(client, NAMESPACE).history("orders")
        failovers = [r.id for r in history if r.kind == FAILOVER]
        primary = await read_primary(client, "orders")
        assert primary is not None
        index = writer.index(primary.host)
        rows = await site.bed.execute(index, "SELECT id FROM app.writes")
        present = {int(str(r[0])) for r in rows}
        lost = [i for i in writer.acked if i not in present]
    return {
        "minutes": args.minutes,
        "quick": args.quick,
        "member_kills": kills,
        "failovers": len(failovers),
        "verdicts_seen_after_kills": verdicts,
        "acknowledged_writes": len(writer.acked),
        "acknowledged_writes_lost": len(lost),
    }


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-dns", action="store_true")
    p.add_argument("--kills", type=int, default=None, help="stop after this many member kills")
    p.add_argument(
        "--quick", action="store_true", help="1-2 s intervals and 2 kills (the smoke test)"
    )
    args = p.parse_args()
    if args.kills is not None and args.kills < 1:
        p.error("--kills must be >= 1")
    if args.quick and args.kills is None:
        args.kills = 2
    with tempfile.TemporaryDirectory(prefix="hacoord-mysql-soak-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["failovers"] == 0 and result["acknowledged_writes_lost"] == 0 else 1)


if __name__ == "__main__":
    main()
