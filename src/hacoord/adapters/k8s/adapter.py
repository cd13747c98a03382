"""The Kubernetes adapter: one active instance (by election) replaces member pods, one at a time.

Any number of :class:`K8sAdapter` instances may run; they campaign for the election
``k8s/<group>``, and only the holder looks at the group and acts. Its fencing token is on every
pod it creates or marks and on every step of every replacement record. When it dies mid-way,
the next holder resumes the unfinished replacement before deciding anything new.

What should run is kept in the coordination cluster, so every instance agrees on it: the
desired pod template (:meth:`K8sAdapter.set_template` starts a rollout), operators' replacement
requests (:meth:`K8sAdapter.request_replacement`) and the paused flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from hacoord.adapters.k8s.config import GroupConfig, PodTemplate
from hacoord.adapters.k8s.database import EtcdProbe, MemberProbe
from hacoord.adapters.k8s.errors import ReplacementBlockedError
from hacoord.adapters.k8s.kube import ZoneClient
from hacoord.adapters.k8s.observe import GroupView, observe
from hacoord.adapters.k8s.plan import Blocked, Decision, Idle, Replace, decide
from hacoord.adapters.k8s.replace import REPLACE, ReplacementSteps
from hacoord.adapters.k8s.webhook import ADAPTER_GROUP, ADAPTER_USER, TOKEN_EXTRA
from hacoord.client.client import Client
from hacoord.client.election import Leadership
from hacoord.workflow import (
    FencedOutError,
    Status,
    StepFailedError,
    WorkflowEngine,
    WorkflowRecord,
    WorkflowStore,
)

log = logging.getLogger("hacoord.k8s")


def election_name(group: str) -> str:
    """The election whose holder acts for ``group``."""
    return f"k8s/{group}"


def _key(group: str, what: str) -> str:
    return f"k8s/{group}/{what}"


@dataclass
class AdapterState:
    """What the active instance last decided, for status pages and tests."""

    decision: Decision | None = None
    view: GroupView | None = None
    finished: list[WorkflowRecord] = field(default_factory=list)


class K8sAdapter:
    """Keeps a group's members on the desired template, repairing failures first.

    ``probe`` asks the database about its members (etcd by default); ``instance`` names this
    instance in the election; ``progress`` receives one line per step (default: the log).
    With ``api_fencing`` every write is made as the impersonated adapter identity carrying the
    current fencing token, which the fence webhook checks (see
    :mod:`hacoord.adapters.k8s.webhook`; install it with :mod:`hacoord.adapters.k8s.install`).
    """

    def __init__(
        self,
        client: Client,
        config: GroupConfig,
        *,
        probe: MemberProbe | None = None,
        instance: str = "adapter",
        ttl_s: float = 5.0,
        progress: Callable[[str], None] | None = None,
        api_fencing: bool = False,
    ) -> None:
        self.client = client
        self.config = config
        self.probe = probe or EtcdProbe(timeout_s=config.timings.api_timeout_s)
        self.instance = instance
        self.ttl_s = ttl_s
        self.progress = progress or (lambda line: log.info("%s", line))
        self.zones = {
            z.name: ZoneClient(z, timeout_s=config.timings.api_timeout_s) for z in config.zones
        }
        self.steps = ReplacementSteps(config, self.zones, self.probe, self.progress)
        self.api_fencing = api_fencing
        """Write as the impersonated adapter identity carrying the token (see webhook)."""
        self.leadership: Leadership | None = None
        """The leadership this instance acts with, while it is the active one."""
        self.state = AdapterState()
        self.leading = asyncio.Event()
        self._ticks = 0
        self._ticked = asyncio.Condition()

    async def open(self) -> None:
        """Load every zone's kubeconfig (errors name the zone and the file)."""
        for zone in self.zones.values():
            await zone.open()

    async def close(self) -> None:
        """Close the API and database connections."""
        for zone in self.zones.values():
            await zone.close()
        await self.probe.close()

    def store(self) -> WorkflowStore:
        """Read access to the group's replacement records (history)."""
        return WorkflowStore(self.client, namespace=f"k8s-{self.config.name}")

    def engine(self, leadership: Leadership) -> WorkflowEngine:
        """The workflow engine acting with ``leadership``'s token."""
        return WorkflowEngine(
            leadership, [self.steps.workflow()], namespace=f"k8s-{self.config.name}"
        )

    # -- what should run (any instance, any process) --------------------------------------

    async def desired_template(self) -> PodTemplate:
        """The template members should run: the published one, else the configured one."""
        kv = await self.client.get(_key(self.config.name, "template"))
        if kv is None:
            return self.config.template
        return PodTemplate.from_mapping(json.loads(kv.value))

    async def set_template(self, template: PodTemplate) -> str:
        """Publish a new desired template (a rollout); returns its revision."""
        data = json.dumps(template.to_mapping()).encode()
        await self.client.put(_key(self.config.name, "template"), data)
        return template.revision

    async def request_replacement(self, member: str) -> None:
        """Ask for ``member`` to be replaced once it is safe (``UnknownMemberError`` if no such)."""
        self.config.member(member)
        await self.client.put(_key(self.config.name, f"requests/{member}"), b"1")

    async def set_paused(self, paused: bool) -> None:
        """Pause or resume planned replacements (repairs of failed members still run)."""
        key = _key(self.config.name, "paused")
        if paused:
            await self.client.put(key, b"1")
        else:
            await self.client.delete(key)

    async def _requests(self) -> list[str]:
        prefix = _key(self.config.name, "requests/")
        result = await self.client.range(prefix, prefix=True)
        return [kv.key[len(prefix) :] for kv in result.kvs]

    async def bootstrap(self) -> None:
        """Create every member's pod at once for a group that has none yet; wait until healthy.

        A new database cannot come up one member at a time (its first member waits for a
        quorum), so the first pods are created together, under the adapter election's token.
        Refuses (:class:`ReplacementBlockedError`) if any member pod exists already.
        """
        await self.open()
        election = self.client.election(election_name(self.config.name))
        leadership = await election.acquire(self.instance.encode(), ttl_s=self.ttl_s)
        self._act_with(leadership)
        try:
            view = await observe(self.config, self.zones, self.probe)
            if view.unreachable:
                raise ReplacementBlockedError(
                    "cannot bootstrap: " + "; ".join(sorted(view.unreachable.values()))
                )
            existing = [m.name for m in view.members if m.pod is not None]
            if existing:
                raise ReplacementBlockedError(
                    f"cannot bootstrap group {self.config.name}: pods exist for "
                    + ", ".join(existing)
                )
            template = await self.desired_template()
            await asyncio.gather(
                *(
                    self.steps.create_member(m, template, leadership.token, "bootstrap")
                    for m in self.config.members
                )
            )
            await asyncio.gather(*(self.steps.wait_ready(m) for m in self.config.members))
            self.progress(f"bootstrapped {len(self.config.members)} members")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(leadership.resign())

    # -- the active instance ---------------------------------------------------------------

    async def bootstrap_if_new(self) -> bool:
        """Bootstrap the group if no member has a pod in any zone; whether it did.

        A group without a single pod cannot be repaired one member at a time (a lone new
        member never becomes healthy); all at once is also right when every pod was lost,
        since the members come back on their volumes. Several instances may call this at
        once: the first bootstraps, the others find the pods and return ``False``.
        """
        await self.open()
        view = await observe(self.config, self.zones, self.probe)
        if view.unreachable or any(m.pod is not None for m in view.members):
            return False
        try:
            await self.bootstrap()
        except ReplacementBlockedError as e:
            log.info("%s: no bootstrap: %s", self.instance, e)
            return False
        return True

    async def run(self) -> None:
        """Campaign, act while elected, campaign again; until cancelled."""
        await self.open()
        while True:
            try:
                leadership = await self.client.election(election_name(self.config.name)).acquire(
                    self.instance.encode(), ttl_s=self.ttl_s
                )
            except Exception as e:
                log.warning("%s: campaign failed (%s); retrying", self.instance, e)
                await asyncio.sleep(self.config.timings.interval_s)
                continue
            self.progress(f"{self.instance}: active with fencing token {leadership.token}")
            try:
                await self._lead(leadership)
            except FencedOutError as e:
                log.warning("%s: fenced out (%s)", self.instance, e)
            except Exception:
                log.exception("%s: adapter loop failed; campaigning again", self.instance)
            finally:
                self.leading.clear()
                self.leadership = None
                with contextlib.suppress(Exception):
                    await asyncio.shield(leadership.resign())

    def _act_with(self, leadership: Leadership) -> None:
        self.leadership = leadership
        if self.api_fencing:
            for zone in self.zones.values():
                zone.fence_with(ADAPTER_USER, ADAPTER_GROUP, TOKEN_EXTRA, leadership.token)

    async def _lead(self, leadership: Leadership) -> None:
        self._act_with(leadership)
        engine = self.engine(leadership)
        for record in await engine.resume_all():
            self.progress(f"{self.instance}: resumed {record.id} -> {record.status}")
            await self._finished(record)
        self.leading.set()
        lost = asyncio.create_task(leadership.lost())
        try:
            while not lost.done():
                replaced = False
                try:
                    decision = await self.tick(engine)
                    replaced = (
                        isinstance(decision, Replace)
                        and self.state.finished[-1].status is Status.SUCCEEDED
                    )
                except FencedOutError:
                    raise
                except Exception:
                    log.exception("%s: decision round failed", self.config.name)
                self._ticks += 1
                async with self._ticked:
                    self._ticked.notify_all()
                if replaced:
                    # Look again at once: the next member may be ready to go. A failed
                    # replacement or round waits the interval, so it cannot spin.
                    continue
                await asyncio.wait({lost}, timeout=self.config.timings.interval_s)
        finally:
            lost.cancel()

    async def wait_ticks(self, count: int) -> None:
        """Wait until ``count`` more decision rounds have run (for callers and tests)."""
        target = self._ticks + count
        async with self._ticked:
            await self._ticked.wait_for(lambda: self._ticks >= target)

    async def decide(self) -> tuple[Decision, GroupView, PodTemplate]:
        """Look at the group and decide, without acting."""
        template = await self.desired_template()
        requests = await self._requests()
        paused = await self.client.get(_key(self.config.name, "paused")) is not None
        view = await observe(self.config, self.zones, self.probe)
        decision = decide(self.config, view, template.revision, requests, paused)
        return decision, view, template

    async def tick(self, engine: WorkflowEngine) -> Decision:
        """One round: decide, and carry out the replacement decided on (to its end)."""
        decision, view, template = await self.decide()
        changed = decision != self.state.decision
        self.state.decision, self.state.view = decision, view
        if isinstance(decision, Blocked) and changed:
            self.progress(f"blocked: {decision.reason}")
        if isinstance(decision, Idle) and changed:
            self.progress(f"idle: every member healthy on revision {template.revision}")
        if not isinstance(decision, Replace):
            return decision
        self.progress(f"replacing {decision.member} ({decision.why}: {decision.detail})")
        params = {
            "member": decision.member,
            "why": str(decision.why),
            "detail": decision.detail,
            "template": template.to_mapping(),
        }
        try:
            record = await engine.start(REPLACE, self.config.name, params)
        except StepFailedError as e:
            record = e.record
            if isinstance(e.cause, ReplacementBlockedError):
                self.state.decision = Blocked(str(e.cause))
        await self._finished(record)
        return decision

    async def _finished(self, record: WorkflowRecord) -> None:
        self.state.finished.append(record)
        member = str(record.params.get("member", ""))
        if record.status is Status.SUCCEEDED:
            self.progress(f"{record.id}: {member} replaced")
            with contextlib.suppress(Exception):
                await self.client.delete(_key(self.config.name, f"requests/{member}"))
        else:
            self.progress(f"{record.id}: {member} replacement {record.status}: {record.error}")
