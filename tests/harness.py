"""A small synchronous cluster for scenario tests of the pure core.

Unlike the randomized simulator, every message is delivered as soon as it is sent
(unless its path is cut), so a test can script an exact scenario step by step.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hacoord.raft.config import CoreConfig
from hacoord.raft.core import RaftCore
from hacoord.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NodeId,
    PersistedState,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
)
from hacoord.sim.invariants import InvariantChecker


@dataclass
class Disk:
    """What a node has persisted."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def save(self, hs: HardState | None, entries: list[Entry], snap: Snapshot | None) -> None:
        if snap is not None:
            self.snapshot = snap
            self.entries = []
        if entries:
            first = entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + list(entries)
        if hs is not None:
            self.hard_state = hs

    def persisted(self) -> PersistedState:
        return PersistedState(self.hard_state, self.snapshot, list(self.entries))


class Cluster:
    """N cores wired together with an instantaneous, cuttable network."""

    def __init__(
        self,
        n: int = 3,
        seed: int = 1,
        core_class: type[RaftCore] = RaftCore,
        checker: InvariantChecker | None = None,
        voters: set[NodeId] | None = None,
        **cfg: object,
    ) -> None:
        self.core_class = core_class
        self.checker = checker
        self._leader_checked: set[tuple[NodeId, int]] = set()
        self.ids = list(range(1, n + 1))
        self.conf = ConfState(frozenset(voters or self.ids))
        self.cfg = cfg
        self.seed = seed
        self.disks = {i: Disk() for i in self.ids}
        self.cores: dict[NodeId, RaftCore] = {}
        self.alive: set[NodeId] = set()
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.applied: dict[NodeId, list[Entry]] = {i: [] for i in self.ids}
        self.read_states: dict[NodeId, list[ReadState]] = {i: [] for i in self.ids}
        self.sent: list[Message] = []
        self.dropped_types: set[MessageType] = set()
        self.drop_if: Callable[[Message], bool] = lambda m: False
        for i in self.ids:
            self.start(i)

    def _config(self, nid: NodeId) -> CoreConfig:
        return CoreConfig(node_id=nid, **self.cfg)  # type: ignore[arg-type]

    def start(self, nid: NodeId) -> None:
        self.cores[nid] = self.core_class(
            self._config(nid),
            self.conf,
            random.Random(self.seed * 100 + nid),
            self.disks[nid].persisted(),
        )
        snap = self.disks[nid].snapshot
        self.applied[nid] = [Entry(snap.meta.term, snap.meta.index, EntryKind.NOOP)] if snap else []
        self.alive.add(nid)
        if self.checker is not None:
            self.checker.on_state_machine_reset(nid, snap.meta.index if snap else 0)

    def _check(self, nid: NodeId) -> None:
        core = self.cores[nid]
        if self.checker is None:
            return
        self.checker.on_commit(nid, core.log, core.term)
        if core.role is Role.LEADER and (nid, core.term) not in self._leader_checked:
            self._leader_checked.add((nid, core.term))
            self.checker.on_leader(nid, core.term, core.log)

    def crash(self, nid: NodeId) -> None:
        self.alive.discard(nid)

    def isolate(self, nid: NodeId) -> None:
        for other in self.ids:
            if other != nid:
                self.blocked.add((nid, other))
                self.blocked.add((other, nid))

    def cut(self, a: NodeId, b: NodeId) -> None:
        self.blocked.add((a, b))
        self.blocked.add((b, a))

    def heal(self) -> None:
        self.blocked.clear()

    def process(self, max_rounds: int = 10_000) -> None:
        """Handle readies and deliver messages until the cluster is quiet."""
        queue: deque[Message] = deque()
        for _ in range(max_rounds):
            progressed = False
            for nid in self.ids:
                core = self.cores[nid]
                if nid not in self.alive or not core.has_ready():
                    continue
                progressed = True
                rd = core.ready()
                if self.checker is not None and rd.entries:
                    prev = core.log.term(rd.entries[0].index - 1)
                    self.checker.on_entries(nid, -1 if prev is None else prev, rd.entries)
                queue.extend(rd.early_messages)
                self.disks[nid].save(rd.hard_state, rd.entries, rd.snapshot)
                queue.extend(rd.messages)
                self.applied[nid].extend(rd.committed_entries)
                if self.checker is not None:
                    for entry in rd.committed_entries:
                        self.checker.on_apply(nid, entry)
                self.read_states[nid].extend(rd.read_states)
                core.advance(rd)
                self._check(nid)
            while queue:
                m = queue.popleft()
                self.sent.append(m)
                if (
                    m.to in self.alive
                    and (m.frm, m.to) not in self.blocked
                    and m.type not in self.dropped_types
                    and not self.drop_if(m)
                ):
                    self.cores[m.to].step(m)
                    self._check(m.to)
                    progressed = True
            if not progressed:
                return
        raise AssertionError("cluster did not quiesce")

    def tick(self, nid: NodeId | None = None, times: int = 1) -> None:
        for _ in range(times):
            for i in [nid] if nid else self.ids:
                if i in self.alive:
                    self.cores[i].tick()
            self.process()

    def elect(self, nid: NodeId) -> None:
        self.cores[nid].campaign()
        self.process()
        assert self.cores[nid].role is Role.LEADER, self.cores[nid].status()

    def leaders(self) -> list[NodeId]:
        return [i for i in self.ids if i in self.alive and self.cores[i].role is Role.LEADER]

    def propose(self, nid: NodeId, data: bytes) -> int:
        index = self.cores[nid].propose(data)
        self.process()
        return index

    def data_applied(self, nid: NodeId) -> list[bytes]:
        return [e.data for e in self.applied[nid] if e.kind is EntryKind.NORMAL]

    def compact(self, nid: NodeId) -> None:
        core = self.cores[nid]
        index = core.log.applied
        term = core.log.term(index)
        assert term is not None
        snap = Snapshot(SnapshotMeta(index, term, core.conf), b"state@%d" % index)
        self.disks[nid].snapshot = snap
        self.disks[nid].entries = [e for e in self.disks[nid].entries if e.index > index]
        core.compact(snap)
