"""The orchestrator: on the holder of the orchestrator election, decides and acts.

Every member runs one; the one holding ``mysql-orchestrator`` (with its fencing
token) finishes its predecessor's workflows, adopts an unpublished primary, serves
switchover requests, and fails a primary over when :func:`classify` says it is dead,
unless anti-flapping blocks it or the primary is in maintenance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hacoord.adapters.mysql.adapter import FAILOVER, NAMESPACE, SWITCHOVER, MySQLAdapter
from hacoord.adapters.mysql.config import ClusterConfig
from hacoord.adapters.mysql.detect import (
    Decision,
    ReplicaView,
    Verdict,
    classify,
    observation_from_json,
)
from hacoord.adapters.mysql.hooks import run_hook
from hacoord.adapters.mysql.keys import (
    ORCHESTRATOR_ELECTION,
    ack_key,
    agents_prefix,
    decision_key,
    maintenance_prefix,
    observers_prefix,
    quarantine_prefix,
    read_entries,
    switchover_request_key,
)
from hacoord.adapters.mysql.primary import PrimaryRecord, publish_primary, read_primary
from hacoord.adapters.mysql.topology import discover
from hacoord.client.client import Client
from hacoord.client.election import Leadership
from hacoord.coord.commands import Delete
from hacoord.workflow import (
    FencedOutError,
    Status,
    StepFailedError,
    WorkflowEngine,
    WorkflowRecord,
    WorkflowStore,
)

log = logging.getLogger("hacoord.adapters.mysql.orchestrator")


@dataclass(frozen=True, slots=True)
class OrchestratorTimings:
    """How often to decide, how sure to be, and how long to hold back after a failover."""

    interval_s: float = 0.5
    failures_to_confirm: int = 3
    """Consecutive failed probes a member needs before it counts the primary as down."""
    block_period_s: float = 3600.0
    """No second automatic failover of a cluster within this period unless acknowledged."""
    ttl_s: float = 3.0
    """Lease of the orchestrator's leadership."""
    rejoin_every: int = 4
    """Look for servers to rejoin (old primaries back from a crash) every N rounds."""


async def maintenance_hosts(client: Client, cluster: str) -> set[str]:
    """Hosts of ``cluster`` currently in maintenance."""
    return set(await read_entries(client, maintenance_prefix(cluster)))


async def last_automatic_failover(client: Client, cluster: str) -> WorkflowRecord | None:
    """The newest automatic failover of ``cluster`` that succeeded, or ``None``."""
    for record in await WorkflowStore(client, NAMESPACE).history(cluster):
        automatic = record.kind == FAILOVER and record.params.get("automatic")
        if automatic and record.status is Status.SUCCEEDED:
            return record
    return None


class Orchestrator:
    """Campaigns for the orchestrator election and runs the decision loop while held."""

    def __init__(
        self,
        client: Client,
        adapter: MySQLAdapter,
        member: str,
        members: int,
        timings: OrchestratorTimings | None = None,
    ) -> None:
        self.client = client
        self.adapter = adapter
        self.member = member
        self.members = members
        self.timings = timings or OrchestratorTimings()
        self.decisions: dict[str, Decision] = {}
        self.failovers = 0
        self.leading = asyncio.Event()
        self._ticks = 0
        self._ticked = asyncio.Condition()

    @property
    def clusters(self) -> Iterable[ClusterConfig]:
        """The managed clusters."""
        return self.adapter.clusters.values()

    async def run(self) -> None:
        """Campaign, lead until the leadership is lost, campaign again; until cancelled."""
        while True:
            try:
                leadership = await self.client.election(ORCHESTRATOR_ELECTION).acquire(
                    self.member.encode(), ttl_s=self.timings.ttl_s
                )
            except Exception as e:
                log.warning("%s: campaign failed (%s); retrying", self.member, e)
                await asyncio.sleep(self.timings.interval_s)  # back off before campaigning
                continue
            log.info("%s: orchestrator with token %d", self.member, leadership.token)
            try:
                await self._lead(leadership)
            except FencedOutError as e:
                log.warning("%s: fenced out (%s)", self.member, e)
            except Exception:
                log.exception("%s: orchestrator loop failed; campaigning again", self.member)
            finally:
                self.leading.clear()
                with contextlib.suppress(Exception):
                    await asyncio.shield(leadership.resign())

    async def _lead(self, leadership: Leadership) -> None:
        engine = self.adapter.engine(leadership)
        for record in await engine.resume_all():
            log.info("%s: resumed %s -> %s", self.member, record.id, record.status)
        self.leading.set()
        lost = asyncio.create_task(leadership.lost())
        try:
            while not lost.done():
                for cfg in self.clusters:
                    try:
                        await self.tick(engine, cfg)
                    except FencedOutError:
                        raise
                    except Exception:
                        # One cluster's trouble (a server error, a timeout) must not cost
                        # the leadership or stop the other clusters: try again next round.
                        log.exception("%s: decision round failed", cfg.name)
                self._ticks += 1
                async with self._ticked:
                    self._ticked.notify_all()
                await asyncio.wait({lost}, timeout=self.timings.interval_s)
        finally:
            lost.cancel()

    async def wait_ticks(self, count: int) -> None:
        """Wait until ``count`` more decision rounds have run (for callers and tests)."""
        target = self._ticks + count
        async with self._ticked:
            await self._ticked.wait_for(lambda: self._ticks >= target)

    async def tick(self, engine: WorkflowEngine, cfg: ClusterConfig) -> None:
        """One decision round for one cluster."""
        record = await read_primary(self.client, cfg.name)
        if record is None:
            await self._adopt(engine, cfg)
            return
        if await self._serve_switchover_request(engine, cfg):
            return
        decision = await self.decide(cfg, record.host)
        await self._note(cfg.name, decision)
        if decision.failover:
            await self._fail_over(engine, cfg, record, decision)
        elif decision.verdict is Verdict.ALIVE and self._ticks % self.timings.rejoin_every == 0:
            await self._rejoin_strays(engine, cfg, record)

    async def _rejoin_strays(
        self, engine: WorkflowEngine, cfg: ClusterConfig, record: PrimaryRecord
    ) -> None:
        """Run the rejoin workflow for servers that replicate from nobody (an old
        primary back from a crash): they become replicas, or are quarantined."""
        topology = await discover(cfg)
        skip = await maintenance_hosts(self.client, cfg.name)
        skip |= set(await read_entries(self.client, quarantine_prefix(cfg.name)))
        for name, probe in topology.probes.items():
            if name == record.host or name in skip or probe.state is None:
                continue
            if probe.state.replica is not None:
                continue
            log.info("%s: %s replicates from nobody: rejoining it", cfg.name, name)
            try:
                done = await self.adapter.rejoin(engine, cfg.name, name)
            except StepFailedError as e:
                log.error("%s: rejoin of %s failed: %s", cfg.name, name, e)
                continue
            log.info("%s: %s %s", cfg.name, name, done.output("rejoin_or_quarantine")["outcome"])

    async def decide(self, cfg: ClusterConfig, primary: str) -> Decision:
        """Classify ``primary`` from every member's observation and the replicas' views."""
        if primary in await maintenance_hosts(self.client, cfg.name):
            return Decision(Verdict.ALIVE, f"{primary} is in maintenance: not watched")
        observations = [
            observation_from_json(member, raw)
            for member, raw in (await read_entries(self.client, observers_prefix(cfg.name))).items()
        ]
        replicas = await self._replica_views(cfg, primary)
        return classify(
            primary, observations, self.members, replicas, self.timings.failures_to_confirm
        )

    async def _replica_views(self, cfg: ClusterConfig, primary: str) -> list[ReplicaView]:
        """Each replica's own account: asked directly, else its agent's last report."""
        reports = await read_entries(self.client, agents_prefix(cfg.name))

        async def view(name: str) -> ReplicaView:
            probe = await self.adapter.server(cfg, name).probe()
            if probe.state is None:
                repl = (reports.get(name) or {}).get("replication") or {}
                if repl.get("source") == primary:
                    return ReplicaView(
                        name,
                        reachable=True,
                        io_connected=bool(repl["io_running"]),
                        error=f"from its agent: {repl.get('io_error', '')}",
                    )
                return ReplicaView(name, reachable=False, error=probe.error or "")
            r = probe.state.replica
            if r is None or f"{r.source_host}:{r.source_port}" != primary:
                return ReplicaView(name, reachable=False, error="not a replica of the primary")
            return ReplicaView(name, reachable=True, io_connected=r.io_running, error=r.io_error)

        others = [h for h in cfg.host_names() if h != primary]
        return list(await asyncio.gather(*(view(h) for h in others)))

    async def _note(self, cluster: str, decision: Decision) -> None:
        if self.decisions.get(cluster) == decision:
            return
        self.decisions[cluster] = decision
        level = logging.INFO if decision.verdict is Verdict.ALIVE else logging.WARNING
        log.log(level, "%s: %s: %s", cluster, decision.verdict, decision.reason)
        note = {"verdict": decision.verdict.value, "reason": decision.reason, "at": time.time()}
        await self.client.put(decision_key(cluster), json.dumps(note).encode())

    async def blocked(self, cluster: str) -> str | None:
        """Why an automatic failover of ``cluster`` is held back now, or ``None``."""
        last = await last_automatic_failover(self.client, cluster)
        if last is None or last.finished_at is None:
            return None
        age = time.time() - last.finished_at
        if age >= self.timings.block_period_s:
            return None
        acked = await self.client.get(ack_key(cluster))
        if acked is not None and acked.value.decode() == last.id:
            return None
        return (
            f"anti-flapping: automatic failover {last.id} finished {age:.0f} s ago (block"
            f" period {self.timings.block_period_s:.0f} s) and is not acknowledged"
        )

    async def _fail_over(
        self, engine: WorkflowEngine, cfg: ClusterConfig, record: PrimaryRecord, decision: Decision
    ) -> None:
        reason = await self.blocked(cfg.name)
        if reason is not None:
            await self._note(cfg.name, Decision(Verdict.DEAD, f"{decision.reason}; {reason}"))
            return
        env = {
            "HACOORD_CLUSTER": cfg.name,
            "HACOORD_OLD_PRIMARY": record.host,
            "HACOORD_TOKEN": str(engine.token),
        }
        if cfg.pre_failover_hook:
            hook = await run_hook(cfg.pre_failover_hook, env)
            if not hook.ok:
                log.error(
                    "%s: pre-failover hook exited %d: %s; failover aborted",
                    cfg.name,
                    hook.returncode,
                    hook.output.strip(),
                )
                return
        maintenance = await maintenance_hosts(self.client, cfg.name)
        detected_at = time.time()
        try:
            done = await self.adapter.failover(
                engine,
                cfg.name,
                record.host,
                exclude=maintenance - {record.host},
                automatic=True,
                reason=decision.reason,
                detected_at=detected_at,
                decided_by=self.member,
            )
        except StepFailedError as e:
            log.error("%s: automatic failover failed: %s", cfg.name, e)
            if cfg.failed_failover_hook:
                await run_hook(cfg.failed_failover_hook, {**env, "HACOORD_ERROR": str(e)})
            return
        self.failovers += 1
        new = done.output("promote")["primary"]
        log.warning(
            "%s: failed over from %s to %s (token %d)", cfg.name, record.host, new, engine.token
        )
        if cfg.post_failover_hook:
            await run_hook(cfg.post_failover_hook, {**env, "HACOORD_NEW_PRIMARY": new})

    async def _adopt(self, engine: WorkflowEngine, cfg: ClusterConfig) -> None:
        """Publish the primary the servers agree on, when none is published yet."""
        topology = await discover(cfg)
        primary = topology.primary
        probe = topology.probes.get(primary) if primary else None
        if primary is None or probe is None or probe.state is None or probe.state.read_only:
            await self._note(
                cfg.name,
                Decision(
                    Verdict.UNKNOWN,
                    f"no primary to adopt: {'; '.join(topology.problems) or 'none'}",
                ),
            )
            return
        if any("more than one writable" in p for p in topology.problems):
            await self._note(cfg.name, Decision(Verdict.UNKNOWN, "; ".join(topology.problems)))
            return
        record = PrimaryRecord(
            cfg.name, primary, engine.token, probe.state.executed, "adopted", time.time()
        )
        await publish_primary(engine.leadership, record)
        if cfg.dns is not None:
            from hacoord.adapters.dns import DnsPublisher

            await DnsPublisher(cfg.dns).publish(cfg.dns_target(primary), engine.token)
        log.info("%s: adopted %s as the primary (token %d)", cfg.name, primary, engine.token)

    async def _serve_switchover_request(self, engine: WorkflowEngine, cfg: ClusterConfig) -> bool:
        kv = await self.client.get(switchover_request_key(cfg.name))
        if kv is None:
            return False
        request: dict[str, Any] = json.loads(kv.value)
        taken = await engine.leadership.fenced(Delete(switchover_request_key(cfg.name)))
        if not taken.succeeded:
            raise FencedOutError("-", engine.token, "the leadership ended")
        log.info("%s: switchover requested (%s)", cfg.name, request)
        with contextlib.suppress(StepFailedError):
            await engine.start(
                SWITCHOVER,
                cfg.name,
                {
                    "cluster": cfg.name,
                    "candidate": request.get("candidate"),
                    "request": request.get("id"),
                },
            )
        return True


async def request_switchover(client: Client, cluster: str, candidate: str | None) -> str:
    """Ask the orchestrator (whichever member holds it) for a switchover; returns its id."""
    request_id = f"req-{time.time_ns():x}"
    body = {"id": request_id, "candidate": candidate, "at": time.time()}
    await client.put(switchover_request_key(cluster), json.dumps(body).encode())
    return request_id


async def acknowledge(client: Client, cluster: str) -> str | None:
    """Acknowledge the last automatic failover (lifts anti-flapping); returns its id."""
    last = await last_automatic_failover(client, cluster)
    if last is None:
        return None
    await client.put(ack_key(cluster), last.id.encode())
    return last.id


async def set_maintenance(client: Client, cluster: str, host: str, on: bool, why: str = "") -> None:
    """Put ``host`` in maintenance (never promoted, not failed over) or take it out."""
    key = maintenance_prefix(cluster) + host
    if on:
        await client.put(key, json.dumps({"reason": why, "at": time.time()}).encode())
    else:
        await client.delete(key)


__all__ = [
    "Orchestrator",
    "OrchestratorTimings",
    "acknowledge",
    "request_switchover",
    "set_maintenance",
]
