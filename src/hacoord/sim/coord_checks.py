"""The three properties a coordination simulation checks, over its recorded history.

All times are on the one global virtual clock (every simulated clock runs at the
same rate).

**(a) Exclusive holders.** A *holder* of an election is a client whose campaign saw
itself elected (:func:`~hacoord.coord.election.holder_of` named its key, on a
linearizable read) while its lease was not lost, from that moment until its
client-side lease deadline passed (send time of the last successful keep-alive, or
arrival of the grant, plus TTL minus the safety margin), the leader said "lease not
found", or it began to resign. No two holders of one election may overlap.

**(b) Growing fencing tokens.** Holders of one election, in the order they were
elected, have strictly increasing tokens (:attr:`~hacoord.coord.election.Holder.token`),
and the fenced writes (``while_holding`` transactions that succeeded) of one election
carry non-decreasing tokens in revision order.

**(c) No needless expiry.** A lease *expires* when an expiry of it commits (dated by
when the leader proposed it) or when its client marks it lost (deadline passed,
"lease not found", or a keep-alive answered only after the deadline). Such an expiry at
time ``t`` of a lease with TTL ``T`` is a violation when the window
``W = [t - T - R, t]`` (``R``: a recovery allowance, by default two maximal election
timeouts, for the effects of a fault that ended just before) was *clean*:

1. no membership change was proposed at or before ``t`` (so the voters are the
   initial configuration throughout);
2. no network-wide fault (``lossy``, ``slow``) overlapped ``W``;
3. the lease's client had no fault (hung process, cut links) overlapping ``W`` and
   had neither stopped renewing nor marked the lease lost before ``t`` (it renews
   every ``T/3`` and retries failed attempts, by construction);
4. the voters hit by member faults overlapping ``W`` are a minority: a crashed,
   bounced or paused node, the source of a one-way partition, and in a partition every
   voter outside the group holding the most voters. The rest are a majority that was
   up, unpaused, connected among themselves and to the client all along.

Leadership may change inside ``W`` (a crashed leader, a leadership transfer): the
protocol promises that a failover never costs a renewing holder its lease. The
window is sound for the cluster's timing (election timeouts of at most
``2 x election_ticks x tick_ms``, well below ``2T/3``): a majority that stays healthy for
``T + R`` elects a leader that times the lease and hears a keep-alive in time.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from hacoord.raft.types import NodeId
from hacoord.sim.cluster import FaultRecord
from hacoord.sim.coord_history import (
    INF,
    REASON_DEADLINE,
    REASON_LATE,
    REASON_NOT_FOUND,
    ClientFault,
    CoordHistory,
    HolderSpan,
    LeaseRecord,
)

NETWORK_WIDE = frozenset({"lossy", "slow"})
NOT_A_FAULT = frozenset({"transfer", "reconfigure"})
"""A leadership transfer is routine; a reconfiguration is handled by rule 1."""
CLIENT_LOSSES = frozenset({REASON_DEADLINE, REASON_NOT_FOUND, REASON_LATE})


def check_exclusive(spans: Iterable[HolderSpan]) -> list[str]:
    """(a): no two holders of one election overlap."""
    out = []
    for election, group in _by_election(spans).items():
        latest: HolderSpan | None = None
        for span in sorted(group, key=lambda s: s.start):
            if latest is not None and span.start < latest.end():
                out.append(
                    f"(a) election {election!r}: client {span.client} "
                    f"(lease {span.lease.lease_id}, token {span.token}) saw itself elected at "
                    f"{span.start:.1f} ms while client "
                    f"{latest.client} (lease {latest.lease.lease_id}, token {latest.token}, "
                    f"elected at {latest.start:.1f} ms) held it until {latest.end():.1f} ms"
                )
            if latest is None or span.end() > latest.end():
                latest = span
    return out


def check_tokens(history: CoordHistory) -> list[str]:
    """(b): tokens of successive holders strictly increase; fenced writes in revision
    order never go back to an older token."""
    out = []
    for election, group in _by_election(history.spans).items():
        ordered = sorted(group, key=lambda s: s.start)
        for before, after in itertools.pairwise(ordered):
            if after.token <= before.token:
                out.append(
                    f"(b) election {election!r}: client {after.client} elected at "
                    f"{after.start:.1f} ms with token {after.token}, not above token "
                    f"{before.token} of client {before.client} elected at {before.start:.1f} ms"
                )
    highest: dict[str, tuple[int, int]] = {}
    for write in sorted(history.fenced, key=lambda w: w.revision):
        token, revision = highest.get(write.election, (0, 0))
        if write.token < token:
            out.append(
                f"(b) election {write.election!r}: fenced write at revision {write.revision} "
                f"with token {write.token} after one with token {token} at revision {revision}"
            )
        else:
            highest[write.election] = (write.token, write.revision)
    return out


@dataclass(frozen=True, slots=True)
class FaultSchedule:
    """The faults of one run, to decide whether a window was clean (rules 1-4)."""

    voters: frozenset[NodeId]
    faults: tuple[FaultRecord, ...]
    client_faults: tuple[ClientFault, ...]
    recovery_ms: float

    @property
    def reconfigured_at(self) -> float:
        """When the first membership change was proposed (INF: never)."""
        return min((f.start for f in self.faults if f.kind == "reconfigure"), default=INF)

    def faulty_voters(self, start: float, end: float) -> frozenset[NodeId] | None:
        """Voters hit by member faults overlapping ``[start, end]``; ``None`` when a
        network-wide fault overlapped it."""
        hit: set[NodeId] = set()
        for f in self.faults:
            if f.start > end or f.end < start or f.kind in NOT_A_FAULT:
                continue
            if f.kind in NETWORK_WIDE:
                return None
            if f.groups:
                biggest = max(f.groups, key=lambda g: (len(g & self.voters), sorted(g)))
                hit |= self.voters - biggest
            else:
                hit |= f.members & self.voters
        return frozenset(hit)

    def unclean(self, client: int, start: float, end: float) -> str | None:
        """Why ``[start, end]`` is not a clean window for ``client`` (None: it is)."""
        if end >= self.reconfigured_at:
            return "membership changed"
        hit = self.faulty_voters(start, end)
        if hit is None:
            return "network-wide fault"
        if 2 * len(self.voters - hit) <= len(self.voters):
            return f"voters {sorted(hit)} faulty"
        for cf in self.client_faults:
            if cf.client == client and cf.start <= end and cf.end >= start:
                return f"client {cf.kind}"
        return None


def _expiries(rec: LeaseRecord) -> list[tuple[float, str]]:
    out = []
    if rec.expiry_proposed_at < INF:
        out.append((rec.expiry_proposed_at, "expired in the cluster (expiry proposed)"))
    if rec.lost_reason in CLIENT_LOSSES:
        out.append((rec.lost_at, f"marked lost by its client ({rec.lost_reason})"))
    return out


def check_no_needless_expiry(history: CoordHistory, schedule: FaultSchedule) -> list[str]:
    """(c): no lease of a renewing client expires in a clean window."""
    out = []
    for rec in history.leases.values():
        for t, what in _expiries(rec):
            if rec.stopped_at <= t or rec.lost_at < t:
                continue  # the client had stopped renewing (on purpose, or having lost it)
            start = t - rec.ttl_ms - schedule.recovery_ms
            if schedule.unclean(rec.client, start, t) is None:
                hit = schedule.faulty_voters(start, t)
                out.append(
                    f"(c) lease {rec.lease_id} of client {rec.client} (ttl {rec.ttl_ms} ms, "
                    f"granted at {rec.granted_at:.1f} ms) {what} at {t:.1f} ms, although in "
                    f"[{start:.1f}, {t:.1f}] the client kept renewing and only voters "
                    f"{sorted(hit or ())} of {sorted(schedule.voters)} were faulty"
                )
    return out


def clean_windows(
    history: CoordHistory, schedule: FaultSchedule, until: float, step_ms: float = 250.0
) -> int:
    """How many sampled moments (every ``step_ms`` of each renewed lease's life, from one
    TTL after its grant) had a clean window: where check (c) had teeth."""
    count = 0
    for rec in history.leases.values():
        t = rec.granted_at + rec.ttl_ms
        stop = min(until, rec.stopped_at, rec.end())
        while t < stop:
            if schedule.unclean(rec.client, t - rec.ttl_ms - schedule.recovery_ms, t) is None:
                count += 1
            t += step_ms
    return count


def _by_election(spans: Iterable[HolderSpan]) -> dict[str, list[HolderSpan]]:
    groups: dict[str, list[HolderSpan]] = defaultdict(list)
    for span in spans:
        groups[span.election].append(span)
    return dict(sorted(groups.items()))
