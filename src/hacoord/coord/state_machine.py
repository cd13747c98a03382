"""The coordination state machine: KV with revisions, transactions, leases, sessions.

It applies committed log entries (see :mod:`hacoord.coord.commands`) and answers
reads. Revisions are the log indexes of the entries that changed a key, so they grow
strictly across leader changes and restarts: the create revision of a holder key is
its fencing token. Applying is deterministic; a refused command raises a
:class:`~hacoord.coord.errors.CoordError` and changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack

from hacoord.coord.commands import (
    Command,
    Compare,
    CompareOp,
    Delete,
    LeaseCheckpoint,
    LeaseExpire,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Request,
    Target,
    Txn,
    TxnOp,
    decode_request,
    encode_request,
)
from hacoord.coord.errors import CoordError, InvalidCommandError
from hacoord.coord.leases import Lease, LeaseTable
from hacoord.coord.results import (
    CheckpointResult,
    DeleteResult,
    Event,
    KeyValue,
    LeaseGrantResult,
    LeaseRevokeResult,
    OpResult,
    PutResult,
    RangeResult,
    Result,
    TxnResult,
    error_from_wire,
    error_to_wire,
    event_from_wire,
    result_from_wire,
    result_to_wire,
)
from hacoord.coord.sessions import DEFAULT_MAX_CLIENTS, ClientRecord, ClientTable
from hacoord.coord.store import DEFAULT_HISTORY, KeyStore
from hacoord.raft.types import Entry, EntryKind

SNAPSHOT_FORMAT = 1


def compare_holds(kv: KeyValue | None, c: Compare) -> bool:
    """Whether ``c`` holds for ``kv`` (``None``: the key does not exist)."""
    actual: bytes | int
    if c.target is Target.VALUE:
        if kv is None:
            return c.op is CompareOp.NOT_EQUAL
        actual = kv.value
    elif c.target is Target.VERSION:
        actual = kv.version if kv else 0
    elif c.target is Target.CREATE:
        actual = kv.create_revision if kv else 0
    elif c.target is Target.MOD:
        actual = kv.mod_revision if kv else 0
    else:
        actual = kv.lease if kv else 0
    if type(actual) is not type(c.operand):
        raise InvalidCommandError(
            f"txn compare on {c.key!r}: {c.target.name.lower()} needs "
            f"{type(actual).__name__} operand, got {type(c.operand).__name__}"
        )
    if c.op is CompareOp.EQUAL:
        return actual == c.operand
    if c.op is CompareOp.NOT_EQUAL:
        return actual != c.operand
    if c.op is CompareOp.LESS:
        return actual < c.operand  # type: ignore[operator]
    return actual > c.operand  # type: ignore[operator]


class CoordStateMachine:
    """Applies coordination commands; implements the node's ``StateMachine`` protocol."""

    def __init__(
        self, history: int = DEFAULT_HISTORY, max_clients: int = DEFAULT_MAX_CLIENTS
    ) -> None:
        self.store = KeyStore(history)
        self.leases = LeaseTable()
        self.clients = ClientTable(max_clients)
        self.applied = 0

    # ---------------------------------------------------------------- applying

    def apply(self, entry: Entry) -> Result:
        """Apply one committed entry; returns its result or raises a ``CoordError``."""
        self.applied = entry.index
        request = decode_request(entry.data)
        if request.client_id:
            remembered = self.clients.lookup(request.client_id, request.seq)
            if remembered is not None:
                return self._replay(remembered)
        try:
            result = self._execute(request.command, entry.index)
        except CoordError as exc:
            self._remember(request, ["error", error_to_wire(exc)])
            raise
        if request.client_id:
            self._remember(request, ["ok", result_to_wire(result)])
        return result

    def apply_request(self, request: Request, index: int) -> Result:
        """Apply an already decoded request as if it were the entry at ``index``.

        For tests and in-process tools; the log path goes through :meth:`apply`.
        """
        return self.apply(Entry(0, index, EntryKind.NORMAL, encode_request(request)))

    def _remember(self, request: Request, outcome: list[Any]) -> None:
        if request.client_id:
            self.clients.record(request.client_id, request.seq, request.first_outstanding, outcome)

    @staticmethod
    def _replay(outcome: list[Any]) -> Result:
        if outcome[0] == "error":
            raise error_from_wire(outcome[1])
        return result_from_wire(outcome[1])

    def _execute(self, cmd: Command, index: int) -> Result:
        if isinstance(cmd, Put | Delete):
            self._check_leases((cmd,))
            result = self._run_op(cmd, index)
            assert not isinstance(result, RangeResult)
            return result
        if isinstance(cmd, Txn):
            return self._txn(cmd, index)
        if isinstance(cmd, LeaseGrant):
            self.leases.grant(index, cmd.ttl_ms)
            return LeaseGrantResult(index, cmd.ttl_ms)
        if isinstance(cmd, LeaseRevoke | LeaseExpire):
            return self._end_lease(cmd.lease_id, index)
        return self._checkpoint(cmd)

    def _check_leases(self, ops: tuple[TxnOp, ...]) -> None:
        for op in ops:
            if isinstance(op, Put) and op.lease:
                self.leases.get(op.lease)

    def _run_op(self, op: TxnOp, index: int) -> OpResult:
        if isinstance(op, Put):
            prev = self.store.put(op.key, op.value, op.lease, index)
            self.leases.attach(op.key, prev.lease if prev else 0, op.lease)
            return PutResult(index, prev)
        if isinstance(op, Delete):
            gone = self.store.delete(op.key, op.prefix, index)
            for kv in gone:
                self.leases.detach(kv.key, kv.lease)
            return DeleteResult(self.store.revision, tuple(gone))
        kvs, more = self.store.range(op.key, op.prefix, op.limit)
        return RangeResult(self.store.revision, tuple(kvs), more)

    def _txn(self, txn: Txn, index: int) -> TxnResult:
        succeeded = all(compare_holds(self.store.get(c.key), c) for c in txn.compares)
        ops = txn.success if succeeded else txn.failure
        self._check_leases(ops)  # all-or-nothing: refuse before the first change
        results = tuple(self._run_op(op, index) for op in ops)
        return TxnResult(succeeded, self.store.revision, results)

    def _end_lease(self, lease_id: int, index: int) -> LeaseRevokeResult:
        lease = self.leases.remove(lease_id)
        deleted = []
        for key in sorted(lease.keys):
            kv = self.store.get(key)
            if kv is not None and kv.lease == lease_id:
                self.store.delete(key, False, index)
                deleted.append(key)
        return LeaseRevokeResult(lease_id, self.store.revision, tuple(deleted))

    def _checkpoint(self, cmd: LeaseCheckpoint) -> CheckpointResult:
        updated = 0
        for lease_id, remaining in cmd.remaining_ms:
            lease = self.leases.leases.get(lease_id)
            if lease is not None:
                lease.remaining_ms = min(remaining, lease.ttl_ms)
                updated += 1
        return CheckpointResult(updated)

    # ------------------------------------------------------------------ reads

    @property
    def revision(self) -> int:
        """Revision of the last change to any key."""
        return self.store.revision

    def get(self, key: str) -> KeyValue | None:
        """The key, or ``None``."""
        return self.store.get(key)

    def range(self, key: str, prefix: bool = False, limit: int = 0) -> RangeResult:
        """Keys equal to ``key`` or (with ``prefix``) under it, in key order."""
        kvs, more = self.store.range(key, prefix, limit)
        return RangeResult(self.store.revision, tuple(kvs), more)

    def events_since(self, revision: int, key: str = "", prefix: bool = True) -> list[Event]:
        """Changes at ``revision`` or later; raises ``CompactedError`` when too old."""
        return self.store.events_since(revision, key, prefix)

    def lease(self, lease_id: int) -> Lease:
        """A live lease, or ``LeaseNotFoundError``."""
        return self.leases.get(lease_id)

    # -------------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        """Everything, including recent history and client sessions."""
        return bytes(self.capture()())

    def capture(self) -> Callable[[], bytes | memoryview]:
        """A view of the state now and a function serializing it (see
        :class:`~hacoord.raft.node.SnapshotsInBackground`)."""
        return functools.partial(_pack_alone, self._view())

    def _view(self) -> SnapshotView:
        """What a snapshot holds, as of now: keys and events are immutable, so only the
        containers that go on changing are copied."""
        store = self.store
        return SnapshotView(
            [SNAPSHOT_FORMAT, self.applied, store.revision, store.compacted],
            list(store.keys.values()),
            list(store.events),
            [
                [lease.id, lease.ttl_ms, lease.remaining_ms, list(lease.keys)]
                for lease in self.leases.leases.values()
            ],
            [
                [cid, rec.floor, list(rec.outcomes.items())]
                for cid, rec in self.clients.clients.items()
            ],
        )

    def restore(self, data: bytes) -> None:
        """Replace all state with a snapshot's (empty bytes: the initial state)."""
        if not data:
            self.store.restore([], [], 0, 0)
            self.leases = LeaseTable()
            self.clients.clients.clear()
            self.applied = 0
            return
        self.restore_items(msgpack.unpackb(data, use_list=False))

    def restore_items(self, items: Any) -> None:
        """Replace all state with an unpacked snapshot (msgpack arrays as tuples)."""
        if not isinstance(items, tuple) or not items or items[0] != SNAPSHOT_FORMAT:
            found = items[0] if isinstance(items, tuple) and items else items
            raise ValueError(
                f"coordination snapshot format {found!r} is not {SNAPSHOT_FORMAT}; "
                "this snapshot was written by an incompatible hacoord version"
            )
        _, applied, revision, compacted, keys, events, leases, clients = items
        self.store.restore(
            list(map(KeyValue._make, keys)),
            [event_from_wire(e) for e in events],
            revision,
            compacted,
        )
        self.leases = LeaseTable()
        for lease_id, ttl, remaining, lease_keys in leases:
            lease = self.leases.grant(lease_id, ttl)
            lease.remaining_ms = remaining
            lease.keys = set(lease_keys)
        self.clients.clients.clear()
        for cid, floor, outcomes in clients:
            self.clients.clients[cid] = ClientRecord(floor, {seq: list(o) for seq, o in outcomes})
        self.applied = applied


class SnapshotView(NamedTuple):
    """The parts of a coordination snapshot, captured; see :meth:`CoordStateMachine.capture`."""

    header: list[Any]
    keys: list[KeyValue]
    events: list[Event]
    leases: list[list[Any]]
    clients: list[list[Any]]


def pack_view(packer: msgpack.Packer, view: SnapshotView) -> None:
    """Pack a captured view as one msgpack array (what ``packb`` of the whole list gives).

    Keys are packed one per call, so that a thread running this lets the event loop run
    in between instead of holding the GIL throughout.
    """
    packer.pack_array_header(len(view.header) + 4)
    for item in view.header:
        packer.pack(item)
    packer.pack_array_header(len(view.keys))
    pack = packer.pack
    for kv in view.keys:
        pack(kv)
    packer.pack(view.events)
    for lease in view.leases:
        lease[3].sort()
    packer.pack(view.leases)
    packer.pack(view.clients)


def _pack_alone(view: SnapshotView) -> memoryview:
    packer = msgpack.Packer(autoreset=False)
    pack_view(packer, view)
    out: memoryview = packer.getbuffer()  # no copy (see SnapshotsInBackground.capture)
    return out
