"""Deciding whether a primary is dead, from several independent views (pure logic).

Three layers feed the decision: every coordinator member's monitor probes each server
and publishes what it sees (an :class:`Observation`); the replicas say whether their
IO threads are connected to the primary (:class:`ReplicaView`); the orchestrator
combines them with :func:`classify`. The primary is dead only when

* a majority of the coordinator's members independently cannot reach it, and
* no member can reach it, and
* the replicas confirm it (no IO thread connected to it), or no replica can be asked.

Everything else is a named non-failure, so that operators see why nothing happened.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hacoord.adapters.observations import HostView, Observation, observation_from_json


class Verdict(enum.StrEnum):
    """What the orchestrator concluded about a cluster's primary."""

    ALIVE = "alive"
    FALSE_POSITIVE = "false_positive"
    """Some members cannot reach the primary, but not a majority (or one still can)."""
    REPLICAS_CUT_OFF = "replicas_cut_off"
    """Replicas cannot reach the primary; the members can: a replication network problem."""
    REPLICAS_SEE_PRIMARY = "replicas_see_primary"
    """Members cannot reach the primary, a replica still can: members are cut off."""
    UNKNOWN = "unknown"
    """Not enough members report to decide (no quorum of observations)."""
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """A replica's own account of its connection to the primary."""

    host: str
    reachable: bool
    """Whether the replica itself answered (otherwise it cannot be asked)."""
    io_connected: bool = False
    """Its IO thread is connected to the primary."""
    error: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict with the reason, as logged and recorded."""

    verdict: Verdict
    reason: str

    @property
    def failover(self) -> bool:
        """Whether this decision calls for a failover."""
        return self.verdict is Verdict.DEAD


def classify(
    primary: str,
    observations: list[Observation],
    members: int,
    replicas: list[ReplicaView],
    failures_needed: int = 3,
) -> Decision:
    """Decide about ``primary`` from the members' observations and the replicas' views.

    ``members`` is the number of voting coordinator members: a majority of *them*
    (not of those reporting) must see the primary down.
    """
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    majority = members // 2 + 1
    down = sorted(o.member for o in observations if o.sees_down(primary, failures_needed))
    up = sorted(o.member for o in observations if o.sees_up(primary))
    connected = [r.host for r in replicas if r.reachable and r.io_connected]
    cut_off = [r.host for r in replicas if r.reachable and not r.io_connected]
    if not down:
        if up and cut_off and not connected:
            return Decision(
                Verdict.REPLICAS_CUT_OFF,
                f"members {', '.join(up)} reach {primary} but replicas {', '.join(cut_off)}"
                " cannot: no failover (check the replication network)",
            )
        if not up:
            suspects = sorted(o.member for o in observations if primary in o.hosts)
            return Decision(
                Verdict.UNKNOWN,
                f"no member has confirmed {primary} down or up yet"
                f" ({len(observations)} of {members} report; failing: {', '.join(suspects)})",
            )
        return Decision(Verdict.ALIVE, f"{primary} reachable by members {', '.join(up)}")
    if up:
        return Decision(
            Verdict.FALSE_POSITIVE,
            f"members {', '.join(down)} cannot reach {primary} but {', '.join(up)} can:"
            " false positive, no failover",
        )
    if len(down) < majority:
        return Decision(
            Verdict.FALSE_POSITIVE,
            f"only {len(down)} of {members} members ({', '.join(down)}) cannot reach {primary}"
            f" (need {majority}): no failover",
        )
    if connected:
        return Decision(
            Verdict.REPLICAS_SEE_PRIMARY,
            f"{len(down)} of {members} members cannot reach {primary} but replicas"
            f" {', '.join(connected)} are connected to it: no failover",
        )
    asked = f"replicas {', '.join(cut_off)} confirm" if cut_off else "no replica can be asked"
    return Decision(
        Verdict.DEAD,
        f"{len(down)} of {members} members cannot reach {primary} and {asked}: failover",
    )


__all__ = [
    "Decision",
    "HostView",
    "Observation",
    "ReplicaView",
    "Verdict",
    "classify",
    "observation_from_json",
]
