"""One look at the whole group: every member's pod, node and database health, in parallel.

The result is plain data (:class:`GroupView`) that :mod:`hacoord.adapters.k8s.plan` decides
on without doing any I/O, so the rules are unit-tested on their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from kubernetes_asyncio import client as k8s

from hacoord.adapters.k8s.config import GroupConfig, Member
from hacoord.adapters.k8s.database import MemberHealth, MemberProbe
from hacoord.adapters.k8s.errors import ZoneError
from hacoord.adapters.k8s.kube import ZoneClient
from hacoord.adapters.k8s.pods import EVICTION_REQUESTED_BY, REPLACED_BY, REPLACEMENT, REVISION


@dataclass(frozen=True, slots=True)
class PodView:
    """What the API server says about a member's pod."""

    uid: str
    resource_version: str
    phase: str
    ready: bool
    revision: str
    node: str
    deleting: bool
    replacement: str = ""
    """The replacement that created this pod (empty if the adapter did not)."""
    replaced_by: str = ""
    """The replacement that is deleting this pod (empty if none)."""
    eviction_requested_by: str = ""
    """Who asked to evict the pod (the eviction webhook denied it and recorded this)."""
    message: str = ""


@dataclass(frozen=True, slots=True)
class MemberView:
    """One member seen from its zone's API server and from the database itself."""

    name: str
    zone: str
    pod: PodView | None
    health: MemberHealth
    node_ready: bool | None = None
    """``None``: the pod is not bound to a node (or the node object is missing)."""
    node_cordoned: bool = False
    """The node is marked unschedulable: it is being drained or retired."""
    lag: int | None = None
    """How far the member's applied index is behind the leader's commit index."""


@dataclass(frozen=True, slots=True)
class GroupView:
    """The whole group at one moment."""

    members: tuple[MemberView, ...]
    unreachable: Mapping[str, str] = field(default_factory=dict)
    """Zones whose API server did not answer, with the reason."""
    leader_commit: int | None = None
    """The leader's commit index (``None``: no member reports being the leader)."""

    def member(self, name: str) -> MemberView:
        """The view of member ``name``."""
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)


def pod_view(pod: k8s.V1Pod) -> PodView:
    """The parts of a pod object the adapter decides on."""
    meta, spec, status = pod.metadata, pod.spec, pod.status
    annotations = meta.annotations or {}
    conditions = (status.conditions if status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return PodView(
        uid=str(meta.uid),
        resource_version=str(meta.resource_version),
        phase=str((status.phase if status else None) or "Pending"),
        ready=ready,
        revision=str(annotations.get(REVISION, "")),
        node=str((spec.node_name if spec else None) or ""),
        deleting=meta.deletion_timestamp is not None,
        replacement=str(annotations.get(REPLACEMENT, "")),
        replaced_by=str(annotations.get(REPLACED_BY, "")),
        eviction_requested_by=str(annotations.get(EVICTION_REQUESTED_BY, "")),
        message=str((status.message if status else None) or ""),
    )


async def observe(
    config: GroupConfig, zones: Mapping[str, ZoneClient], probe: MemberProbe
) -> GroupView:
    """Look at every member at once; an unreachable zone is reported, never raised."""
    unreachable: dict[str, str] = {}

    async def one(member: Member) -> MemberView:
        health_task = asyncio.ensure_future(probe.health(member))
        try:
            pod, node_ready, cordoned = await _pod_and_node(zones[member.zone], member)
        except ZoneError as e:
            unreachable[member.zone] = str(e)
            pod, node_ready, cordoned = None, None, False
        return MemberView(
            name=member.name,
            zone=member.zone,
            pod=pod,
            health=await health_task,
            node_ready=node_ready,
            node_cordoned=cordoned,
        )

    views = await asyncio.gather(*(one(m) for m in config.members))
    leaders = [v.health.commit_index for v in views if v.health.is_leader and v.health.healthy]
    leader_commit = max(leaders) if leaders else None
    if leader_commit is not None:
        views = [_with_lag(v, leader_commit) if v.health.healthy else v for v in views]
    return GroupView(tuple(views), unreachable, leader_commit)


def _with_lag(view: MemberView, leader_commit: int) -> MemberView:
    return replace(view, lag=max(0, leader_commit - view.health.applied_index))


async def _pod_and_node(
    zone: ZoneClient, member: Member
) -> tuple[PodView | None, bool | None, bool]:
    pod = await zone.get_pod(member.name)
    if pod is None:
        return None, None, False
    view = pod_view(pod)
    if not view.node:
        return view, None, False
    node = await zone.get_node(view.node)
    if node is None:
        return view, False, False
    cordoned = bool(node.spec and node.spec.unschedulable)
    return view, node_is_ready(node), cordoned


def node_is_ready(node: k8s.V1Node) -> bool:
    """Whether the node's ``Ready`` condition is ``True``."""
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)
