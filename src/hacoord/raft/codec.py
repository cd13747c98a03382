"""Compact msgpack encoding of :class:`~hacoord.raft.types.Message` for the wire.

Every structure is a msgpack *array* (no field names on the wire):

* message: ``[type, to, frm, term, log_term, index, entries, commit, reject,
  reject_hint, context, snapshot]``
* entry: ``[term, index, kind, data]``
* snapshot: ``[index, term, voters, learners, voters_outgoing, data]`` or nil
* batch: an array of messages (several messages coalesced into one frame)

Decoding is the hot path. It unpacks the fields optimistically and validates them
with cheap exact-type checks; only when something is wrong does it walk the value
again, slowly, to build an error naming the offending field. Any malformed input
raises :class:`CodecError` and nothing else. Integers must be non-negative; byte
fields must be msgpack ``bin``.

Encoding assumes a well-typed message, as produced by the core.
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgpack

from hacoord.raft.errors import RaftError
from hacoord.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

MESSAGE_FIELDS: tuple[str, ...] = (
    "type",
    "to",
    "frm",
    "term",
    "log_term",
    "index",
    "entries",
    "commit",
    "reject",
    "reject_hint",
    "context",
    "snapshot",
)
"""Wire order of the fields of an encoded message."""

ENTRY_FIELDS: tuple[str, ...] = ("term", "index", "kind", "data")
"""Wire order of the fields of an encoded entry."""

SNAPSHOT_FIELDS: tuple[str, ...] = (
    "index",
    "term",
    "voters",
    "learners",
    "voters_outgoing",
    "data",
)
"""Wire order of the fields of an encoded snapshot."""

Buffer = bytes | bytearray | memoryview
"""What the decoders accept."""

_INT_MESSAGE_FIELDS = ("to", "frm", "term", "log_term", "index", "commit", "reject_hint")
_MESSAGE_TYPES: dict[int, MessageType] = {t.value: t for t in MessageType}
_ENTRY_KINDS: dict[int, EntryKind] = {k.value: k for k in EntryKind}


class CodecError(RaftError):
    """Bytes that are not a valid encoded message (or batch); the text names the problem."""


class _Malformed(Exception):
    """Internal signal from the fast path: something is wrong, diagnose it slowly."""


# ---------------------------------------------------------------------------
# Encoding


def _snapshot_array(s: Snapshot) -> list[Any]:
    meta = s.meta
    conf = meta.conf
    return [
        meta.index,
        meta.term,
        sorted(conf.voters),
        sorted(conf.learners),
        sorted(conf.voters_outgoing),
        s.data,
    ]


def _message_array(m: Message) -> list[Any]:
    snap = m.snapshot
    return [
        m.type,
        m.to,
        m.frm,
        m.term,
        m.log_term,
        m.index,
        [[e.term, e.index, e.kind, e.data] for e in m.entries],
        m.commit,
        m.reject,
        m.reject_hint,
        m.context,
        None if snap is None else _snapshot_array(snap),
    ]


def _pack(obj: Any, what: str) -> bytes:
    try:
        out: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode {what}: {exc}") from exc
    return out


def encode_message(m: Message) -> bytes:
    """Encode one message as a msgpack array."""
    return _pack(_message_array(m), "message")


def encode_batch(msgs: list[Message]) -> bytes:
    """Encode several messages as one msgpack array of message arrays."""
    return _pack([_message_array(m) for m in msgs], "message batch")


# ---------------------------------------------------------------------------
# Decoding: fast path


def _unpack(data: Buffer) -> Any:
    if not isinstance(data, Buffer):
        raise CodecError(f"encoded message must be bytes, got {_type_name(data)}")
    try:
        return msgpack.unpackb(data, raw=False)
    except msgpack.ExtraData as exc:
        raise CodecError(
            f"trailing garbage: {len(exc.extra)} byte(s) after a complete msgpack value"
        ) from None
    except Exception as exc:  # msgpack raises ValueError and friends on bad input
        problem = str(exc) or type(exc).__name__
        if "incomplete input" in problem:
            problem = "truncated (input ends inside a value)"
        raise CodecError(f"invalid msgpack ({len(data)} bytes): {problem}") from None


def _entries_with_init(raw: list[Any]) -> list[Entry]:
    """Validate and build entries through ``Entry.__init__`` (portable, slower)."""
    kinds = _ENTRY_KINDS
    out: list[Entry] = []
    append = out.append
    for e in raw:
        if type(e) is not list:
            raise _Malformed
        et, ei, ek, ed = e
        if not (
            type(et) is int
            and type(ei) is int
            and type(ek) is int
            and type(ed) is bytes
            and (et | ei) >= 0
        ):
            raise _Malformed
        append(Entry(et, ei, kinds[ek], ed))
    return out


def _entries_with_slots(raw: list[Any]) -> list[Entry]:
    """Like :func:`_entries_with_init`, filling the slots directly (about 2.5x faster).

    The frozen dataclass ``__init__`` assigns every field through
    ``object.__setattr__``; with 64 entries per append that dominates decoding. Only
    used when :func:`_slots_match` confirmed the layout at import time.
    """
    kinds = _ENTRY_KINDS
    new = Entry.__new__
    set_term = _ENTRY_SLOT_SETTERS[0]
    set_index = _ENTRY_SLOT_SETTERS[1]
    set_kind = _ENTRY_SLOT_SETTERS[2]
    set_data = _ENTRY_SLOT_SETTERS[3]
    out: list[Entry] = []
    append = out.append
    for e in raw:
        if type(e) is not list:
            raise _Malformed
        et, ei, ek, ed = e
        if not (
            type(et) is int
            and type(ei) is int
            and type(ek) is int
            and type(ed) is bytes
            and (et | ei) >= 0
        ):
            raise _Malformed
        entry = new(Entry)
        set_term(entry, et)
        set_index(entry, ei)
        set_kind(entry, kinds[ek])
        set_data(entry, ed)
        append(entry)
    return out


def _slots_match() -> bool:
    """Whether ``Entry`` is exactly a slotted dataclass of ENTRY_FIELDS with no hooks."""
    fields = getattr(Entry, "__dataclass_fields__", {})
    return (
        tuple(fields) == ENTRY_FIELDS
        and getattr(Entry, "__slots__", ()) == ENTRY_FIELDS
        and not hasattr(Entry, "__post_init__")
    )


_ENTRY_SLOT_SETTERS = (
    tuple(Entry.__dict__[name].__set__ for name in ENTRY_FIELDS) if _slots_match() else ()
)
_entries_from = _entries_with_slots if _ENTRY_SLOT_SETTERS else _entries_with_init


def _snapshot_from(a: Any) -> Snapshot:
    if type(a) is not list:
        raise _Malformed
    index, term, voters, learners, outgoing, data = a
    if not (
        type(index) is int
        and type(term) is int
        and (index | term) >= 0
        and type(data) is bytes
        and type(voters) is list
        and type(learners) is list
        and type(outgoing) is list
    ):
        raise _Malformed
    for ids in (voters, learners, outgoing):
        for n in ids:
            if type(n) is not int or n < 0:
                raise _Malformed
    conf = ConfState(frozenset(voters), frozenset(learners), frozenset(outgoing))
    return Snapshot(SnapshotMeta(index, term, conf), data)


def _message_from(a: Any) -> Message:
    """Build a message from an unpacked array; CodecError naming the problem if invalid."""
    try:
        if type(a) is not list:
            raise _Malformed
        (t, to, frm, term, log_term, index, raw_entries, commit, reject, hint, ctx, raw_snap) = a
        if not (
            type(to) is int
            and type(frm) is int
            and type(term) is int
            and type(log_term) is int
            and type(index) is int
            and type(commit) is int
            and type(hint) is int
            and (to | frm | term | log_term | index | commit | hint) >= 0
            and type(reject) is bool
            and type(ctx) is bytes
            and type(raw_entries) is list
            and type(t) is int
        ):
            raise _Malformed
        mtype = _MESSAGE_TYPES[t]
        entries = _entries_from(raw_entries) if raw_entries else []
        snap = None if raw_snap is None else _snapshot_from(raw_snap)
    except (_Malformed, TypeError, ValueError, KeyError):
        _diagnose_message(a)
        raise CodecError("malformed message") from None  # pragma: no cover - diagnose raises
    return Message(mtype, to, frm, term, log_term, index, entries, commit, reject, hint, ctx, snap)


def decode_message(data: Buffer) -> Message:
    """Decode bytes produced by :func:`encode_message`; raises :class:`CodecError` if invalid."""
    return _message_from(_unpack(data))


def decode_batch(data: Buffer) -> list[Message]:
    """Decode bytes produced by :func:`encode_batch`; raises :class:`CodecError` if invalid."""
    obj = _unpack(data)
    if type(obj) is not list:
        raise CodecError(f"message batch must be an array, got {_type_name(obj)}")
    out: list[Message] = []
    append = out.append
    try:
        for item in obj:
            append(_message_from(item))
    except CodecError as exc:
        raise CodecError(f"batch item {len(out)}: {exc}") from None
    return out


# ---------------------------------------------------------------------------
# Decoding: slow path, only used to explain what is wrong


def _type_name(v: object) -> str:
    if v is None:
        return "nil"
    return type(v).__name__


def _fail(msg: str) -> NoReturn:
    raise CodecError(msg) from None


def _check_uint(where: str, name: str, v: object) -> None:
    if type(v) is not int:
        _fail(f"{where} field {name!r} must be an int, got {_type_name(v)}")
    if v < 0:
        _fail(f"{where} field {name!r} must be non-negative, got {v}")


def _check_bytes(where: str, name: str, v: object) -> None:
    if type(v) is not bytes:
        _fail(f"{where} field {name!r} must be bytes, got {_type_name(v)}")


def _check_array(what: str, v: object, fields: tuple[str, ...]) -> list[Any]:
    if type(v) is not list:
        _fail(f"{what} must be an array, got {_type_name(v)}")
    if len(v) != len(fields):
        names = ", ".join(fields)
        _fail(f"{what} must be an array of {len(fields)} fields [{names}], got {len(v)}")
    return v


def _diagnose_entry(i: int, e: object) -> None:
    where = f"entry {i}"
    term, index, kind, data = _check_array(where, e, ENTRY_FIELDS)
    _check_uint(where, "term", term)
    _check_uint(where, "index", index)
    if type(kind) is not int:
        _fail(f"{where} field 'kind' must be an int, got {_type_name(kind)}")
    if kind not in _ENTRY_KINDS:
        _fail(f"{where} field 'kind' has unknown value {kind}")
    _check_bytes(where, "data", data)


def _diagnose_snapshot(s: object) -> None:
    where = "snapshot"
    index, term, voters, learners, outgoing, data = _check_array(where, s, SNAPSHOT_FIELDS)
    _check_uint(where, "index", index)
    _check_uint(where, "term", term)
    for name, ids in (("voters", voters), ("learners", learners), ("voters_outgoing", outgoing)):
        if type(ids) is not list:
            _fail(f"{where} field {name!r} must be a list, got {_type_name(ids)}")
        for n in ids:
            if type(n) is not int or n < 0:
                _fail(f"{where} field {name!r} must hold non-negative ints, got {n!r}")
    _check_bytes(where, "data", data)


def _diagnose_message(a: object) -> None:
    """Raise a CodecError describing the first problem found in ``a``."""
    where = "message"
    fields = dict(zip(MESSAGE_FIELDS, _check_array(where, a, MESSAGE_FIELDS), strict=True))
    t = fields["type"]
    if type(t) is not int:
        _fail(f"{where} field 'type' must be an int, got {_type_name(t)}")
    if t not in _MESSAGE_TYPES:
        _fail(f"unknown message type {t}")
    for name in _INT_MESSAGE_FIELDS:
        _check_uint(where, name, fields[name])
    entries = fields["entries"]
    if type(entries) is not list:
        _fail(f"{where} field 'entries' must be a list, got {_type_name(entries)}")
    for i, e in enumerate(entries):
        _diagnose_entry(i, e)
    if type(fields["reject"]) is not bool:
        _fail(f"{where} field 'reject' must be a bool, got {_type_name(fields['reject'])}")
    _check_bytes(where, "context", fields["context"])
    if fields["snapshot"] is not None:
        _diagnose_snapshot(fields["snapshot"])


__all__ = [
    "ENTRY_FIELDS",
    "MESSAGE_FIELDS",
    "SNAPSHOT_FIELDS",
    "CodecError",
    "decode_batch",
    "decode_message",
    "encode_batch",
    "encode_message",
]
