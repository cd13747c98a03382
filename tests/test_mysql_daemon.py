"""The failover daemon against real MariaDB and real coordinator processes.

Monitors probe each MySQL server through a fault proxy per (member, server), so a test
can cut one member off from one server. Needs MariaDB; skips without it except under
CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

import hacoord
from hacoord.adapters.mysql.adapter import FAILOVER, NAMESPACE
from hacoord.adapters.mysql.agent import Agent, agent_key
from hacoord.adapters.mysql.config import ClusterConfig, Credentials, Host
from hacoord.adapters.mysql.daemon import MySQLDaemon
from hacoord.adapters.mysql.daemon_config import DaemonConfig
from hacoord.adapters.mysql.detect import Verdict
from hacoord.adapters.mysql.keys import ORCHESTRATOR_ELECTION
from hacoord.adapters.mysql.orchestrator import OrchestratorTimings, acknowledge
from hacoord.adapters.mysql.primary import read_primary
from hacoord.adapters.mysql.testbed import (
    MariaDBTestBed,
)
from hacoord.client import Client
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster, free_ports
from hacoord.testing.faultproxy import FaultProxy
from hacoord.workflow import WorkflowStore

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]

CLUSTER = "orders"
TIMINGS = OrchestratorTimings(interval_s=0.2, failures_to_confirm=3, block_period_s=3600, ttl_s=2)


def name(bed: MariaDBTestBed, index: int) -> str:
    return f"{bed.servers[index].host}:{bed.servers[index].port}"


def index_of(bed: MariaDBTestBed, host: str) -> int:
    return next(i for i in range(len(bed.servers)) if name(bed, i) == host)


def cluster_config(bed: MariaDBTestBed, **extra: object) -> ClusterConfig:
    return ClusterConfig(
        CLUSTER,
        tuple(Host(s.host, s.port) for s in bed.servers),
        Credentials(bed.admin_user, bed.admin_password),
        Credentials(bed.repl_user, bed.repl_password),
        relay_log_wait_s=10,
        catch_up_wait_s=10,
        **extra,  # type: ignore[arg-type]
    )


@dataclass
class Site:
    """One coordinator member's daemon, its client and its proxies to the servers."""

    member: int
    daemon: MySQLDaemon
    client: Client
    proxies: dict[str, FaultProxy]


@dataclass
class Deployment:
    cluster: LocalCluster
    sites: dict[int, Site]
    observer: Client

    async def orchestrator(self) -> Site:
        holder = await self.observer.election(ORCHESTRATOR_ELECTION).leader()
        assert holder is not None
        return self.sites[int(holder.value.decode().split("-")[1])]

    async def failovers(self) -> list[str]:
        history = await WorkflowStore(self.observer, NAMESPACE).history(CLUSTER)
        return [r.id for r in history if r.kind == FAILOVER]

    async def wait_for(self, what: Callable[[], object], poll_s: float = 0.05) -> None:
        while not await _maybe_await(what()):
            await asyncio.sleep(poll_s)


async def _maybe_await(value: object) -> object:
    if asyncio.iscoroutine(value):
        return await value
    return value


@contextlib.asynccontextmanager
async def deployment(
    bed: MariaDBTestBed, base: Path, **cluster_extra: object
) -> AsyncIterator[Deployment]:
    cluster = LocalCluster(base / "coord", 3, Timing(heartbeat_ms=30, election_timeout_ms=300))
    cluster.start()
    sites: dict[int, Site] = {}
    try:
        await cluster.wait_for_leader()
        config = DaemonConfig(
            clusters=(cluster_config(bed, **cluster_extra),),
            timings=TIMINGS,
            probe_interval_s=0.2,
            probe_timeout_s=0.5,
        )
        endpoints = cluster.endpoints()
        async with contextlib.AsyncExitStack() as stack:
            for member in (1, 2, 3):
                mine = [
                    endpoints[member - 1],
                    *(e for e in endpoints if e != endpoints[member - 1]),
                ]
                client = await stack.enter_async_context(hacoord.connect(mine))
                proxies = {}
                for s in bed.servers:
                    proxy = FaultProxy((s.host, s.port))
                    await proxy.start()
                    stack.push_async_callback(proxy.close)
                    proxies[f"{s.host}:{s.port}"] = proxy
                daemon = MySQLDaemon(
                    client,
                    config,
                    f"member-{member}",
                    3,
                    probe_addresses={h: ("127.0.0.1", p.port) for h, p in proxies.items()},
                )
                await daemon.start()
                stack.push_async_callback(daemon.stop)
                sites[member] = Site(member, daemon, client, proxies)
            observer = await stack.enter_async_context(hacoord.connect(endpoints))
            d = Deployment(cluster, sites, observer)
            await d.wait_for(lambda: read_primary(observer, CLUSTER))  # adopted
            yield d
    finally:
        await cluster.close()


async def test_primary_sigkill_is_failed_over_once(bed: MariaDBTestBed, tmp_path: Path) -> None:
    seen = tmp_path / "post-hook"
    hook = ("sh", "-c", f'echo "$HACOORD_OLD_PRIMARY $HACOORD_NEW_PRIMARY $HACOORD_TOKEN" > {seen}')
    async with deployment(bed, tmp_path, post_failover_hook=hook) as d:
        adopted = await read_primary(d.observer, CLUSTER)
        assert adopted is not None and adopted.host == name(bed, 0)
        bed.kill(0)
        await d.wait_for(lambda: _primary_is_not(d.observer, name(bed, 0)))
        record = await read_primary(d.observer, CLUSTER)
        assert record is not None and record.token >= adopted.token
        [failover_id] = await d.failovers()
        run = await WorkflowStore(d.observer, NAMESPACE).get(failover_id)
        assert run is not None and run.params["automatic"] is True
        assert "3 of 3 members cannot reach" in run.params["reason"]
        new = index_of(bed, record.host)
        await bed.execute(new, "INSERT INTO app.writes VALUES (1, 'after failover')")
        orchestrator = await d.orchestrator()
        await orchestrator.daemon.orchestrator.wait_ticks(5)
        assert len(await d.failovers()) == 1
        assert seen.read_text().split() == [name(bed, 0), record.host, str(record.token)]


async def test_a_failing_pre_failover_hook_vetoes_the_failover(
    bed: MariaDBTestBed, tmp_path: Path
) -> None:
    calls = tmp_path / "pre-hook-calls"
    hook = ("sh", "-c", f"echo $HACOORD_CLUSTER >> {calls}; exit 1")
    async with deployment(bed, tmp_path, pre_failover_hook=hook) as d:
        bed.kill(0)
        await d.wait_for(lambda: calls.exists() and len(calls.read_text().split()) >= 2)
        assert await d.failovers() == [], "every attempt was vetoed by the hook"
        record = await read_primary(d.observer, CLUSTER)
        assert record is not None and record.host == name(bed, 0)
        assert set(calls.read_text().split()) == {CLUSTER}


async def _replicates(bed: MariaDBTestBed, index: int) -> bool:
    status = await bed.replica_status(index)
    return status is not None and status["Slave_IO_Running"] == "Yes"


async def _primary_is_not(client: Client, host: str) -> bool:
    record = await read_primary(client, CLUSTER)
    return record is not None and record.host != host


async def test_orchestrator_cut_off_from_the_primary_only_does_not_fail_over(
    bed: MariaDBTestBed, tmp_path: Path
) -> None:
    async with deployment(bed, tmp_path) as d:
        site = await d.orchestrator()
        primary = name(bed, 0)
        site.proxies[primary].mode = "drop"
        await site.proxies[primary].reset()
        monitor = site.daemon.monitor
        await d.wait_for(lambda: monitor.views[CLUSTER][primary].failures >= 4)
        orchestrator = site.daemon.orchestrator
        await orchestrator.wait_ticks(5)
        decision = orchestrator.decisions[CLUSTER]
        assert decision.verdict is Verdict.FALSE_POSITIVE, decision
        assert f"member-{site.member} cannot reach" in decision.reason
        assert await d.failovers() == []
        record = await read_primary(d.observer, CLUSTER)
        assert record is not None and record.host == primary


async def test_replicas_cut_off_from_the_primary_do_not_fail_it_over(
    bed: MariaDBTestBed, tmp_path: Path
) -> None:
    async with deployment(bed, tmp_path) as d:
        # The replicas can no longer connect to the primary; the members still can.
        await bed.execute(0, f"ALTER USER '{bed.repl_user}'@'127.0.0.1' ACCOUNT LOCK")
        for (conn_id,) in await bed.execute(
            0, "SELECT id FROM information_schema.processlist WHERE command LIKE 'Binlog Dump%'"
        ):
            await bed.execute(0, f"KILL CONNECTION {int(conn_id)}")  # type: ignore[call-overload]
        site = await d.orchestrator()
        orchestrator = site.daemon.orchestrator

        def cut_off() -> bool:
            decision = orchestrator.decisions.get(CLUSTER)
            return decision is not None and decision.verdict is Verdict.REPLICAS_CUT_OFF

        await d.wait_for(cut_off)
        await orchestrator.wait_ticks(5)
        assert orchestrator.decisions[CLUSTER].verdict is Verdict.REPLICAS_CUT_OFF
        assert await d.failovers() == []


async def test_a_flapping_primary_is_failed_over_once_until_acknowledged(
    bed: MariaDBTestBed, tmp_path: Path
) -> None:
    async with deployment(bed, tmp_path) as d:
        bed.kill(0)
        await d.wait_for(lambda: _primary_is_not(d.observer, name(bed, 0)))
        first = await read_primary(d.observer, CLUSTER)
        assert first is not None
        await bed.restart(0)  # the old primary comes back and is rejoined as a replica ...
        await d.wait_for(lambda: _replicates(bed, 0))
        bed.kill(index_of(bed, first.host))  # ... and the new one dies
        site = await d.orchestrator()
        orchestrator = site.daemon.orchestrator

        def blocked() -> bool:
            decision = orchestrator.decisions.get(CLUSTER)
            return decision is not None and "anti-flapping" in decision.reason

        await d.wait_for(blocked)
        await orchestrator.wait_ticks(3)
        assert len(await d.failovers()) == 1, "no second automatic failover in the block period"

        assert await acknowledge(d.observer, CLUSTER) is not None
        await d.wait_for(lambda: _primary_is_not(d.observer, first.host))
        assert len(await d.failovers()) == 2
        second = await read_primary(d.observer, CLUSTER)
        assert second is not None and second.host != first.host


async def test_agents_report_under_their_lease_and_the_http_api_acts(
    bed: MariaDBTestBed, tmp_path: Path
) -> None:
    port = free_ports(1)[0]
    async with deployment(bed, tmp_path) as d:
        site = d.sites[1]
        await site.daemon.http.start("127.0.0.1", port)
        cfg = site.daemon.config.clusters[0]
        agent = Agent(d.observer, cfg, name(bed, 1), interval_s=0.2, data_dir=tmp_path)
        running = asyncio.create_task(agent.run())
        key = agent_key(CLUSTER, name(bed, 1))
        await d.wait_for(lambda: d.observer.get(key))
        report = json.loads((await d.observer.get(key)).value)  # type: ignore[union-attr]
        assert report["up"] and report["read_only"] and report["replication"]["io_running"]
        assert 0 < report["disk_used_pct"] <= 100
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        assert await d.observer.get(key) is None, "a stopped agent's report goes with its lease"

        base = f"http://127.0.0.1:{port}/v1/mysql/clusters"
        async with aiohttp.ClientSession() as http:
            async with http.get(base) as r:
                assert r.status == 200
                [summary] = await r.json()
                assert summary["primary"] == name(bed, 0) and summary["token"] > 0
            async with http.get(f"{base}/{CLUSTER}") as r:
                detail = await r.json()
                assert detail["topology"]["primary"] == name(bed, 0)
                assert set(detail["observers"]) == {"member-1", "member-2", "member-3"}
            async with http.get(f"{base}/nope") as r:
                assert r.status == 404
            body = {"host": name(bed, 2), "on": True, "reason": "disk swap"}
            async with http.post(f"{base}/{CLUSTER}/maintenance", json=body) as r:
                assert r.status == 200
            async with http.post(f"{base}/{CLUSTER}/maintenance", json={"host": "x:1"}) as r:
                assert r.status == 400
            bad = {"candidate": name(bed, 1), "wait_s": "soon"}
            async with http.post(f"{base}/{CLUSTER}/switchover", json=bad) as r:
                assert r.status == 400 and "wait_s" in (await r.json())["error"]
            body = {"candidate": name(bed, 1), "wait_s": 60}
            async with http.post(f"{base}/{CLUSTER}/switchover", json=body) as r:
                assert r.status == 200, await r.text()
                done = await r.json()
                assert done["status"] == "succeeded" and done["params"]["candidate"] == name(bed, 1)
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                metrics = await r.text()
                assert f'hacoord_mysql_probe_up{{cluster="{CLUSTER}",host="{name(bed, 0)}"}} 1' in (
                    metrics
                )
                assert 'hacoord_mysql_primary_token{cluster="orders"}' in metrics
            async with http.get(f"{base}/{CLUSTER}/history?limit=5") as r:
                assert [h["kind"] for h in await r.json()] == ["mysql-switchover"]
        record = await read_primary(d.observer, CLUSTER)
        assert record is not None and record.host == name(bed, 1)
