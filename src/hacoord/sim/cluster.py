"""A deterministic, seeded simulation of a Raft cluster running the real core.

Everything runs in one thread on a virtual clock: ticks, a lossy network, disks
whose writes become durable only after a simulated sync, crashes that lose the
unsynced tail, restarts from storage, pauses (like SIGSTOP) and partitions. Clients
drive a replicated register; their history is checked for linearizability and the
Raft invariants are checked after every event.

:class:`SimCluster` is the machinery (nodes, network, disks, faults, ticking, the
Raft invariants, the liveness probe) with hooks for the state machine and the
workload; :class:`Simulation` runs the replicated register on it, and
:mod:`hacoord.sim.coord` the coordination layer. Every injected fault is recorded in
:attr:`SimCluster.faults`.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from hacoord.raft.config import CoreConfig
from hacoord.raft.core import RaftCore
from hacoord.raft.errors import NotLeaderError, ProposalDroppedError, RaftError
from hacoord.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    NodeId,
    PersistedState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from hacoord.sim.disk import SimDisk
from hacoord.sim.invariants import InvariantChecker
from hacoord.sim.kv import CAS, PUT, Command, KVStateMachine
from hacoord.sim.linearizability import Operation, OpKind, check_history
from hacoord.sim.network import NetworkModel

CoreFactory = Callable[[CoreConfig, ConfState, random.Random, PersistedState | None], RaftCore]


class SimStateMachine(Protocol):
    """What :class:`SimCluster` needs of a node's state machine."""

    def snapshot(self) -> bytes:
        """Serialize the whole state."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's."""
        ...


SM = TypeVar("SM", bound=SimStateMachine)


@dataclass(slots=True)
class SimConfig:
    """Parameters of one simulated run (times in virtual milliseconds)."""

    nodes: int = 3
    duration_ms: float = 4000.0
    settle_ms: float = 1500.0
    """Fault-free time at the end, in which a leader must emerge and commit."""
    tick_ms: float = 10.0
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 8
    max_msg_bytes: int = 4096
    spares: int = 2
    """Extra nodes outside the initial configuration, for membership changes."""
    clients: int = 4
    keys: int = 3
    client_timeout_ms: float = 400.0
    faults: bool = True
    fault_interval_ms: float = 250.0
    snapshot_every: int = 40
    """Applied entries between state-machine snapshots (log compaction)."""
    disk_latency_ms: tuple[float, float] = (0.1, 2.0)
    crash_after_sync_rate: float = 0.0
    """Chance, per handled Ready, of crashing right after its messages went out."""
    crash_after_vote_rate: float = 0.0
    """Chance of crashing right after granting a vote (the riskiest moment to lose state)."""
    max_value_padding: int = 0
    """Client values get up to this many padding bytes (big entries split appends)."""
    randomize: bool = True
    """Draw batching limits, snapshot interval, entry sizes and crash points per seed."""
    core_factory: CoreFactory = RaftCore

    def randomized(self, rng: random.Random) -> SimConfig:
        """A copy with the per-seed knobs drawn from ``rng`` (when ``randomize``)."""
        if not self.randomize:
            return self
        return dataclasses.replace(
            self,
            max_msg_bytes=rng.choice([1024, 4096, 1 << 20]),
            max_inflight=rng.choice([1, 4, 64]),
            snapshot_every=rng.choice([10, 40, 200]),
            max_value_padding=rng.choice([0, 0, 300, 900]),
            crash_after_sync_rate=rng.choice([0.0, 0.001, 0.003]) if self.faults else 0.0,
            crash_after_vote_rate=rng.choice([0.0, 0.1, 0.3]) if self.faults else 0.0,
        )


@dataclass(slots=True)
class SimResult:
    """Outcome of one seed."""

    seed: int
    violations: list[str]
    elections: int
    ops_checked: int
    committed: int
    events: int


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One injected fault: what, when (``end`` is an upper bound), and whom it hit.

    ``members`` are the nodes it affected directly (the crashed, paused or one-way
    blocked node, a transfer's leader and target); a partition lists its ``groups``
    instead; network-wide faults (``lossy``, ``slow``) affect no node in particular.
    """

    kind: str
    start: float
    end: float
    members: frozenset[NodeId] = frozenset()
    groups: tuple[frozenset[NodeId], ...] = ()


@dataclass(slots=True)
class _Node(Generic[SM]):
    id: NodeId
    core: RaftCore
    storage: SimDisk
    sm: SM
    rng: random.Random
    incarnation: int = 0
    alive: bool = True
    paused_until: float = 0.0
    syncing: bool = False
    leader_terms_checked: set[int] = field(default_factory=set)
    reads_waiting_apply: list[tuple[int, Operation]] = field(default_factory=list)


@dataclass(slots=True)
class _Client:
    id: int
    leader_guess: NodeId = 0
    busy: Operation | None = None
    op_counter: int = 0


class SimCluster(Generic[SM]):
    """Nodes on a virtual clock, a network, disks and faults; the workload is a hook.

    Subclasses provide :meth:`_new_state_machine` and :meth:`_apply_entry`, and may
    override the other ``_``-hooks; :meth:`_run_events` runs the schedule and returns
    the Raft violations (including liveness).
    """

    def __init__(self, seed: int, config: SimConfig | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.cfg = (config or SimConfig()).randomized(self.rng)
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.net = NetworkModel()
        self.checker = InvariantChecker()
        ids = list(range(1, self.cfg.nodes + 1))
        self.conf = ConfState(frozenset(ids))
        """The initial configuration; spare nodes start outside it."""
        self.nodes: dict[NodeId, _Node[SM]] = {}
        self.reconfigurations = 0
        self.faults: list[FaultRecord] = []
        for nid in range(1, self.cfg.nodes + self.cfg.spares + 1):
            storage = SimDisk()
            node_rng = random.Random(seed * 1000 + nid)
            core = self.cfg.core_factory(self._core_config(nid), self.conf, node_rng, None)
            self.nodes[nid] = _Node(nid, core, storage, self._new_state_machine(nid), node_rng)
        self.events = 0
        self._probe_committed = False

    # ------------------------------------------------------------------ hooks

    def _new_state_machine(self, nid: NodeId) -> SM:
        """A fresh state machine for node ``nid`` (at start and on every restart)."""
        raise NotImplementedError

    def _start_workload(self) -> None:
        """Schedule the clients (called once, after the node tickers)."""

    def _apply_entry(self, node: _Node[SM], entry: Entry) -> None:
        """Apply one committed entry to ``node.sm`` (CONFIG and NOOP entries too)."""
        raise NotImplementedError

    def _snapshot_installed(self, node: _Node[SM]) -> None:
        """``node.sm`` was just replaced by a snapshot from the leader."""

    def _advanced(self, node: _Node[SM], rd: Ready) -> None:
        """``node`` handled ``rd`` (applied, advanced): serve its read states."""

    def _crashed(self, node: _Node[SM]) -> None:
        """``node`` just crashed (its state machine is gone with the process)."""

    def _probe_payload(self) -> bytes:
        """A command for the liveness probe write."""
        raise NotImplementedError

    def _record_fault(
        self,
        kind: str,
        duration: float,
        members: frozenset[NodeId] = frozenset(),
        groups: tuple[frozenset[NodeId], ...] = (),
    ) -> None:
        self.faults.append(FaultRecord(kind, self.now, self.now + duration, members, groups))

    # ---------------------------------------------------------------- running

    def _core_config(self, nid: NodeId) -> CoreConfig:
        c = self.cfg
        return CoreConfig(
            node_id=nid,
            election_ticks=c.election_ticks,
            heartbeat_ticks=c.heartbeat_ticks,
            pre_vote=c.pre_vote,
            check_quorum=c.check_quorum,
            max_msg_bytes=c.max_msg_bytes,
            max_inflight=c.max_inflight,
        )

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` after ``delay`` virtual milliseconds."""
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), fn))

    def _run_events(self) -> list[str]:
        """Run to the end of the configured duration; the Raft and liveness violations."""
        cfg = self.cfg
        for node in self.nodes.values():
            self.schedule(self.rng.uniform(0, cfg.tick_ms), self._ticker(node.id))
        self._start_workload()
        fault_end = cfg.duration_ms - cfg.settle_ms
        if cfg.faults:
            t = self.rng.uniform(50, cfg.fault_interval_ms)
            while t < fault_end:
                self._queue_fault(t, fault_end)
                t += self.rng.uniform(cfg.fault_interval_ms / 2, cfg.fault_interval_ms * 1.5)
            if cfg.spares:
                t = self.rng.uniform(100, 400)
                while t < fault_end:
                    self.schedule(t, self._reconfigure_leader)
                    t += self.rng.uniform(100, 400)
        self.schedule(fault_end, self._heal_all)
        self.schedule(fault_end + cfg.settle_ms * 0.6, self._start_probe_write)
        while self._queue and not self.checker.violations:
            t, _, fn = heapq.heappop(self._queue)
            if t > cfg.duration_ms:
                break
            self.now = t
            fn()
            self.events += 1
        violations = list(self.checker.violations)
        if not violations and not self._probe_committed:
            leaders = {n.id: n.core.role.name for n in self.nodes.values()}
            violations.append(
                f"liveness: no write committed within {cfg.settle_ms * 0.4:.0f} ms after "
                f"all faults healed (roles {leaders})"
            )
        return violations

    # ------------------------------------------------------------------ nodes
    def _ticker(self, nid: NodeId) -> Callable[[], None]:
        def tick() -> None:
            node = self.nodes[nid]
            if node.alive and node.paused_until <= self.now:
                node.core.tick()
                self._after(node)
            self.schedule(self.cfg.tick_ms, tick)

        return tick

    def _after(self, node: _Node[SM]) -> None:
        """Check invariants and start handling the next Ready of ``node``."""
        core = node.core
        if node.alive:
            self.checker.on_commit(node.id, core.log, core.term)
        if core.role is Role.LEADER and core.term not in node.leader_terms_checked:
            node.leader_terms_checked.add(core.term)
            self.checker.on_leader(node.id, core.term, core.log)
        if not node.alive or node.syncing or node.paused_until > self.now:
            return
        if not core.has_ready():
            return
        rd = core.ready()
        for m in rd.early_messages:
            self._send(m)
            if m.type is MessageType.SNAPSHOT:
                # Like a driver whose snapshot stream finished: the leader waits for
                # the follower's answer (or the next heartbeat) and resends if needed.
                core.report_snapshot(m.to, failed=False)
        if rd.entries:
            prev = core.log.term(rd.entries[0].index - 1)
            self.checker.on_entries(node.id, prev if prev is not None else -1, rd.entries)
        node.storage.save(rd.hard_state, rd.entries, rd.snapshot, sync=False)
        node.syncing = True
        incarnation = node.incarnation
        delay = self.rng.uniform(*self.cfg.disk_latency_ms) if rd.must_sync else 0.0
        self.schedule(delay, lambda: self._synced(node, incarnation, rd))

    def _synced(self, node: _Node[SM], incarnation: int, rd: Ready) -> None:
        if node.incarnation != incarnation or not node.alive:
            return
        node.storage.sync()
        node.syncing = False
        for m in rd.messages:
            self._send(m)
        voted = rd.hard_state is not None and rd.hard_state.vote not in (0, node.id)
        crash_rate = self.cfg.crash_after_vote_rate if voted else self.cfg.crash_after_sync_rate
        if crash_rate and self.rng.random() < crash_rate:
            # Crash right after the batch went out: votes and acks are on the wire.
            nid = node.id
            self.crash(nid)
            restart_in = self.rng.uniform(0.5, 10)
            self._record_fault("crash", restart_in, frozenset({nid}))
            self.schedule(restart_in, lambda: self.restart(nid))
            return
        if rd.snapshot is not None:
            node.sm.restore(rd.snapshot.data_bytes())
            self._snapshot_installed(node)
            self.checker.on_state_machine_reset(node.id, rd.snapshot.meta.index)
        for entry in rd.committed_entries:
            self.checker.on_apply(node.id, entry)
            self._apply_entry(node, entry)
        node.core.advance(rd)
        self._advanced(node, rd)
        self._maybe_snapshot(node)
        self._after(node)

    def _maybe_snapshot(self, node: _Node[SM]) -> None:
        core = node.core
        index = core.log.applied
        if index - core.log.snapshot_index < self.cfg.snapshot_every:
            return
        term = core.log.term(index)
        assert term is not None
        snap = Snapshot(SnapshotMeta(index, term, core.conf), node.sm.snapshot())
        node.storage.compact(snap)
        core.compact(snap)

    def _send(self, m: Message) -> None:
        for delay in self.net.delays(self.rng, m.frm, m.to):
            self.schedule(delay, functools.partial(self._deliver, m))

    def _deliver(self, m: Message) -> None:
        node = self.nodes[m.to]
        if not node.alive:
            return
        if node.paused_until > self.now:
            self.schedule(node.paused_until - self.now, lambda: self._deliver(m))
            return
        node.core.step(m)
        self._after(node)

    def crash(self, nid: NodeId) -> None:
        """Kill ``nid``: everything not synced to its storage is lost."""
        node = self.nodes[nid]
        if not node.alive:
            return
        node.alive = False
        node.incarnation += 1
        node.syncing = False
        node.storage.crash(node.rng)
        self._crashed(node)

    def restart(self, nid: NodeId) -> None:
        """Start ``nid`` again from what its storage holds."""
        node = self.nodes[nid]
        if node.alive:
            return
        persisted = node.storage.load()
        node.core = self.cfg.core_factory(self._core_config(nid), self.conf, node.rng, persisted)
        node.sm = self._new_state_machine(nid)
        applied = 0
        if persisted.snapshot is not None:
            node.sm.restore(persisted.snapshot.data_bytes())
            applied = persisted.snapshot.meta.index
        self.checker.on_state_machine_reset(nid, applied)
        node.alive = True
        node.paused_until = 0.0
        self._after(node)

    # ---------------------------------------------------------------- faults

    def _queue_fault(self, at: float, fault_end: float) -> None:
        kind = self.rng.choice(
            [
                "crash",
                "crash_leader",
                "bounce",
                "bounce",
                "partition",
                "isolate_leader",
                "one_way",
                "pause",
                "lossy",
                "slow",
                "transfer",
                "reconfigure",
                "reconfigure",
                "none",
            ]
        )
        duration = self.rng.uniform(50, 1200)
        duration = min(duration, max(0.0, fault_end - at))
        self.schedule(at, lambda: self._start_fault(kind, duration))

    def _leader(self) -> NodeId:
        best: tuple[int, NodeId] = (-1, 0)
        for node in self.nodes.values():
            if node.alive and node.core.role is Role.LEADER and node.core.term > best[0]:
                best = (node.core.term, node.id)
        return best[1]

    def _start_fault(self, kind: str, duration: float) -> None:
        ids = sorted(self.nodes)
        leader = self._leader()
        if kind in ("crash", "crash_leader", "bounce"):
            victim = leader if kind == "crash_leader" and leader else self.rng.choice(ids)
            if kind == "bounce":
                # Crash and restart almost at once: the node comes back mid-election.
                duration = self.rng.uniform(0.5, 30)
            self.crash(victim)
            self._record_fault(kind, duration, frozenset({victim}))
            self.schedule(duration, lambda: self.restart(victim))
        elif kind in ("partition", "isolate_leader"):
            self.net.heal()
            shuffled = ids[:]
            self.rng.shuffle(shuffled)
            if kind == "isolate_leader" and leader:
                minority = {leader}
            else:
                minority = set(shuffled[: self.rng.randint(1, len(ids) // 2)])
            self.net.partition([minority, set(ids) - minority])
            groups = (frozenset(minority), frozenset(ids) - minority)
            self._record_fault(kind, duration, groups=groups)
            self.schedule(duration, self.net.heal)
        elif kind == "one_way":
            self.net.heal()
            src = {self.rng.choice(ids)}
            self.net.block_one_way(src, set(ids) - src)
            self._record_fault(kind, duration, frozenset(src))
            self.schedule(duration, self.net.heal)
        elif kind == "pause":
            victim = leader if leader and self.rng.random() < 0.5 else self.rng.choice(ids)
            self.nodes[victim].paused_until = self.now + duration
            self._record_fault(kind, duration, frozenset({victim}))
            self.schedule(duration, lambda: self._after(self.nodes[victim]))
        elif kind == "lossy":
            self.net.drop_rate = self.rng.uniform(0.05, 0.3)
            self.net.duplicate_rate = self.rng.uniform(0.0, 0.2)
            self.net.spike_rate = self.rng.uniform(0.0, 0.2)
            self._record_fault(kind, duration)
            self.schedule(duration, self._calm_network)
        elif kind == "slow":
            self.net.max_latency = self.rng.uniform(10, 60)
            self._record_fault(kind, duration)
            self.schedule(duration, self._calm_network)
        elif kind == "transfer" and leader:
            node = self.nodes[leader]
            voters = sorted(node.core.conf.voters - {leader})
            if voters and node.paused_until <= self.now:
                target = self.rng.choice(voters)
                node.core.transfer_leadership(target)
                # A transfer is aborted after an election timeout.
                timeout = self.cfg.election_ticks * self.cfg.tick_ms
                self._record_fault(kind, timeout, frozenset({leader, target}))
                self._after(node)
        elif kind == "reconfigure" and leader and self.cfg.spares:
            self._reconfigure(self.nodes[leader])

    def _reconfigure_leader(self) -> None:
        leader = self._leader()
        if leader:
            self._reconfigure(self.nodes[leader])

    def _reconfigure(self, node: _Node[SM]) -> None:
        """Ask the leader for a random membership change (it may refuse: one at a time)."""
        conf = node.core.conf
        voters, learners = set(conf.voters), set(conf.learners)
        outsiders = sorted(set(self.nodes) - voters - learners)
        op = self.rng.choice(["add", "remove", "replace", "learner", "promote", "remove_leader"])
        if op == "add" and outsiders:
            voters.add(self.rng.choice(outsiders))
        elif op == "remove" and len(voters) > 3:
            voters.remove(self.rng.choice(sorted(voters)))
        elif op == "replace" and outsiders:
            voters.remove(self.rng.choice(sorted(voters)))
            voters.add(self.rng.choice(outsiders))
        elif op == "learner" and outsiders:
            learners.add(self.rng.choice(outsiders))
        elif op == "promote" and learners:
            promoted = self.rng.choice(sorted(learners))
            learners.remove(promoted)
            voters.add(promoted)
        elif op == "remove_leader" and len(voters) > 3 and node.id in voters:
            voters.remove(node.id)
        else:
            return
        if node.paused_until > self.now or not node.alive:
            return
        try:
            node.core.propose_conf_change(frozenset(voters), frozenset(learners))
        except RaftError:
            return
        self.reconfigurations += 1
        self._record_fault("reconfigure", 0.0, frozenset(voters) | frozenset(conf.voters))
        self._after(node)

    def _calm_network(self) -> None:
        self.net.max_latency = NetworkModel().max_latency
        self.net.drop_rate = 0.0
        self.net.duplicate_rate = 0.0
        self.net.spike_rate = 0.0

    def _heal_all(self) -> None:
        self.net.heal()
        self._calm_network()
        for nid, node in self.nodes.items():
            node.paused_until = 0.0
            self.restart(nid)
            self._after(node)

    def _start_probe_write(self) -> None:
        """After healing, a write must commit: the liveness check."""
        leader = self._leader()
        if not leader:
            self.schedule(self.cfg.tick_ms, self._start_probe_write)
            return
        node = self.nodes[leader]
        try:
            index = node.core.propose(self._probe_payload())
        except (NotLeaderError, ProposalDroppedError):
            self.schedule(self.cfg.tick_ms, self._start_probe_write)
            return
        term = node.core.term

        def check() -> None:
            if self.checker.committed.get(index) == term:
                self._probe_committed = True
            elif node.core.role is not Role.LEADER or node.core.term != term:
                self._start_probe_write()
            else:
                self.schedule(self.cfg.tick_ms, check)

        self._after(node)
        self.schedule(self.cfg.tick_ms, check)


class Simulation(SimCluster[KVStateMachine]):
    """One seeded run of the replicated register. ``run()`` returns a :class:`SimResult`."""

    def __init__(self, seed: int, config: SimConfig | None = None) -> None:
        super().__init__(seed, config)
        self.clients = [_Client(i + 1) for i in range(self.cfg.clients)]
        self.history: list[Operation] = []
        self._pending_writes: dict[tuple[NodeId, int, int], tuple[Operation, Command, _Client]] = {}
        self._pending_reads: dict[tuple[NodeId, int, bytes], tuple[Operation, _Client]] = {}

    def run(self) -> SimResult:
        """Run to the end of the configured duration and check everything."""
        violations = self._run_events()
        ops_checked = 0
        if not violations:
            result = check_history(self.history)
            ops_checked = result.ops_checked
            if not result.ok:
                violations.append(f"linearizability: key {result.key!r}: {result.explanation}")
        return SimResult(
            self.seed,
            violations,
            len(self.checker.leaders),
            ops_checked,
            self.checker.max_committed,
            self.events,
        )

    # ------------------------------------------------------------------ hooks

    def _new_state_machine(self, nid: NodeId) -> KVStateMachine:
        return KVStateMachine()

    def _start_workload(self) -> None:
        for client in self.clients:
            self.schedule(self.rng.uniform(0, 20), self._client_next(client))

    def _apply_entry(self, node: _Node[KVStateMachine], entry: Entry) -> None:
        ok = True
        cmd: Command | None = None
        if entry.kind is EntryKind.NORMAL:
            cmd = Command.decode(entry.data)
            ok = node.sm.apply(cmd)
        self._complete_write(node, entry.index, entry.term, cmd, ok)

    def _snapshot_installed(self, node: _Node[KVStateMachine]) -> None:
        node.reads_waiting_apply.clear()

    def _advanced(self, node: _Node[KVStateMachine], rd: Ready) -> None:
        for rs in rd.read_states:
            key = (node.id, node.incarnation, rs.context)
            pending = self._pending_reads.pop(key, None)
            if pending is not None:
                node.reads_waiting_apply.append((rs.index, pending[0]))
        self._serve_reads(node)

    def _crashed(self, node: _Node[KVStateMachine]) -> None:
        node.reads_waiting_apply.clear()

    def _probe_payload(self) -> bytes:
        return Command(0, 0, PUT, "__probe__", "x").encode()

    # --------------------------------------------------------------- clients

    def _client_next(self, client: _Client) -> Callable[[], None]:
        def issue() -> None:
            client.op_counter += 1
            key = f"k{self.rng.randrange(self.cfg.keys)}"
            roll = self.rng.random()
            value = f"c{client.id}-{client.op_counter}"
            if self.cfg.max_value_padding:
                value += "." * self.rng.randrange(self.cfg.max_value_padding)
            if roll < 0.45:
                op = Operation(client.id, OpKind.PUT, key, self.now, None, value=value)
            elif roll < 0.85:
                op = Operation(client.id, OpKind.GET, key, self.now, None)
            else:
                expected = self._guess_value(key)
                op = Operation(
                    client.id, OpKind.CAS, key, self.now, None, value=value, expected=expected
                )
            client.busy = op
            self.history.append(op)
            self._submit(client, op, client.op_counter, attempts=0)
            timeout = self.cfg.client_timeout_ms
            self.schedule(timeout, lambda: self._client_timeout(client, op))

        return issue

    def _guess_value(self, key: str) -> str | None:
        for op in reversed(self.history):
            if op.key == key and op.kind is not OpKind.GET and op.value is not None:
                return op.value if self.rng.random() < 0.7 else None
        return None

    def _submit(self, client: _Client, op: Operation, op_id: int, attempts: int) -> None:
        if client.busy is not op:
            return
        alive = [n for n in sorted(self.nodes) if self.nodes[n].alive]
        target = client.leader_guess if client.leader_guess in alive else 0
        if not target or attempts > 2:
            target = self.rng.choice(alive) if alive else 0
        if not target:
            self.schedule(20, lambda: self._submit(client, op, op_id, attempts + 1))
            return
        self.schedule(
            self.rng.uniform(0.2, 2.0), lambda: self._arrive(client, op, op_id, target, attempts)
        )

    def _arrive(
        self, client: _Client, op: Operation, op_id: int, nid: NodeId, attempts: int
    ) -> None:
        node = self.nodes[nid]
        if client.busy is not op:
            return
        if not node.alive or node.paused_until > self.now:
            self.schedule(5, lambda: self._submit(client, op, op_id, attempts + 1))
            return
        try:
            if op.kind is OpKind.GET:
                ctx = f"{client.id}:{op_id}:{attempts}".encode()
                node.core.read_index(ctx)
                self._pending_reads[(nid, node.incarnation, ctx)] = (op, client)
            else:
                kind = PUT if op.kind is OpKind.PUT else CAS
                value = op.value or ""
                cmd = Command(client.id, op_id, kind, op.key, value, op.expected)
                index = node.core.propose(cmd.encode())
                self._pending_writes[(nid, node.incarnation, index)] = (op, cmd, client)
        except NotLeaderError as exc:
            client.leader_guess = exc.leader
            self.schedule(2, lambda: self._submit(client, op, op_id, attempts + 1))
            return
        except ProposalDroppedError:
            self.schedule(5, lambda: self._submit(client, op, op_id, attempts + 1))
            return
        client.leader_guess = nid
        self._after(node)

    def _complete_write(
        self, node: _Node[KVStateMachine], index: int, term: int, cmd: Command | None, ok: bool
    ) -> None:
        pending = self._pending_writes.pop((node.id, node.incarnation, index), None)
        if pending is None:
            return
        op, sent, client = pending
        if client.busy is not op:
            return
        if cmd != sent:
            # Our entry was overwritten before it committed: it never took effect.
            self.history.remove(op)
            self._finish(client, op)
            return
        if op.kind is OpKind.CAS:
            op.ok = ok
        self._reply(client, op)

    def _serve_reads(self, node: _Node[KVStateMachine]) -> None:
        if not node.reads_waiting_apply:
            return
        applied = node.core.log.applied
        still: list[tuple[int, Operation]] = []
        for index, op in node.reads_waiting_apply:
            if index <= applied:
                op.value = node.sm.data.get(op.key)
                client = self.clients[op.client - 1]
                if client.busy is op:
                    self._reply(client, op)
            else:
                still.append((index, op))
        node.reads_waiting_apply = still

    def _reply(self, client: _Client, op: Operation) -> None:
        """The response travels back to the client; the op completes on arrival."""

        def arrive() -> None:
            if client.busy is op:
                op.complete = self.now
                self._finish(client, op)

        self.schedule(self.rng.uniform(0.2, 2.0), arrive)

    def _finish(self, client: _Client, op: Operation) -> None:
        client.busy = None
        self.schedule(self.rng.uniform(0, 5), self._client_next(client))

    def _client_timeout(self, client: _Client, op: Operation) -> None:
        if client.busy is not op:
            return
        if op.kind is OpKind.GET:
            self.history.remove(op)
        client.leader_guess = 0
        self._finish(client, op)
