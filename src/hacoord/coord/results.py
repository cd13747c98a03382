"""What the coordination state machine returns, and the wire form of each result.

Results are cached for exactly-once retries and travel to clients, so each has a
plain msgpack-friendly form (:func:`result_to_wire` / :func:`result_from_wire`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from hacoord.coord.errors import (
    CoordError,
    InvalidCommandError,
    LeaseNotFoundError,
    StaleSequenceError,
)


class KeyValue(NamedTuple):
    """One key as stored: its value and the revisions that describe its history.

    A named tuple: one is made on every write (at a third of a frozen dataclass's
    cost) and snapshots pack it as it is.
    """

    key: str
    value: bytes
    create_revision: int
    """Revision of the write that created the key (the fencing token of a holder key)."""
    mod_revision: int
    version: int
    """Number of writes since creation (1 after the first put)."""
    lease: int = 0


class EventType(enum.IntEnum):
    """The kind of change a watch :class:`Event` reports."""

    PUT = 1
    DELETE = 2


class Event(NamedTuple):
    """One change to one key, as seen by watches."""

    type: EventType
    kv: KeyValue
    """After a put, the new key; after a delete, the key with its deletion revision."""
    prev: KeyValue | None = None

    @property
    def revision(self) -> int:
        """The revision at which the change happened."""
        return self.kv.mod_revision


class PutResult(NamedTuple):
    """A put happened at ``revision``; ``prev`` is the value it replaced."""

    revision: int
    prev: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """``deleted`` keys were removed at ``revision`` (unchanged when 0)."""

    revision: int
    deleted: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class RangeResult:
    """Keys read at ``revision``; ``more`` when a limit cut the list short."""

    revision: int
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False


OpResult = PutResult | DeleteResult | RangeResult


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Which branch ran, and the result of each of its operations in order."""

    succeeded: bool
    revision: int
    results: tuple[OpResult, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseGrantResult:
    """A lease was granted; its id is the revision of the granting entry."""

    lease_id: int
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeResult:
    """A lease ended (revoked or expired) and its keys were deleted at ``revision``."""

    lease_id: int
    revision: int
    deleted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    """How many leases a checkpoint updated."""

    updated: int


Result = (
    PutResult
    | DeleteResult
    | RangeResult
    | TxnResult
    | LeaseGrantResult
    | LeaseRevokeResult
    | CheckpointResult
)


def kv_to_wire(kv: KeyValue) -> list[Any]:
    """Plain form of a :class:`KeyValue`."""
    return list(kv)


def kv_from_wire(items: Sequence[Any]) -> KeyValue:
    """Inverse of :func:`kv_to_wire` (a list or a tuple of the six fields)."""
    return KeyValue._make(items)


def _opt_kv(kv: KeyValue | None) -> list[Any] | None:
    return None if kv is None else kv_to_wire(kv)


def _opt_kv_back(items: Sequence[Any] | None) -> KeyValue | None:
    return None if items is None else kv_from_wire(items)


def event_to_wire(event: Event) -> list[Any]:
    """Plain form of an :class:`Event`."""
    return [int(event.type), kv_to_wire(event.kv), _opt_kv(event.prev)]


def event_from_wire(items: Sequence[Any]) -> Event:
    """Inverse of :func:`event_to_wire`."""
    return Event(EventType(items[0]), kv_from_wire(items[1]), _opt_kv_back(items[2]))


def result_to_wire(result: Result) -> list[Any]:
    """Plain, msgpack-friendly form of any result."""
    if isinstance(result, PutResult):
        return ["put", result.revision, _opt_kv(result.prev)]
    if isinstance(result, DeleteResult):
        return ["delete", result.revision, [kv_to_wire(kv) for kv in result.deleted]]
    if isinstance(result, RangeResult):
        return ["range", result.revision, [kv_to_wire(kv) for kv in result.kvs], result.more]
    if isinstance(result, TxnResult):
        return [
            "txn",
            result.succeeded,
            result.revision,
            [result_to_wire(r) for r in result.results],
        ]
    if isinstance(result, LeaseGrantResult):
        return ["grant", result.lease_id, result.ttl_ms]
    if isinstance(result, LeaseRevokeResult):
        return ["revoke", result.lease_id, result.revision, list(result.deleted)]
    return ["checkpoint", result.updated]


def result_from_wire(items: list[Any]) -> Result:
    """Inverse of :func:`result_to_wire`."""
    kind = items[0]
    if kind == "put":
        return PutResult(items[1], _opt_kv_back(items[2]))
    if kind == "delete":
        return DeleteResult(items[1], tuple(kv_from_wire(kv) for kv in items[2]))
    if kind == "range":
        return RangeResult(items[1], tuple(kv_from_wire(kv) for kv in items[2]), items[3])
    if kind == "txn":
        inner = tuple(result_from_wire(r) for r in items[3])
        return TxnResult(items[1], items[2], inner)  # type: ignore[arg-type]
    if kind == "grant":
        return LeaseGrantResult(items[1], items[2])
    if kind == "revoke":
        return LeaseRevokeResult(items[1], items[2], tuple(items[3]))
    if kind == "checkpoint":
        return CheckpointResult(items[1])
    raise ValueError(f"unknown result kind {kind!r}")


def error_to_wire(error: CoordError) -> list[Any]:
    """Plain form of a refusal, so a retried request gets the same refusal back."""
    if isinstance(error, LeaseNotFoundError):
        return ["lease_not_found", error.lease_id]
    if isinstance(error, StaleSequenceError):
        return ["stale_sequence", error.client_id, error.seq, error.last]
    return ["invalid", str(error)]


def error_from_wire(items: list[Any]) -> CoordError:
    """Inverse of :func:`error_to_wire`."""
    kind = items[0]
    if kind == "lease_not_found":
        return LeaseNotFoundError(items[1])
    if kind == "stale_sequence":
        return StaleSequenceError(items[1], items[2], items[3])
    return InvalidCommandError(items[1])
