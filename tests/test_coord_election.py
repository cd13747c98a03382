"""Elections, locks and fencing on the state machine; the leader's lease clock; limits."""

from typing import Any

import pytest

from hacoord.coord import (
    CoordStateMachine,
    FencedResource,
    FencingTokenError,
    InvalidCommandError,
    LeaseClock,
    LeaseExpire,
    LeaseGrant,
    LeaseNotFoundError,
    LeaseRevoke,
    Limits,
    Put,
    Request,
    Txn,
    campaign_txn,
    check_limits,
    holder_of,
    while_holding,
)
from hacoord.coord.commands import Compare, CompareOp, Delete, Range, Target
from hacoord.coord.election import LOCK_PREFIX, candidates_prefix, proclaim_txn, resign_txn
from hacoord.coord.leases import LeaseTable
from hacoord.coord.results import TxnResult


class Cluster:
    """The state machine fed with consecutive entries, as the log would."""

    def __init__(self) -> None:
        self.sm = CoordStateMachine()
        self.index = 0

    def run(self, cmd: Any) -> Any:
        self.index += 1
        return self.sm.apply_request(Request(cmd), self.index)

    def lease(self, ttl_ms: int = 5000) -> int:
        lease_id: int = self.run(LeaseGrant(ttl_ms)).lease_id
        return lease_id

    def holder(self, name: str) -> Any:
        return holder_of(self.sm.range(candidates_prefix(name), prefix=True).kvs)


def test_first_candidate_holds_and_the_token_is_its_create_revision() -> None:
    c = Cluster()
    a, b = c.lease(), c.lease()
    c.run(campaign_txn("db", a, b"host-a"))
    c.run(campaign_txn("db", b, b"host-b"))
    holder = c.holder("db")
    assert holder is not None
    assert holder.value == b"host-a" and holder.lease == a and holder.token == 3
    retry = c.run(campaign_txn("db", a, b"host-a"))
    assert isinstance(retry, TxnResult) and not retry.succeeded, "campaigning twice is a no-op"
    assert c.holder("db").token == 3


def test_tokens_grow_strictly_across_every_handover() -> None:
    c = Cluster()
    tokens = []
    leases = [c.lease() for _ in range(4)]
    for lease_id in leases:
        c.run(campaign_txn("orders", lease_id, b"%d" % lease_id))
    for i, lease_id in enumerate(leases):
        holder = c.holder("orders")
        assert holder is not None and holder.lease == lease_id
        tokens.append(holder.token)
        # The holder goes away in the three ways a holder can: resign, revoke, expiry.
        end = [resign_txn(holder), LeaseRevoke(lease_id), LeaseExpire(lease_id)][i % 3]
        c.run(end)
    assert tokens == sorted(set(tokens))
    assert c.holder("orders") is None
    late = c.lease()
    c.run(campaign_txn("orders", late, b"late"))
    assert c.holder("orders").token > tokens[-1]


def test_a_former_holder_cannot_act_or_proclaim_after_losing_its_lease() -> None:
    c = Cluster()
    old, new = c.lease(), c.lease()
    c.run(campaign_txn("svc", old, b"old"))
    c.run(campaign_txn("svc", new, b"new"))
    stale = c.holder("svc")
    c.run(LeaseExpire(old))
    fenced = c.run(while_holding(stale, (Put("svc/primary", b"old"),)))
    assert isinstance(fenced, TxnResult) and not fenced.succeeded
    assert c.sm.get("svc/primary") is None
    assert not c.run(proclaim_txn(stale, b"still me")).succeeded
    current = c.holder("svc")
    assert current.value == b"new"
    assert c.run(proclaim_txn(current, b"new-2")).succeeded
    assert c.holder("svc").value == b"new-2"
    assert c.run(while_holding(current, (Put("svc/primary", b"new"),))).succeeded


def test_locks_use_the_same_mechanism_under_their_own_prefix() -> None:
    c = Cluster()
    a, b = c.lease(), c.lease()
    c.run(campaign_txn("jobs", a, b"a", prefix=LOCK_PREFIX))
    c.run(campaign_txn("jobs", b, b"b", prefix=LOCK_PREFIX))
    assert c.holder("jobs") is None, "a lock is not an election of the same name"
    kvs = c.sm.range(candidates_prefix("jobs", LOCK_PREFIX), prefix=True).kvs
    assert holder_of(kvs).lease == a


def test_fenced_resource_refuses_older_tokens_and_accepts_repeats() -> None:
    fence = FencedResource("mysql/orders")
    fence.accept(10)
    fence.accept(10)
    fence.accept(12)
    with pytest.raises(FencingTokenError, match="mysql/orders: fencing token 10 is older"):
        fence.accept(10)
    assert fence.highest == 12
    with pytest.raises(ValueError, match="tokens are >= 1"):
        fence.check(0)


def test_lease_clock_renews_in_memory_and_reports_each_expiry_once() -> None:
    table = LeaseTable()
    table.grant(1, 1000)
    table.grant(2, 3000)
    clock = LeaseClock()
    clock.become_leader(table, now_ms=0)
    assert clock.expired(999) == []
    clock.keep_alive(table, 1, now_ms=900)
    assert clock.expired(1500) == []
    assert clock.expired(1900) == [1]
    assert clock.expired(5000) == [2], "lease 1 was already reported"
    with pytest.raises(LeaseNotFoundError):
        clock.keep_alive(table, 1, now_ms=5000)  # its expiry is on the way
    clock.retry_expiry(1, now_ms=5000)
    assert clock.expired(5000) == [1]
    with pytest.raises(LeaseNotFoundError):
        clock.keep_alive(table, 42, now_ms=0)


def test_a_new_leader_gives_every_lease_its_full_ttl() -> None:
    table = LeaseTable()
    table.grant(1, 1000)
    clock = LeaseClock()
    clock.become_leader(table, now_ms=0)
    clock.step_down()
    assert clock.expired(10_000) == []
    clock.become_leader(table, now_ms=10_000)  # the failover took 10 s
    assert clock.remaining_ms(1, 10_500) == 500
    assert clock.expired(10_999) == []
    assert clock.checkpoint(10_200) == [(1, 800)]
    assert clock.expired(11_000) == [1]


@pytest.mark.parametrize(
    ("cmd", "message"),
    [
        (Put("k" * 5000, b"v"), "key is 5000 bytes, over the limit of 4096"),
        (Put("k", b"v" * (2 << 20)), "value of 'k' is 2097152 bytes, over the limit"),
        (Put("", b"v"), "key must not be empty"),
        (LeaseGrant(10), r"ttl_ms 10 is outside \[1000, "),
        (Txn(success=tuple(Delete(f"k{i}") for i in range(300))), "300 compares and operations"),
        (Txn(compares=(Compare("", Target.VERSION, CompareOp.EQUAL, 0),)), "key must not be"),
        (Txn(failure=(Range("x" * 5000),)), "over the limit"),
    ],
)
def test_limits_name_what_is_too_big(cmd: object, message: str) -> None:
    with pytest.raises(InvalidCommandError, match=message):
        check_limits(cmd, Limits())


def test_prefix_operations_may_use_an_empty_prefix() -> None:
    check_limits(Delete("", prefix=True), Limits())
    check_limits(Txn(success=(Range("", prefix=True),)), Limits())
