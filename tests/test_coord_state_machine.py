"""The coordination state machine: KV revisions, transactions, leases, sessions, snapshots."""

import msgpack
import pytest

from hacoord.coord import (
    CompactedError,
    Compare,
    CompareOp,
    CoordStateMachine,
    Delete,
    EventType,
    InvalidCommandError,
    KeyValue,
    LeaseExpire,
    LeaseGrant,
    LeaseNotFoundError,
    LeaseRevoke,
    Put,
    Range,
    Request,
    StaleSequenceError,
    Target,
    Txn,
)
from hacoord.coord.commands import LeaseCheckpoint, encode_request
from hacoord.coord.results import DeleteResult, PutResult, RangeResult, TxnResult
from hacoord.coord.sessions import ClientTable
from hacoord.raft.errors import CommandRejectedError
from hacoord.raft.types import Entry, EntryKind
from hacoord.server.state import ServerStateMachine


class Driver:
    """Feeds commands to a state machine as consecutive log entries."""

    def __init__(self, sm: CoordStateMachine | None = None) -> None:
        self.sm = sm or CoordStateMachine()
        self.index = self.sm.applied

    def run(self, cmd: object, client: int = 0, seq: int = 0, first: int = 0) -> object:
        self.index += 1
        request = Request(cmd, client, seq, first)  # type: ignore[arg-type]
        return self.sm.apply_request(request, self.index)


def test_revisions_versions_and_previous_values() -> None:
    d = Driver()
    first = d.run(Put("a", b"1"))
    assert first == PutResult(1, None)
    d.run(Put("b", b"x"))
    second = d.run(Put("a", b"2"))
    assert isinstance(second, PutResult) and second.prev is not None
    assert second.prev.value == b"1"
    kv = d.sm.get("a")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", 1, 3, 2)
    assert d.sm.revision == 3


def test_prefix_range_is_ordered_limited_and_exact() -> None:
    d = Driver()
    for key in ("app/b", "app/a", "apq", "app", "app/c"):
        d.run(Put(key, key.encode()))
    result = d.sm.range("app/", prefix=True)
    assert [kv.key for kv in result.kvs] == ["app/a", "app/b", "app/c"]
    limited = d.sm.range("app/", prefix=True, limit=2)
    assert [kv.key for kv in limited.kvs] == ["app/a", "app/b"] and limited.more
    assert [kv.key for kv in d.sm.range("app").kvs] == ["app"]
    assert [kv.key for kv in d.sm.range("", prefix=True).kvs] == sorted(
        ["app/b", "app/a", "apq", "app", "app/c"]
    )


def test_delete_by_key_and_prefix() -> None:
    d = Driver()
    for key in ("x/1", "x/2", "y"):
        d.run(Put(key, b"v"))
    gone = d.run(Delete("x/", prefix=True))
    assert isinstance(gone, DeleteResult)
    assert [kv.key for kv in gone.deleted] == ["x/1", "x/2"] and gone.revision == 4
    nothing = d.run(Delete("missing"))
    assert nothing == DeleteResult(4, ())
    assert [kv.key for kv in d.sm.range("", prefix=True).kvs] == ["y"]


def test_transaction_compares_choose_the_branch_atomically() -> None:
    d = Driver()
    d.run(Put("k", b"v1"))
    cas = Txn(
        compares=(Compare("k", Target.VALUE, CompareOp.EQUAL, b"v1"),),
        success=(Put("k", b"v2"), Put("other", b"o"), Range("k")),
        failure=(Range("k"),),
    )
    first = d.run(cas)
    assert isinstance(first, TxnResult) and first.succeeded and first.revision == 2
    read = first.results[2]
    assert isinstance(read, RangeResult) and read.kvs[0].value == b"v2"
    second = d.run(cas)
    assert isinstance(second, TxnResult) and not second.succeeded
    assert d.sm.get("other") is not None and d.sm.revision == 2
    create_if_absent = Txn(
        compares=(Compare("new", Target.CREATE, CompareOp.EQUAL, 0),),
        success=(Put("new", b"n"),),
    )
    assert d.run(create_if_absent).succeeded  # type: ignore[attr-defined]
    assert not d.run(create_if_absent).succeeded  # type: ignore[attr-defined]
    newer = Txn(compares=(Compare("k", Target.MOD, CompareOp.GREATER, 1),), success=(Delete("k"),))
    assert d.run(newer).succeeded and d.sm.get("k") is None  # type: ignore[attr-defined]


def test_a_transaction_refused_half_way_changes_nothing() -> None:
    d = Driver()
    before = d.sm.snapshot()
    with pytest.raises(LeaseNotFoundError, match="lease 99 does not exist"):
        d.run(Txn(success=(Put("a", b"1"), Put("b", b"2", lease=99))))
    after = msgpack.unpackb(d.sm.snapshot())
    expected = msgpack.unpackb(before)
    after[1] = expected[1]  # only the applied index moved
    assert after == expected


def test_lease_revoke_and_expiry_delete_attached_keys() -> None:
    d = Driver()
    grant = d.run(LeaseGrant(5000))
    lease_id = grant.lease_id  # type: ignore[attr-defined]
    assert lease_id == 1
    d.run(Put("held", b"h", lease=lease_id))
    d.run(Put("moved", b"m", lease=lease_id))
    d.run(Put("moved", b"m2"))  # detached by a put without the lease
    d.run(Put("free", b"f"))
    revoked = d.run(LeaseRevoke(lease_id))
    assert revoked.deleted == ("held",)  # type: ignore[attr-defined]
    assert d.sm.get("held") is None and d.sm.get("moved") is not None
    with pytest.raises(LeaseNotFoundError):
        d.sm.lease(lease_id)
    with pytest.raises(LeaseNotFoundError):
        d.run(LeaseRevoke(lease_id))
    second = d.run(LeaseGrant(1000)).lease_id  # type: ignore[attr-defined]
    d.run(Put("e", b"1", lease=second))
    expired = d.run(LeaseExpire(second))
    assert expired.deleted == ("e",)  # type: ignore[attr-defined]
    with pytest.raises(LeaseNotFoundError):
        d.run(Put("late", b"1", lease=second))
    assert d.sm.get("late") is None


def test_checkpoint_records_remaining_time_of_live_leases_only() -> None:
    d = Driver()
    lease_id = d.run(LeaseGrant(5000)).lease_id  # type: ignore[attr-defined]
    result = d.run(LeaseCheckpoint(((lease_id, 1200), (777, 10))))
    assert result.updated == 1  # type: ignore[attr-defined]
    assert d.sm.lease(lease_id).remaining_ms == 1200


def test_retried_request_is_applied_once_and_answered_the_same() -> None:
    d = Driver()
    first = d.run(Put("counter", b"1"), client=7, seq=1)
    again = d.run(Put("counter", b"1"), client=7, seq=1)
    assert again == first
    kv = d.sm.get("counter")
    assert kv is not None and kv.version == 1
    with pytest.raises(LeaseNotFoundError):
        d.run(Put("x", b"1", lease=42), client=7, seq=2)
    with pytest.raises(LeaseNotFoundError):  # the refusal is remembered too
        d.run(Put("x", b"1", lease=42), client=7, seq=2)
    d.run(Put("other", b"o"), client=7, seq=3, first=3)  # 1 and 2 are answered: forget them
    with pytest.raises(StaleSequenceError, match="client 7: sequence number 1 is below 3"):
        d.run(Put("counter", b"9"), client=7, seq=1)
    assert d.sm.get("counter").value == b"1"  # type: ignore[union-attr]


def test_requests_in_flight_together_may_apply_out_of_order() -> None:
    d = Driver()
    later = d.run(Put("a", b"5"), client=3, seq=5, first=4)
    earlier = d.run(Put("b", b"4"), client=3, seq=4, first=4)
    assert isinstance(later, PutResult) and isinstance(earlier, PutResult)
    assert d.run(Put("a", b"5"), client=3, seq=5, first=4) == later, "retry answered"
    assert d.sm.get("a").version == 1  # type: ignore[union-attr]


def test_session_memory_is_bounded_per_client_and_in_clients() -> None:
    d = Driver(CoordStateMachine(max_clients=2))
    d.run(Put("a", b"1"), client=1, seq=1)
    d.run(Put("b", b"1"), client=2, seq=1)
    d.run(Put("a", b"2"), client=1, seq=2)  # client 1 is now the most recent
    d.run(Put("c", b"1"), client=3, seq=1)
    assert sorted(d.sm.clients.clients) == [1, 3]
    small = Driver(CoordStateMachine())
    small.sm.clients.max_outcomes = 3
    for seq in range(1, 6):  # a client that never reports progress
        small.run(Put("k", b"%d" % seq), client=9, seq=seq)
    assert sorted(small.sm.clients.clients[9].outcomes) == [3, 4, 5]
    with pytest.raises(StaleSequenceError):
        small.run(Put("k", b"1"), client=9, seq=2)


def test_watch_history_is_ordered_filtered_and_compacts_whole_revisions() -> None:
    d = Driver(CoordStateMachine(history=4))
    d.run(Put("w/a", b"1"))
    d.run(Put("other", b"1"))
    d.run(Put("w/b", b"1"))
    events = d.sm.events_since(1, "w/")
    assert [(e.type, e.kv.key, e.revision) for e in events] == [
        (EventType.PUT, "w/a", 1),
        (EventType.PUT, "w/b", 3),
    ]
    d.run(Delete("w/", prefix=True))  # two events at revision 4
    assert [e.type for e in d.sm.events_since(4, "w/")] == [EventType.DELETE] * 2
    d.run(Put("w/c", b"1"))
    with pytest.raises(CompactedError, match="revision 1 is compacted"):
        d.sm.events_since(1, "w/")
    kept = d.sm.events_since(d.sm.store.compacted + 1)
    assert kept and all(e.revision > d.sm.store.compacted for e in kept)


def test_snapshot_round_trip_keeps_keys_leases_history_and_sessions() -> None:
    d = Driver()
    lease_id = d.run(LeaseGrant(3000)).lease_id  # type: ignore[attr-defined]
    d.run(Put("a", b"1", lease=lease_id), client=5, seq=3)
    d.run(Put("b", b"2"))
    d.run(Delete("b"))
    copy = CoordStateMachine()
    copy.restore(d.sm.snapshot())
    assert copy.snapshot() == d.sm.snapshot()
    again = Driver(copy)
    assert again.run(Put("a", b"1", lease=lease_id), client=5, seq=3) == PutResult(2, None)
    assert again.run(LeaseRevoke(lease_id)).deleted == ("a",)  # type: ignore[attr-defined]
    assert [e.type for e in copy.events_since(1)][-2:] == [EventType.DELETE, EventType.DELETE]
    empty = CoordStateMachine()
    copy.restore(b"")
    assert copy.snapshot() == empty.snapshot()


def test_a_snapshot_is_the_state_at_capture_and_keeps_the_wire_layout() -> None:
    d = Driver()
    lease_id = d.run(LeaseGrant(3000)).lease_id  # type: ignore[attr-defined]
    d.run(Put("a", b"1", lease=lease_id), client=5, seq=3)
    d.run(Put("b", b"2", lease=lease_id))
    serialize = d.sm.capture()
    before = CoordStateMachine()
    before.restore(d.sm.snapshot())
    d.run(Put("a", b"changed"))  # after the capture: not in what it serializes
    d.run(Delete("b"))
    data = serialize()
    assert isinstance(data, memoryview)  # the packer's buffer, not a copy made under the GIL
    assert data == before.snapshot()
    live = d.sm.get("a")
    assert live is not None and live.value == b"changed"
    assert d.sm.leases.leases[lease_id].keys == set()  # the captured lease kept its keys
    # The layout older members wrote (and read): one msgpack array of plain lists.
    copy = CoordStateMachine()
    copy.restore(data)
    assert copy.get("a") == KeyValue("a", b"1", 2, 2, 1, lease_id)
    assert copy.leases.leases[lease_id].keys == {"a", "b"}
    plain = msgpack.packb(
        [
            1,
            copy.applied,
            copy.store.revision,
            copy.store.compacted,
            [list(kv) for kv in copy.store.keys.values()],
            [[int(e.type), list(e.kv), e.prev and list(e.prev)] for e in copy.store.events],
            [[lease_id, 3000, 3000, ["a", "b"]]],
            [[5, 0, [[3, o] for o in copy.clients.clients[5].outcomes.values()]]],
        ]
    )
    assert data == plain


def test_a_member_snapshot_in_the_older_layout_still_loads() -> None:
    sm = ServerStateMachine()
    for i in range(5):
        sm.apply_request(Request(Put(f"k{i}", b"v")), i + 1)
    sm.addresses = {1: ("127.0.0.1", 7001, "127.0.0.1", 8001)}
    coordination = CoordStateMachine()
    coordination.restore_items(msgpack.unpackb(sm.snapshot(), use_list=False)[0])
    older = msgpack.packb([coordination.snapshot(), [[1, "127.0.0.1", 7001, "127.0.0.1", 8001]]])
    for data in (older, sm.snapshot()):
        copy = ServerStateMachine()
        copy.restore(data)
        assert copy.store.keys == sm.store.keys
        assert copy.addresses == sm.addresses


def test_snapshot_from_an_unknown_format_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="format 99 is not 1"):
        CoordStateMachine().restore(msgpack.packb([99]))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1", "not valid msgpack"),
        (msgpack.packb({"op": "put"}), "request: expected 4 fields, got dict"),
        (msgpack.packb([1, 2, 3, [1, "k", b"v", 0]]), "first_outstanding \\(3\\) must not exceed"),
        (msgpack.packb([0, 0, 0, [1, "k", "not bytes", 0]]), "value must be bytes, got str"),
        (msgpack.packb([0, 0, 0, [1, 5, b"v", 0]]), "key must be a string, got int"),
        (msgpack.packb([0, 0, 0, [1, "k", b"v", -1]]), "lease must be >= 0, got -1"),
        (msgpack.packb([0, 0, 0, [1, "k", b"v", True]]), "lease must be an integer, got bool"),
        (msgpack.packb([0, 0, 0, [1.0, "k", b"v", 0]]), "array starting with a command tag"),
        (msgpack.packb([-1, 1, 0, [1, "k", b"v", 0]]), "client_id must be >= 0, got -1"),
        (msgpack.packb([0, 0, 0, [99]]), "unknown command tag 99"),
        (msgpack.packb([0, 0, 0, [10, -5]]), "ttl_ms must be >= 1, got -5"),
        (msgpack.packb([3, 0, 0, [1, "k", b"v", 0]]), "seq must be >= 1 when client_id is set"),
        (msgpack.packb([0, 0, 0, [4, [["k", 9, 1, 0]], [], []]]), "unknown compare target 9"),
        (msgpack.packb([0, 0, 0, [4, [["k", 1, 1, 5]], [], []]]), "operand must be bytes"),
        (msgpack.packb([0, 0, 0, [4, [], [[7, "k"]], []]]), "txn success op 0: unknown operation"),
    ],
)
def test_malformed_commands_are_refused_with_the_reason_and_change_nothing(
    payload: bytes, message: str
) -> None:
    sm = CoordStateMachine()
    Driver(sm).run(Put("keep", b"me"))
    before = sm.snapshot()
    with pytest.raises(InvalidCommandError, match=message) as info:
        sm.apply(Entry(1, 2, EntryKind.NORMAL, payload))
    assert isinstance(info.value, CommandRejectedError)
    assert msgpack.unpackb(sm.snapshot())[2:] == msgpack.unpackb(before)[2:]


def test_wire_round_trip_of_every_command() -> None:
    from hacoord.coord.commands import decode_request

    commands = [
        Put("k", b"v", 3),
        Delete("p/", True),
        Txn(
            (Compare("k", Target.VERSION, CompareOp.LESS, 4),),
            (Put("k", b"v"), Range("p/", True, 10)),
            (Delete("k"),),
        ),
        LeaseGrant(1000),
        LeaseRevoke(4),
        LeaseExpire(4),
        LeaseCheckpoint(((4, 100), (5, 0))),
    ]
    for cmd in commands:
        request = Request(cmd, 9, 12, 10)  # type: ignore[arg-type]
        assert decode_request(encode_request(request)) == request


def test_answered_outcomes_are_forgotten_in_small_steps_and_in_one_jump() -> None:
    table = ClientTable()
    for seq in range(1, 9):
        table.record(5, seq, 1, ["ok", seq])
    table.record(5, 9, 4, ["ok", 9])  # a small step: 1..3 go one by one
    assert list(table.clients[5].outcomes) == [4, 5, 6, 7, 8, 9]
    table.record(5, 1_000_000, 1_000_000, ["ok", 0])  # a jump past everything kept
    assert list(table.clients[5].outcomes) == [1_000_000]
    assert table.clients[5].floor == 1_000_000
    with pytest.raises(StaleSequenceError):
        table.lookup(5, 999_999)
