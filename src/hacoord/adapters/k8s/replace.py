"""The replacement of one member pod, as a resumable :mod:`hacoord.workflow` run.

Steps (each idempotent, each committed under the adapter's fencing token, so an adapter that
dies midway is finished by the next one from the first uncommitted step):

``preflight``  check again, under the lock, that the replacement is safe now; record the pod
               (uid) it replaces.
``mark``       annotate that pod with the replacement id, token and reason.
``delete``     delete it with a uid precondition (forced when its node is not Ready).
``gone``       wait until the API server no longer has it.
``create``     create the claim if missing and the new pod from the desired template.
``ready``      wait until the pod is Ready and the database says the member is healthy.
``caught-up``  wait until the member applied what the leader had committed when it came up.

All replacements of a group share one workflow subject (the group), so the workflow engine
itself refuses to start a second one while one is unfinished: one at a time across zones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from hacoord.adapters.k8s.config import GroupConfig, Member, PodTemplate
from hacoord.adapters.k8s.database import MemberProbe
from hacoord.adapters.k8s.errors import ConflictError, K8sAdapterError, ReplacementBlockedError
from hacoord.adapters.k8s.kube import ZoneClient
from hacoord.adapters.k8s.observe import node_is_ready, observe, pod_view
from hacoord.adapters.k8s.plan import Why, failure, unhealthy
from hacoord.adapters.k8s.pods import (
    GROUP_LABEL,
    REPLACE_REASON,
    REPLACED_BY,
    REPLACED_TOKEN,
    member_pod,
)
from hacoord.workflow import Step, StepContext, Workflow

REPLACE = "replace"
POLL_S = 0.2
"""How often a waiting step looks again at the API server or the member."""

MARK_ATTEMPTS = 20
"""How often ``mark`` re-reads a pod whose resourceVersion moved under it before giving up."""

Progress = Callable[[str], None]


class ReplacementSteps:
    """The steps of a replacement, bound to the zones and the database probe."""

    def __init__(
        self,
        config: GroupConfig,
        zones: Mapping[str, ZoneClient],
        probe: MemberProbe,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.zones = zones
        self.probe = probe
        self.progress = progress or (lambda _: None)

    def workflow(self) -> Workflow:
        """The workflow definition the engine runs."""
        steps = (
            ("preflight", self.preflight),
            ("mark", self.mark),
            ("delete", self.delete),
            ("gone", self.gone),
            ("create", self.create),
            ("ready", self.ready),
            ("caught-up", self.caught_up),
        )
        return Workflow(REPLACE, tuple(Step(name, self._reported(name, fn)) for name, fn in steps))

    def _reported(
        self, name: str, fn: Callable[[StepContext], Awaitable[dict[str, Any]]]
    ) -> Callable[[StepContext], Awaitable[dict[str, Any]]]:
        async def run(ctx: StepContext) -> dict[str, Any]:
            started = time.monotonic()
            out = await fn(ctx)
            took = time.monotonic() - started
            self.progress(f"{ctx.record.id} {ctx.params['member']}: {name} done in {took:.2f}s")
            return out

        return run

    def _zone(self, ctx: StepContext) -> ZoneClient:
        return self.zones[self.config.member(ctx.params["member"]).zone]

    async def preflight(self, ctx: StepContext) -> dict[str, Any]:
        member = ctx.params["member"]
        view = await observe(self.config, self.zones, self.probe)
        if view.unreachable:
            raise ReplacementBlockedError(
                "cannot see every zone: " + "; ".join(sorted(view.unreachable.values()))
            )
        target = view.member(member)
        down = failure(target)
        planned = Why(ctx.params["why"]) is not Why.REPAIR or target.health.healthy
        if planned:
            max_lag = self.config.timings.max_lag_entries
            # A repair of a member whose database still answers checks only the others.
            others = [m for m in view.members if m.name != member or not down]
            sick = [f"{m.name}: {w}" for m in others if (w := unhealthy(m, max_lag))]
            if sick:
                raise ReplacementBlockedError(
                    f"not every member is healthy, so {member} stays: " + "; ".join(sick)
                )
        pod = target.pod
        return {
            "old_uid": pod.uid if pod else "",
            "old_node": pod.node if pod else "",
            "force": bool(pod and pod.node and target.node_ready is False),
            "down": down or "",
        }

    async def mark(self, ctx: StepContext) -> dict[str, Any]:
        member, old_uid = ctx.params["member"], ctx.output("preflight")["old_uid"]
        zone = self._zone(ctx)
        annotations = {
            REPLACED_BY: ctx.record.id,
            REPLACED_TOKEN: str(ctx.token),
            REPLACE_REASON: f"{ctx.params['why']}: {ctx.params['detail']}",
        }
        conflict: ConflictError | None = None
        for _ in range(MARK_ATTEMPTS if old_uid else 0):
            pod = await zone.get_pod(member)
            if pod is None or pod.metadata.uid != old_uid or pod.metadata.deletion_timestamp:
                return {"marked": False}
            try:
                await zone.annotate_pod(member, pod.metadata.resource_version, annotations)
                return {"marked": True}
            except ConflictError as e:
                conflict = e  # its kubelet updated the status meanwhile: read it again
        if conflict is not None:
            raise conflict
        return {"marked": False}

    async def delete(self, ctx: StepContext) -> dict[str, Any]:
        pre = ctx.output("preflight")
        if not pre["old_uid"]:
            return {"deleted": False}
        deleted = await self._zone(ctx).delete_pod(
            ctx.params["member"], pre["old_uid"], force=pre["force"]
        )
        return {"deleted": deleted}

    async def gone(self, ctx: StepContext) -> dict[str, Any]:
        member, old_uid = ctx.params["member"], ctx.output("preflight")["old_uid"]
        zone = self._zone(ctx)
        deadline = time.monotonic() + self.config.timings.gone_timeout_s
        while old_uid:
            pod = await zone.get_pod(member)
            if pod is None or pod.metadata.uid != old_uid:
                break
            node = await zone.get_node(pod.spec.node_name) if pod.spec.node_name else None
            if node is not None and not node_is_ready(node):
                # Its node died after the delete: its kubelet will never confirm.
                await zone.delete_pod(member, old_uid, force=True)
            if time.monotonic() > deadline:
                raise K8sAdapterError(
                    f"{member}: pod {old_uid} still terminating after "
                    f"{self.config.timings.gone_timeout_s:.0f}s (node {pod.spec.node_name})"
                )
            await asyncio.sleep(POLL_S)
        return {}

    async def create(self, ctx: StepContext) -> dict[str, Any]:
        member = self.config.member(ctx.params["member"])
        template = PodTemplate.from_mapping(ctx.params["template"])
        uid = await self.create_member(member, template, ctx.token, ctx.record.id)
        return {"new_uid": uid, "revision": template.revision}

    async def create_member(
        self, member: Member, template: PodTemplate, token: int, replacement: str
    ) -> str:
        """Create ``member``'s claim (if missing) and pod; the uid of the pod.

        Idempotent for one ``replacement``: a pod it created already is taken as done; a pod
        of that name that someone else created is an error.
        """
        zone = self.zones[member.zone]
        await zone.ensure_claim(member.volume_claim, {GROUP_LABEL: self.config.name})
        body = member_pod(self.config, member, template, token=token, replacement=replacement)
        try:
            pod = await zone.create_pod(body)
        except ConflictError:
            existing = await zone.get_pod(member.name)
            if existing is None or pod_view(existing).replacement != replacement:
                raise K8sAdapterError(
                    f"{member.name}: a pod of that name exists that this replacement did not "
                    "create; not replacing it"
                ) from None
            pod = existing
        return str(pod.metadata.uid)

    async def ready(self, ctx: StepContext) -> dict[str, Any]:
        await self.wait_ready(self.config.member(ctx.params["member"]))
        return {}

    async def wait_ready(self, member: Member) -> None:
        """Wait until ``member``'s pod is Ready and its database healthy."""
        zone = self.zones[member.zone]
        deadline = time.monotonic() + self.config.timings.ready_timeout_s
        why = "not seen yet"
        while time.monotonic() < deadline:
            pod = await zone.get_pod(member.name)
            view = pod_view(pod) if pod is not None else None
            if view is not None and view.phase in ("Failed", "Succeeded"):
                raise K8sAdapterError(f"{member.name}: the new pod {view.phase}: {view.message}")
            if view is not None and view.ready:
                health = await self.probe.health(member)
                if health.healthy:
                    return
                why = health.detail
            else:
                why = "pod not Ready" if view else "pod missing"
            await asyncio.sleep(POLL_S)
        raise K8sAdapterError(
            f"{member.name}: not Ready and healthy after "
            f"{self.config.timings.ready_timeout_s:.0f}s ({why})"
        )

    async def caught_up(self, ctx: StepContext) -> dict[str, Any]:
        member = self.config.member(ctx.params["member"])
        started = time.monotonic()
        deadline = started + self.config.timings.catch_up_timeout_s
        target: int | None = None
        applied = 0
        while time.monotonic() < deadline:
            if target is None:
                view = await observe(self.config, self.zones, self.probe)
                target = view.leader_commit
            if target is not None:
                health = await self.probe.health(member)
                applied = health.applied_index
                if health.healthy and applied >= target:
                    return {
                        "target_index": target,
                        "applied_index": applied,
                        "seconds": round(time.monotonic() - started, 3),
                    }
            await asyncio.sleep(POLL_S)
        raise K8sAdapterError(
            f"{member.name}: applied index {applied} has not reached the leader's commit "
            f"index {target} after {self.config.timings.catch_up_timeout_s:.0f}s"
        )
