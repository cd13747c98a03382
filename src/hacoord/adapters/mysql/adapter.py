"""Fenced switchover, failover and rejoin of a MySQL/MariaDB cluster, as workflows.

Every action runs as a step of a :mod:`hacoord.workflow` run, committed under the
orchestrator's fencing token; the token also goes into the new primary's fence
table (:mod:`hacoord.adapters.mysql.fence`) and into the published primary record
(:mod:`hacoord.adapters.mysql.primary`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from hacoord.adapters.mysql.config import ClusterConfig
from hacoord.adapters.mysql.dialect import ReplicaStatus
from hacoord.adapters.mysql.errors import ServerError, TopologyError, UnreachableError
from hacoord.adapters.mysql.fence import refuse_older, write_token
from hacoord.adapters.mysql.hooks import run_hook
from hacoord.adapters.mysql.primary import (
    PrimaryRecord,
    publish_primary,
    quarantine_key,
    read_primary,
)
from hacoord.adapters.mysql.server import MySQLServer, fetch_rows, run_statements
from hacoord.adapters.mysql.topology import Topology, choose_candidate, discover
from hacoord.client.election import Leadership
from hacoord.coord.commands import Delete, Put
from hacoord.workflow import Step, StepContext, Workflow, WorkflowEngine, WorkflowRecord
from hacoord.workflow.errors import FencedOutError

log = logging.getLogger("hacoord.adapters.mysql")

NAMESPACE = "mysql"
SWITCHOVER = "mysql-switchover"
FAILOVER = "mysql-failover"
REJOIN = "mysql-rejoin"

Output = Mapping[str, Any]


class MySQLAdapter:
    """Switchover, failover and rejoin for the configured clusters.

    ``engine = adapter.engine(leadership)`` (the orchestrator's leadership), then
    ``await adapter.failover(engine, "db1")``. Call ``await engine.resume_all()``
    after winning the orchestrator election to finish what a predecessor started.
    """

    def __init__(self, clusters: Iterable[ClusterConfig], replicate_wait_s: float = 15.0) -> None:
        self.clusters = {c.name: c for c in clusters}
        self.replicate_wait_s = replicate_wait_s

    def config(self, cluster: str) -> ClusterConfig:
        """The configuration of ``cluster``."""
        try:
            return self.clusters[cluster]
        except KeyError:
            known = ", ".join(self.clusters) or "none"
            raise KeyError(f"no MySQL cluster {cluster!r} (configured: {known})") from None

    def workflows(self) -> list[Workflow]:
        """The workflow definitions this adapter runs."""
        return [
            Workflow(
                SWITCHOVER,
                (
                    Step("check", self._switchover_check),
                    Step("freeze_old_primary", self._freeze_old_primary),
                    Step("wait_candidate", self._wait_candidate),
                    Step("prepare_candidate", self._prepare_candidate),
                    Step("repoint", self._repoint),
                    Step("promote", self._promote),
                    Step("publish", self._publish),
                    Step("publish_dns", self._publish_dns),
                ),
                on_failure=self._unfreeze_if_not_promoted,
            ),
            Workflow(
                FAILOVER,
                (
                    Step("fence_old_primary", self._fence_old_primary),
                    Step("choose", self._choose),
                    Step("apply_relay_log", self._apply_relay_log),
                    Step("prepare_candidate", self._prepare_candidate),
                    Step("repoint", self._repoint),
                    Step("promote", self._promote),
                    Step("publish", self._publish),
                    Step("publish_dns", self._publish_dns),
                ),
            ),
            Workflow(
                REJOIN,
                (
                    Step("inspect", self._inspect),
                    Step("rejoin_or_quarantine", self._rejoin_or_quarantine),
                ),
            ),
        ]

    def engine(self, leadership: Leadership) -> WorkflowEngine:
        """A workflow engine acting with ``leadership``'s fencing token."""
        return WorkflowEngine(leadership, self.workflows(), namespace=NAMESPACE)

    async def discover(self, cluster: str) -> Topology:
        """The topology as the servers report it."""
        return await discover(self.config(cluster))

    async def switchover(
        self, engine: WorkflowEngine, cluster: str, candidate: str | None = None
    ) -> WorkflowRecord:
        """Planned change of primary without losing a transaction."""
        cfg = self.config(cluster)
        if candidate is not None:
            cfg.host(candidate)
        return await engine.start(SWITCHOVER, cluster, {"cluster": cluster, "candidate": candidate})

    async def failover(
        self,
        engine: WorkflowEngine,
        cluster: str,
        old_primary: str | None = None,
        exclude: Iterable[str] = (),
        **details: Any,
    ) -> WorkflowRecord:
        """Replace a failed primary by the most advanced safe replica.

        ``exclude``: hosts never to promote (e.g. in maintenance). ``details`` (JSON
        values: who decided, why, when) are recorded with the run's parameters.
        """
        cfg = self.config(cluster)
        excluded = sorted(exclude)
        for name in [*excluded, *([old_primary] if old_primary else [])]:
            cfg.host(name)
        params = {**details, "cluster": cluster, "old": old_primary, "exclude": excluded}
        return await engine.start(FAILOVER, cluster, params)

    async def rejoin(self, engine: WorkflowEngine, cluster: str, host: str) -> WorkflowRecord:
        """Bring a former primary back as a replica, or quarantine it (say why)."""
        self.config(cluster).host(host)
        return await engine.start(REJOIN, cluster, {"cluster": cluster, "host": host})

    # ------------------------------------------------------------------ helpers

    def _cfg(self, ctx: StepContext) -> ClusterConfig:
        return self.config(str(ctx.params["cluster"]))

    def server(self, cfg: ClusterConfig, name: str) -> MySQLServer:
        """Admin access to host ``name`` of ``cfg``."""
        return MySQLServer(cfg.host(name), cfg.admin, cfg.dialect, cfg.connect_timeout_s)

    async def _replicate(self, cfg: ClusterConfig, name: str, source: str, demote: bool) -> None:
        server = self.server(cfg, name)
        if cfg.semi_sync:
            await server.run(cfg.dialect.set_semi_sync(primary=False))
        await server.replicate_from(cfg.host(source), cfg.replication, demote)
        await self._wait_replicating(server)

    async def _wait_replicating(self, server: MySQLServer) -> None:
        deadline = time.monotonic() + self.replicate_wait_s
        while True:
            replica = (await server.state()).replica
            if replica is None:
                raise ServerError(server.name, "replication is not configured")
            if replica.io_running and replica.sql_running:
                return
            if replica.sql_errno or (replica.io_errno and not replica.io_connecting):
                raise ServerError(server.name, f"replication failed: {_errors(replica)}")
            if replica.io_errno == 1236:  # the source cannot serve our position
                raise ServerError(server.name, f"replication failed: {_errors(replica)}")
            if time.monotonic() > deadline:
                raise ServerError(
                    server.name,
                    f"not replicating after {self.replicate_wait_s} s: {_errors(replica)}",
                )
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------- switchover

    async def _switchover_check(self, ctx: StepContext) -> Output:
        cfg = self._cfg(ctx)
        topology = await discover(cfg)
        old = topology.primary
        if old is None:
            raise TopologyError(f"cluster {cfg.name}: no primary found: {topology.describe()}")
        probe = topology.probes[old]
        if probe.state is None:
            raise TopologyError(f"primary {old} is unreachable ({probe.error}): use failover")
        wanted = ctx.params.get("candidate")
        candidate = choose_candidate(cfg, topology, old, wanted)
        others = [h for h in cfg.host_names() if h not in (old, candidate.host)]
        return {
            "old_primary": old,
            "candidate": candidate.host,
            "rejected": candidate.rejected,
            "others": others,
        }

    async def _freeze_old_primary(self, ctx: StepContext) -> Output:
        cfg = self._cfg(ctx)
        old = self.server(cfg, ctx.output("check")["old_primary"])
        await old.set_read_only(True)
        killed = await old.kill_client_connections()
        position = (await old.state()).executed
        log.info(
            "%s: %s is read-only at %s; killed %d connections",
            cfg.name,
            old.name,
            position,
            len(killed),
        )
        return {"position": position, "killed": killed}

    async def _wait_candidate(self, ctx: StepContext) -> Output:
        cfg = self._cfg(ctx)
        candidate = self.server(cfg, ctx.output("check")["candidate"])
        position = ctx.output("freeze_old_primary")["position"]
        if not await candidate.wait_for_position(position, cfg.catch_up_wait_s):
            raise TimeoutError(
                f"{candidate.name} did not apply {position} within {cfg.catch_up_wait_s} s"
            )
        return {"applied": position}

    async def _unfreeze_if_not_promoted(self, ctx: StepContext, error: BaseException) -> None:
        """Give the old primary its writes back when nothing was changed on the others.

        Only while failing to freeze it or waiting for the candidate: later steps have
        detached the candidate or repointed replicas, and a human must look.
        """
        if ctx.step not in ("freeze_old_primary", "wait_candidate"):
            return
        cfg = self._cfg(ctx)
        old = self.server(cfg, ctx.output("check")["old_primary"])
        await old.set_read_only(False)
        log.warning("%s: switchover failed (%s); %s is writable again", cfg.name, error, old.name)

    # --------------------------------------------------------------- failover

    async def _fence_old_primary(self, ctx: StepContext) -> Output:
        cfg = self._cfg(ctx)
        old_name = ctx.params.get("old") or await self._current_primary(ctx, cfg)
        old = self.server(cfg, old_name)
        try:
            await old.set_read_only(True)
            killed = await old.kill_client_connections()
            position = (await old.state()).executed
            return {
                "old_primary": old_name,
                "reachable": True,
                "position": position,
                "killed": killed,
            }
        except ServerError as e:
            failure: ServerError = e
        reachable_error = str(failure)
        if not cfg.fence_hook:
            if not isinstance(failure, UnreachableError):
                raise ServerError(
                    old_name,
                    f"cannot fence it ({reachable_error}) and no"
                    " fence_hook is configured: not promoting",
                ) from None
            return {
                "old_primary": old_name,
                "reachable": False,
                "error": reachable_error,
                "hook": None,
            }
        hook = await run_hook(cfg.fence_hook, self._hook_env(cfg, ctx, old_name))
        if not hook.ok:
            raise RuntimeError(
                f"fence hook {list(hook.argv)} exited {hook.returncode}: {hook.output.strip()}"
            )
        return {
            "old_primary": old_name,
            "reachable": False,
            "error": reachable_error,
            "hook": hook.output.strip(),
        }

    async def _current_primary(self, ctx: StepContext, cfg: ClusterConfig) -> str:
        record = await read_primary(ctx.leadership.election.client, cfg.name)
        if record is not None:
            return record.host
        topology = await discover(cfg)
        if topology.primary is None:
            raise TopologyError(
                f"cluster {cfg.name}: cannot tell the old primary: {topology.describe()}"
            )
        return topology.primary

    def _hook_env(self, cfg: ClusterConfig, ctx: StepContext, old: str) -> dict[str, str]:
        return {
            "HACOORD_CLUSTER": cfg.name,
            "HACOORD_OLD_PRIMARY": old,
            "HACOORD_TOKEN": str(ctx.token),
            "HACOORD_WORKFLOW": ctx.record.id,
        }

    async def _choose(self, ctx: StepContext) -> Output:
        cfg = self._cfg(ctx)
        old = ctx.output("fence_old_primary")["old_primary"]
        candidate = choose_candidate(
            cfg, await discover(cfg), old, exclude=ctx.params.get("exclude", ())
        )
        others = [h for h in cfg.host_names() if h not in (old, candidate.host)]
        log.info(
            "%s: failover candidate %s (received %s); not chosen: %s",
            cfg.name,
            candidate.host,
            candidate.received,
            candidate.rejected,
        )
        return {
            "candidate": candidate.host,
            "received": candidate.received,
            "rejected": candidate.rejected,
            "others": others,
        }

    async def _apply_relay_log(self, ctx: StepContext) -> Output:
        cfg = self._cfg(ctx)
        chosen = ctx.output("choose")
        candidate = self.server(cfg, chosen["candidate"])
        if not await candidate.wait_for_position(chosen["received"], cfg.relay_log_wait_s):
            raise TimeoutError(
                f"{candidate.name} did not apply its relay log (up to {chosen['received']})"
                f" within {cfg.relay_log_wait_s} s"
            )
        return {"applied": chosen["received"]}

    # ------------------------------------------------------ shared: promote, ...

    def _plan(self, ctx: StepContext) -> tuple[str, str, list[str], str]:
        """(old primary, candidate, other replicas, position it applied from the old)."""
        if ctx.record.kind == SWITCHOVER:
            check = ctx.output("check")
            applied = ctx.output("wait_candidate")["applied"]
            return check["old_primary"], check["candidate"], check["others"], applied
        chosen = ctx.output("choose")
        old = ctx.output("fence_old_primary")["old_primary"]
        return old, chosen["candidate"], chosen["others"], ctx.output("apply_relay_log")["applied"]

    async def _prepare_candidate(self, ctx: StepContext) -> Output:
        """Stop the candidate replicating, still read-only, ready to be a semi-sync source.

        The other replicas are pointed at it before it opens (``repoint``), so with
        semi-sync on, its first write already waits for a replica's acknowledgement.
        """
        cfg = self._cfg(ctx)
        _, candidate, _, _ = self._plan(ctx)
        server = self.server(cfg, candidate)
        async with server.session() as conn:
            await refuse_older(conn, cfg.name, ctx.token)
            await run_statements(server.name, conn, cfg.dialect.set_read_only(True))
            await run_statements(server.name, conn, cfg.dialect.forget_replication())
            if cfg.semi_sync:
                await run_statements(server.name, conn, cfg.dialect.set_semi_sync(primary=True))
        return {"candidate": candidate}

    async def _promote(self, ctx: StepContext) -> Output:
        """Write the token into the fence table and open the candidate for writes."""
        cfg = self._cfg(ctx)
        _, candidate, _, applied = self._plan(ctx)
        server = self.server(cfg, candidate)
        dialect = cfg.dialect
        semi_sync = "off"
        async with server.session() as conn:
            await refuse_older(conn, cfg.name, ctx.token)
            if cfg.semi_sync:
                semi_sync = await self._semi_sync_or_not(server, conn)
            await run_statements(server.name, conn, dialect.admin_writes())
            await write_token(conn, cfg.name, ctx.token, candidate)
            await run_statements(server.name, conn, dialect.set_read_only(False))
            [row] = await fetch_rows(server.name, conn, dialect.variables_sql)
        log.info("%s: %s promoted with token %d", cfg.name, candidate, ctx.token)
        return {
            "primary": candidate,
            "promoted_at": applied,
            "position": str(row[3] or ""),
            "semi_sync": semi_sync,
        }

    async def _semi_sync_or_not(self, server: MySQLServer, conn: Any) -> str:
        """Wait (bounded) for a semi-sync replica; without one, open asynchronously.

        Keeping semi-sync on with no replica would block every write until its
        (long) timeout: availability wins, and the record says so.
        """
        deadline = time.monotonic() + self.replicate_wait_s
        while True:
            [(_, clients)] = await fetch_rows(
                server.name, conn, server.dialect.semi_sync_clients_sql
            )
            if int(clients) > 0:
                return "on"
            if time.monotonic() > deadline:
                await run_statements(
                    server.name, conn, server.dialect.set_semi_sync(primary=False)[:1]
                )
                log.warning(
                    "%s: no semi-sync replica connected; opened without semi-sync", server.name
                )
                return "off: no semi-sync replica connected"
            await asyncio.sleep(0.1)

    async def _repoint(self, ctx: StepContext) -> Output:
        cfg = self._cfg(ctx)
        old, new, others, _ = self._plan(ctx)
        async with self.server(cfg, new).session() as conn:
            await refuse_older(conn, cfg.name, ctx.token)
        targets = [(name, False) for name in others]
        if ctx.record.kind == SWITCHOVER:
            targets.append((old, True))
        results = await asyncio.gather(
            *(self._replicate(cfg, name, new, demote) for name, demote in targets),
            return_exceptions=True,
        )
        repointed, failed = [], {}
        for (name, _), result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                failed[name] = str(result)
                log.error("%s: could not repoint %s to %s: %s", cfg.name, name, new, result)
            else:
                repointed.append(name)
        return {"repointed": repointed, "failed": failed}

    async def _publish(self, ctx: StepContext) -> Output:
        cfg = self._cfg(ctx)
        old, new, _, applied = self._plan(ctx)
        record = PrimaryRecord(cfg.name, new, ctx.token, applied, ctx.record.id, time.time())
        revision = await publish_primary(ctx.leadership, record)
        out: dict[str, Any] = {"primary": new, "token": ctx.token, "revision": revision}
        if ctx.record.kind == FAILOVER:
            fenced = ctx.output("fence_old_primary")
            if fenced.get("position"):
                lost = cfg.dialect.parse_position(fenced["position"]).missing_from(
                    cfg.dialect.parse_position(applied)
                )
                out["possibly_lost"] = lost
                if lost:
                    log.warning("%s: transactions on %s not on %s: %s", cfg.name, old, new, lost)
        return out

    async def _publish_dns(self, ctx: StepContext) -> Output:
        """Point the DNS name at the new primary, tied to the token (after it opened)."""
        cfg = self._cfg(ctx)
        if cfg.dns is None:
            return {"skipped": "no DNS configured"}
        from hacoord.adapters.dns import DnsPublisher, StaleTokenError

        _, new, _, _ = self._plan(ctx)
        target = cfg.dns_target(new)
        try:
            await DnsPublisher(cfg.dns).publish(target, ctx.token)
        except StaleTokenError as e:
            raise FencedOutError(ctx.record.id, ctx.token, str(e)) from e
        return {"record": cfg.dns.record, "target": target, "token": ctx.token}

    # ----------------------------------------------------------------- rejoin

    async def _inspect(self, ctx: StepContext) -> Output:
        cfg = self._cfg(ctx)
        name = str(ctx.params["host"])
        record = await read_primary(ctx.leadership.election.client, cfg.name)
        if record is None:
            raise TopologyError(f"cluster {cfg.name}: no published primary to rejoin")
        if record.host == name:
            raise TopologyError(f"{name} is the published primary of {cfg.name}: nothing to do")
        server = self.server(cfg, name)
        await server.set_read_only(True)
        position = (await server.state()).executed
        lost = cfg.dialect.parse_position(position).missing_from(
            cfg.dialect.parse_position(record.promoted_at)
        )
        if lost:
            log.warning(
                "%s: %s has transactions the primary %s lacks: %s",
                cfg.name,
                name,
                record.host,
                lost,
            )
        return {"primary": record.host, "position": position, "lost": lost}

    async def _rejoin_or_quarantine(self, ctx: StepContext) -> Output:
        cfg = self._cfg(ctx)
        name = str(ctx.params["host"])
        inspected = ctx.output("inspect")
        primary = inspected["primary"]
        reason: str | None = None
        if inspected["lost"]:
            reason = (
                f"has transactions that the primary {primary} does not have (errant or lost"
                f" in the failover): {', '.join(inspected['lost'])}"
            )
        else:
            async with self.server(cfg, primary).session() as conn:
                await refuse_older(conn, cfg.name, ctx.token)
            try:
                await self._replicate(cfg, name, primary, demote=True)
            except ServerError as e:
                reason = f"could not replicate from {primary}: {e}"
                await self.server(cfg, name).run(cfg.dialect.stop_replication())
        key = quarantine_key(cfg.name, name)
        if reason is None:
            await _fenced(ctx.leadership, Delete(key))
            log.info("%s: %s rejoined as a replica of %s", cfg.name, name, primary)
            return {"outcome": "rejoined", "primary": primary}
        note = {"host": name, "reason": reason, "token": ctx.token, "at": time.time()}
        await _fenced(ctx.leadership, Put(key, json.dumps(note).encode()))
        log.error("%s: %s quarantined (read-only, not replicating): %s", cfg.name, name, reason)
        return {"outcome": "quarantined", "reason": reason, "lost": inspected["lost"]}


async def _fenced(leadership: Leadership, op: Put | Delete) -> None:
    if not (await leadership.fenced(op)).succeeded:
        raise FencedOutError("-", leadership.token, "the leadership ended")


def _errors(replica: ReplicaStatus) -> str:
    parts = [
        f"io {'running' if replica.io_running else 'stopped'}",
        f"sql {'running' if replica.sql_running else 'stopped'}",
    ]
    if replica.io_errno:
        parts.append(f"io error {replica.io_errno}: {replica.io_error}")
    if replica.sql_errno:
        parts.append(f"sql error {replica.sql_errno}: {replica.sql_error}")
    return ", ".join(parts)
