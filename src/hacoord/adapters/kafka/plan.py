"""What the control plane should change next in a group's topology (pure logic).

:func:`next_change` looks at the published topology, the verdict on every cluster, the
operators' drains and promote request, and how long each cluster has been up, and names at
most one :class:`Change`. In order:

1. an operator's promote request;
2. drain a cluster that is down (health and writes off), or that an operator drained
   (writes off); when it is the primary (``primary`` mode), the same version promotes the
   first cluster of the configuration that is up, so producers never wait for two steps;
3. a primary that takes no writes (drained earlier with nowhere to go) is replaced by the
   first cluster that is up and not drained;
4. readmit a cluster that is not drained and is up: at once when an operator undrained it
   (it was healthy all along), otherwise only after it has stayed up for
   ``readmit_after_s`` (anti-flapping).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from hacoord.adapters.kafka.config import Mode
from hacoord.adapters.kafka.detect import Health, Verdict
from hacoord.adapters.kafka.topology import Topology


class ChangeKind(StrEnum):
    """The workflows the control plane runs."""

    DRAIN = "kafka-drain"
    READMIT = "kafka-readmit"
    PROMOTE = "kafka-promote"


@dataclass(frozen=True, slots=True)
class Change:
    """One reconfiguration to run."""

    kind: ChangeKind
    cluster: str
    reason: str
    automatic: bool = True
    healthy: bool = False
    """For a drain: whether the cluster stays marked healthy (an operator's drain)."""
    new_primary: str = ""
    """For a drain of the primary: the cluster promoted in the same version."""


def successor(
    topology: Topology,
    verdicts: Mapping[str, Verdict],
    drained: Mapping[str, str],
    leaving: str,
) -> str:
    """The first cluster (configuration order) that is up, not drained and not ``leaving``."""
    for name in topology.clusters:
        verdict = verdicts.get(name)
        if name == leaving or name in drained:
            continue
        if verdict is not None and verdict.health is Health.UP:
            return name
    return ""


def next_change(
    topology: Topology,
    verdicts: Mapping[str, Verdict],
    drained: Mapping[str, str],
    up_since: Mapping[str, float],
    now: float,
    readmit_after_s: float,
    promote_request: str = "",
) -> Change | None:
    """The next reconfiguration of ``topology``, or ``None`` when it matches what is seen.

    ``drained`` maps the operators' drained clusters to their reasons; ``up_since`` maps a
    cluster to when its verdict last became ``up`` (on this control plane's clock).
    """
    primary_mode = topology.mode is Mode.PRIMARY
    if promote_request:
        return Change(
            ChangeKind.PROMOTE,
            promote_request,
            f"operator asked to promote {promote_request}",
            automatic=False,
        )
    for name, state in topology.clusters.items():
        verdict = verdicts.get(name)
        down = verdict is not None and verdict.health is Health.DOWN
        if down and (state.healthy or state.writable):
            assert verdict is not None
            return _drain(topology, verdicts, drained, name, verdict.reason, healthy=False)
        if name in drained and state.writable:
            reason = f"drained by an operator: {drained[name] or 'no reason given'}"
            change = _drain(topology, verdicts, drained, name, reason, healthy=state.healthy)
            return Change(
                change.kind,
                name,
                reason,
                automatic=False,
                healthy=state.healthy,
                new_primary=change.new_primary,
            )
    if primary_mode:
        primary_state = topology.clusters.get(topology.primary)
        if primary_state is None or not primary_state.writable:
            chosen = successor(topology, verdicts, drained, leaving="")
            if chosen and chosen != topology.primary:
                return Change(
                    ChangeKind.PROMOTE,
                    chosen,
                    f"primary {topology.primary} takes no writes; {chosen} is up",
                )
    for name, state in topology.clusters.items():
        verdict = verdicts.get(name)
        if name in drained or verdict is None or verdict.health is not Health.UP:
            continue
        if state.healthy and state.writable:
            continue
        if state.healthy:
            return Change(ChangeKind.READMIT, name, f"{name} is no longer drained and is up")
        since = up_since.get(name)
        if since is not None and now - since >= readmit_after_s:
            return Change(
                ChangeKind.READMIT,
                name,
                f"{name} has been up for {now - since:.0f} s (readmission after "
                f"{readmit_after_s:g} s)",
            )
    return None


def _drain(
    topology: Topology,
    verdicts: Mapping[str, Verdict],
    drained: Mapping[str, str],
    name: str,
    reason: str,
    healthy: bool,
) -> Change:
    new_primary = ""
    if topology.mode is Mode.PRIMARY and name == topology.primary:
        new_primary = successor(topology, verdicts, drained, leaving=name)
    return Change(ChangeKind.DRAIN, name, reason, healthy=healthy, new_primary=new_primary)
