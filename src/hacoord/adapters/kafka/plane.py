"""The control plane: one active instance (by election) that reconfigures an HA group.

Every daemon runs a :class:`ControlPlane`; the holder of the group's control election
judges every cluster from the watchdogs' observations (:mod:`.detect`), asks
:func:`~hacoord.adapters.kafka.plan.next_change` what to change, and runs the change as a
:mod:`hacoord.workflow` run (``kafka-drain``, ``kafka-promote``, ``kafka-readmit``,
``kafka-topics``) whose every topology write carries its fencing token. A control plane that
dies midway is continued by the next holder (:meth:`WorkflowEngine.resume_all`); each step
re-reads the published topology, so a step run twice publishes nothing twice.

Operators act through the coordinator (:func:`drain`, :func:`undrain`,
:func:`request_promote`), so any daemon, the CLI or the HTTP API can take the request and
whichever instance is active carries it out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from hacoord.adapters.kafka.config import GroupConfig, Mode
from hacoord.adapters.kafka.control import TopologyControl
from hacoord.adapters.kafka.detect import Health, Verdict, judge
from hacoord.adapters.kafka.errors import KafkaAdapterError, PromotePendingError
from hacoord.adapters.kafka.keys import (
    NAMESPACE,
    decisions_key,
    drained_prefix,
    observers_prefix,
    promote_request_key,
)
from hacoord.adapters.kafka.plan import Change, ChangeKind, next_change
from hacoord.adapters.kafka.probe import ClusterProbe
from hacoord.adapters.kafka.topics import ensure_topics, physical_topics
from hacoord.adapters.kafka.topology import ClusterState, Topology, publish_topology
from hacoord.adapters.kafka.watchdog import DEFAULT_CANARY_TOPIC
from hacoord.adapters.observations import observation_from_json, read_reports
from hacoord.client.client import Client
from hacoord.client.election import Leadership
from hacoord.coord.commands import Compare, CompareOp, Delete, Put, Range, Target, Txn
from hacoord.coord.results import RangeResult, TxnResult
from hacoord.workflow import (
    FencedOutError,
    Step,
    StepContext,
    StepFailedError,
    Workflow,
    WorkflowEngine,
    WorkflowRecord,
    WorkflowStore,
)

log = logging.getLogger(__name__)

TOPICS = "kafka-topics"


@dataclass(frozen=True, slots=True)
class ControlTimings:
    """How often to decide, how sure to be, and how long a returning cluster must stay up."""

    interval_s: float = 0.5
    failures_to_confirm: int = 2
    """Consecutive failed probes a member needs before it counts a cluster as down."""
    readmit_after_s: float = 30.0
    """A cluster that was down is readmitted only after staying up this long."""
    ttl_s: float = 3.0
    """Lease of the control election."""
    probe_timeout_s: float = 2.0
    """Timeout of the control plane's own checks (the promote workflow's probe)."""
    topics_timeout_s: float = 10.0
    """Timeout of creating physical topics in one cluster."""

    def __post_init__(self) -> None:
        for name in ("interval_s", "ttl_s", "probe_timeout_s", "topics_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.readmit_after_s < 0:
            raise ValueError(f"readmit_after_s must be >= 0, got {self.readmit_after_s}")
        if self.failures_to_confirm < 1:
            raise ValueError(f"failures_to_confirm must be >= 1, got {self.failures_to_confirm}")


@dataclass(slots=True)
class PlaneState:
    """What the active control plane last saw and did (for status, metrics and tests)."""

    verdicts: dict[str, Verdict] = field(default_factory=dict)
    up_since: dict[str, float] = field(default_factory=dict)
    drained: dict[str, str] = field(default_factory=dict)
    topology: Topology | None = None
    finished: list[WorkflowRecord] = field(default_factory=list)
    """Reconfigurations this instance ran, oldest first."""


class ControlPlane:
    """Campaigns for the group's control election and reconfigures the group while held.

    ``members`` is the number of voting coordinator members (a majority of them must see a
    cluster down).
    """

    def __init__(
        self,
        client: Client,
        config: GroupConfig,
        member: str,
        members: int,
        timings: ControlTimings | None = None,
        canary_topic: str = DEFAULT_CANARY_TOPIC,
    ) -> None:
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.client = client
        self.config = config
        self.member = member
        self.members = members
        self.timings = timings or ControlTimings()
        self.canary_topic = canary_topic
        self.control = TopologyControl(client, config, instance=member)
        self.state = PlaneState()
        self.leading = asyncio.Event()
        self.token = 0
        self._rounds = 0
        self._round_done = asyncio.Condition()
        self._topics_checked: set[str] = set()
        self._noted = b""

    def workflows(self) -> list[Workflow]:
        """The reconfiguration workflows, bound to this control plane."""
        return [
            Workflow(ChangeKind.DRAIN, (Step("publish", self._publish_drain),)),
            Workflow(
                ChangeKind.PROMOTE,
                (
                    Step("check", self._check_promotable),
                    Step("topics", self._create_topics),
                    Step("publish", self._publish_promotion),
                ),
            ),
            Workflow(
                ChangeKind.READMIT,
                (Step("topics", self._create_topics), Step("publish", self._publish_readmit)),
            ),
            Workflow(TOPICS, (Step("create", self._create_topics),)),
        ]

    def engine(self, leadership: Leadership) -> WorkflowEngine:
        """A workflow engine acting under ``leadership``."""
        return WorkflowEngine(leadership, self.workflows(), NAMESPACE)

    async def run(self) -> None:
        """Campaign, lead until the leadership is lost, campaign again; until cancelled."""
        while True:
            try:
                leadership = await self.control.acquire(self.timings.ttl_s)
            except Exception as e:
                log.warning("%s: campaign failed (%s); retrying", self.member, e)
                await asyncio.sleep(self.timings.interval_s)  # back off before campaigning
                continue
            self.token = leadership.token
            log.info("%s: control plane of %s, token %d", self.member, self.config.name, self.token)
            try:
                await self._lead(leadership)
            except FencedOutError as e:
                log.warning("%s: fenced out (%s)", self.member, e)
            except Exception:
                log.exception("%s: control loop failed; campaigning again", self.member)
            finally:
                self.leading.clear()
                self._topics_checked.clear()
                await self.control.release()

    async def _lead(self, leadership: Leadership) -> None:
        engine = self.engine(leadership)
        self.state.topology = await self.control.current()
        for record in await engine.resume_all():
            log.info("%s: resumed %s -> %s", self.member, record.id, record.status)
            self.state.finished.append(record)
        self.leading.set()
        lost = asyncio.create_task(leadership.lost())
        try:
            while not lost.done():
                try:
                    await self.tick(engine)
                except FencedOutError:
                    raise
                except Exception:
                    # A cluster's trouble (a timeout, an admin error) must not cost the
                    # leadership: look again next round.
                    log.exception("%s: control round failed", self.config.name)
                self._rounds += 1
                async with self._round_done:
                    self._round_done.notify_all()
                await asyncio.wait({lost}, timeout=self.timings.interval_s)
        finally:
            lost.cancel()

    async def wait_rounds(self, count: int) -> None:
        """Wait until ``count`` more control rounds have run (for callers and tests)."""
        target = self._rounds + count
        async with self._round_done:
            await self._round_done.wait_for(lambda: self._rounds >= target)

    async def tick(self, engine: WorkflowEngine) -> None:
        """One round: judge every cluster, then run the next change, if any."""
        group = self.config.name
        reports = await read_reports(self.client, observers_prefix(group))
        observations = [observation_from_json(m, raw) for m, raw in reports.items()]
        now = time.monotonic()
        verdicts = {
            name: judge(name, observations, self.members, self.timings.failures_to_confirm)
            for name in self.config.cluster_names
        }
        for name, verdict in verdicts.items():
            if verdict.health is Health.UP:
                self.state.up_since.setdefault(name, now)
            else:
                self.state.up_since.pop(name, None)
        self.state.verdicts = verdicts
        self.state.drained = {
            name: str(raw.get("reason", ""))
            for name, raw in (await read_reports(self.client, drained_prefix(group))).items()
        }
        topology = await self.control.current()
        self.state.topology = topology
        await self._note(engine.token)
        request = await self._take_promote_request(engine)
        change = next_change(
            topology,
            verdicts,
            self.state.drained,
            self.state.up_since,
            now,
            self.timings.readmit_after_s,
            promote_request=request.get("cluster", "") if request else "",
        )
        if change is not None:
            await self._carry_out(engine, change, request.get("id", "") if request else "")
            return
        await self._check_topics(engine)

    async def _carry_out(self, engine: WorkflowEngine, change: Change, request: str) -> None:
        params: dict[str, Any] = {
            "cluster": change.cluster,
            "reason": change.reason,
            "automatic": change.automatic,
            "healthy": change.healthy,
            "new_primary": change.new_primary,
            "decided_at": time.time(),
            "decided_by": self.member,
        }
        if request:
            params["request"] = request
        log.warning("%s: %s %s: %s", self.config.name, change.kind, change.cluster, change.reason)
        try:
            record = await engine.start(change.kind, self.config.name, params)
        except StepFailedError as e:
            log.error("%s: %s of %s failed: %s", self.config.name, change.kind, change.cluster, e)
            record = e.record
        self.state.finished.append(record)
        self.state.topology = await self.control.current()

    async def _check_topics(self, engine: WorkflowEngine) -> None:
        """Once per leadership, create the physical topics an up cluster lacks."""
        missing = []
        for name, verdict in self.state.verdicts.items():
            if verdict.health is not Health.UP or name in self._topics_checked:
                continue
            try:
                existing = await physical_topics(
                    self.config.cluster(name), self.timings.topics_timeout_s
                )
            except KafkaAdapterError as e:
                log.warning("%s: cannot list the topics of %s: %s", self.config.name, name, e)
                continue
            self._topics_checked.add(name)
            if any(t.physical not in existing for t in self.config.topics):
                missing.append(name)
        if not missing:
            return
        params = {"clusters": missing, "reason": "physical topics missing"}
        try:
            record = await engine.start(TOPICS, self.config.name, params)
        except StepFailedError as e:
            record = e.record
            self._topics_checked.difference_update(missing)
        self.state.finished.append(record)

    async def _note(self, token: int) -> None:
        """Record the verdicts (when they changed) for status views on any member."""
        verdicts = {n: v.to_json() for n, v in self.state.verdicts.items()}
        body = {"by": self.member, "token": token, "verdicts": verdicts}
        data = json.dumps(body, sort_keys=True).encode()
        if data == self._noted:
            return
        for name, verdict in self.state.verdicts.items():
            log.info("%s: %s is %s: %s", self.config.name, name, verdict.health, verdict.reason)
        await self.client.put(
            decisions_key(self.config.name),
            json.dumps({**body, "at": time.time()}, sort_keys=True).encode(),
        )
        self._noted = data

    async def _take_promote_request(self, engine: WorkflowEngine) -> dict[str, Any] | None:
        key = promote_request_key(self.config.name)
        kv = await self.client.get(key)
        if kv is None:
            return None
        taken = await engine.leadership.fenced(Delete(key))
        if not taken.succeeded:
            raise FencedOutError("-", engine.token, "the leadership ended")
        try:
            request: dict[str, Any] = json.loads(kv.value)
            str(request["cluster"])
        except (ValueError, KeyError, TypeError):
            log.error("%s: ignored a malformed promote request %r", self.config.name, kv.value)
            return None
        return request

    # The workflows' steps. Each re-reads the published topology, so running one again
    # (after a control plane died between doing it and committing it) changes nothing.

    async def _publish_drain(self, ctx: StepContext) -> dict[str, Any]:
        name, new_primary = ctx.params["cluster"], ctx.params["new_primary"]
        current = await self.control.current()
        state = current.clusters[name]
        healthy = bool(ctx.params["healthy"]) and state.healthy
        done = not state.writable and state.healthy == healthy
        if done and (not new_primary or current.primary == new_primary):
            return {"version": current.version, "already": True}
        clusters = dict(current.clusters)
        clusters[name] = ClusterState(healthy=healthy, writable=False, reason=ctx.params["reason"])
        primary = current.primary
        if new_primary:
            clusters[new_primary] = ClusterState()
            primary = new_primary
        topology = current.next(
            f"drain {name}"
            + (f", promote {new_primary}" if new_primary else "")
            + f": {ctx.params['reason']}",
            clusters=clusters,
            primary=primary,
        )
        published = await publish_topology(ctx.leadership, topology)
        return {"version": published.version, "primary": published.primary}

    async def _check_promotable(self, ctx: StepContext) -> dict[str, Any]:
        name = str(ctx.params["cluster"])
        if self.config.mode is not Mode.PRIMARY:
            raise KafkaAdapterError(
                f"{self.config.name}: promote needs mode 'primary' (the group is "
                f"{self.config.mode})"
            )
        cluster = self.config.cluster(name)
        drained = await read_reports(self.client, drained_prefix(self.config.name))
        if name in drained:
            raise KafkaAdapterError(f"{name} is drained by an operator: undrain it first")
        probe = ClusterProbe(
            cluster, self.canary_topic, self.timings.probe_timeout_s, f"hacoord-control-{name}"
        )
        try:
            result = await probe.probe()
        finally:
            await probe.close()
        if not result.ok:
            raise KafkaAdapterError(f"{name} failed its check ({result.error}): not promoted")
        return {"latency_s": round(result.latency_s, 4)}

    async def _create_topics(self, ctx: StepContext) -> dict[str, Any]:
        names = ctx.params.get("clusters") or [ctx.params["cluster"]]
        created = await ensure_topics(self.config, names, self.timings.topics_timeout_s)
        return {"created": created}

    async def _publish_promotion(self, ctx: StepContext) -> dict[str, Any]:
        name = str(ctx.params["cluster"])
        current = await self.control.current()
        state = current.clusters[name]
        if current.primary == name and state.healthy and state.writable:
            return {"version": current.version, "already": True}
        published = await publish_topology(
            ctx.leadership, current.promoted(name, f"promote {name}: {ctx.params['reason']}")
        )
        return {"version": published.version, "primary": name}

    async def _publish_readmit(self, ctx: StepContext) -> dict[str, Any]:
        name = str(ctx.params["cluster"])
        current = await self.control.current()
        state = current.clusters[name]
        if state.healthy and state.writable:
            return {"version": current.version, "already": True}
        topology = current.with_cluster(
            name, ClusterState(), f"readmit {name}: {ctx.params['reason']}"
        )
        published = await publish_topology(ctx.leadership, topology)
        return {"version": published.version}


async def drain(client: Client, config: GroupConfig, cluster: str, reason: str = "") -> None:
    """Drain ``cluster`` from producers until :func:`undrain` (the active plane acts)."""
    config.cluster(cluster)
    body = {"reason": reason, "at": time.time()}
    await client.put(drained_prefix(config.name) + cluster, json.dumps(body).encode())


async def undrain(client: Client, config: GroupConfig, cluster: str) -> bool:
    """Lift an operator's drain of ``cluster``; whether it was drained."""
    config.cluster(cluster)
    result = await client.delete(drained_prefix(config.name) + cluster)
    return bool(result.deleted)


async def request_promote(client: Client, config: GroupConfig, cluster: str) -> str:
    """Ask the active control plane to make ``cluster`` the primary; returns the request id."""
    config.cluster(cluster)
    if config.mode is not Mode.PRIMARY:
        raise KafkaAdapterError(
            f"{config.name}: promote needs mode 'primary' (the group is {config.mode})"
        )
    key = promote_request_key(config.name)
    request_id = f"req-{time.time_ns():x}"
    body = {"id": request_id, "cluster": cluster, "at": time.time()}
    # Only one request waits at a time: a second one would silently replace the first,
    # whose caller would then wait for an outcome that never comes.
    created = await client.txn(
        Txn(
            compares=(Compare(key, Target.CREATE, CompareOp.EQUAL, 0),),
            success=(Put(key, json.dumps(body).encode()),),
            failure=(Range(key),),
        )
    )
    if created.succeeded:
        return request_id
    pending = _pending_request(created)
    if pending.get("cluster") == cluster and isinstance(pending.get("id"), str):
        return str(pending["id"])  # the same request again: wait for the same outcome
    raise PromotePendingError(
        f"{config.name}: a promotion of {pending.get('cluster', '?')} "
        f"({pending.get('id', '?')}) is still waiting for the control plane; "
        "ask again once it is in the history"
    )


def _pending_request(result: TxnResult) -> dict[str, Any]:
    for op in result.results:
        if isinstance(op, RangeResult) and op.kvs:
            try:
                body = json.loads(op.kvs[0].value)
            except ValueError:
                return {}
            return body if isinstance(body, dict) else {}
    return {}


def history(client: Client) -> WorkflowStore:
    """The store of the control plane's reconfiguration records."""
    return WorkflowStore(client, NAMESPACE)


async def wait_for_request(
    client: Client, group: str, request_id: str, timeout: float
) -> WorkflowRecord | None:
    """The finished reconfiguration that served ``request_id``, once it finished."""
    store = history(client)
    deadline = time.monotonic() + timeout
    while True:
        for record in await store.history(group, limit=10):
            if record.params.get("request") == request_id and record.finished_at:
                return record
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.2)  # polling the history for the outcome


__all__ = [
    "ControlPlane",
    "ControlTimings",
    "PlaneState",
    "drain",
    "history",
    "request_promote",
    "undrain",
    "wait_for_request",
]
