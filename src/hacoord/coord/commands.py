"""Commands of the coordination state machine and their wire form.

A command travels through the Raft log as a msgpack array ``[tag, field, ...]``.
:func:`decode_request` checks every field's type and names the first thing that is
wrong; size limits are checked by :func:`check_limits` on the proposing member only
(before the command enters the log), because a rule applied after commit must give
the same answer on every replica whatever its local configuration.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

from hacoord.coord.errors import InvalidCommandError


class Target(enum.IntEnum):
    """What a :class:`Compare` looks at."""

    VALUE = 1
    VERSION = 2
    CREATE = 3
    """The key's create revision (0 when the key does not exist)."""
    MOD = 4
    """The key's last modification revision (0 when the key does not exist)."""
    LEASE = 5
    """The id of the lease the key is attached to (0 when none)."""


class CompareOp(enum.IntEnum):
    """How a :class:`Compare` relates the key's field to the operand."""

    EQUAL = 1
    NOT_EQUAL = 2
    LESS = 3
    GREATER = 4


class Put(NamedTuple):
    """Set ``key`` to ``value``; with ``lease``, the key disappears with that lease.

    A named tuple, like :class:`Request`: every member builds one per applied write.
    """

    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``, or every key starting with ``key`` when ``prefix``."""

    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Range:
    """Read ``key`` (or every key under it when ``prefix``) inside a transaction."""

    key: str
    prefix: bool = False
    limit: int = 0
    """At most this many keys (0: all)."""


@dataclass(frozen=True, slots=True)
class Compare:
    """A condition of a :class:`Txn` on one key."""

    key: str
    target: Target
    op: CompareOp
    operand: bytes | int


TxnOp = Put | Delete | Range


@dataclass(frozen=True, slots=True)
class Txn:
    """If every compare holds, run ``success``, else ``failure``; atomically."""

    compares: tuple[Compare, ...] = ()
    success: tuple[TxnOp, ...] = ()
    failure: tuple[TxnOp, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Create a lease; its id is the revision of the entry that granted it."""

    ttl_ms: int


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    """End a lease now and delete the keys attached to it."""

    lease_id: int


@dataclass(frozen=True, slots=True)
class LeaseExpire:
    """Proposed by the leader when a lease ran out without a keep-alive."""

    lease_id: int


@dataclass(frozen=True, slots=True)
class LeaseCheckpoint:
    """The leader's view of each lease's remaining time, recorded periodically."""

    remaining_ms: tuple[tuple[int, int], ...]


Command = Put | Delete | Txn | LeaseGrant | LeaseRevoke | LeaseExpire | LeaseCheckpoint


class Request(NamedTuple):
    """A command with its sender's identity, for exactly-once application.

    ``client_id`` 0 means anonymous: no deduplication. Otherwise ``seq`` must grow
    with every new request of that client; a retry reuses the same ``seq``. A client
    may have several requests in flight: ``first_outstanding`` is the lowest ``seq``
    it still waits for, so the outcomes of earlier ones can be forgotten.
    """

    command: Command
    client_id: int = 0
    seq: int = 0
    first_outstanding: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits checked on the proposing member before a command enters the log."""

    max_key_bytes: int = 4096
    max_value_bytes: int = 1 << 20
    max_txn_ops: int = 256
    min_ttl_ms: int = 1000
    max_ttl_ms: int = 7 * 24 * 3600 * 1000


_PUT, _DELETE, _RANGE, _TXN = 1, 2, 3, 4
_GRANT, _REVOKE, _EXPIRE, _CHECKPOINT = 10, 11, 12, 13


def _op_wire(op: TxnOp) -> list[Any]:
    if isinstance(op, Put):
        return [_PUT, op.key, op.value, op.lease]
    if isinstance(op, Delete):
        return [_DELETE, op.key, op.prefix]
    return [_RANGE, op.key, op.prefix, op.limit]


def _command_wire(cmd: Command) -> list[Any]:
    if isinstance(cmd, Put | Delete):
        return _op_wire(cmd)
    if isinstance(cmd, Txn):
        return [
            _TXN,
            [[c.key, int(c.target), int(c.op), c.operand] for c in cmd.compares],
            [_op_wire(op) for op in cmd.success],
            [_op_wire(op) for op in cmd.failure],
        ]
    if isinstance(cmd, LeaseGrant):
        return [_GRANT, cmd.ttl_ms]
    if isinstance(cmd, LeaseRevoke):
        return [_REVOKE, cmd.lease_id]
    if isinstance(cmd, LeaseExpire):
        return [_EXPIRE, cmd.lease_id]
    return [_CHECKPOINT, [list(pair) for pair in cmd.remaining_ms]]


def encode_request(request: Request) -> bytes:
    """The log entry payload of ``request``."""
    out: bytes = msgpack.packb(
        [
            request.client_id,
            request.seq,
            request.first_outstanding,
            _command_wire(request.command),
        ]
    )
    return out


class _Fields:
    """Reads typed fields out of one wire array, naming the field when one is wrong."""

    def __init__(self, what: str, items: Any, count: int) -> None:
        if not isinstance(items, list) or len(items) != count:
            got = f"{len(items)} fields" if isinstance(items, list) else type(items).__name__
            raise InvalidCommandError(f"{what}: expected {count} fields, got {got}")
        self.what = what
        self.items = items

    def _bad(self, i: int, name: str, expected: str) -> InvalidCommandError:
        got = type(self.items[i]).__name__
        return InvalidCommandError(f"{self.what}: {name} must be {expected}, got {got}")

    def text(self, i: int, name: str) -> str:
        v = self.items[i]
        if not isinstance(v, str):
            raise self._bad(i, name, "a string")
        return v

    def blob(self, i: int, name: str) -> bytes:
        v = self.items[i]
        if not isinstance(v, bytes):
            raise self._bad(i, name, "bytes")
        return v

    def integer(self, i: int, name: str, minimum: int = 0) -> int:
        v = self.items[i]
        if not isinstance(v, int) or isinstance(v, bool):
            raise self._bad(i, name, "an integer")
        if v < minimum:
            raise InvalidCommandError(f"{self.what}: {name} must be >= {minimum}, got {v}")
        return v

    def flag(self, i: int, name: str) -> bool:
        v = self.items[i]
        if not isinstance(v, bool):
            raise self._bad(i, name, "a boolean")
        return v

    def array(self, i: int, name: str) -> list[Any]:
        v = self.items[i]
        if not isinstance(v, list):
            raise self._bad(i, name, "a list")
        return v


def _tag(what: str, items: Any) -> int:
    if not isinstance(items, list) or not items or not isinstance(items[0], int):
        raise InvalidCommandError(f"{what}: expected an array starting with a command tag")
    tag: int = items[0]
    return tag


def _decode_op(items: Any, what: str) -> TxnOp:
    tag = _tag(what, items)
    if tag == _PUT:
        f = _Fields(f"{what} (put)", items, 4)
        return Put(f.text(1, "key"), f.blob(2, "value"), f.integer(3, "lease"))
    if tag == _DELETE:
        f = _Fields(f"{what} (delete)", items, 3)
        return Delete(f.text(1, "key"), f.flag(2, "prefix"))
    if tag == _RANGE:
        f = _Fields(f"{what} (range)", items, 4)
        return Range(f.text(1, "key"), f.flag(2, "prefix"), f.integer(3, "limit"))
    raise InvalidCommandError(f"{what}: unknown operation tag {tag}")


def _decode_compare(items: Any, what: str) -> Compare:
    f = _Fields(what, items, 4)
    key = f.text(0, "key")
    try:
        target = Target(f.integer(1, "target", 1))
    except ValueError:
        raise InvalidCommandError(f"{what}: unknown compare target {items[1]}") from None
    try:
        op = CompareOp(f.integer(2, "op", 1))
    except ValueError:
        raise InvalidCommandError(f"{what}: unknown compare operator {items[2]}") from None
    operand: bytes | int
    operand = f.blob(3, "operand") if target is Target.VALUE else f.integer(3, "operand")
    return Compare(key, target, op, operand)


def _decode_command(items: Any) -> Command:
    tag = _tag("command", items)
    if tag in (_PUT, _DELETE):
        op = _decode_op(items, "command")
        assert not isinstance(op, Range)
        return op
    if tag == _TXN:
        f = _Fields("txn", items, 4)
        compares = tuple(
            _decode_compare(c, f"txn compare {i}") for i, c in enumerate(f.array(1, "compares"))
        )
        success = tuple(
            _decode_op(o, f"txn success op {i}") for i, o in enumerate(f.array(2, "success"))
        )
        failure = tuple(
            _decode_op(o, f"txn failure op {i}") for i, o in enumerate(f.array(3, "failure"))
        )
        return Txn(compares, success, failure)
    if tag == _GRANT:
        return LeaseGrant(_Fields("lease grant", items, 2).integer(1, "ttl_ms", 1))
    if tag == _REVOKE:
        return LeaseRevoke(_Fields("lease revoke", items, 2).integer(1, "lease_id", 1))
    if tag == _EXPIRE:
        return LeaseExpire(_Fields("lease expire", items, 2).integer(1, "lease_id", 1))
    if tag == _CHECKPOINT:
        pairs = []
        for i, pair in enumerate(_Fields("lease checkpoint", items, 2).array(1, "remaining")):
            p = _Fields(f"lease checkpoint entry {i}", pair, 2)
            pairs.append((p.integer(0, "lease_id", 1), p.integer(1, "remaining_ms")))
        return LeaseCheckpoint(tuple(pairs))
    raise InvalidCommandError(f"command: unknown command tag {tag}")


def _fast_put_request(items: Any) -> Request | None:
    """The request if ``items`` is a well-formed put (the common case), else None."""
    if type(items) is not list or len(items) != 4:
        return None
    client_id, seq, first_outstanding, cmd = items
    if (
        type(client_id) is int
        and type(seq) is int
        and type(first_outstanding) is int
        and 0 <= first_outstanding <= seq
        and client_id >= 0
        and (seq or not client_id)
        and type(cmd) is list
        and len(cmd) == 4
        and type(cmd[0]) is int
        and cmd[0] == _PUT
    ):
        _, key, value, lease = cmd
        if type(key) is str and type(value) is bytes and type(lease) is int and lease >= 0:
            return Request(Put(key, value, lease), client_id, seq, first_outstanding)
    return None


def decode_request(data: bytes) -> Request:
    """Parse a log entry payload; raises :class:`InvalidCommandError` naming the problem."""
    try:
        items = msgpack.unpackb(data)
    except Exception as exc:
        raise InvalidCommandError(f"request is not valid msgpack: {exc}") from None
    fast = _fast_put_request(items)
    if fast is not None:
        return fast
    f = _Fields("request", items, 4)
    client_id = f.integer(0, "client_id")
    seq = f.integer(1, "seq")
    first_outstanding = f.integer(2, "first_outstanding")
    if client_id and not seq:
        raise InvalidCommandError("request: seq must be >= 1 when client_id is set")
    if first_outstanding > seq:
        raise InvalidCommandError(
            f"request: first_outstanding ({first_outstanding}) must not exceed seq ({seq})"
        )
    return Request(_decode_command(items[3]), client_id, seq, first_outstanding)


def _check_key(key: str, limits: Limits, what: str) -> None:
    size = len(key.encode())
    if size > limits.max_key_bytes:
        raise InvalidCommandError(
            f"{what}: key is {size} bytes, over the limit of {limits.max_key_bytes}"
        )
    if not key:
        raise InvalidCommandError(f"{what}: key must not be empty")


def _check_op(op: TxnOp, limits: Limits, what: str) -> None:
    if isinstance(op, Range | Delete) and op.prefix:
        if len(op.key.encode()) > limits.max_key_bytes:
            _check_key(op.key, limits, what)
        return
    _check_key(op.key, limits, what)
    if isinstance(op, Put) and len(op.value) > limits.max_value_bytes:
        raise InvalidCommandError(
            f"{what}: value of {op.key!r} is {len(op.value)} bytes, over the limit of "
            f"{limits.max_value_bytes}"
        )


def check_limits(cmd: Command, limits: Limits) -> None:
    """Refuse a command over ``limits``; run on the proposing member only."""
    if isinstance(cmd, Put | Delete):
        _check_op(cmd, limits, "put" if isinstance(cmd, Put) else "delete")
    elif isinstance(cmd, Txn):
        ops = len(cmd.compares) + len(cmd.success) + len(cmd.failure)
        if ops > limits.max_txn_ops:
            raise InvalidCommandError(
                f"txn: {ops} compares and operations, over the limit of {limits.max_txn_ops}"
            )
        for c in cmd.compares:
            _check_key(c.key, limits, "txn compare")
        for op in (*cmd.success, *cmd.failure):
            _check_op(op, limits, "txn")
    elif isinstance(cmd, LeaseGrant) and not limits.min_ttl_ms <= cmd.ttl_ms <= limits.max_ttl_ms:
        raise InvalidCommandError(
            f"lease grant: ttl_ms {cmd.ttl_ms} is outside "
            f"[{limits.min_ttl_ms}, {limits.max_ttl_ms}]"
        )
