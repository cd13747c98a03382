"""One simulated member's coordination service: the real state machine and lease keeper.

:class:`SimMember` is to the simulator what
:class:`~hacoord.server.coordination.CoordinationService` is to a real member: a shell
that answers client calls around the real :class:`~hacoord.server.state.ServerStateMachine`
and :class:`~hacoord.coord.lease_keeper.LeaseKeeper`, with the same steps in the same
order, but driven by the simulator's events instead of asyncio:

* ``submit``: only the leader proposes; the answer is the result of applying the entry
  (a refusal, or "dropped" when another leader replaced the entry);
* ``range``: a ReadIndex barrier (``core.read_index``), then the local state;
* ``keepalive``: admitted by the keeper, confirmed by a ReadIndex round, admitted again,
  then renewed by the keeper; only that path may answer "lease not found";
* ``watch``: changes from a revision on, long-polled on any member;
* every ``lease_check_ms`` the keeper's tick says which expiries and checkpoint to
  propose. As in :class:`~hacoord.raft.node.RaftNode`, reads not yet confirmed when the
  member stops leading fail with "not the leader" (RaftNode also asks a new leader
  again; the simulated client retries instead), and a snapshot from the leader drops
  the reads that waited for entries to apply.

A member lives as long as its process: a restart creates a new one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hacoord.coord.commands import (
    LeaseCheckpoint,
    LeaseExpire,
    Limits,
    Request,
    check_limits,
    decode_request,
    encode_request,
)
from hacoord.coord.errors import CoordError, InvalidCommandError, LeaseNotFoundError
from hacoord.coord.lease_clock import LeaseClock
from hacoord.coord.lease_keeper import Admission, LeaseKeeper, RaftView
from hacoord.coord.results import Result
from hacoord.raft.core import RaftCore
from hacoord.raft.errors import NotLeaderError, ProposalDroppedError, RaftError
from hacoord.raft.types import Entry, EntryKind, NodeId, Ready, Role
from hacoord.server.state import ServerStateMachine

EXPIRY_TIMEOUT_MS = 5000.0
"""How long the service waits for an expiry to commit before retrying it."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A member's answer to one call, as the HTTP layer would send it.

    ``kind`` is ``ok`` (``value``), ``error`` (a refusal: ``error``), ``not_leader``
    (``leader``, 0 when unknown), ``retry`` (503/504: try again) or ``refused`` (the
    process is gone: connection refused or reset).
    """

    kind: str
    value: Any = None
    error: CoordError | None = None
    leader: NodeId = 0


REFUSED = Reply("refused")


class MemberHost(Protocol):
    """What a member needs from the simulation around it."""

    now: float

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` after ``delay`` virtual milliseconds."""
        ...

    def core_of(self, nid: NodeId) -> RaftCore:
        """The current Raft core of node ``nid``."""
        ...

    def runnable(self, nid: NodeId) -> bool:
        """Whether node ``nid`` is up and not paused."""
        ...

    def kick(self, nid: NodeId) -> None:
        """Let node ``nid`` handle its next Ready (after a proposal or read)."""
        ...

    def expiry_proposed(self, nid: NodeId, index: int, term: int, lease_id: int) -> None:
        """Node ``nid`` proposed the expiry of ``lease_id`` as entry ``(index, term)``."""
        ...

    def entry_applied(self, nid: NodeId, entry: Entry, result: Result | None) -> None:
        """Node ``nid`` applied ``entry`` with ``result`` (``None``: refused)."""
        ...


@dataclass(frozen=True, slots=True)
class MemberBugs:
    """Deliberate bugs of the member, to show that the checkers catch them."""

    unconfirmed_keepalive: bool = False
    """Renew without the ReadIndex round that confirms leadership."""
    lookup_before_timing: bool = False
    """Answer "lease not found" from the local state before checking it times leases
    (the bug fixed in 9f0dd85)."""


Respond = Callable[[Reply], None]
_Waiter = Callable[[int | None], None]
"""Called with the read index once confirmed and applied, or ``None`` when it failed."""


class SimMember:
    """The coordination service of one simulated member process."""

    def __init__(
        self,
        host: MemberHost,
        nid: NodeId,
        *,
        lease_check_ms: float,
        checkpoint_ms: float,
        clock: LeaseClock | None = None,
        bugs: MemberBugs | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.host = host
        self.id = nid
        self.bugs = bugs or MemberBugs()
        self.limits = limits or Limits()
        self.sm = ServerStateMachine()
        self.keeper = LeaseKeeper(checkpoint_ms=checkpoint_ms, clock=clock)
        self.lease_check_ms = lease_check_ms
        self.closed = False
        self.last_role = Role.FOLLOWER
        self._proposals: dict[
            int, tuple[int, Callable[[Result | None, Exception | None], None]]
        ] = {}
        self._reads: dict[bytes, _Waiter] = {}
        self._reads_waiting_apply: list[tuple[int, bytes]] = []
        self._read_seq = 0
        self._watches: list[tuple[float, str, bool, int, Respond]] = []
        self.sm.on_applied.append(self._on_applied)
        self.sm.on_restored.append(self._on_restored)
        host.schedule(self.lease_check_ms * (nid % 5 + 1) / 6, self._lease_loop)

    # ------------------------------------------------------ state machine face

    def snapshot(self) -> bytes:
        """The state machine's snapshot."""
        return self.sm.snapshot()

    def restore(self, data: bytes) -> None:
        """Replace the state machine's state with a snapshot's."""
        self.sm.restore(data)

    @property
    def core(self) -> RaftCore:
        """This member's Raft core."""
        return self.host.core_of(self.id)

    def _view(self) -> RaftView:
        return RaftView.of(self.core)

    # ------------------------------------------------------------------ calls

    def handle(self, op: str, body: Any, respond: Respond) -> None:
        """Serve one client call; ``respond`` is called once (maybe never, like a
        request lost with its member)."""
        try:
            if op == "submit":
                self._submit(body, respond)
            elif op == "range":
                self._range(body, respond)
            elif op == "keepalive":
                self._keep_alive(body, respond)
            elif op == "watch":
                self._watch(body, respond)
            else:
                raise InvalidCommandError(f"unknown operation {op!r}")
        except NotLeaderError as exc:
            respond(Reply("not_leader", leader=exc.leader))
        except CoordError as exc:
            respond(Reply("error", error=exc))
        except RaftError as exc:
            respond(Reply("retry", value=str(exc)))

    def _submit(self, data: bytes, respond: Respond) -> None:
        core = self.core
        if core.role is not Role.LEADER:
            raise NotLeaderError(self.id, core.leader)
        request = decode_request(data)
        if isinstance(request.command, LeaseExpire | LeaseCheckpoint):
            raise InvalidCommandError("proposed by the leader only")
        check_limits(request.command, self.limits)

        def done(result: Result | None, error: Exception | None) -> None:
            if isinstance(error, CoordError):
                respond(Reply("error", error=error))
            elif error is not None:
                respond(Reply("retry", value=str(error)))
            else:
                respond(Reply("ok", value=result))

        self._propose(data, done)

    def _propose(
        self, data: bytes, done: Callable[[Result | None, Exception | None], None]
    ) -> tuple[int, int]:
        core = self.core
        index = core.propose(data)
        self._proposals[index] = (core.term, done)
        self.host.kick(self.id)
        return index, core.term

    def _read_index(self, then: _Waiter) -> None:
        self._read_seq += 1
        ctx = self._read_seq.to_bytes(8, "big")
        self.core.read_index(ctx)  # raises NotLeaderError when no leader is known
        self._reads[ctx] = then
        self.host.kick(self.id)

    def _range(self, body: tuple[str, bool], respond: Respond) -> None:
        key, prefix = body

        def then(index: int | None) -> None:
            if index is None:
                respond(Reply("not_leader", leader=self.core.leader))
            else:
                respond(Reply("ok", value=self.sm.range(key, prefix)))

        self._read_index(then)

    def _admit(self, respond: Respond) -> bool:
        admission = self.keeper.admit(self._view())
        if admission is Admission.NOT_LEADER:
            respond(Reply("not_leader", leader=self.core.leader))
        elif admission is Admission.NOT_READY:
            respond(Reply("retry", value="leases not ready"))
        return admission is Admission.SERVE

    def _keep_alive(self, lease_id: int, respond: Respond) -> None:
        if self.bugs.lookup_before_timing and lease_id not in self.sm.leases.leases:
            raise LeaseNotFoundError(lease_id)
        if not self._admit(respond):
            return

        def renew(index: int | None) -> None:
            if index is None:
                respond(Reply("not_leader", leader=self.core.leader))
                return
            if not self._admit(respond):
                return
            (ttl,) = self.keeper.renew(self.sm.leases, [lease_id], self.host.now)
            if ttl:
                respond(Reply("ok", value=ttl))
            else:
                respond(Reply("error", error=LeaseNotFoundError(lease_id)))

        if self.bugs.unconfirmed_keepalive:
            renew(0)
        else:
            self._read_index(renew)

    def _watch(self, body: tuple[str, bool, int, float], respond: Respond) -> None:
        key, prefix, start, wait_ms = body
        if start < 1:
            raise InvalidCommandError(f"watch: from_revision must be >= 1, got {start}")
        events = self.sm.events_since(start, key, prefix)
        if events:
            respond(Reply("ok", value=(events, events[-1].revision + 1)))
            return
        watch = (self.host.now + wait_ms, key, prefix, start, respond)
        self._watches.append(watch)

        def expire() -> None:
            if watch in self._watches:
                self._watches.remove(watch)
                respond(Reply("ok", value=([], start)))

        self.host.schedule(wait_ms, expire)

    # ------------------------------------------------------------------ leases

    def _lease_loop(self) -> None:
        if self.closed:
            return
        if self.host.runnable(self.id):
            self._tick_leases()
        self.host.schedule(self.lease_check_ms, self._lease_loop)

    def _tick_leases(self) -> None:
        actions = self.keeper.tick(self.sm.leases, self.host.now, self._view())
        for lease_id in actions.expire:
            self._expire(lease_id)
        if actions.checkpoint:
            data = encode_request(Request(LeaseCheckpoint(actions.checkpoint)))
            with contextlib.suppress(RaftError):
                self._propose(data, lambda result, error: None)

    def _expire(self, lease_id: int) -> None:
        settled = False

        def done(result: Result | None, error: Exception | None) -> None:
            nonlocal settled
            if settled:
                return
            settled = True
            if isinstance(error, LeaseNotFoundError):
                self.keeper.expiry_refused(lease_id)
            elif error is not None:
                self.keeper.expiry_failed(lease_id, self.host.now, self._view())

        try:
            index, term = self._propose(encode_request(Request(LeaseExpire(lease_id))), done)
        except RaftError as exc:
            done(None, exc)
            return
        self.host.expiry_proposed(self.id, index, term, lease_id)
        self.host.schedule(
            EXPIRY_TIMEOUT_MS, lambda: done(None, TimeoutError("expiry not committed in time"))
        )

    # ------------------------------------------------------- driven by the sim

    def apply_entry(self, entry: Entry) -> None:
        """Apply one committed entry and answer the proposal waiting for it."""
        result: Result | None = None
        error: Exception | None = None
        if entry.kind is EntryKind.NORMAL:
            try:
                result = self.sm.apply(entry)
            except CoordError as exc:
                error = exc
        pending = self._proposals.pop(entry.index, None)
        if pending is None:
            return
        term, done = pending
        if term != entry.term:
            done(None, ProposalDroppedError(f"entry {entry.index} was replaced"))
        else:
            done(result, error)

    def snapshot_installed(self) -> None:
        """A snapshot from the leader replaced the state: as in RaftNode, the reads that
        waited for entries to apply are dropped (their callers time out)."""
        self._reads_waiting_apply.clear()

    def advanced(self, rd: Ready) -> None:
        """The node handled ``rd``: serve confirmed reads, watches, leadership loss."""
        for rs in rd.read_states:
            if rs.context in self._reads:
                self._reads_waiting_apply.append((rs.index, rs.context))
        self._serve_reads()
        if rd.soft_state is not None:
            role = self.core.role
            if self.last_role is Role.LEADER and role is not Role.LEADER:
                # As RaftNode does: reads this member's rounds had not confirmed yet fail;
                # confirmed ones are still served once applied.
                confirmed = {ctx for _, ctx in self._reads_waiting_apply}
                for ctx, waiter in list(self._reads.items()):
                    if ctx not in confirmed:
                        del self._reads[ctx]
                        waiter(None)
            self.last_role = role
        if rd.committed_entries and self._watches:
            self._serve_watches()

    def _serve_reads(self) -> None:
        if not self._reads_waiting_apply:
            return
        applied = self.core.log.applied
        still: list[tuple[int, bytes]] = []
        ready: list[tuple[int, bytes]] = []
        for index, ctx in self._reads_waiting_apply:
            (ready if index <= applied else still).append((index, ctx))
        self._reads_waiting_apply = still
        for index, ctx in ready:
            waiter = self._reads.pop(ctx, None)
            if waiter is not None:
                waiter(index)

    def _serve_watches(self) -> None:
        waiting = []
        for watch in self._watches:
            _, key, prefix, start, respond = watch
            events = self.sm.events_since(start, key, prefix)
            if events:
                respond(Reply("ok", value=(events, events[-1].revision + 1)))
            else:
                waiting.append(watch)
        self._watches = waiting

    def close(self) -> None:
        """The process died: stop timing; nothing more is answered."""
        self.closed = True
        self._proposals.clear()
        self._reads.clear()
        self._reads_waiting_apply.clear()
        self._watches.clear()

    # ------------------------------------------------------------------- hooks

    def _on_applied(self, entry: Entry, result: Result | None) -> None:
        if self.keeper.timing_term:
            self.keeper.applied(result, self.host.now, self._view())
        self.host.entry_applied(self.id, entry, result)

    def _on_restored(self) -> None:
        self.keeper.restored(self.sm.leases, self.host.now, self._view())
