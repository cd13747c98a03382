"""Simulated coordination clients, step for step like :mod:`hacoord.client`.

Each :class:`SimClient` is one client process: a transport that follows the real
``HttpTransport`` (the known leader first for writes and keep-alives, one redirect per
target, retries with back-off until the call's deadline), exactly-once submits, leases
renewed like :class:`hacoord.client.leases.Lease` (every TTL/3, valid until the send
time of the last successful keep-alive plus TTL minus the safety margin, lost for good
once the deadline passed or the leader said "lease not found"), and elections like
:class:`hacoord.client.election.Election` (campaign transaction, range the candidates,
wait for the deletion of those ahead, campaign again with a new lease when the lease
ended while waiting), using the real transaction builders of
:mod:`hacoord.coord.election`.

Roles: a *campaigner* campaigns on one election, writes with ``while_holding`` while it
holds, resigns sometimes and campaigns again once its leadership ended; a *holder*
grants a lease, attaches a key, keeps it for a while and revokes it.

One deviation from the real client, on purpose: one request per submit (no batching).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from hacoord.client.transport import ATTEMPTS_PER_BUDGET, MIN_ATTEMPT_S
from hacoord.coord.commands import (
    Command,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Request,
    Txn,
    encode_request,
)
from hacoord.coord.election import (
    Holder,
    campaign_txn,
    candidate_key,
    candidates_prefix,
    holder_of,
    resign_txn,
    while_holding,
)
from hacoord.coord.errors import CoordError, LeaseNotFoundError
from hacoord.coord.results import (
    Event,
    EventType,
    KeyValue,
    LeaseGrantResult,
    RangeResult,
    Result,
    TxnResult,
)
from hacoord.raft.types import NodeId
from hacoord.sim.coord_history import (
    INF,
    REASON_DEADLINE,
    REASON_LATE,
    REASON_NOT_FOUND,
    REASON_STOPPED,
    CoordHistory,
    FencedWrite,
    HolderSpan,
    LeaseRecord,
)
from hacoord.sim.coord_member import Reply
from hacoord.sim.coord_tasks import Gen, Kernel, SimFuture, Task, wait

LEADER_OPS = frozenset({"submit", "keepalive"})
MAX_RETRY_DELAY_MS = 100.0
HolderFn = Callable[[tuple[KeyValue, ...]], Holder | None]


class Unavailable(Exception):
    """No member answered the call before its deadline (``UnavailableError``)."""


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How the simulated clients behave (times in virtual milliseconds)."""

    safety_margin: float = 0.02
    attempt_timeout_ms: float = 5000.0
    call_deadline_ms: float = 3000.0
    holder_fn: HolderFn = holder_of
    """How a campaign reads the holder and its token off the candidates."""


class ClientHost(Protocol):
    """What a client needs from the simulation around it."""

    now: float
    kernel: Kernel
    history: CoordHistory
    member_ids: list[NodeId]

    def call_member(
        self, client: SimClient, member: NodeId, op: str, body: Any
    ) -> SimFuture[Reply]:
        """Send one request to ``member``; the future completes with its reply when
        that reply reaches the client (never when either message is lost)."""
        ...

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` after ``delay`` virtual milliseconds."""
        ...


class SimLease:
    """A granted lease kept alive by its client, like ``hacoord.client.leases.Lease``."""

    def __init__(self, client: SimClient, rec: LeaseRecord) -> None:
        self.client = client
        self.rec = rec
        self.stopping = False
        self.task: Task | None = None
        self._lost_waiters: list[SimFuture[None]] = []
        self._armed = False

    @property
    def id(self) -> int:
        """The lease id."""
        return self.rec.lease_id

    def is_lost(self) -> bool:
        """Whether the lease may have ended (sticky)."""
        return bool(self.rec.lost_reason) or self.client.host.now >= self.rec.deadline

    def mark_lost(self, reason: str) -> None:
        """Record that the lease is lost, and wake whoever waits for that."""
        if self.rec.lost_reason:
            return
        self.rec.lost_reason = reason
        self.rec.lost_at = self.client.host.now
        waiters, self._lost_waiters = self._lost_waiters, []
        for fut in waiters:
            fut.set(None)

    def lost(self) -> SimFuture[None]:
        """A future completing once the lease is lost (at the deadline at the latest)."""
        fut: SimFuture[None] = SimFuture()
        if self.rec.lost_reason:
            fut.set(None)
            return fut
        self._lost_waiters.append(fut)
        self._arm()
        return fut

    def _arm(self) -> None:
        if self._armed:
            return
        self._armed = True
        host = self.client.host
        host.schedule(max(0.0, self.rec.deadline - host.now), self._check_deadline)

    def _check_deadline(self) -> None:
        self._armed = False
        host = self.client.host
        if self.rec.lost_reason or not self._lost_waiters:
            return
        if self.client.paused_until > host.now:  # a hung process notices nothing
            self._armed = True
            host.schedule(self.client.paused_until - host.now, self._check_deadline)
        elif host.now >= self.rec.deadline:
            self.mark_lost(REASON_DEADLINE)
        else:
            self._arm()


class SimClient:
    """One simulated client process."""

    def __init__(
        self,
        host: ClientHost,
        cid: int,
        rng: random.Random,
        settings: ClientSettings,
    ) -> None:
        self.host = host
        self.id = cid
        self.rng = rng
        self.settings = settings
        self.paused_until = 0.0
        self.holding = False
        """Whether this client believes it holds an election (for targeted faults)."""
        self.leader: NodeId = 0
        self.preferred = rng.randrange(len(host.member_ids))
        self._seq = 0
        self._outstanding: set[int] = set()
        self.write_gap_ms = rng.choice([(50.0, 250.0), (400.0, 2000.0)])
        """How long a holder waits between two fenced writes (busy or quiet)."""

    # --------------------------------------------------------------- transport

    def _sleep(self, ms: float) -> Gen[None]:
        yield from wait(self.host.kernel.sleep(ms))

    def _candidates(self, op: str) -> list[NodeId]:
        ids = self.host.member_ids
        ordered = [ids[(self.preferred + i) % len(ids)] for i in range(len(ids))]
        if self.leader and op in LEADER_OPS:
            ordered = [self.leader, *(m for m in ordered if m != self.leader)]
        return ordered

    def _attempt(self, member: NodeId, op: str, body: Any, timeout: float) -> Gen[Reply]:
        kernel = self.host.kernel
        reply = self.host.call_member(self, member, op, body)
        first = yield from wait(kernel.first_of(reply, kernel.sleep(timeout)))
        return reply.result() if first == 0 else Reply("timeout")

    def call(self, op: str, body: Any, deadline: float) -> Gen[Any]:
        """Run ``op`` like ``HttpTransport.call``; raises the refusal or :class:`Unavailable`."""
        host = self.host
        delay = 20.0
        redirected_to: set[NodeId] = set()
        share = max((deadline - host.now) / ATTEMPTS_PER_BUDGET, MIN_ATTEMPT_S * 1000)
        while host.now < deadline:
            new_leader = False
            for member in self._candidates(op):
                remaining = deadline - host.now
                if remaining <= 0:
                    break
                if op == "watch":
                    limit = self.settings.attempt_timeout_ms + body[3]
                else:
                    limit = min(self.settings.attempt_timeout_ms, share)
                reply = yield from self._attempt(member, op, body, min(remaining, limit))
                if reply.kind == "ok":
                    if op in LEADER_OPS:
                        self.leader = member
                    return reply.value
                if reply.kind == "error":
                    assert reply.error is not None
                    raise reply.error
                if reply.kind == "not_leader":
                    leader = reply.leader if reply.leader in host.member_ids else 0
                    if leader and leader not in redirected_to and op in LEADER_OPS:
                        # Follow a redirect at once, but only once per target.
                        redirected_to.add(leader)
                        self.leader = leader
                        new_leader = True
                        break
                elif reply.kind in ("timeout", "refused") and member == self.leader:
                    self.leader = 0
            if new_leader:
                continue
            redirected_to.clear()
            yield from self._sleep(min(delay, max(0.0, deadline - host.now)))
            delay = min(delay * 2, MAX_RETRY_DELAY_MS)
        raise Unavailable(f"{op}: no member answered before the deadline")

    def _deadline(self) -> float:
        return self.host.now + self.settings.call_deadline_ms

    def submit(self, cmd: Command) -> Gen[Result]:
        """Apply ``cmd`` exactly once (a retry reuses the sequence number)."""
        self._seq += 1
        seq = self._seq
        self._outstanding.add(seq)
        request = Request(cmd, self.id, seq, min(self._outstanding))
        try:
            result = yield from self.call("submit", encode_request(request), self._deadline())
        finally:
            self._outstanding.discard(seq)
        return cast(Result, result)

    def txn(self, txn: Txn) -> Gen[TxnResult]:
        """Run a transaction."""
        result = yield from self.submit(txn)
        assert isinstance(result, TxnResult)
        return result

    def range(self, key: str, prefix: bool) -> Gen[RangeResult]:
        """A linearizable read."""
        result = yield from self.call("range", (key, prefix), self._deadline())
        assert isinstance(result, RangeResult)
        return result

    # ------------------------------------------------------------------ leases

    def grant(self, ttl_ms: int) -> Gen[SimLease]:
        """Grant a lease and keep it alive in the background.

        Like ``Client.grant``, the deadline starts when the answer arrives.
        """
        requested = self.host.now
        result = yield from self.submit(LeaseGrant(ttl_ms))
        assert isinstance(result, LeaseGrantResult)
        now = self.host.now
        margin = self.settings.safety_margin
        rec = LeaseRecord(
            result.lease_id,
            self.id,
            result.ttl_ms,
            requested,
            now,
            now + result.ttl_ms * (1 - margin),
        )
        self.host.history.leases[rec.lease_id] = rec
        lease = SimLease(self, rec)
        lease.task = self.host.kernel.spawn(self, self._keep_alive(lease))
        return lease

    def stop(self, lease: SimLease) -> None:
        """Stop renewing ``lease``."""
        lease.stopping = True
        lease.rec.stopped_at = min(lease.rec.stopped_at, self.host.now)
        if lease.task is not None:
            lease.task.cancel()
            lease.task = None

    def revoke(self, lease: SimLease) -> Gen[None]:
        """Stop renewing and end the lease now (errors ignored, as callers do)."""
        self.stop(lease)
        with contextlib.suppress(CoordError, Unavailable):
            yield from self.submit(LeaseRevoke(lease.id))

    def _keep_alive(self, lease: SimLease) -> Gen[None]:
        rec = lease.rec
        host = self.host
        interval = rec.ttl_ms / 3
        try:
            while not lease.stopping:
                now = host.now
                if now >= rec.deadline:
                    lease.mark_lost(REASON_DEADLINE)
                    return
                sent = now
                try:
                    ttl = yield from self.call("keepalive", rec.lease_id, rec.deadline)
                except LeaseNotFoundError:
                    lease.mark_lost(REASON_NOT_FOUND)
                    return
                except Unavailable:
                    continue
                except CoordError:
                    yield from self._sleep(min(interval, max(0.0, rec.deadline - host.now)) / 4)
                    continue
                now = host.now
                if now >= rec.deadline:
                    lease.mark_lost(REASON_LATE)
                    return
                rec.deadline = sent + int(ttl) * (1 - self.settings.safety_margin)
                yield from self._sleep(min(interval, max(0.0, rec.deadline - now)))
        finally:
            if not rec.lost_reason and host.now >= rec.deadline:
                lease.mark_lost(REASON_STOPPED)

    # --------------------------------------------------------------- elections

    def acquire(self, name: str, value: bytes, ttl_ms: int) -> Gen[tuple[Holder, SimLease]]:
        """Campaign until elected, like ``Election.acquire``."""
        while True:
            lease = yield from self.grant(ttl_ms)
            try:
                holder = yield from self._wait_elected(name, lease, value)
            except Exception:
                yield from self.revoke(lease)
                raise
            if holder is not None:
                return holder, lease
            self.host.history.recampaigns += 1
            yield from self.revoke(lease)

    def _wait_elected(self, name: str, lease: SimLease, value: bytes) -> Gen[Holder | None]:
        key = candidate_key(name, lease.id)
        prefix = candidates_prefix(name)
        yield from self.txn(campaign_txn(name, lease.id, value))
        while True:
            result = yield from self.range(prefix, True)
            mine = next((kv for kv in result.kvs if kv.key == key), None)
            if mine is None or lease.is_lost():
                return None
            holder = self.settings.holder_fn(result.kvs)
            assert holder is not None
            if holder.key == key:
                return holder
            ahead = {kv.key for kv in result.kvs if kv.create_revision < mine.create_revision}
            yield from self._wait_for_deletion(prefix, ahead, result.revision + 1, lease)

    def _wait_for_deletion(
        self, prefix: str, keys: set[str], start: int, lease: SimLease
    ) -> Gen[None]:
        kernel = self.host.kernel
        found: SimFuture[None] = SimFuture()
        watcher = kernel.spawn(self, self._watch_deletions(prefix, keys, start, lease, found))
        try:
            yield from wait(kernel.first_of(found, lease.lost()))
        finally:
            watcher.cancel()

    def _watch_deletions(
        self, prefix: str, keys: set[str], start: int, lease: SimLease, found: SimFuture[None]
    ) -> Gen[None]:
        wait_ms = min(5000, lease.rec.ttl_ms)
        next_rev = start
        while True:
            deadline = self._deadline() + wait_ms
            try:
                reply = yield from self.call("watch", (prefix, True, next_rev, wait_ms), deadline)
            except Unavailable:
                continue
            except CoordError:  # e.g. compacted: look at the candidates again
                found.set(None)
                return
            events: list[Event] = reply[0]
            next_rev = int(reply[1])
            for event in events:
                if event.type is EventType.DELETE and event.kv.key in keys:
                    found.set(None)
                    return

    # ------------------------------------------------------------------- roles

    def campaigner(self, name: str, ttls: tuple[int, ...]) -> Gen[None]:
        """Campaign, act while holding, resign or lose the lease, campaign again."""
        rng = self.rng
        history = self.host.history
        rounds = 0
        while True:
            rounds += 1
            value = f"c{self.id}-{rounds}".encode()
            try:
                holder, lease = yield from self.acquire(name, value, rng.choice(ttls))
            except (CoordError, Unavailable):
                yield from self._sleep(rng.uniform(20, 300))
                continue
            span = HolderSpan(name, self.id, lease.rec, holder.token, self.host.now)
            history.spans.append(span)
            resign_after = rng.choice([INF, rng.uniform(200, 3000)])
            self.holding = True
            yield from self._hold(name, holder, lease, span, span.start + resign_after)
            self.holding = False
            # Like leaving ``campaign()``: resign (errors ignored), then campaign anew.
            with contextlib.suppress(CoordError, Unavailable):
                yield from self.txn(resign_txn(holder))
            yield from self.revoke(lease)
            yield from self._sleep(rng.uniform(0, 300))

    def _hold(
        self, name: str, holder: Holder, lease: SimLease, span: HolderSpan, resign_at: float
    ) -> Gen[None]:
        writes = 0
        while not lease.is_lost():
            if self.host.now >= resign_at:
                span.resigned_at = self.host.now
                return
            writes += 1
            op = Put(f"data/{name}", f"{self.id}:{holder.token}:{writes}".encode())
            try:
                result = yield from self.txn(while_holding(holder, (op,)))
            except (CoordError, Unavailable):
                result = None
            if result is not None and result.succeeded:
                self.host.history.fenced.append(
                    FencedWrite(name, self.id, holder.token, result.revision)
                )
            yield from self._sleep(self.rng.uniform(*self.write_gap_ms))

    def lease_holder(self, ttls: tuple[int, ...]) -> Gen[None]:
        """Grant a lease with a key on it, keep it a while, revoke it; again."""
        rng = self.rng
        while True:
            try:
                lease = yield from self.grant(rng.choice(ttls))
            except (CoordError, Unavailable):
                yield from self._sleep(rng.uniform(20, 300))
                continue
            with contextlib.suppress(CoordError, Unavailable):
                yield from self.submit(Put(f"session/{self.id}", b"alive", lease.id))
            until = self.host.now + rng.uniform(500, 4000)
            while self.host.now < until and not lease.is_lost():
                yield from self._sleep(50)
            yield from self.revoke(lease)
            yield from self._sleep(rng.uniform(0, 300))
