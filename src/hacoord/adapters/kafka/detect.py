"""Judging each cluster of an HA group from the watchdogs' observations (pure logic).

Every coordinator member's watchdog probes every cluster and publishes an
:class:`~hacoord.adapters.observations.Observation`. A cluster is

* ``down`` only when a majority of the *voting members* (not of those reporting) saw it
  fail ``failures_needed`` probes in a row and no member reaches it;
* ``up`` when a majority of the members reach it and none has confirmed it down;
* ``suspect`` when the members disagree or too few have confirmed either way, and
* ``unknown`` when no member reports on it.

Only ``down`` drains a cluster and only ``up`` (held for the readmission period) readmits
one, so a single member cut off from a cluster, or a cluster seen by nobody because the
watchdogs are down, changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hacoord.adapters.observations import Observation


class Health(StrEnum):
    """The verdict on one cluster."""

    UP = "up"
    DOWN = "down"
    SUSPECT = "suspect"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The verdict on one cluster, with the members behind it and a readable reason."""

    cluster: str
    health: Health
    reason: str
    down: tuple[str, ...] = ()
    """Members that confirmed it down."""
    up: tuple[str, ...] = ()
    """Members that reached it on their last probe."""

    def to_json(self) -> dict[str, object]:
        """The stored form."""
        return {
            "health": str(self.health),
            "reason": self.reason,
            "down": list(self.down),
            "up": list(self.up),
        }


def judge(
    cluster: str, observations: list[Observation], members: int, failures_needed: int
) -> Verdict:
    """The verdict on ``cluster`` from every member's observation."""
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if failures_needed < 1:
        raise ValueError(f"failures_needed must be >= 1, got {failures_needed}")
    majority = members // 2 + 1
    down = tuple(sorted(o.member for o in observations if o.sees_down(cluster, failures_needed)))
    up = tuple(sorted(o.member for o in observations if o.sees_up(cluster)))
    reporting = [o for o in observations if cluster in o.hosts]
    if not reporting:
        return Verdict(cluster, Health.UNKNOWN, f"no member reports on {cluster}")
    if down and up:
        return Verdict(
            cluster,
            Health.SUSPECT,
            f"members {', '.join(down)} cannot reach {cluster} but {', '.join(up)} can",
            down,
            up,
        )
    if len(down) >= majority:
        errors = sorted({o.hosts[cluster].error for o in reporting if not o.hosts[cluster].up})
        return Verdict(
            cluster,
            Health.DOWN,
            f"{len(down)} of {members} members cannot reach {cluster}: {'; '.join(errors)}",
            down,
            up,
        )
    if len(up) >= majority and not down:
        return Verdict(
            cluster, Health.UP, f"{len(up)} of {members} members reach {cluster}", down, up
        )
    failing = sorted(o.member for o in reporting if not o.hosts[cluster].up)
    return Verdict(
        cluster,
        Health.SUSPECT,
        f"{cluster}: {len(up)} of {members} members reach it, {len(down)} confirmed it down "
        f"(need {majority}); failing: {', '.join(failing) or 'none'}",
        down,
        up,
    )
