"""Soak: random coordinator member kills, no MySQL fault: there must be no failover.

    python benchmarks/mysql_soak.py --minutes 10        (make soak-mysql; not in CI)

Runs a LocalSite (three MariaDB servers, three ``hacoord mysql daemon`` processes,
BIND9 when available) with the daemon's default detection settings, writes
continuously to the published primary, and every 15-30 s SIGKILLs a random daemon
process (a coordinator member with its monitor and orchestrator candidate), bringing
it back 3-8 s later. Prints JSON: kills, failovers (must be 0), verdicts other than
"alive" seen, acknowledged writes and writes lost.
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

sys.path.insert(0, str(Path(__file__).parent))
from mysql_failover import Writer


async def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
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
            while time.monotonic() < end:
                await asyncio.sleep(rng.uniform(15, 30))  # the soak's fault schedule
                member = rng.choice(coordinator.running())
                coordinator.kill(member)
                kills += 1
                print(f"killed member {member}", file=sys.stderr)
                await asyncio.sleep(rng.uniform(3, 8))
                coordinator.start(member)
                kv = await client.get(decision_key("orders"))
                if kv is not None:
                    verdict = json.loads(kv.value)["verdict"]
                    verdicts[verdict] = verdicts.get(verdict, 0) + 1
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
        "member_kills": kills,
        "failovers": len(failovers),
        "verdicts_seen_after_kills": verdicts,
        "acknowledged_writes": len(writer.acked),
        "acknowledged_writes_lost": len(lost),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-dns", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hacoord-mysql-soak-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["failovers"] == 0 and result["acknowledged_writes_lost"] == 0 else 1)


if __name__ == "__main__":
    main()
