"""The MySQL failover daemon: run it in each coordinator member, and an agent per mysqld.

    # on each of the three coordinator hosts (a Raft member + monitor + orchestrator):
    python examples/mysql_failover_daemon.py member --member member1.toml --mysql-config mysql.toml
    # beside each mysqld:
    python examples/mysql_failover_daemon.py agent --mysql-config mysql.toml \\
        --cluster orders --host 10.0.0.1:3306 --endpoints 10.0.0.11:8001,10.0.0.12:8001
    # everything on this machine (MariaDB + BIND9 + three daemons), then a primary crash:
    python examples/mysql_failover_daemon.py demo

The same commands exist as ``hacoord mysql daemon|agent|status|...``. ``mysql.toml`` is
described in ``docs/mysql.md`` (see ``examples/mysql.toml``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import hacoord
from hacoord.adapters.mysql.adapter import NAMESPACE
from hacoord.adapters.mysql.agent import Agent
from hacoord.adapters.mysql.daemon import run_daemon
from hacoord.adapters.mysql.daemon_config import load_daemon_config
from hacoord.adapters.mysql.local_site import RECORD, ZONE, LocalSite
from hacoord.adapters.mysql.primary import read_primary, watch_primary
from hacoord.adapters.mysql.testbed import ensure_mariadb_installed
from hacoord.workflow import WorkflowStore


async def agent(args: argparse.Namespace) -> None:
    config = load_daemon_config(Path(args.mysql_config))
    endpoints = [e if "://" in e else f"http://{e}" for e in args.endpoints.split(",")]
    async with hacoord.connect(endpoints) as client:
        await Agent(
            client, config.cluster(args.cluster), args.host, interval_s=config.agent_interval_s
        ).run()


async def demo(base: Path, with_dns: bool) -> None:
    ensure_mariadb_installed()
    async with LocalSite(base, dns=with_dns) as site:
        print("three MariaDB servers, three daemon processes" + (", BIND9" if with_dns else ""))
        async with hacoord.connect(site.endpoints()) as client:
            while (primary := await read_primary(client, "orders")) is None:
                await asyncio.sleep(0.1)
            print(f"primary adopted: {primary.host} (token {primary.token})")
            cfg = site.daemon_config().cluster("orders")
            agents = [
                asyncio.create_task(Agent(client, cfg, site.name(i), 0.5).run()) for i in range(3)
            ]
            old = next(i for i in range(3) if site.name(i) == primary.host)
            await site.bed.execute(old, "INSERT INTO app.writes VALUES (1, 'before the crash')")
            killed_at = time.monotonic()
            site.bed.kill(old)
            print(f"SIGKILLed the primary {primary.host}")
            async for record in watch_primary(client, "orders"):
                if record is not None and record.host != primary.host:
                    break
            took = time.monotonic() - killed_at
            print(f"failed over to {record.host} in {took:.1f} s (token {record.token})")
            store = WorkflowStore(client, NAMESPACE)
            while (run := (await store.history("orders", 1))[0]).finished_at is None:
                await asyncio.sleep(0.05)  # the last steps (DNS) follow the record
            print(f"failover workflow {run.status}: {', '.join(s.name for s in run.steps)}")
            print(f"why: {run.params['reason']}")
            if site.bind is not None:
                answer = await site.bind.resolve(f"{RECORD}.{ZONE}")
                print(f"DNS {RECORD}.{ZONE} -> {', '.join(answer)}")
            new = next(i for i in range(3) if site.name(i) == record.host)
            if site.bind is not None:
                print(f"DNS answers the new primary: {answer == [site.dns_name(new)]}")
            conn = await site.bed.connect(new, user="app", db="app")
            async with conn.cursor() as cur:
                await cur.execute("INSERT INTO writes VALUES (2, 'after the failover')")
                await cur.execute("SELECT COUNT(*) FROM writes")
                (rows,) = await cur.fetchone()
            conn.close()
            print(f"writes resumed on the new primary: {rows} rows, none lost")
            for task in agents:
                task.cancel()
            await asyncio.gather(*agents, return_exceptions=True)
            proc = await asyncio.create_subprocess_exec(
                "python",
                "-m",
                "hacoord",
                "mysql",
                "status",
                "--mysql-config",
                str(site.config_path),
                "--endpoints",
                ",".join(e.removeprefix("http://") for e in site.endpoints()),
                stdout=asyncio.subprocess.PIPE,
                env={
                    **__import__("os").environ,
                    "HACOORD_MYSQL_ADMIN_PW": site.bed.admin_password,
                    "HACOORD_MYSQL_REPL_PW": site.bed.repl_password,
                    "HACOORD_TSIG_SECRET": site.bind.tsig_secret if site.bind else "",
                },
            )
            out, _ = await proc.communicate()
            print("hacoord mysql status:")
            print(out.decode().rstrip())
            print(json.dumps({"failover_s": round(took, 2), "new_primary": record.host}))


def main() -> None:
    p = argparse.ArgumentParser(description="MySQL failover daemon (example)")
    sub = p.add_subparsers(dest="mode", required=True)
    m = sub.add_parser("member", help="a coordinator member with monitor + orchestrator")
    m.add_argument("--member", required=True)
    m.add_argument("--mysql-config", required=True)
    a = sub.add_parser("agent", help="report one mysqld's health")
    a.add_argument("--mysql-config", required=True)
    a.add_argument("--cluster", required=True)
    a.add_argument("--host", required=True)
    a.add_argument("--endpoints", required=True)
    d = sub.add_parser("demo", help="a whole site on this machine, then a primary crash")
    d.add_argument("--no-dns", action="store_true")
    args = p.parse_args()
    if args.mode == "member":
        asyncio.run(run_daemon(Path(args.member), Path(args.mysql_config)))
    elif args.mode == "agent":
        asyncio.run(agent(args))
    else:
        with tempfile.TemporaryDirectory(prefix="hacoord-mysql-demo-") as tmp:
            asyncio.run(demo(Path(tmp), with_dns=not args.no_dns))


if __name__ == "__main__":
    main()
