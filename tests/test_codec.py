"""Wire codec: round trips and rejection of malformed input with helpful errors."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacoord.raft.codec import (
    MESSAGE_FIELDS,
    CodecError,
    decode_batch,
    decode_message,
    encode_batch,
    encode_message,
)
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

U64 = 2**64 - 1
uints = st.integers(min_value=0, max_value=U64)
small_uints = st.integers(min_value=0, max_value=1000)
node_ids = st.integers(min_value=1, max_value=2**31)
node_sets = st.frozensets(node_ids, max_size=5)

entries = st.builds(
    Entry,
    term=uints,
    index=uints,
    kind=st.sampled_from(EntryKind),
    data=st.binary(max_size=64),
)
snapshots = st.builds(
    Snapshot,
    meta=st.builds(
        SnapshotMeta,
        index=uints,
        term=uints,
        conf=st.builds(ConfState, voters=node_sets, learners=node_sets, voters_outgoing=node_sets),
    ),
    data=st.binary(max_size=128),
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=node_ids,
    frm=node_ids,
    term=uints,
    log_term=uints,
    index=uints,
    entries=st.lists(entries, max_size=5),
    commit=uints,
    reject=st.booleans(),
    reject_hint=uints,
    context=st.binary(max_size=16),
    snapshot=st.none() | snapshots,
)


def sample_message(t: MessageType, *, with_entries: bool, with_snapshot: bool) -> Message:
    ents = (
        [
            Entry(3, 11, EntryKind.NORMAL, b"set x=1"),
            Entry(3, 12, EntryKind.NOOP),
            Entry(4, 13, EntryKind.CONFIG, b"\x00\xff"),
        ]
        if with_entries
        else []
    )
    snap = (
        Snapshot(
            SnapshotMeta(10, 3, ConfState(frozenset({1, 2, 3}), frozenset({4}), frozenset({5}))),
            b"state",
        )
        if with_snapshot
        else None
    )
    return Message(
        t,
        to=2,
        frm=1,
        term=4,
        log_term=3,
        index=10,
        entries=ents,
        commit=9,
        reject=True,
        reject_hint=7,
        context=b"ctx",
        snapshot=snap,
    )


def valid_array(**overrides: Any) -> list[Any]:
    """An unpacked valid APPEND message, with some fields replaced."""
    fields: dict[str, Any] = {
        "type": int(MessageType.APPEND),
        "to": 2,
        "frm": 1,
        "term": 5,
        "log_term": 4,
        "index": 10,
        "entries": [[5, 11, 0, b"x"]],
        "commit": 9,
        "reject": False,
        "reject_hint": 0,
        "context": b"",
        "snapshot": None,
    }
    fields.update(overrides)
    return [fields[name] for name in MESSAGE_FIELDS]


def codec_error(data: bytes) -> str:
    with pytest.raises(CodecError) as info:
        decode_message(data)
    return str(info.value)


# -- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("t", list(MessageType), ids=lambda t: t.name)
@pytest.mark.parametrize("with_entries", [False, True], ids=["no-entries", "entries"])
@pytest.mark.parametrize("with_snapshot", [False, True], ids=["no-snapshot", "snapshot"])
def test_round_trip_every_type(t: MessageType, with_entries: bool, with_snapshot: bool) -> None:
    m = sample_message(t, with_entries=with_entries, with_snapshot=with_snapshot)
    out = decode_message(encode_message(m))
    assert out == m
    assert type(out.type) is MessageType
    assert all(type(e.kind) is EntryKind for e in out.entries)


def test_defaults_round_trip_and_are_compact() -> None:
    m = Message(MessageType.HEARTBEAT, to=2, frm=1, term=1)
    data = encode_message(m)
    assert decode_message(data) == m
    # A fixarray of 12 one-byte values plus an empty entries array and empty bin.
    assert len(data) < 20


@given(messages)
def test_round_trip_property(m: Message) -> None:
    assert decode_message(encode_message(m)) == m


@given(st.lists(messages, max_size=6))
def test_batch_round_trip(msgs: list[Message]) -> None:
    assert decode_batch(encode_batch(msgs)) == msgs


def test_decode_accepts_bytearray_and_memoryview() -> None:
    m = sample_message(MessageType.APPEND, with_entries=True, with_snapshot=False)
    data = encode_message(m)
    assert decode_message(bytearray(data)) == m
    assert decode_message(memoryview(data)) == m


def test_codec_error_is_a_raft_error() -> None:
    assert issubclass(CodecError, RaftError)


# -- malformed input --------------------------------------------------------------


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_codec_error(data: bytes) -> None:
    for decode in (decode_message, decode_batch):
        try:
            decode(data)
        except CodecError as exc:
            assert str(exc)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=U64)
    | st.floats(allow_nan=False)
    | st.binary(max_size=8)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=13),
    max_leaves=30,
)


@settings(max_examples=300)
@given(msgpack_values)
def test_random_msgpack_values_raise_only_codec_error(value: object) -> None:
    data = msgpack.packb(value)
    for decode in (decode_message, decode_batch):
        try:
            decode(data)
        except CodecError as exc:
            assert str(exc)


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=len(MESSAGE_FIELDS) - 1), msgpack_values)
def test_one_corrupted_field_is_named(position: int, value: object) -> None:
    arr = valid_array()
    arr[position] = value
    try:
        decode_message(msgpack.packb(arr))
    except CodecError as exc:
        name = MESSAGE_FIELDS[position]
        text = str(exc)
        assert name in text or (name == "type" and "message type" in text) or "entry" in text


def test_every_proper_prefix_is_rejected() -> None:
    m = sample_message(MessageType.SNAPSHOT, with_entries=True, with_snapshot=True)
    for data in (encode_message(m), encode_batch([m, m])):
        for cut in range(len(data)):
            with pytest.raises(CodecError):
                decode_message(data[:cut])
            with pytest.raises(CodecError):
                decode_batch(data[:cut])


def test_truncated_input_says_so() -> None:
    data = encode_message(
        sample_message(MessageType.APPEND, with_entries=True, with_snapshot=False)
    )
    assert "truncated" in codec_error(data[:-3])
    assert "truncated" in codec_error(b"")


def test_trailing_garbage() -> None:
    data = encode_message(Message(MessageType.VOTE, 2, 1, 3))
    assert "trailing garbage: 2 byte(s)" in codec_error(data + b"\x00\x01")


def test_not_bytes() -> None:
    with pytest.raises(CodecError, match="must be bytes, got str"):
        decode_message("hello")  # type: ignore[arg-type]


def test_wrong_arity() -> None:
    text = codec_error(msgpack.packb([1, 2, 3]))
    assert "array of 12 fields" in text and "got 3" in text
    arr = [*valid_array(), 0]
    assert "got 13" in codec_error(msgpack.packb(arr))


def test_not_an_array() -> None:
    assert codec_error(msgpack.packb({"type": 1})) == "message must be an array, got dict"
    assert codec_error(msgpack.packb(7)) == "message must be an array, got int"


def test_unknown_message_type() -> None:
    assert codec_error(msgpack.packb(valid_array(type=99))) == "unknown message type 99"


def test_bad_type_field() -> None:
    text = codec_error(msgpack.packb(valid_array(type="APPEND")))
    assert text == "message field 'type' must be an int, got str"


def test_entries_not_a_list() -> None:
    text = codec_error(msgpack.packb(valid_array(entries=5)))
    assert text == "message field 'entries' must be a list, got int"


def test_entry_data_not_bytes() -> None:
    text = codec_error(msgpack.packb(valid_array(entries=[[1, 1, 0, b""], [1, 2, 0, "text"]])))
    assert text == "entry 1 field 'data' must be bytes, got str"


def test_entry_bad_kind_and_arity() -> None:
    assert codec_error(msgpack.packb(valid_array(entries=[[1, 1, 9, b""]]))) == (
        "entry 0 field 'kind' has unknown value 9"
    )
    assert "entry 0 field 'kind' must be an int, got bool" in codec_error(
        msgpack.packb(valid_array(entries=[[1, 1, True, b""]]))
    )
    assert "entry 0 must be an array of 4 fields" in codec_error(
        msgpack.packb(valid_array(entries=[[1, 1, 0]]))
    )


def test_negative_and_non_int_numbers() -> None:
    assert codec_error(msgpack.packb(valid_array(term=-1))) == (
        "message field 'term' must be non-negative, got -1"
    )
    assert codec_error(msgpack.packb(valid_array(commit=1.5))) == (
        "message field 'commit' must be an int, got float"
    )
    assert codec_error(msgpack.packb(valid_array(to=True))) == (
        "message field 'to' must be an int, got bool"
    )


def test_reject_and_context_types() -> None:
    assert codec_error(msgpack.packb(valid_array(reject=1))) == (
        "message field 'reject' must be a bool, got int"
    )
    assert codec_error(msgpack.packb(valid_array(context="c"))) == (
        "message field 'context' must be bytes, got str"
    )


def test_bad_snapshot() -> None:
    assert "snapshot must be an array, got int" in codec_error(
        msgpack.packb(valid_array(snapshot=3))
    )
    bad_voters = [1, 1, [1, "two"], [], [], b""]
    assert "snapshot field 'voters' must hold non-negative ints, got 'two'" in codec_error(
        msgpack.packb(valid_array(snapshot=bad_voters))
    )
    assert "snapshot field 'data' must be bytes, got nil" in codec_error(
        msgpack.packb(valid_array(snapshot=[1, 1, [1], [], [], None]))
    )


def test_ext_types_are_rejected() -> None:
    data = msgpack.packb(valid_array(context=msgpack.ExtType(5, b"x")))
    assert codec_error(data) == "message field 'context' must be bytes, got ExtType"


def test_batch_errors_name_the_item() -> None:
    good = valid_array()
    with pytest.raises(CodecError) as info:
        decode_batch(msgpack.packb([good, good, valid_array(entries=5)]))
    assert str(info.value) == "batch item 2: message field 'entries' must be a list, got int"
    with pytest.raises(CodecError, match="message batch must be an array, got int"):
        decode_batch(msgpack.packb(5))
    assert decode_batch(encode_batch([])) == []


def test_encode_rejects_unencodable_values() -> None:
    m = Message(MessageType.APPEND, 2, 1, 2**70)
    with pytest.raises(CodecError, match="cannot encode message"):
        encode_message(m)
    with pytest.raises(CodecError, match="cannot encode message batch"):
        encode_batch([m])
