"""MySQL primary switchover, failover and rejoin on real MariaDB servers.

    python examples/mysql_failover.py

Needs MariaDB's server binaries (Debian's ``mariadb-server``; installed on demand when
run as root). Starts three ``mariadbd`` on 127.0.0.1 replicating by GTID with
semi-sync, and a three-member hacoord cluster. An orchestrator wins the election and,
with its fencing token: switches the primary over to server 1, fails over when server
1 is SIGKILLed, brings server 1 back as a replica, and prints the workflow history.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import hacoord
from hacoord.adapters.mysql import (
    ClusterConfig,
    Credentials,
    Host,
    MySQLAdapter,
    read_primary,
)
from hacoord.adapters.mysql.testbed import MariaDBTestBed, ensure_mariadb_installed
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster
from hacoord.workflow import WorkflowStore


async def main(base: Path) -> None:
    ensure_mariadb_installed()
    cluster = LocalCluster(
        base / "coord", n=3, timing=Timing(heartbeat_ms=50, election_timeout_ms=500)
    )
    cluster.start()
    async with MariaDBTestBed(base / "mariadb") as bed:
        try:
            await cluster.wait_for_leader()
            names = [f"{s.host}:{s.port}" for s in bed.servers]
            config = ClusterConfig(
                "orders",
                tuple(Host(s.host, s.port) for s in bed.servers),
                admin=Credentials(bed.admin_user, bed.admin_password),
                replication=Credentials(bed.repl_user, bed.repl_password),
            )
            adapter = MySQLAdapter([config])
            async with hacoord.connect(cluster.endpoints()) as client:
                leadership = await client.election("mysql-orchestrator").acquire(b"example")
                engine = adapter.engine(leadership)
                print(f"orchestrator elected with fencing token {engine.token}")
                for line in (await adapter.discover("orders")).describe():
                    print("  " + line)

                await bed.execute(0, "INSERT INTO app.writes VALUES (1, 'first')")
                record = await adapter.switchover(engine, "orders", candidate=names[1])
                print(f"switchover {record.status}: primary is now {names[1]}")

                bed.kill(1)
                print(f"SIGKILLed the primary {names[1]}")
                record = await adapter.failover(engine, "orders", old_primary=names[1])
                new = record.output("promote")["primary"]
                print(f"failover {record.status}: primary is now {new}")
                primary = await read_primary(client, "orders")
                assert primary is not None
                print(f"published primary: {primary.host} with token {primary.token}")

                await bed.restart(1)
                record = await adapter.rejoin(engine, "orders", names[1])
                outcome = record.output("rejoin_or_quarantine")["outcome"]
                print(f"{names[1]} came back read-only and was {outcome}")

                print("workflow history (newest first):")
                for run in await WorkflowStore(client, "mysql").history("orders"):
                    steps = ", ".join(f"{s.name} {s.duration_s * 1000:.0f} ms" for s in run.steps)
                    print(f"  {run.kind} {run.status} token {run.token}: {steps}")
                await leadership.resign()
        finally:
            await cluster.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="hacoord-mysql-") as tmp:
        asyncio.run(main(Path(tmp)))
