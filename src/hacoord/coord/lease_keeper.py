"""When a member may time leases, answer keep-alives, and propose expiries: no IO.

:class:`LeaseKeeper` holds every lease-timing decision of a member; the asyncio
service (:class:`~hacoord.server.coordination.CoordinationService`) and the
deterministic simulator (:mod:`hacoord.sim.coord`) are thin shells around it, so
the simulator checks the very rules production runs. The caller passes the current
monotonic time in milliseconds and a :class:`RaftView` of its Raft core; the keeper
answers what to do (serve a keep-alive or not, which expiries and checkpoint to
propose) and the caller does it.

The rules:

* Only a leader that has applied an entry of its own term (so every entry of earlier
  terms) times leases; it starts by giving every lease its full TTL (see
  :meth:`~hacoord.coord.lease_clock.LeaseClock.become_leader`). Timing belongs to one
  term: losing leadership, even for a moment, forgets every deadline.
* A keep-alive is admitted before *and* after the caller's leadership confirmation
  (a ReadIndex round); only then does it move a deadline, and only such a confirmed,
  timing leader may answer "lease not found".
* An expiry is proposed once per deadline; a proposal that fails is retried, one
  refused because the lease is gone is forgotten.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hacoord.coord.errors import LeaseNotFoundError
from hacoord.coord.lease_clock import LeaseClock
from hacoord.coord.leases import LeaseTable
from hacoord.coord.results import LeaseGrantResult, LeaseRevokeResult, Result
from hacoord.raft.types import Role

if TYPE_CHECKING:
    from hacoord.raft.core import RaftCore

DEFAULT_CHECKPOINT_MS = 5000.0


@dataclass(frozen=True, slots=True)
class RaftView:
    """What the keeper needs to know of the member's Raft core at one moment."""

    is_leader: bool
    term: int
    applied_own_term: bool
    """The last applied entry belongs to the current term (so all earlier ones are)."""

    @classmethod
    def of(cls, core: RaftCore) -> RaftView:
        """The view of ``core`` now."""
        return cls(
            core.role is Role.LEADER,
            core.term,
            core.log.term(core.log.applied) == core.term,
        )


class Admission(enum.Enum):
    """Whether a keep-alive may be served now."""

    SERVE = "serve"
    NOT_LEADER = "not_leader"
    """Redirect to the leader."""
    NOT_READY = "not_ready"
    """A leader still applying its predecessors' entries: retry shortly."""


@dataclass(frozen=True, slots=True)
class TickActions:
    """What the caller must propose after :meth:`LeaseKeeper.tick`."""

    expire: tuple[int, ...] = ()
    """Leases whose deadline passed: propose a ``LeaseExpire`` for each."""
    checkpoint: tuple[tuple[int, int], ...] = ()
    """Remaining times to record in a ``LeaseCheckpoint`` (empty: none due)."""
    started_timing: bool = False
    """This tick started timing leases for a new term."""


class LeaseKeeper:
    """The lease-timing state of one member (meaningful only while it leads)."""

    def __init__(
        self, checkpoint_ms: float = DEFAULT_CHECKPOINT_MS, clock: LeaseClock | None = None
    ) -> None:
        self.checkpoint_ms = checkpoint_ms
        self.clock = clock if clock is not None else LeaseClock()
        self.timing_term = 0
        """The term in which this member, as leader, started timing leases (0: not timing)."""
        self._last_checkpoint = 0.0

    def timing(self, view: RaftView) -> bool:
        """Whether this member times leases now (it leads in the term it started in)."""
        return self.timing_term == view.term and view.is_leader

    def admit(self, view: RaftView) -> Admission:
        """May a keep-alive be served? Ask before and after confirming leadership."""
        if not view.is_leader:
            return Admission.NOT_LEADER
        if not self.timing(view):
            return Admission.NOT_READY
        return Admission.SERVE

    def renew(self, table: LeaseTable, lease_ids: list[int], now_ms: float) -> list[int]:
        """Renew admitted keep-alives: each lease's TTL in ms, 0 for one that is gone."""
        out = []
        for lease_id in lease_ids:
            try:
                out.append(self.clock.keep_alive(table, lease_id, now_ms))
            except LeaseNotFoundError:
                out.append(0)
        return out

    def remaining_ms(self, lease_id: int, now_ms: float, view: RaftView) -> int | None:
        """Time left on ``lease_id`` as timed here, or ``None`` when not timing it."""
        return self.clock.remaining_ms(lease_id, now_ms) if self.timing(view) else None

    def tick(self, table: LeaseTable, now_ms: float, view: RaftView) -> TickActions:
        """Start or stop timing as leadership changed; report what is due."""
        if self.timing_term and not self.timing(view):
            # Leadership was lost (perhaps regained in a later term since the last check):
            # deadlines from that reign are meaningless now.
            self.clock.step_down()
            self.timing_term = 0
        if not (view.is_leader and view.applied_own_term):
            return TickActions()
        started = False
        if not self.timing_term:
            self.clock.become_leader(table, now_ms)
            self.timing_term = view.term
            self._last_checkpoint = now_ms
            started = True
        expire = tuple(self.clock.expired(now_ms))
        checkpoint: tuple[tuple[int, int], ...] = ()
        if now_ms - self._last_checkpoint >= self.checkpoint_ms:
            self._last_checkpoint = now_ms
            checkpoint = tuple(self.clock.checkpoint(now_ms))
        return TickActions(expire, checkpoint, started)

    def applied(self, result: Result | None, now_ms: float, view: RaftView) -> None:
        """An entry was applied with ``result`` (``None``: refused)."""
        if self.timing(view):
            if isinstance(result, LeaseGrantResult):
                self.clock.granted(result.lease_id, result.ttl_ms, now_ms)
            elif isinstance(result, LeaseRevokeResult):
                self.clock.removed(result.lease_id)

    def restored(self, table: LeaseTable, now_ms: float, view: RaftView) -> None:
        """A snapshot replaced the state machine."""
        if self.timing(view):
            self.clock.become_leader(table, now_ms)

    def expiry_refused(self, lease_id: int) -> None:
        """The expiry of ``lease_id`` was refused: the lease was already gone."""
        self.clock.removed(lease_id)

    def expiry_failed(self, lease_id: int, now_ms: float, view: RaftView) -> None:
        """The expiry proposal of ``lease_id`` was lost: report it again if still timing."""
        if self.timing(view):
            self.clock.retry_expiry(lease_id, now_ms)
