"""The coordination service of one member: writes, reads, leases and watches.

It sits between a :class:`~hacoord.raft.node.RaftNode` and the network (or an
in-process client). Writes go through the log; linearizable reads through ReadIndex;
keep-alives only touch the leader's :class:`~hacoord.coord.lease_clock.LeaseClock`;
the leader proposes an expiry when a lease runs out and records a checkpoint of the
remaining times now and then. Every lease-timing decision is made by the pure
:class:`~hacoord.coord.lease_keeper.LeaseKeeper` (which the simulator drives too);
this class only does the IO around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

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
from hacoord.coord.results import (
    Event,
    RangeResult,
    Result,
    error_to_wire,
    result_to_wire,
)
from hacoord.raft.errors import NotLeaderError, ProposalDroppedError, RaftError
from hacoord.raft.metrics import counter, gauge
from hacoord.raft.node import RaftNode
from hacoord.raft.types import Entry
from hacoord.server.state import ServerStateMachine

log = logging.getLogger(__name__)


def _now_ms() -> float:
    return time.monotonic() * 1000.0


class LeasesNotReadyError(ProposalDroppedError):
    """A new leader cannot renew leases until it has applied its predecessors' entries."""


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Events of a watch poll and the revision to ask for next."""

    events: list[Event]
    next_revision: int


class CoordinationService:
    """Serves the coordination API of one member."""

    def __init__(
        self,
        node: RaftNode,
        sm: ServerStateMachine,
        limits: Limits | None = None,
        *,
        lease_check_s: float = 0.05,
        checkpoint_s: float = 5.0,
    ) -> None:
        self.node = node
        self.sm = sm
        self.limits = limits or Limits()
        self.keeper = LeaseKeeper(checkpoint_ms=checkpoint_s * 1000)
        self.lease_check_s = lease_check_s
        self.checkpoint_s = checkpoint_s
        self._applied = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.keepalives = 0
        self.expiries_proposed = 0
        self.watch_polls = 0
        self._expiring: set[asyncio.Task[None]] = set()
        sm.on_applied.append(self._on_applied)
        sm.on_restored.append(self._on_restored)

    async def start(self) -> None:
        """Start timing leases whenever this member leads."""
        self._task = asyncio.create_task(self._lease_loop(), name="hacoord-leases")

    async def stop(self) -> None:
        """Stop the lease timer."""
        tasks = [t for t in (self._task, *self._expiring) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ writes

    async def submit(self, request: Request, timeout: float = 5.0) -> Result:
        """Replicate a client request and return its result (or raise its refusal)."""
        self._check(request)
        return await self._propose(request, timeout)

    async def submit_many(self, data: list[bytes], timeout: float = 5.0) -> list[list[Any]]:
        """Replicate many encoded requests at once (they travel in the same batches).

        Answers one wire outcome per request: ``["ok", result]`` or ``["error", error]``
        for a request refused on its own. When the cluster could not take the requests
        (not the leader, a leader change, a timeout) the whole call raises, and the
        client resends the batch: exactly-once sessions make that safe.
        """
        if not self.node.is_leader:
            raise NotLeaderError(self.node.id, self.node.leader_id)
        outcomes: list[list[Any]] = [[]] * len(data)
        accepted: list[int] = []
        payloads: list[bytes] = []
        for i, item in enumerate(data):
            try:
                request = decode_request(item)
                self._check(request)
            except CoordError as exc:
                outcomes[i] = ["error", error_to_wire(exc)]
            else:
                accepted.append(i)
                payloads.append(encode_request(request))
        if not payloads:
            return outcomes
        async with asyncio.timeout(timeout):
            futures = await self.node.propose_many(payloads)
            try:
                for i, fut in zip(accepted, futures, strict=True):
                    try:
                        outcomes[i] = ["ok", result_to_wire(await fut)]
                    except CoordError as exc:
                        outcomes[i] = ["error", error_to_wire(exc)]
            except BaseException:
                for fut in futures:
                    fut.cancel()  # as a timed-out propose() would: the entries stay proposed
                raise
        return outcomes

    def _check(self, request: Request) -> None:
        if isinstance(request.command, LeaseExpire | LeaseCheckpoint):
            raise InvalidCommandError(
                f"{type(request.command).__name__} is proposed by the leader only"
            )
        check_limits(request.command, self.limits)

    async def _propose(self, request: Request, timeout: float) -> Result:
        async with asyncio.timeout(timeout):
            result: Result = await self.node.propose(encode_request(request))
        return result

    # ------------------------------------------------------------------- reads

    async def range(
        self,
        key: str,
        prefix: bool = False,
        limit: int = 0,
        linearizable: bool = True,
        timeout: float = 5.0,
    ) -> RangeResult:
        """Read keys; linearizable (ReadIndex through the leader) unless told otherwise."""
        if linearizable:
            await self.node.read_index(timeout=timeout)
        return self.sm.range(key, prefix, limit)

    async def watch(self, key: str, prefix: bool, from_revision: int, wait_s: float) -> WatchBatch:
        """Changes at ``from_revision`` or later, waiting up to ``wait_s`` for the first.

        Any member answers, from what it has applied: resuming at ``next_revision`` on
        another member after a disconnect neither skips nor repeats an event.
        """
        if from_revision < 1:
            raise InvalidCommandError(f"watch: from_revision must be >= 1, got {from_revision}")
        deadline = time.monotonic() + wait_s
        self.watch_polls += 1
        while True:
            events = self.sm.events_since(from_revision, key, prefix)
            if events:
                return WatchBatch(events, events[-1].revision + 1)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return WatchBatch([], from_revision)
            self._applied.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._applied.wait()

    # ------------------------------------------------------------------ leases

    async def keep_alive(self, lease_id: int, timeout: float = 5.0) -> int:
        """Renew ``lease_id`` on the leader; returns its TTL in milliseconds.

        The leader first confirms with a heartbeat round (batched like ReadIndex) that
        it still leads: a deposed leader that has not noticed yet must not renew, or
        the holder would count on time that the new leader does not give it.

        Only such a confirmed leader that times leases answers "lease not found": any
        other member may not have applied the grant yet, so it redirects (or answers a
        retryable error) and never makes a client give up a live lease.
        """
        (ttl,) = await self.keep_alive_many([lease_id], timeout)
        if not ttl:
            raise LeaseNotFoundError(lease_id)
        return ttl

    @property
    def clock(self) -> LeaseClock:
        """The leader's lease deadlines (kept by :attr:`keeper`)."""
        return self.keeper.clock

    def _view(self) -> RaftView:
        return RaftView.of(self.node.core)

    def _check_timing(self) -> None:
        admission = self.keeper.admit(self._view())
        if admission is Admission.NOT_LEADER:
            raise NotLeaderError(self.node.id, self.node.leader_id)
        if admission is Admission.NOT_READY:
            raise LeasesNotReadyError(
                "this leader is still applying its predecessors' entries; retry shortly"
            )

    async def keep_alive_many(self, lease_ids: list[int], timeout: float = 5.0) -> list[int]:
        """Renew many leases after one leadership confirmation; the TTL in milliseconds
        of each, 0 for a lease that no longer exists."""
        self._check_timing()
        await self.node.read_index(timeout=timeout)
        self._check_timing()
        out = self.keeper.renew(self.sm.leases, lease_ids, _now_ms())
        self.keepalives += len(lease_ids)
        return out

    def lease_ids(self) -> list[int]:
        """Ids of every live lease (as applied on this member)."""
        return sorted(self.sm.leases.leases)

    def time_to_live(self, lease_id: int) -> tuple[int, int]:
        """``(ttl_ms, remaining_ms)`` of a live lease (remaining as last checkpointed
        on a follower, as timed on the leader)."""
        lease = self.sm.lease(lease_id)
        remaining = self.keeper.remaining_ms(lease_id, _now_ms(), self._view())
        return lease.ttl_ms, lease.remaining_ms if remaining is None else remaining

    async def _lease_loop(self) -> None:
        while True:
            try:
                self._tick_leases()
            except Exception:  # never let a bug stop lease timing for good
                log.exception("lease timer failed")
            await asyncio.sleep(self.lease_check_s)

    def _tick_leases(self) -> None:
        actions = self.keeper.tick(self.sm.leases, _now_ms(), self._view())
        if actions.started_timing:
            log.info("node %d times %d leases as leader", self.node.id, len(self.sm.leases.leases))
        for lease_id in actions.expire:
            self.expiries_proposed += 1
            self._spawn(self._expire(lease_id))
        if actions.checkpoint:
            self._spawn(self._checkpoint(actions.checkpoint))

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def _expire(self, lease_id: int) -> None:
        try:
            await self._propose(Request(LeaseExpire(lease_id)), timeout=5.0)
        except LeaseNotFoundError:
            self.keeper.expiry_refused(lease_id)
        except (RaftError, TimeoutError) as exc:
            log.info("expiry of lease %d not committed (%s); will retry", lease_id, exc)
            self.keeper.expiry_failed(lease_id, _now_ms(), self._view())

    async def _checkpoint(self, remaining: tuple[tuple[int, int], ...]) -> None:
        with contextlib.suppress(RaftError, TimeoutError):
            await self._propose(Request(LeaseCheckpoint(remaining)), timeout=5.0)

    def render_metrics(self) -> str:
        """Prometheus lines for the coordination layer."""
        lines = gauge("hacoord_revision", "Revision of the last change to a key.", self.sm.revision)
        lines += gauge("hacoord_keys", "Keys stored.", len(self.sm.store.keys))
        lines += gauge("hacoord_leases", "Live leases.", len(self.sm.leases.leases))
        lines += gauge(
            "hacoord_sessions", "Clients with remembered outcomes.", len(self.sm.clients.clients)
        )
        lines += counter("hacoord_lease_keepalives_total", "Keep-alives served.", self.keepalives)
        lines += counter(
            "hacoord_lease_expiries_total", "Lease expiries proposed.", self.expiries_proposed
        )
        lines += counter("hacoord_watch_polls_total", "Watch polls served.", self.watch_polls)
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------- hooks

    def _on_applied(self, entry: Entry, result: Result | None) -> None:
        if self.keeper.timing_term:  # the hot path of a follower: nothing is timed here
            self.keeper.applied(result, _now_ms(), self._view())
        self._applied.set()

    def _on_restored(self) -> None:
        self.keeper.restored(self.sm.leases, _now_ms(), self._view())
        self._applied.set()
