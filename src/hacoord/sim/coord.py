"""Deterministic simulation of the coordination layer: leases, keep-alives, elections.

Real :class:`~hacoord.raft.core.RaftCore` nodes run on the simulator's virtual clock,
network, disks and faults (:class:`~hacoord.sim.cluster.SimCluster`); each member runs
the real :class:`~hacoord.server.state.ServerStateMachine` and
:class:`~hacoord.coord.lease_keeper.LeaseKeeper` behind a :class:`SimMember` shell, and
simulated clients (:mod:`hacoord.sim.coord_clients`) grant, renew and revoke leases and
campaign with the real election transactions. Client calls travel the simulated
network too, so clients can be cut off from some members, and client processes hang
now and then (a lease then runs out and another candidate takes over).

After the run, :mod:`hacoord.sim.coord_checks` checks (a) that holders of one election
never overlap, (b) that fencing tokens grow, and (c) that no lease of a renewing client
expires while a majority stayed healthy; the Raft invariants and the liveness probe
of the base simulator hold as well.

``python -m hacoord.sim.coord --seeds 2000 --jobs 2`` runs seeds and prints one JSON
line; a failing seed prints the command that replays it. Deliberate bugs
(:mod:`hacoord.sim.coord_bugs`) show that each check can fail.

Client calls follow the real ``HttpTransport``'s timing: one attempt on a member may
use at most a third of the call's budget (never less than 200 ms), so a member that
hangs (paused, or cut off without a reset) cannot hold a keep-alive past its TTL.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from hacoord.coord.commands import LeaseExpire, Put, Request, decode_request, encode_request
from hacoord.coord.election import holder_of
from hacoord.coord.lease_clock import LeaseClock
from hacoord.coord.results import LeaseRevokeResult, Result
from hacoord.raft.core import RaftCore
from hacoord.raft.types import Entry, Message, NodeId, Ready
from hacoord.sim.cluster import SimCluster, SimConfig, _Node
from hacoord.sim.coord_bugs import CheckpointRestoringClock, check_names, holder_with_lease_token
from hacoord.sim.coord_checks import (
    FaultSchedule,
    check_exclusive,
    check_no_needless_expiry,
    check_tokens,
    clean_windows,
)
from hacoord.sim.coord_clients import ClientSettings, SimClient
from hacoord.sim.coord_history import ClientFault, CoordHistory
from hacoord.sim.coord_member import REFUSED, MemberBugs, Reply, SimMember
from hacoord.sim.coord_tasks import Gen, Kernel, SimFuture

CLIENT_ID_BASE = 100
"""Client network ids start here (members are 1..nodes+spares)."""
TCP_RETRANSMIT_MS = 200.0


def _default_raft() -> SimConfig:
    return SimConfig(duration_ms=6000.0, clients=0)


@dataclass(slots=True)
class CoordSimConfig:
    """Parameters of one coordination run (times in virtual milliseconds)."""

    raft: SimConfig = field(default_factory=_default_raft)
    elections: int = 2
    campaigners: int = 3
    """Campaigners per election."""
    lease_holders: int = 1
    ttls_ms: tuple[int, ...] = (1000, 1500, 2000)
    safety_margin: float = 0.02
    attempt_timeout_ms: float = 5000.0
    """The longest one attempt may take (``HttpTransport(attempt_timeout=5.0)``)."""
    call_deadline_ms: float = 3000.0
    lease_check_ms: float = 50.0
    checkpoint_ms: float = 5000.0
    client_faults: bool = True
    client_fault_interval_ms: float = 600.0
    """Mean time between client faults: a hiccup (a short pause, like a GC pause), a
    hang (a long pause, of a holder more often than not) or cut links."""
    fault_intervals_ms: tuple[float, ...] = (250.0, 500.0, 1000.0, 2000.0)
    """Mean times between member faults, one drawn per seed."""
    no_check_quorum_rate: float = 0.3
    """Share of seeds run without CheckQuorum."""
    recovery_ms: float | None = None
    """Rule R of check (c); ``None``: two maximal election timeouts."""
    bugs: frozenset[str] = frozenset()
    """Planted bugs, by name (see :mod:`hacoord.sim.coord_bugs`)."""
    randomize: bool = True
    """Draw the workload, fault density, spares and checkpoint interval per seed."""

    def randomized(self, rng: random.Random) -> CoordSimConfig:
        """A copy with the per-seed knobs drawn from ``rng`` (when ``randomize``)."""
        if not self.randomize:
            return self
        # The Raft knobs are drawn here, from the coordination run's own stream. Crashes
        # right after a sync or a vote are rarer than in the Raft simulator: each is a
        # member fault, and at its rates nearly every window of check (c) would have two
        # crashed voters (the vote rate applies to every batch that changes a hard state
        # holding a vote, commit advances included).
        raft = dataclasses.replace(
            self.raft.randomized(rng),
            randomize=False,
            spares=rng.choice([0, 0, self.raft.spares]),
            fault_interval_ms=rng.choice(self.fault_intervals_ms),
        )
        if raft.faults:
            raft.crash_after_sync_rate = rng.choice([0.0, 0.0, 0.0005])
            raft.crash_after_vote_rate = rng.choice([0.0, 0.0, 0.1])
        # Without CheckQuorum a cut-off leader keeps leading until it hears of a newer
        # term: only the ReadIndex round then stops it from renewing leases.
        raft.check_quorum = self.raft.check_quorum and rng.random() >= self.no_check_quorum_rate
        return dataclasses.replace(
            self,
            raft=raft,
            elections=rng.randint(1, self.elections),
            campaigners=rng.randint(2, max(2, self.campaigners)),
            client_fault_interval_ms=rng.choice([0.5, 1.0, 3.0]) * self.client_fault_interval_ms,
            lease_holders=rng.randint(0, self.lease_holders),
            checkpoint_ms=rng.choice([300.0, 1000.0, self.checkpoint_ms]),
        )


@dataclass(slots=True)
class CoordSimResult:
    """Outcome of one seed."""

    seed: int
    violations: list[str]
    elections: int
    """Raft leader elections."""
    holders: int
    """Holder spans (times a campaigner saw itself elected)."""
    expiries: int
    fenced_writes: int
    clean_windows: int
    """Sampled moments at which check (c) was armed."""
    events: int


class CoordSimulation(SimCluster[SimMember]):
    """One seeded coordination run; ``run()`` returns a :class:`CoordSimResult`."""

    def __init__(self, seed: int, config: CoordSimConfig | None = None) -> None:
        base = config or CoordSimConfig()
        check_names(base.bugs)
        self.ccfg = base.randomized(random.Random(f"coord:{seed}"))
        bugs = self.ccfg.bugs
        self.member_bugs = MemberBugs(
            unconfirmed_keepalive="unconfirmed_keepalive" in bugs,
            lookup_before_timing="lookup_before_timing" in bugs,
        )
        self.history = CoordHistory()
        self._expiry_proposals: dict[tuple[int, int], float] = {}
        self._expired: set[int] = set()
        self._open: dict[NodeId, dict[int, tuple[SimClient, SimFuture[Reply]]]] = {}
        self._call_ids = itertools.count()
        self._cuts: list[tuple[ClientFault, bool]] = []
        self._isolated: list[tuple[float, float, NodeId]] = []
        super().__init__(seed, self.ccfg.raft)
        self.kernel = Kernel(self)
        self.member_ids = sorted(self.nodes)
        settings = ClientSettings(
            safety_margin=self.ccfg.safety_margin,
            attempt_timeout_ms=self.ccfg.attempt_timeout_ms,
            call_deadline_ms=self.ccfg.call_deadline_ms,
            holder_fn=holder_with_lease_token if "token_from_lease" in bugs else holder_of,
        )
        count = self.ccfg.elections * self.ccfg.campaigners + self.ccfg.lease_holders
        self.clients = [
            SimClient(self, CLIENT_ID_BASE + i, random.Random(seed * 7919 + i), settings)
            for i in range(count)
        ]

    # ------------------------------------------------------------------ running

    @property
    def recovery_ms(self) -> float:
        """Rule R of check (c)."""
        if self.ccfg.recovery_ms is not None:
            return self.ccfg.recovery_ms
        return 4 * self.cfg.election_ticks * self.cfg.tick_ms

    def run(self) -> CoordSimResult:
        """Run to the end and check the Raft invariants and properties (a)-(c)."""
        violations = self._run_events()
        schedule = FaultSchedule(
            self.conf.voters,
            tuple(self.faults),
            tuple(self.history.client_faults),
            self.recovery_ms,
        )
        violations += check_exclusive(self.history.spans)
        violations += check_tokens(self.history)
        violations += check_no_needless_expiry(self.history, schedule)
        return CoordSimResult(
            self.seed,
            violations,
            len(self.checker.leaders),
            len(self.history.spans),
            self.history.expiries,
            len(self.history.fenced),
            clean_windows(self.history, schedule, self.now),
            self.events,
        )

    def _start_workload(self) -> None:
        ccfg = self.ccfg
        names = [f"e{i}" for i in range(ccfg.elections)]
        for i, client in enumerate(self.clients):
            if i < ccfg.elections * ccfg.campaigners:
                body = client.campaigner(names[i % len(names)], ccfg.ttls_ms)
            else:
                body = client.lease_holder(ccfg.ttls_ms)
            self.schedule(self.rng.uniform(0, 50), functools.partial(self._spawn, client, body))
        fault_end = self.cfg.duration_ms - self.cfg.settle_ms
        if ccfg.client_faults and self.cfg.faults:
            interval = ccfg.client_fault_interval_ms
            t = self.rng.uniform(100, interval)
            while t < fault_end:
                self.schedule(t, functools.partial(self._client_fault, fault_end))
                t += self.rng.uniform(interval / 2, interval * 1.5)

    def _spawn(self, client: SimClient, body: Gen[None]) -> None:
        self.kernel.spawn(client, body)

    def _isolate_leader(self, fault_end: float) -> None:
        """Cut the leader off from the other members (not from the clients) for longer
        than the base faults do: up to several TTLs."""
        leader = self._leader()
        if not leader:
            return
        duration = min(self.rng.uniform(500, 3000), max(0.0, fault_end - self.now))
        others = frozenset(self.nodes) - {leader}
        self._isolated.append((self.now, self.now + duration, leader))
        self._record_fault("isolate_leader", duration, groups=(frozenset({leader}), others))

    def _send(self, m: Message) -> None:
        # The long isolations are kept apart from the network model: the base faults
        # heal that one whenever a partition starts or ends.
        for start, end, nid in self._isolated:
            if start <= self.now < end and (m.frm == nid) != (m.to == nid):
                return
        super()._send(m)

    def _client_fault(self, fault_end: float) -> None:
        rng = self.rng
        kind = rng.choice(["hiccup", "hiccup", "hang", "cut", "isolate"])
        if kind == "isolate":
            self._isolate_leader(fault_end)
            return
        client = rng.choice(self.clients)
        holders = [c for c in self.clients if c.holding]
        if kind == "hang" and holders and rng.random() < 0.7:
            client = rng.choice(holders)
        span = {"hiccup": (10.0, 250.0), "hang": (300.0, 3000.0)}.get(kind, (50.0, 2500.0))
        duration = min(rng.uniform(*span), max(0.0, fault_end - self.now))
        if kind != "cut":
            client.paused_until = max(client.paused_until, self.now + duration)
            fault = ClientFault(kind, client.id, self.now, self.now + duration)
            self.history.client_faults.append(fault)
            return
        members = [m for m in self.member_ids if self.rng.random() < 0.5] or [
            self.rng.choice(self.member_ids)
        ]
        both_ways = self.rng.random() < 0.7
        fault = ClientFault("cut", client.id, self.now, self.now + duration, frozenset(members))
        self.history.client_faults.append(fault)
        self._cuts.append((fault, both_ways))

    # ---------------------------------------------------------------- members

    def _new_state_machine(self, nid: NodeId) -> SimMember:
        clock: LeaseClock | None = None
        if "checkpoint_restore" in self.ccfg.bugs:
            clock = CheckpointRestoringClock()
        return SimMember(
            self,
            nid,
            lease_check_ms=self.ccfg.lease_check_ms,
            checkpoint_ms=self.ccfg.checkpoint_ms,
            clock=clock,
            bugs=self.member_bugs,
        )

    def _apply_entry(self, node: _Node[SimMember], entry: Entry) -> None:
        node.sm.apply_entry(entry)

    def _snapshot_installed(self, node: _Node[SimMember]) -> None:
        node.sm.snapshot_installed()

    def _advanced(self, node: _Node[SimMember], rd: Ready) -> None:
        node.sm.advanced(rd)

    def _crashed(self, node: _Node[SimMember]) -> None:
        node.sm.close()
        for client, fut in self._open.pop(node.id, {}).values():
            self._reply_to(node.id, client, REFUSED, fut)  # connection reset

    def _probe_payload(self) -> bytes:
        return encode_request(Request(Put("__probe__", b"x")))

    # MemberHost
    def core_of(self, nid: NodeId) -> RaftCore:
        """The current core of node ``nid``."""
        return self.nodes[nid].core

    def runnable(self, nid: NodeId) -> bool:
        """Whether node ``nid`` is up and not paused."""
        node = self.nodes[nid]
        return node.alive and node.paused_until <= self.now

    def kick(self, nid: NodeId) -> None:
        """Let node ``nid`` handle its next Ready."""
        self._after(self.nodes[nid])

    def expiry_proposed(self, nid: NodeId, index: int, term: int, lease_id: int) -> None:
        """Remember when the expiry entry ``(index, term)`` was proposed."""
        self._expiry_proposals[(index, term)] = self.now

    def entry_applied(self, nid: NodeId, entry: Entry, result: Result | None) -> None:
        """Date the first application of each committed expiry."""
        if not isinstance(result, LeaseRevokeResult) or entry.index in self._expired:
            return
        if not isinstance(decode_request(entry.data).command, LeaseExpire):
            return
        self._expired.add(entry.index)
        self.history.expiries += 1
        rec = self.history.leases.get(result.lease_id)
        if rec is not None:
            rec.expiry_proposed_at = self._expiry_proposals[(entry.index, entry.term)]
            rec.expired_at = self.now

    # ----------------------------------------------------------- client links

    def _link_delay(self, frm: int, to: int) -> float | None:
        """One message between a client and a member over TCP: None when the link is
        cut (the request hangs), a retransmission delay instead of a loss."""
        for fault, both_ways in self._cuts:
            if fault.start <= self.now < fault.end:
                client, member = (frm, to) if frm >= CLIENT_ID_BASE else (to, frm)
                cut = fault.client == client and member in fault.members
                if cut and (both_ways or frm == client):
                    return None
        net = self.net
        delay = self.rng.uniform(net.min_latency, net.max_latency)
        if net.spike_rate and self.rng.random() < net.spike_rate:
            delay += self.rng.uniform(0, net.spike_latency)
        if net.drop_rate and self.rng.random() < net.drop_rate:
            delay += TCP_RETRANSMIT_MS
        return delay

    def call_member(
        self, client: SimClient, member: NodeId, op: str, body: Any
    ) -> SimFuture[Reply]:
        """Send a call from ``client`` to ``member``; see :class:`ClientHost`."""
        fut: SimFuture[Reply] = SimFuture()
        delay = self._link_delay(client.id, member)
        if delay is not None:
            self.schedule(delay, lambda: self._arrive(client, member, op, body, fut))
        return fut

    def _arrive(
        self, client: SimClient, member: NodeId, op: str, body: Any, fut: SimFuture[Reply]
    ) -> None:
        node = self.nodes[member]
        if not node.alive:
            self._reply_to(member, client, REFUSED, fut)
            return
        if node.paused_until > self.now:
            self.schedule(
                node.paused_until - self.now, lambda: self._arrive(client, member, op, body, fut)
            )
            return
        call_id = next(self._call_ids)
        self._open.setdefault(member, {})[call_id] = (client, fut)
        incarnation = node.incarnation

        def respond(reply: Reply) -> None:
            if node.incarnation != incarnation:
                return
            if self._open.get(member, {}).pop(call_id, None) is None:
                return
            if node.paused_until > self.now:  # a hung process sends nothing
                wake = node.paused_until - self.now
                self._open[member][call_id] = (client, fut)
                self.schedule(wake, lambda: respond(reply))
                return
            self._reply_to(member, client, reply, fut)

        node.sm.handle(op, body, respond)

    def _reply_to(
        self, member: NodeId, client: SimClient, reply: Reply, fut: SimFuture[Reply]
    ) -> None:
        delay = self._link_delay(member, client.id)
        if delay is not None:
            self.schedule(delay, lambda: fut.set(reply))


if __name__ == "__main__":
    import sys

    from hacoord.sim.coord_cli import main

    sys.exit(main())
