"""The pure Raft state machine.

:class:`RaftCore` does no IO and reads no clock: it receives ticks, messages and
proposals and hands back a :class:`~hacoord.raft.types.Ready` batch describing what
to persist, send and apply. The same code runs in the deterministic simulator and
in the asyncio driver. Implemented: elections with randomized timeouts, PreVote,
CheckQuorum, log replication with fast back-off, batching and pipelining, snapshots
for lagging followers, leadership transfer and ReadIndex reads.

Driver contract: call :meth:`RaftCore.ready` when :meth:`RaftCore.has_ready` is
true, handle the batch in the order documented on ``Ready``, then call
:meth:`RaftCore.advance`. ``tick``/``step``/``propose`` may be called while a batch
is being handled, but ``ready`` may not be called again before ``advance``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from hacoord.raft.config import CoreConfig
from hacoord.raft.errors import NotLeaderError, ProposalDroppedError, RaftError
from hacoord.raft.log import RaftLog
from hacoord.raft.membership import decode_conf, encode_conf, next_conf
from hacoord.raft.progress import Progress, ProgressState
from hacoord.raft.quorum import VoteResult, committed_index, has_quorum, vote_result
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
    Ready,
    Role,
    Snapshot,
    SoftState,
)

TRANSFER_CONTEXT = b"transfer"
"""Context of a vote request sent because of a leadership transfer."""

_LEADER_EARLY_TYPES = frozenset(
    {MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT, MessageType.TIMEOUT_NOW}
)


@dataclass(slots=True)
class _ReadRound:
    """A heartbeat round confirming leadership for a batch of ReadIndex requests."""

    round_id: int
    index: int
    requests: list[tuple[NodeId, bytes]]
    acks: set[NodeId] = field(default_factory=set)


class RaftCore:
    """One member's Raft state machine. See the module docstring for the driver contract."""

    def __init__(
        self,
        config: CoreConfig,
        conf: ConfState,
        rng: random.Random,
        persisted: PersistedState | None = None,
    ) -> None:
        self.config = config
        self.id: NodeId = config.node_id
        self._rng = rng
        persisted = persisted or PersistedState()
        snap = persisted.snapshot
        if snap is not None:
            conf = snap.meta.conf
            self.log = RaftLog(snap.meta.index, snap.meta.term, persisted.entries)
        else:
            self.log = RaftLog(0, 0, persisted.entries)
        hs = persisted.hard_state
        if hs.commit > self.log.last_index():
            raise RaftError(
                f"node {self.id}: recovered commit index {hs.commit} is beyond the last "
                f"stored entry {self.log.last_index()}; storage lost acknowledged entries"
            )
        self.log.committed = max(hs.commit, self.log.snapshot_index)
        self.conf = conf
        self.conf_index = self.log.snapshot_index
        """Index of the CONFIG entry (or snapshot) that produced ``conf``."""
        self.conf_context = b""
        self.pending_conf_index = 0
        """Leader only: index of the latest CONFIG entry it proposed."""
        self.snapshot: Snapshot | None = snap
        self.term = hs.term
        self.vote: NodeId = hs.vote
        self.leader: NodeId = 0
        self.role = Role.FOLLOWER
        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = config.election_ticks
        self.lead_transferee: NodeId = 0
        self._msgs: list[Message] = []
        self._early_msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._reads_waiting_commit: list[tuple[NodeId, bytes]] = []
        self._reads_waiting_round: list[tuple[NodeId, bytes]] = []
        self._read_rounds: list[_ReadRound] = []
        self._next_round_id = 1
        self._pending_snapshot: Snapshot | None = None
        self._broadcast_entries = False
        self._broadcast_commit = False
        self._prev_hard_state = HardState(self.term, self.vote, self.log.committed)
        self._prev_soft_state = SoftState(0, Role.FOLLOWER, self.term)
        self._outstanding = False
        self.leader_changes = 0
        self._reset_randomized_timeout()

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        """Advance logical time by one tick."""
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self._promotable() and self.election_elapsed >= self.randomized_timeout:
                self.election_elapsed = 0
                self._hup(transfer=False)

    def campaign(self) -> None:
        """Start an election now (through PreVote when enabled)."""
        self._hup(transfer=False)

    def propose(self, data: bytes) -> int:
        """Append ``data`` as a new entry; returns its index. Raises when not leader."""
        return self.propose_batch([data])[0]

    def propose_batch(self, items: list[bytes]) -> list[int]:
        """Append several commands at once; returns their indexes (same term)."""
        self._check_can_propose()
        if not items:
            return []
        first = self.log.last_index() + 1
        entries = [Entry(self.term, first + i, EntryKind.NORMAL, d) for i, d in enumerate(items)]
        self._append_own(entries)
        return [e.index for e in entries]

    def propose_conf_change(
        self, voters: frozenset[NodeId], learners: frozenset[NodeId], context: bytes = b""
    ) -> int:
        """Propose a new membership; returns the index of its CONFIG entry.

        A change of voters goes through a joint configuration that the leader leaves
        by itself once it is applied. Only one change may be in flight: a second one
        is refused until the first is applied (and its joint phase left).
        """
        self._check_can_propose()
        if self.pending_conf_index > self.log.applied:
            raise ProposalDroppedError(
                f"configuration change at index {self.pending_conf_index} is still in progress"
            )
        target = next_conf(self.conf, voters, learners)
        return self._append_conf(target, context)

    def _append_conf(self, conf: ConfState, context: bytes) -> int:
        entry = Entry(
            self.term, self.log.last_index() + 1, EntryKind.CONFIG, encode_conf(conf, context)
        )
        self._append_own([entry])
        self.pending_conf_index = entry.index
        return entry.index

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; a ``ReadState`` with ``context`` follows in a Ready.

        On a follower the request is forwarded to the leader. A read can be lost when
        leadership changes; drivers time such reads out and retry.
        """
        if self.role is Role.LEADER:
            self._leader_read(self.id, context)
        elif self.leader:
            self._send(
                Message(MessageType.READ_INDEX, self.leader, self.id, self.term, context=context)
            )
        else:
            raise NotLeaderError(self.id, 0)

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to ``to``: catch it up, then tell it to campaign at once.

        The transfer is aborted if it has not finished within an election timeout.
        Proposals are refused while it is in progress.
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.id, self.leader)
        if to == self.id:
            return
        if to not in self.conf.voters:
            raise RaftError(f"cannot transfer leadership to {to}: not a voter of {self.conf}")
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self.election_elapsed = 0
        pr = self.progress[to]
        if pr.match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self._send_append(to)

    def step(self, m: Message) -> None:
        """Feed one message received from a peer."""
        if (
            m.type in (MessageType.VOTE, MessageType.PRE_VOTE)
            and not self.conf.is_voter(m.frm)
            and self._heard_from_leader_recently()
        ):
            # A removed member must not disrupt a live leader. Without a live leader we
            # answer anyway: our own configuration may be stale (a restarted node that
            # lost its log still has the bootstrap one), and refusing a legitimate
            # candidate that we do not know about can block every election for good.
            return
        if m.term > self.term:
            if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
                forced = m.context == TRANSFER_CONTEXT
                in_lease = self.config.check_quorum and self._heard_from_leader_recently()
                if in_lease and not forced:
                    return
            if m.type is MessageType.PRE_VOTE or (
                m.type is MessageType.PRE_VOTE_RESP and not m.reject
            ):
                pass
            elif m.type in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, 0)
        elif m.term < self.term:
            if m.type in (MessageType.APPEND, MessageType.HEARTBEAT) and (
                self.config.check_quorum or self.config.pre_vote
            ):
                # Tell a stale leader about the newer term so that it steps down.
                self._send(Message(MessageType.APPEND_RESP, m.frm, self.id, self.term))
            elif m.type is MessageType.PRE_VOTE:
                self._send(
                    Message(MessageType.PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True)
                )
            return

        if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _heard_from_leader_recently(self) -> bool:
        return self.leader != 0 and self.election_elapsed < self.config.election_ticks

    def report_unreachable(self, peer: NodeId) -> None:
        """The driver could not deliver to ``peer``: stop pipelining to it."""
        if self.role is Role.LEADER and peer in self.progress:
            pr = self.progress[peer]
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()

    def report_snapshot(self, peer: NodeId, failed: bool) -> None:
        """The driver finished sending a snapshot to ``peer`` (or failed to)."""
        if self.role is not Role.LEADER or peer not in self.progress:
            return
        pr = self.progress[peer]
        if pr.state is not ProgressState.SNAPSHOT:
            return
        if failed:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for the follower's response or the next heartbeat

    def compact(self, snapshot: Snapshot) -> None:
        """The driver stored a state-machine snapshot: drop the log it covers."""
        meta = snapshot.meta
        term = self.log.term(meta.index)
        if term is None:
            if meta.index <= self.log.snapshot_index:
                return
            raise RaftError(f"cannot compact to {meta.index}: entry not in the log")
        if term != meta.term:
            raise RaftError(f"snapshot term {meta.term} != log term {term} at {meta.index}")
        self.log.compact(meta.index, meta.term)
        self.snapshot = snapshot

    # ----------------------------------------------------------------- outputs

    def has_ready(self) -> bool:
        """Whether :meth:`ready` would return a non-empty batch."""
        if self._outstanding:
            return False
        return bool(
            self._msgs
            or self._early_msgs
            or self._read_states
            or self._broadcast_entries
            or self._broadcast_commit
            or self._reads_waiting_round
            or self._pending_snapshot is not None
            or self.log.stable < self.log.last_index()
            or min(self.log.committed, self.log.stable) > self.log.applied
            or self._hard_state() != self._prev_hard_state
            or self._soft_state() != self._prev_soft_state
        )

    def ready(self) -> Ready:
        """Collect the next batch of work for the driver."""
        if self._outstanding:
            raise RaftError("ready() called again before advance()")
        self._flush_broadcasts()
        rd = Ready()
        hs = self._hard_state()
        if hs != self._prev_hard_state:
            rd.hard_state = hs
            rd.must_sync = (
                hs.term != self._prev_hard_state.term or hs.vote != self._prev_hard_state.vote
            )
        ss = self._soft_state()
        if ss != self._prev_soft_state:
            rd.soft_state = ss
        if self._pending_snapshot is not None:
            rd.snapshot = self._pending_snapshot
            rd.must_sync = True
        rd.entries = self.log.unstable_entries()
        if rd.entries:
            rd.must_sync = True
        rd.committed_entries = self.log.applicable_entries()
        rd.messages, self._msgs = self._msgs, []
        rd.early_messages, self._early_msgs = self._early_msgs, []
        rd.read_states, self._read_states = self._read_states, []
        self._outstanding = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has persisted, sent and applied ``rd``."""
        if not self._outstanding:
            raise RaftError("advance() called without an outstanding ready()")
        self._outstanding = False
        if rd.hard_state is not None:
            self._prev_hard_state = rd.hard_state
        if rd.soft_state is not None:
            self._prev_soft_state = rd.soft_state
        if rd.snapshot is not None:
            if self._pending_snapshot is rd.snapshot:
                self._pending_snapshot = None
            self.snapshot = rd.snapshot
            self.log.applied_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            for entry in rd.committed_entries:
                if entry.kind is EntryKind.CONFIG and entry.index > self.conf_index:
                    conf, context = decode_conf(entry.data)
                    self._apply_conf(conf, context, entry.index)
            self.log.applied_to(rd.committed_entries[-1].index)
        if self.role is not Role.LEADER:
            return
        if (rd.entries or rd.committed_entries) and self._maybe_commit():
            self._broadcast_commit = True
        leave_joint = (
            self.conf.voters_outgoing
            and self.pending_conf_index <= self.log.applied
            and not self.lead_transferee
        )
        if leave_joint:
            # Leave the joint configuration as soon as it is applied.
            plain = ConfState(self.conf.voters, self.conf.learners)
            self._append_conf(plain, self.conf_context)

    def _apply_conf(self, conf: ConfState, context: bytes, index: int) -> None:
        self.conf = conf
        self.conf_index = index
        self.conf_context = context
        if self.role is not Role.LEADER:
            return
        last = self.log.last_index()
        members = conf.all_members()
        for member in members:
            if member not in self.progress:
                pr = Progress(last + 1, self.config.max_inflight)
                self.progress[member] = pr
        for member in list(self.progress):
            if member not in members and member != self.id:
                del self.progress[member]
        if not conf.is_voter(self.id) and not conf.voters_outgoing:
            # Removed (or made a learner): hand over to the most caught-up voter, step down.
            best = max(
                (pr.match, peer) for peer, pr in self.progress.items() if conf.is_voter(peer)
            )
            if best[0] == last:
                self._send_timeout_now(best[1])
            self._become_follower(self.term, 0)
            return
        self._broadcast_entries = True

    # ------------------------------------------------------------------ status

    def soft_state(self) -> SoftState:
        """Current leader, role and term."""
        return self._soft_state()

    def status(self) -> dict[str, Any]:
        """A plain-data summary for admin APIs and tests."""
        peers = {
            peer: {
                "match": pr.match,
                "next": pr.next,
                "state": pr.state.name.lower(),
                "recent_active": pr.recent_active,
                "lag": max(0, self.log.last_index() - pr.match),
            }
            for peer, pr in sorted(self.progress.items())
            if peer != self.id
        }
        return {
            "id": self.id,
            "role": self.role.name.lower(),
            "term": self.term,
            "vote": self.vote,
            "leader": self.leader,
            "commit_index": self.log.committed,
            "applied_index": self.log.applied,
            "last_index": self.log.last_index(),
            "snapshot_index": self.log.snapshot_index,
            "voters": sorted(self.conf.voters),
            "learners": sorted(self.conf.learners),
            "lead_transferee": self.lead_transferee,
            "peers": peers if self.role is Role.LEADER else {},
        }

    # ------------------------------------------------------------ role changes

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _soft_state(self) -> SoftState:
        return SoftState(self.leader, self.role, self.term)

    def _promotable(self) -> bool:
        return self.conf.is_voter(self.id)

    def _reset_randomized_timeout(self) -> None:
        t = self.config.election_ticks
        self.randomized_timeout = t + self._rng.randrange(t)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = 0
        self.leader = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.votes = {}
        self.lead_transferee = 0
        self.progress = {}
        self._reads_waiting_commit = []
        self._reads_waiting_round = []
        self._read_rounds = []
        self._broadcast_entries = False
        self._broadcast_commit = False

    def _set_leader(self, leader: NodeId) -> None:
        if leader != self.leader and leader:
            self.leader_changes += 1
        self.leader = leader

    def _become_follower(self, term: int, leader: NodeId) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self._set_leader(leader)

    def _become_pre_candidate(self) -> None:
        # Like etcd: a pre-candidate keeps its term and vote, but forgets the leader.
        self.votes = {}
        self.leader = 0
        self.role = Role.PRE_CANDIDATE
        self.election_elapsed = 0
        self._reset_randomized_timeout()

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self._set_leader(self.id)
        last = self.log.last_index()
        for member in self.conf.all_members():
            pr = Progress(last + 1, self.config.max_inflight)
            if member == self.id:
                pr.match = last
                pr.become_replicate()
                pr.recent_active = True
            self.progress[member] = pr
        # Like etcd: any CONFIG entry already in the log may still be pending.
        self.pending_conf_index = last
        self._append_own([Entry(self.term, last + 1, EntryKind.NOOP)])

    def _hup(self, transfer: bool) -> None:
        if self.role is Role.LEADER or not self._promotable():
            return
        if self.config.pre_vote and not transfer:
            self._campaign(pre_vote=True, transfer=False)
        else:
            self._campaign(pre_vote=False, transfer=transfer)

    def _campaign(self, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            vote_term = self.term + 1
            msg_type = MessageType.PRE_VOTE
        else:
            self._become_candidate()
            vote_term = self.term
            msg_type = MessageType.VOTE
        self.votes[self.id] = True
        result = vote_result(self.conf, self.votes)
        if result is VoteResult.WON:
            if pre_vote:
                self._campaign(pre_vote=False, transfer=False)
            else:
                self._become_leader()
            return
        context = TRANSFER_CONTEXT if transfer else b""
        for voter in sorted(self.conf.voters | self.conf.voters_outgoing):
            if voter == self.id:
                continue
            self._send(
                Message(
                    msg_type,
                    voter,
                    self.id,
                    vote_term,
                    log_term=self.log.last_term(),
                    index=self.log.last_index(),
                    context=context,
                )
            )

    # ------------------------------------------------------------- elections

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is MessageType.PRE_VOTE
        can_vote = (
            self.vote == m.frm
            or (self.vote == 0 and self.leader == 0)
            or (pre and m.term > self.term)
        )
        resp_type = MessageType.PRE_VOTE_RESP if pre else MessageType.VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # Answer with the request's term so that the candidate counts the grant.
            self._send(Message(resp_type, m.frm, self.id, m.term))
            if not pre:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp_type, m.frm, self.id, self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t is MessageType.APPEND:
            self._become_follower(m.term, m.frm)
            self._handle_append(m)
        elif t is MessageType.HEARTBEAT:
            self._become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t is MessageType.SNAPSHOT:
            self._become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif (t is MessageType.PRE_VOTE_RESP and self.role is Role.PRE_CANDIDATE) or (
            t is MessageType.VOTE_RESP and self.role is Role.CANDIDATE
        ):
            self.votes.setdefault(m.frm, not m.reject)
            result = vote_result(self.conf, self.votes)
            if result is VoteResult.WON:
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(pre_vote=False, transfer=False)
                else:
                    self._become_leader()
            elif result is VoteResult.LOST:
                self._become_follower(self.term, 0)
        elif t is MessageType.TIMEOUT_NOW:
            pass

    # -------------------------------------------------------------- follower

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MessageType.APPEND:
            self.election_elapsed = 0
            self._set_leader(m.frm)
            self._handle_append(m)
        elif t is MessageType.HEARTBEAT:
            self.election_elapsed = 0
            self._set_leader(m.frm)
            self._handle_heartbeat(m)
        elif t is MessageType.SNAPSHOT:
            self.election_elapsed = 0
            self._set_leader(m.frm)
            self._handle_snapshot(m)
        elif t is MessageType.TIMEOUT_NOW:
            if self._promotable():
                self._hup(transfer=True)
        elif t is MessageType.READ_INDEX_RESP and not m.reject:
            self._read_states.append(ReadState(m.index, m.context))

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(
                Message(
                    MessageType.APPEND_RESP, m.frm, self.id, self.term, index=self.log.committed
                )
            )
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MessageType.APPEND_RESP, m.frm, self.id, self.term, index=last_new))
            return
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.index, self.log.last_index()), m.log_term
        )
        self._send(
            Message(
                MessageType.APPEND_RESP,
                m.frm,
                self.id,
                self.term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        if m.commit <= self.log.last_index():
            self.log.commit_to(m.commit)
        self._send(
            Message(MessageType.HEARTBEAT_RESP, m.frm, self.id, self.term, context=m.context)
        )

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            raise RaftError(f"SNAPSHOT message from {m.frm} carries no snapshot")
        meta = snap.meta
        if meta.index <= self.log.committed:
            index = self.log.committed
        elif self.log.match_term(meta.index, meta.term):
            self.log.commit_to(meta.index)
            index = self.log.last_index()
        else:
            self.log.restore(snap)
            self.conf = meta.conf
            self.conf_index = meta.index
            self._pending_snapshot = snap
            index = meta.index
        self._send(Message(MessageType.APPEND_RESP, m.frm, self.id, self.term, index=index))

    # ---------------------------------------------------------------- leader

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                active = [p for p, pr in self.progress.items() if pr.recent_active]
                for peer, pr in self.progress.items():
                    pr.recent_active = peer == self.id
                if not has_quorum(self.conf, active):
                    self._become_follower(self.term, 0)
                    return
            if self.lead_transferee:
                self.lead_transferee = 0
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(b"")

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.id, self.leader)
        if self.lead_transferee:
            raise ProposalDroppedError(
                f"node {self.id} is transferring leadership to {self.lead_transferee}"
            )

    def _append_own(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        self._broadcast_entries = True

    def _self_match(self, node: NodeId) -> int:
        if node == self.id:
            return self.log.stable
        pr = self.progress.get(node)
        return pr.match if pr is not None else 0

    def _maybe_commit(self) -> bool:
        idx = committed_index(self.conf, self._self_match)
        if idx > self.log.committed and self.log.term(idx) == self.term:
            self.log.commit_to(idx)
            self._release_reads_waiting_commit()
            return True
        return False

    def _committed_in_current_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _flush_broadcasts(self) -> None:
        if self.role is not Role.LEADER:
            self._broadcast_entries = self._broadcast_commit = False
            return
        if self._reads_waiting_round:
            self._start_read_round()
        if self._broadcast_entries or self._broadcast_commit:
            send_if_empty = self._broadcast_commit
            self._broadcast_entries = self._broadcast_commit = False
            for peer in sorted(self.progress):
                if peer != self.id:
                    sent = self._send_append(peer, send_if_empty)
                    while sent:
                        sent = self._send_append(peer, send_if_empty=False)

    def _send_append(self, to: NodeId, send_if_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        entries = self.log.slice(pr.next, self.log.last_index() + 1, self.config.max_msg_bytes)
        if prev_term is None or entries is None:
            return self._send_snapshot(to, pr)
        if not entries and not send_if_empty:
            return False
        self._send(
            Message(
                MessageType.APPEND,
                to,
                self.id,
                self.term,
                log_term=prev_term,
                index=prev_index,
                entries=entries,
                commit=self.log.committed,
            )
        )
        if entries:
            pr.sent_entries(entries[-1].index)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        if not pr.recent_active or self.snapshot is None:
            return False
        snap = self.snapshot
        self._send(Message(MessageType.SNAPSHOT, to, self.id, self.term, snapshot=snap))
        pr.become_snapshot(snap.meta.index)
        return True

    def _send_timeout_now(self, to: NodeId) -> None:
        self._send(Message(MessageType.TIMEOUT_NOW, to, self.id, self.term))

    def _broadcast_heartbeat(self, context: bytes) -> None:
        for peer, pr in sorted(self.progress.items()):
            if peer == self.id:
                continue
            self._send(
                Message(
                    MessageType.HEARTBEAT,
                    peer,
                    self.id,
                    self.term,
                    commit=min(pr.match, self.log.committed),
                    context=context,
                )
            )

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is MessageType.APPEND_RESP:
            self._handle_append_resp(m)
        elif t is MessageType.HEARTBEAT_RESP:
            self._handle_heartbeat_resp(m)
        elif t is MessageType.READ_INDEX:
            self._leader_read(m.frm, m.context)

    def _handle_append_resp(self, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease(m.index, hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.free_inflight_through(m.index)
        if self._maybe_commit():
            self._broadcast_commit = True
        while self._send_append(m.frm, send_if_empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.frm)

    def _handle_heartbeat_resp(self, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and len(pr.inflight) >= pr.max_inflight:
            pr.inflight.popleft()
        if pr.match < self.log.last_index():
            self._send_append(m.frm)
        if m.context:
            self._ack_read_round(m.frm, int.from_bytes(m.context, "big"))

    # ------------------------------------------------------------- ReadIndex

    def _leader_read(self, requester: NodeId, context: bytes) -> None:
        if not self._committed_in_current_term():
            self._reads_waiting_commit.append((requester, context))
        else:
            self._reads_waiting_round.append((requester, context))

    def _release_reads_waiting_commit(self) -> None:
        if self._reads_waiting_commit and self._committed_in_current_term():
            self._reads_waiting_round.extend(self._reads_waiting_commit)
            self._reads_waiting_commit = []

    def _start_read_round(self) -> None:
        requests, self._reads_waiting_round = self._reads_waiting_round, []
        rnd = _ReadRound(self._next_round_id, self.log.committed, requests, {self.id})
        self._next_round_id += 1
        if has_quorum(self.conf, rnd.acks):
            self._complete_read_round(rnd)
            return
        self._read_rounds.append(rnd)
        self._broadcast_heartbeat(rnd.round_id.to_bytes(8, "big"))

    def _ack_read_round(self, peer: NodeId, round_id: int) -> None:
        confirmed = -1
        for i, rnd in enumerate(self._read_rounds):
            if rnd.round_id > round_id:
                break
            rnd.acks.add(peer)
            if has_quorum(self.conf, rnd.acks):
                confirmed = i
        if confirmed < 0:
            return
        done, self._read_rounds = (
            self._read_rounds[: confirmed + 1],
            self._read_rounds[confirmed + 1 :],
        )
        for rnd in done:
            self._complete_read_round(rnd)

    def _complete_read_round(self, rnd: _ReadRound) -> None:
        for requester, context in rnd.requests:
            if requester == self.id:
                self._read_states.append(ReadState(rnd.index, context))
            else:
                self._send(
                    Message(
                        MessageType.READ_INDEX_RESP,
                        requester,
                        self.id,
                        self.term,
                        index=rnd.index,
                        context=context,
                    )
                )

    # ------------------------------------------------------------- messaging

    def _send(self, m: Message) -> None:
        if self.role is Role.LEADER and m.type in _LEADER_EARLY_TYPES:
            self._early_msgs.append(m)
        else:
            self._msgs.append(m)


__all__ = ["TRANSFER_CONTEXT", "RaftCore"]
