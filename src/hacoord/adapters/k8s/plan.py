"""What to replace next, decided from one :class:`GroupView` without any I/O.

The rules, in order:

1. A zone whose API server does not answer blocks every replacement: the adapter cannot see
   that zone's member, so it cannot know the quorum would survive, nor finish a replacement
   there.
2. A failed member (pod gone, failed, or on a node that is not Ready, and the database does not
   answer for it) is repaired first. Repairing takes nothing more down, so it needs no quorum
   check; it is still one at a time. A member Kubernetes gave up on whose database still
   answers is repaired only while every other member is healthy.
3. Planned work (a rollout to a new template revision, a member on a cordoned node, an
   operator's request) starts only when every member is healthy: pod Ready, database healthy,
   at most ``max_lag_entries`` behind the leader, and when the members left would still be a
   quorum. A drain goes before a rollout (the node has a deadline); a rollout replaces the
   first zone's members first, then the others in configured order.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass

from hacoord.adapters.k8s.config import GroupConfig
from hacoord.adapters.k8s.observe import GroupView, MemberView


class Why(enum.StrEnum):
    """Why a member is replaced."""

    REPAIR = "repair"
    DRAIN = "drain"
    EVICTION = "eviction"
    ROLLOUT = "rollout"
    REQUESTED = "requested"


@dataclass(frozen=True, slots=True)
class Replace:
    """Replace ``member`` now."""

    member: str
    why: Why
    detail: str


@dataclass(frozen=True, slots=True)
class Blocked:
    """Work is waiting; ``reason`` says for what."""

    reason: str


@dataclass(frozen=True, slots=True)
class Idle:
    """Every member is healthy and up to date."""


Decision = Replace | Blocked | Idle


def failure(view: MemberView) -> str | None:
    """Why Kubernetes says the member is down (``None`` if its pod looks alive)."""
    pod = view.pod
    if pod is None:
        return "its pod does not exist"
    if pod.deleting:
        return "its pod is being deleted"
    if pod.phase in ("Failed", "Succeeded"):
        detail = f": {pod.message}" if pod.message else ""
        return f"its pod {pod.phase.lower()}{detail}"
    if pod.node and view.node_ready is False:
        return f"its node {pod.node} is not Ready"
    return None


def unhealthy(view: MemberView, max_lag: int) -> str | None:
    """Why the member cannot be counted on right now (``None``: it is healthy)."""
    down = failure(view)
    if down is not None:
        return down
    assert view.pod is not None
    if view.pod.phase != "Running":
        return f"its pod is {view.pod.phase}"
    if not view.pod.ready:
        return "its pod is not Ready"
    if not view.health.healthy:
        return view.health.detail or "the database reports it unhealthy"
    if view.lag is None:
        return "no leader reports a commit index to compare with"
    if view.lag > max_lag:
        return f"it is {view.lag} entries behind the leader (at most {max_lag})"
    return None


def decide(
    config: GroupConfig,
    view: GroupView,
    desired_revision: str,
    requested: Collection[str] = (),
    paused: bool = False,
) -> Decision:
    """The next replacement to make, or why none can start."""
    if view.unreachable:
        zones = "; ".join(f"{reason}" for _, reason in sorted(view.unreachable.items()))
        return Blocked(f"cannot see every zone, so no replacement starts: {zones}")
    max_lag = config.timings.max_lag_entries
    problems = {m.name: unhealthy(m, max_lag) for m in view.members}
    failed = [(m, down) for m in view.members if (down := failure(m)) is not None]
    for m, down in failed:
        if not m.health.healthy:
            return Replace(m.name, Why.REPAIR, f"{m.name} failed: {down}")
    for m, down in failed:
        # Kubernetes gave up on the pod but the member still serves: replacing it takes a
        # serving member down, so it waits, like planned work, for the others to be healthy.
        others = [f"{n}: {w}" for n, w in problems.items() if w is not None and n != m.name]
        if others:
            return Blocked(f"{m.name} ({down}) waits until " + "; ".join(others))
        return Replace(m.name, Why.REPAIR, f"{m.name}: {down} (its database still answers)")
    if paused:
        return Blocked("planned replacements are paused")
    sick = [f"{name}: {why}" for name, why in problems.items() if why is not None]
    healthy = len(view.members) - len(sick)
    planned = _planned(config, view, desired_revision, requested)
    if planned is None:
        return Blocked("waiting for " + "; ".join(sick)) if sick else Idle()
    if sick:
        return Blocked(f"{planned.member} waits ({planned.detail}) until " + "; ".join(sick))
    if healthy - 1 < config.quorum:
        return Blocked(
            f"{planned.member} waits: {healthy} healthy members, "
            f"a replacement would leave fewer than the quorum of {config.quorum}"
        )
    return planned


def _planned(
    config: GroupConfig, view: GroupView, desired_revision: str, requested: Collection[str]
) -> Replace | None:
    for m in view.members:
        if m.pod is not None and m.node_cordoned:
            return Replace(m.name, Why.DRAIN, f"its node {m.pod.node} is cordoned")
    for m in view.members:
        if m.pod is not None and m.pod.eviction_requested_by:
            who = m.pod.eviction_requested_by
            return Replace(m.name, Why.EVICTION, f"{who} asked to evict it from {m.pod.node}")
    for name in requested:
        if name in {m.name for m in view.members}:
            return Replace(name, Why.REQUESTED, "an operator asked for it")
    for member in config.rollout_order():
        pod = view.member(member.name).pod
        if pod is not None and pod.revision != desired_revision:
            was = pod.revision or "none"
            return Replace(member.name, Why.ROLLOUT, f"revision {was} -> {desired_revision}")
    return None
