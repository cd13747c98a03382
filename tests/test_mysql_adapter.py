"""The MySQL adapter against real MariaDB replication: switchover, failover, rejoin, fencing.

Needs MariaDB (installed on demand when running as root); skips without it except under
CI=true, where a missing MariaDB is a failure.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import pytest_asyncio

import hacoord
from coordinator import local_client, single_member
from hacoord.adapters.mysql.adapter import FAILOVER, MySQLAdapter
from hacoord.adapters.mysql.config import ClusterConfig, Credentials, Host, Promotion
from hacoord.adapters.mysql.errors import FenceMismatchError, NoSafeCandidateError
from hacoord.adapters.mysql.fence import fenced_transaction, read_token
from hacoord.adapters.mysql.primary import PrimaryRecord, quarantine_key, read_primary
from hacoord.adapters.mysql.testbed import (
    MariaDBTestBed,
)
from hacoord.client import Client, Leadership
from hacoord.raft.timing import Timing
from hacoord.server.coordination import CoordinationService
from hacoord.server.local_cluster import LocalCluster
from hacoord.workflow import (
    FencedOutError,
    Status,
    Step,
    StepContext,
    StepFailedError,
    Workflow,
    WorkflowStore,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

CLUSTER = "db1"


@pytest_asyncio.fixture(loop_scope="module")
async def service(tmp_path: Path) -> AsyncIterator[CoordinationService]:
    async with single_member(tmp_path) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def client(service: CoordinationService) -> AsyncIterator[Client]:
    async with local_client(service) as c:
        yield c


def config(bed: MariaDBTestBed, **changes: object) -> ClusterConfig:
    cfg = ClusterConfig(
        CLUSTER,
        tuple(Host(s.host, s.port) for s in bed.servers),
        Credentials(bed.admin_user, bed.admin_password),
        Credentials(bed.repl_user, bed.repl_password),
        relay_log_wait_s=10,
        catch_up_wait_s=10,
    )
    return replace(cfg, **changes)  # type: ignore[arg-type]


def name(bed: MariaDBTestBed, index: int) -> str:
    return f"{bed.servers[index].host}:{bed.servers[index].port}"


async def orchestrator(client: Client, ttl_s: float = 5) -> Leadership:
    return await client.election("mysql-orchestrator").acquire(b"test", ttl_s=ttl_s)


@dataclass
class Writer:
    """Writes rows to whichever server the published record (or a guess) names."""

    bed: MariaDBTestBed
    primary: Callable[[], int]
    acked: list[int] = field(default_factory=list)
    by_server: dict[int, int] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        next_id = 0
        while not self.stop.is_set():
            index = self.primary()
            next_id += 1
            try:
                conn = await self.bed.connect(index, user=self.bed.app_user, db="app")
                try:
                    async with conn.cursor() as cur:
                        await cur.execute(
                            "INSERT INTO writes (id, payload) VALUES (%s, 'w')", (next_id,)
                        )
                finally:
                    conn.close()
            except Exception:
                await asyncio.sleep(0.02)  # a closed or read-only primary: try again
                continue
            self.acked.append(next_id)
            self.by_server[index] = self.by_server.get(index, 0) + 1

    async def wait_for(self, count: int, index: int | None = None) -> None:
        while (self.by_server.get(index, 0) if index is not None else len(self.acked)) < count:
            await asyncio.sleep(0.01)


async def ids_on(bed: MariaDBTestBed, index: int) -> set[int]:
    return {int(r[0]) for r in await bed.execute(index, "SELECT id FROM app.writes")}  # type: ignore[call-overload]


async def replica_source(bed: MariaDBTestBed, index: int) -> tuple[str, bool, bool] | None:
    status = await bed.replica_status(index)
    if status is None:
        return None
    return (
        f"{status['Master_Host']}:{status['Master_Port']}",
        status["Slave_IO_Running"] == "Yes",
        status["Slave_SQL_Running"] == "Yes",
    )


async def read_only(bed: MariaDBTestBed, index: int) -> bool:
    [(value,)] = await bed.execute(index, "SELECT @@read_only")
    return bool(value)


async def test_discovery_reads_the_topology_from_the_servers(bed: MariaDBTestBed) -> None:
    topology = await MySQLAdapter([config(bed)]).discover(CLUSTER)
    assert topology.primary == name(bed, 0) and topology.problems == ()
    assert sorted(topology.replicas_of(name(bed, 0))) == sorted([name(bed, 1), name(bed, 2)])
    assert any("primary" in line for line in topology.describe())


async def test_switchover_under_write_load_loses_nothing(
    bed: MariaDBTestBed, client: Client
) -> None:
    adapter = MySQLAdapter([config(bed)])
    engine = adapter.engine(await orchestrator(client))
    current = {"index": 0}
    writer = Writer(bed, lambda: current["index"])
    task = asyncio.create_task(writer.run())
    await writer.wait_for(30)

    record = await adapter.switchover(engine, CLUSTER, candidate=name(bed, 1))
    current["index"] = 1
    await writer.wait_for(30, index=1)
    writer.stop.set()
    await task

    assert record.status is Status.SUCCEEDED
    assert [s.name for s in record.steps][-2:] == ["publish", "publish_dns"]
    assert record.output("publish_dns") == {"skipped": "no DNS configured"}
    published = await read_primary(client, CLUSTER)
    assert published is not None and published.host == name(bed, 1)
    assert published.token == engine.token
    assert await read_only(bed, 0) and not await read_only(bed, 1)
    for index in (0, 2):
        assert await replica_source(bed, index) == (name(bed, 1), True, True)
    await bed.wait_replicas_caught_up(1)
    for index in range(3):
        missing = set(writer.acked) - await ids_on(bed, index)
        assert not missing, f"server {index} lacks acknowledged writes {sorted(missing)[:5]}"
    conn = await bed.connect(1)
    try:
        assert await read_token(conn, CLUSTER) == engine.token
    finally:
        conn.close()


async def test_failover_after_sigkill_promotes_the_most_advanced_replica(
    bed: MariaDBTestBed, client: Client
) -> None:
    # Server 2 stops receiving, so server 1 is the most advanced when the primary dies.
    await bed.execute(2, "STOP SLAVE IO_THREAD")
    current = {"index": 0}
    writer = Writer(bed, lambda: current["index"])
    task = asyncio.create_task(writer.run())
    await writer.wait_for(40)
    bed.kill(0)
    adapter = MySQLAdapter([config(bed)])
    engine = adapter.engine(await orchestrator(client))
    record = await adapter.failover(engine, CLUSTER, old_primary=name(bed, 0))
    current["index"] = 1
    await writer.wait_for(20, index=1)
    writer.stop.set()
    await task

    assert record.output("choose")["candidate"] == name(bed, 1)
    assert name(bed, 2) in record.output("choose")["rejected"]
    assert record.output("fence_old_primary")["reachable"] is False
    assert record.output("repoint") == {"repointed": [name(bed, 2)], "failed": {}}
    assert await replica_source(bed, 2) == (name(bed, 1), True, True)
    await bed.wait_replicas_caught_up(1)
    # Semi-sync (AFTER_SYNC): every acknowledged write reached a replica before its ack.
    for index in (1, 2):
        missing = set(writer.acked) - await ids_on(bed, index)
        assert not missing, f"server {index} lacks acknowledged writes {sorted(missing)[:5]}"
    published = await read_primary(client, CLUSTER)
    assert published is not None and published.host == name(bed, 1)


async def test_a_late_step_of_a_dead_orchestrator_is_refused_by_the_fence(
    bed: MariaDBTestBed, client: Client, service: CoordinationService
) -> None:
    bed.kill(0)
    adapter = MySQLAdapter([config(bed)])
    gate, entered = asyncio.Event(), asyncio.Event()

    def gated(flow: Workflow) -> Workflow:
        async def wait_then_promote(ctx: StepContext) -> object:
            entered.set()
            await gate.wait()
            return await adapter._promote(ctx)

        steps = tuple(
            Step(s.name, wait_then_promote) if s.name == "promote" else s for s in flow.steps
        )
        return Workflow(flow.kind, steps, flow.on_failure)

    old = await orchestrator(client, ttl_s=1)
    old_engine = adapter.engine(old)
    old_engine.workflows[FAILOVER] = gated(old_engine.workflows[FAILOVER])
    old_run = asyncio.create_task(adapter.failover(old_engine, CLUSTER, name(bed, 0)))
    await entered.wait()
    await old.lease.stop()  # the old orchestrator hangs; its lease runs out

    async with local_client(service) as other:
        new = await orchestrator(other)
        assert new.token > old.token
        [finished] = await adapter.engine(new).resume_all()
        assert finished.status is Status.SUCCEEDED
        promote = next(s for s in finished.steps if s.name == "promote")
        assert promote.token == new.token
        assert [t.next_step for t in finished.takeovers] == ["promote"]

        gate.set()  # the old orchestrator wakes up and carries on with its promote step
        with pytest.raises(FencedOutError, match="fence table"):
            await old_run
        new_primary = finished.output("choose")["candidate"]
        index = next(i for i in range(3) if name(bed, i) == new_primary)
        conn = await bed.connect(index)
        try:
            assert await read_token(conn, CLUSTER) == new.token
        finally:
            conn.close()
        published = await read_primary(other, CLUSTER)
        assert published is not None and published.token == new.token


async def test_raft_leader_and_orchestrator_die_between_steps_next_one_finishes(
    bed: MariaDBTestBed, tmp_path: Path
) -> None:
    """Real coordinator processes: the Raft leader is SIGKILLed while a failover waits
    between two steps, and its orchestrator dies with it; another one resumes."""
    cluster = LocalCluster(
        tmp_path / "coord", n=3, timing=Timing(heartbeat_ms=30, election_timeout_ms=300)
    )
    cluster.start()
    try:
        await cluster.wait_for_leader()
        bed.kill(0)
        adapter = MySQLAdapter([config(bed)])
        gate, entered = asyncio.Event(), asyncio.Event()

        async def wait_then_apply(ctx: StepContext) -> object:
            entered.set()
            await gate.wait()
            return await adapter._apply_relay_log(ctx)

        async with (
            hacoord.connect(cluster.endpoints()) as a,
            hacoord.connect(cluster.endpoints()) as b,
        ):
            old = await orchestrator(a, ttl_s=1)
            old_engine = adapter.engine(old)
            flow = old_engine.workflows[FAILOVER]
            old_engine.workflows[FAILOVER] = Workflow(
                FAILOVER,
                tuple(
                    Step(s.name, wait_then_apply) if s.name == "apply_relay_log" else s
                    for s in flow.steps
                ),
            )
            old_run = asyncio.create_task(adapter.failover(old_engine, CLUSTER, name(bed, 0)))
            await entered.wait()
            cluster.kill(await cluster.leader())
            await old.lease.stop()

            new = await orchestrator(b)
            [finished] = await adapter.engine(new).resume_all()
            assert finished.status is Status.SUCCEEDED
            assert [(s.name, s.token == new.token) for s in finished.steps] == [
                ("fence_old_primary", False),
                ("choose", False),
                ("apply_relay_log", True),
                ("prepare_candidate", True),
                ("repoint", True),
                ("promote", True),
                ("publish", True),
                ("publish_dns", True),
            ]
            gate.set()
            with pytest.raises(FencedOutError, match="leadership ended"):
                await old_run
            history = await WorkflowStore(b, "mysql").history(CLUSTER)
            assert [r.id for r in history] == [finished.id] and history[0] == finished
    finally:
        await cluster.close()


async def test_old_primary_comes_back_read_only_and_rejoins(
    bed: MariaDBTestBed, client: Client
) -> None:
    adapter = MySQLAdapter([config(bed)])
    engine = adapter.engine(await orchestrator(client))
    await bed.execute(0, "INSERT INTO app.writes VALUES (1, 'before')")
    await bed.wait_replicas_caught_up(0)
    bed.kill(0)
    await adapter.failover(engine, CLUSTER, name(bed, 0))
    await bed.restart(0)
    assert await read_only(bed, 0), "a restarted old primary must not take writes"

    record = await adapter.rejoin(engine, CLUSTER, name(bed, 0))
    assert record.output("inspect")["lost"] == []
    assert record.output("rejoin_or_quarantine")["outcome"] == "rejoined"
    published = await read_primary(client, CLUSTER)
    assert published is not None
    new = next(i for i in range(3) if name(bed, i) == published.host)
    assert await replica_source(bed, 0) == (published.host, True, True)
    await bed.execute(new, "INSERT INTO app.writes VALUES (2, 'after')")
    await bed.wait_replicas_caught_up(new)
    assert await ids_on(bed, 0) == {1, 2}


async def test_old_primary_with_errant_transactions_is_quarantined(
    bed: MariaDBTestBed, client: Client
) -> None:
    adapter = MySQLAdapter([config(bed)])
    engine = adapter.engine(await orchestrator(client))
    bed.kill(0)
    await adapter.failover(engine, CLUSTER, name(bed, 0))
    await bed.restart(0)
    # A write that only the old primary has (the administrator bypasses read_only).
    await bed.execute(0, "INSERT INTO app.writes VALUES (99, 'errant')")

    record = await adapter.rejoin(engine, CLUSTER, name(bed, 0))
    result = record.output("rejoin_or_quarantine")
    assert result["outcome"] == "quarantined" and result["lost"] == ["0-1-1"]
    assert "0-1-1" in result["reason"]
    assert await read_only(bed, 0)
    source = await replica_source(bed, 0)
    assert source is None or source[1:] == (False, False), "a quarantined server must not replicate"
    kv = await client.get(quarantine_key(CLUSTER, name(bed, 0)))
    assert kv is not None and b"0-1-1" in kv.value


async def test_applications_can_check_the_fence_in_their_transactions(
    bed: MariaDBTestBed, client: Client
) -> None:
    adapter = MySQLAdapter([config(bed)])
    engine = adapter.engine(await orchestrator(client))
    await adapter.switchover(engine, CLUSTER, candidate=name(bed, 2))
    published = await read_primary(client, CLUSTER)
    assert isinstance(published, PrimaryRecord) and published.host == name(bed, 2)
    await bed.wait_replicas_caught_up(2)

    conn = await bed.connect(2, user=bed.app_user, db="app")
    try:
        async with fenced_transaction(conn, CLUSTER, published.token) as cur:
            await cur.execute("INSERT INTO writes VALUES (7, 'fenced')")
        with pytest.raises(FenceMismatchError, match=f"expected {published.token + 1}"):
            async with fenced_transaction(conn, CLUSTER, published.token + 1) as cur:
                await cur.execute("INSERT INTO writes VALUES (8, 'stale view')")
    finally:
        conn.close()
    assert await ids_on(bed, 2) == {7}


async def test_broken_and_unreachable_replicas_are_never_promoted(
    bed: MariaDBTestBed, client: Client
) -> None:
    # Break server 1's replication: a row only it has, then the same id on the primary.
    await bed.execute(1, "SET SESSION sql_log_bin = 0")
    conn = await bed.connect(1)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SET SESSION sql_log_bin = 0")
            await cur.execute("INSERT INTO app.writes VALUES (5, 'replica only')")
    finally:
        conn.close()
    await bed.execute(0, "INSERT INTO app.writes VALUES (5, 'primary')")
    await wait_sql_error(bed, 1)
    bed.kill(0)
    bed.kill(2)
    adapter = MySQLAdapter([config(bed)])
    engine = adapter.engine(await orchestrator(client))
    with pytest.raises(StepFailedError) as info:
        await adapter.failover(engine, CLUSTER, name(bed, 0))
    assert isinstance(info.value.cause, NoSafeCandidateError)
    reasons = info.value.cause.reasons
    assert "broken by error 1062" in reasons[name(bed, 1)]
    assert "unreachable" in reasons[name(bed, 2)]
    assert await read_only(bed, 1), "nothing was promoted"
    assert await read_primary(client, CLUSTER) is None
    history = await engine.history(CLUSTER)
    assert history[0].status is Status.FAILED and history[0].failed_step == "choose"


async def wait_sql_error(bed: MariaDBTestBed, index: int) -> None:
    while True:
        status = await bed.replica_status(index)
        if status and status["Last_SQL_Errno"]:
            return
        await asyncio.sleep(0.05)


async def test_wrong_credentials_and_unknown_hosts_are_clear_errors(
    bed: MariaDBTestBed, client: Client
) -> None:
    wrong = config(bed, admin=Credentials(bed.admin_user, "wrong"))
    topology = await MySQLAdapter([wrong]).discover(CLUSTER)
    assert topology.primary is None
    assert all("access denied" in (p.error or "") for p in topology.probes.values())
    adapter = MySQLAdapter([wrong])
    engine = adapter.engine(await orchestrator(client))
    with pytest.raises(StepFailedError, match=r"cannot fence it .*access denied"):
        await adapter.failover(engine, CLUSTER, name(bed, 0))
    assert not await read_only(bed, 0), "the primary was left alone"
    with pytest.raises(KeyError, match=re.escape("no host '127.0.0.1:1'")):
        await adapter.failover(engine, CLUSTER, "127.0.0.1:1")
    with pytest.raises(KeyError, match="no MySQL cluster 'nope'"):
        await adapter.switchover(engine, "nope")
    dead = config(bed, hosts=(*config(bed).hosts, Host("127.0.0.1", 9, Promotion.NEUTRAL)))
    topology = await MySQLAdapter([dead]).discover(CLUSTER)
    assert "cannot connect" in (topology.probes["127.0.0.1:9"].error or "")
    assert any("127.0.0.1:9 unreachable" in p for p in topology.problems)


async def test_a_failed_fence_hook_aborts_the_failover(
    bed: MariaDBTestBed, client: Client, tmp_path: Path
) -> None:
    bed.kill(0)
    seen = tmp_path / "hook-env"
    hook = ("sh", "-c", f'echo "$HACOORD_OLD_PRIMARY $HACOORD_TOKEN" > {seen}; exit 3')
    adapter = MySQLAdapter([config(bed, fence_hook=hook)])
    engine = adapter.engine(await orchestrator(client))
    with pytest.raises(StepFailedError, match="exited 3"):
        await adapter.failover(engine, CLUSTER, name(bed, 0))
    assert seen.read_text().split() == [name(bed, 0), str(engine.token)]
    assert await read_only(bed, 1) and await read_only(bed, 2)
