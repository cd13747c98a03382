"""Plain data types shared by the Raft core, its drivers, storage and transport.

Nothing here performs IO. Every type is a small slotted dataclass so that the
core stays cheap per entry and the types can be encoded as msgpack arrays
(see :mod:`hacoord.raft.codec`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

NodeId = int
"""Members are identified by small positive integers, unique within a cluster."""


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0
    """Opaque application command for the state machine."""
    NOOP = 1
    """Empty entry a new leader appends to commit entries of earlier terms."""
    CONFIG = 2
    """A membership configuration (encoded :class:`ConfState`)."""


@dataclass(slots=True, frozen=True)
class Entry:
    """One log entry. ``index`` starts at 1; ``term`` is the leader's term when appended."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Approximate encoded size in bytes, used to bound message batches."""
        return len(self.data) + 16


@dataclass(slots=True, frozen=True)
class HardState:
    """State that must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: NodeId = 0
    """Who this node voted for in ``term`` (0 = nobody)."""
    commit: int = 0


@dataclass(slots=True, frozen=True)
class ConfState:
    """The membership configuration.

    ``voters_outgoing`` is non-empty only during a joint-consensus transition, when
    both the incoming (``voters``) and outgoing majorities are required.
    """

    voters: frozenset[NodeId]
    learners: frozenset[NodeId] = frozenset()
    voters_outgoing: frozenset[NodeId] = frozenset()

    def all_members(self) -> frozenset[NodeId]:
        """Every node that receives the log: voters (both sides) and learners."""
        return self.voters | self.voters_outgoing | self.learners

    def is_voter(self, node: NodeId) -> bool:
        """Whether ``node`` votes in either half of the configuration."""
        return node in self.voters or node in self.voters_outgoing


@dataclass(slots=True, frozen=True)
class SnapshotMeta:
    """Identifies a snapshot: the last log position it covers and the config at that point."""

    index: int
    term: int
    conf: ConfState


@dataclass(slots=True, frozen=True)
class Snapshot:
    """A state-machine snapshot together with its metadata."""

    meta: SnapshotMeta
    data: bytes | memoryview = b""
    """The serialized state: bytes, or a read-only view of the snapshot file that holds
    it (a member keeps its stored snapshot on disk, not in memory)."""

    def data_bytes(self) -> bytes:
        """The data as bytes (read from the file when it is a view of one)."""
        return self.data if isinstance(self.data, bytes) else bytes(self.data)


class MessageType(enum.IntEnum):
    """Kinds of message exchanged between members."""

    APPEND = 1
    APPEND_RESP = 2
    HEARTBEAT = 3
    HEARTBEAT_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    PRE_VOTE = 7
    PRE_VOTE_RESP = 8
    SNAPSHOT = 9
    TIMEOUT_NOW = 10
    READ_INDEX = 11
    READ_INDEX_RESP = 12


@dataclass(slots=True)
class Message:
    """A message between two members.

    Field use per type:

    * ``APPEND``: ``index``/``log_term`` identify the entry preceding ``entries``;
      ``commit`` is the leader's commit index.
    * ``APPEND_RESP``: ``index`` is the last index now matching the leader (on
      success) or the rejected ``index`` (on reject, with ``reject_hint`` and
      ``log_term`` describing the conflict for fast back-off).
    * ``HEARTBEAT``/``HEARTBEAT_RESP``: ``context`` carries a ReadIndex round id.
    * ``VOTE``/``PRE_VOTE``: ``index``/``log_term`` describe the candidate's last
      entry; ``context == b"transfer"`` marks a leadership-transfer election.
    * ``SNAPSHOT``: ``snapshot`` carries the whole snapshot.
    * ``READ_INDEX``/``READ_INDEX_RESP``: forwarded follower read, ``index`` is the
      read index in the response, ``reject`` set when the leader could not serve.
    """

    type: MessageType
    to: NodeId
    frm: NodeId
    term: int
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None


@dataclass(slots=True, frozen=True)
class ReadState:
    """A confirmed ReadIndex: reads for ``context`` may be served once applied >= index."""

    index: int
    context: bytes


class Role(enum.IntEnum):
    """The role a node plays in its current term."""

    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state a driver may want to display or react to."""

    leader: NodeId
    role: Role
    term: int


@dataclass(slots=True)
class Ready:
    """Everything the driver must do after feeding inputs to the core.

    Order of handling:

    1. send ``early_messages`` (they do not depend on this batch being durable);
    2. persist ``snapshot`` (if any), ``entries`` and ``hard_state`` (if not None),
       with one sync for the batch;
    3. send ``messages``;
    4. install ``snapshot`` into the state machine, then apply ``committed_entries``
       in order, and serve ``read_states`` once applied. ``committed_entries`` are
       durable already (the core hands out only entries persisted by earlier
       batches), so without a ``snapshot`` they may be applied while step 2 runs;
    5. call :meth:`hacoord.raft.core.RaftCore.advance` with this object.
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    early_messages: list[Message] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    soft_state: SoftState | None = None
    must_sync: bool = False
    """True when ``entries`` or the term/vote changed (commit-only changes need no fsync)."""

    def is_empty(self) -> bool:
        """True when the driver has nothing to do for this batch."""
        return not (
            self.hard_state
            or self.entries
            or self.snapshot
            or self.early_messages
            or self.messages
            or self.committed_entries
            or self.read_states
            or self.soft_state
        )


@dataclass(slots=True)
class PersistedState:
    """What a node recovers from its storage on restart."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    """Entries after the snapshot, contiguous, in index order."""
