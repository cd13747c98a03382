"""Tests for the key-value register linearizability checker."""

from __future__ import annotations

import random

import pytest

from hacoord.sim.linearizability import (
    CheckResult,
    LinearizabilityTimeout,
    Operation,
    OpKind,
    check_history,
)

PUT, GET, CAS = OpKind.PUT, OpKind.GET, OpKind.CAS


def put(
    client: int, invoke: float, complete: float | None, value: str, key: str = "k"
) -> Operation:
    return Operation(client, PUT, key, invoke, complete, value=value)


def get(
    client: int, invoke: float, complete: float | None, value: str | None, key: str = "k"
) -> Operation:
    return Operation(client, GET, key, invoke, complete, value=value)


def cas(
    client: int,
    invoke: float,
    complete: float | None,
    expected: str | None,
    value: str,
    ok: bool | None,
    key: str = "k",
) -> Operation:
    return Operation(client, CAS, key, invoke, complete, value=value, expected=expected, ok=ok)


def assert_bad(result: CheckResult, key: str = "k") -> None:
    assert not result.ok
    assert result.key == key
    assert result.explanation


# ------------------------------------------------------------------ basics


def test_empty_history_is_linearizable() -> None:
    result = check_history([])
    assert result.ok
    assert result.ops_checked == 0
    assert result.key is None


def test_sequential_history_ok() -> None:
    ops = [
        get(1, 0, 1, None),
        put(1, 2, 3, "a"),
        get(2, 4, 5, "a"),
        put(2, 6, 7, "b"),
        get(1, 8, 9, "b"),
        cas(3, 10, 11, "b", "c", True),
        get(3, 12, 13, "c"),
    ]
    result = check_history(ops)
    assert result.ok, result.explanation
    assert result.ops_checked == len(ops)


@pytest.mark.parametrize("final", ["a", "b"])
def test_concurrent_overlapping_writes_either_order(final: str) -> None:
    other = "b" if final == "a" else "a"
    ops = [
        put(1, 0, 10, "a"),
        put(2, 1, 9, "b"),
        # during the overlap a reader may see either write, then the other
        get(3, 2, 3, other),
        get(3, 4, 5, final),
        get(3, 11, 12, final),
        get(4, 13, 14, final),
    ]
    assert check_history(ops).ok


def test_overlapping_writes_cannot_flip_back_after_both_completed() -> None:
    ops = [
        put(1, 0, 10, "a"),
        put(2, 1, 9, "b"),
        get(3, 11, 12, "a"),
        get(3, 13, 14, "b"),
    ]
    assert_bad(check_history(ops))


def test_stale_read_after_completed_write_rejected() -> None:
    ops = [
        put(1, 0, 1, "a"),
        put(1, 2, 3, "b"),
        get(2, 4, 5, "a"),
    ]
    result = check_history(ops)
    assert_bad(result)
    assert "'a'" in result.explanation


def test_read_of_absent_key_after_write_rejected() -> None:
    assert_bad(check_history([put(1, 0, 1, "a"), get(2, 2, 3, None)]))


def test_read_concurrent_with_write_may_see_either() -> None:
    for seen in (None, "a"):
        assert check_history([put(1, 0, 10, "a"), get(2, 1, 2, seen)]).ok


def test_read_of_never_written_value_rejected() -> None:
    ops = [
        put(1, 0, 10, "a"),
        get(2, 1, 20, "zzz"),
    ]
    result = check_history(ops)
    assert_bad(result)
    assert "'zzz'" in result.explanation


def test_equal_timestamps_count_as_concurrent() -> None:
    # The read is invoked exactly when the write completes: either order is fine.
    assert check_history([put(1, 0, 5, "a"), get(2, 5, 6, None)]).ok
    assert_bad(check_history([put(1, 0, 5, "a"), get(2, 5.001, 6, None)]))


# --------------------------------------------------------------------- CAS


def test_cas_success_and_failure_semantics_ok() -> None:
    ops = [
        cas(1, 0, 1, None, "a", True),  # key absent -> succeeds
        cas(2, 2, 3, None, "x", False),  # no longer absent -> fails
        cas(1, 4, 5, "a", "b", True),
        cas(2, 6, 7, "a", "y", False),
        get(3, 8, 9, "b"),
    ]
    assert check_history(ops).ok


def test_cas_reported_success_with_wrong_expected_rejected() -> None:
    ops = [put(1, 0, 1, "a"), cas(2, 2, 3, "z", "b", True)]
    assert_bad(check_history(ops))


def test_cas_reported_failure_when_it_must_succeed_rejected() -> None:
    ops = [put(1, 0, 1, "a"), cas(2, 2, 3, "a", "b", False)]
    assert_bad(check_history(ops))


def test_failed_cas_must_not_write() -> None:
    ops = [put(1, 0, 1, "a"), cas(2, 2, 3, "q", "b", False), get(1, 4, 5, "b")]
    assert_bad(check_history(ops))


def test_concurrent_cas_only_one_may_win() -> None:
    both = [
        put(1, 0, 1, "a"),
        cas(2, 2, 10, "a", "b", True),
        cas(3, 3, 9, "a", "c", True),
    ]
    assert_bad(check_history(both))
    one = [
        put(1, 0, 1, "a"),
        cas(2, 2, 10, "a", "b", True),
        cas(3, 3, 9, "a", "c", False),
        get(1, 11, 12, "b"),
    ]
    assert check_history(one).ok


def test_completed_cas_without_result_is_malformed() -> None:
    with pytest.raises(ValueError, match="ok=None"):
        check_history([cas(1, 0, 1, None, "a", None)])


def test_response_before_invocation_is_malformed() -> None:
    with pytest.raises(ValueError, match="before"):
        check_history([put(1, 5, 4, "a")])


# ------------------------------------------------------- unknown outcomes


@pytest.mark.parametrize("seen", [None, "a"])
def test_pending_write_may_or_may_not_have_happened(seen: str | None) -> None:
    ops = [
        put(1, 0, None, "a"),
        get(2, 5, 6, seen),
        get(2, 7, 8, seen),
    ]
    assert check_history(ops).ok


def test_pending_write_seen_then_unseen_rejected() -> None:
    ops = [
        put(1, 0, None, "a"),
        get(2, 5, 6, "a"),
        get(2, 7, 8, None),
    ]
    assert_bad(check_history(ops))


def test_pending_write_seen_before_its_invocation_rejected() -> None:
    ops = [
        get(2, 0, 1, "a"),
        put(1, 2, None, "a"),
    ]
    result = check_history(ops)
    assert_bad(result)
    assert result.ops_checked == 2


def test_pending_write_can_take_effect_late() -> None:
    ops = [
        put(1, 0, None, "a"),
        put(2, 1, 2, "b"),
        get(3, 3, 4, "b"),
        get(3, 50, 51, "a"),  # the lost-looking write finally applied
    ]
    assert check_history(ops).ok


def test_pending_cas_takes_effect_only_if_expected_matches() -> None:
    matches = [put(1, 0, 1, "a"), cas(2, 2, None, "a", "b", None), get(3, 5, 6, "b")]
    assert check_history(matches).ok
    mismatch = [put(1, 0, 1, "a"), cas(2, 2, None, "x", "b", None), get(3, 5, 6, "b")]
    assert_bad(check_history(mismatch))


def test_chained_pending_writes() -> None:
    ops = [
        put(1, 0, None, "a"),
        cas(2, 1, None, "a", "b", None),
        get(3, 5, 6, "b"),
    ]
    assert check_history(ops).ok


def test_pending_write_makes_failed_cas_possible() -> None:
    ops = [
        put(1, 0, 1, "a"),
        put(2, 2, None, "b"),
        cas(3, 3, 4, "a", "c", False),  # only possible if the pending write landed
        get(3, 5, 6, "b"),
    ]
    assert check_history(ops).ok
    without = [put(1, 0, 1, "a"), cas(3, 3, 4, "a", "c", False)]
    assert_bad(check_history(without))


def test_pending_reads_are_ignored() -> None:
    ops = [put(1, 0, 1, "a"), get(2, 2, None, "garbage"), get(3, 3, 4, "a")]
    result = check_history(ops)
    assert result.ok
    assert result.ops_checked == 2


# --------------------------------------------------------------- multi-key


def test_multi_key_history_reports_the_bad_key() -> None:
    ops = [
        put(1, 0, 1, "a1", key="x"),
        put(2, 0, 1, "b1", key="y"),
        put(3, 0, 1, "c1", key="z"),
        get(1, 2, 3, "a1", key="x"),
        get(2, 2, 3, "b1", key="y"),
        get(3, 2, 3, None, key="z"),  # stale: the write to z completed before
        get(1, 4, 5, "a1", key="x"),
    ]
    result = check_history(ops)
    assert_bad(result, key="z")
    assert "'z'" in result.explanation


def test_keys_are_independent() -> None:
    # Per key this is fine even though the interleaving across keys is arbitrary.
    ops = [
        put(1, 0, 1, "a", key="x"),
        get(2, 2, 3, None, key="y"),
        put(1, 4, 5, "b", key="y"),
        get(2, 6, 7, "a", key="x"),
    ]
    assert check_history(ops).ok


# ------------------------------------------------------------- randomized


def linearizable_history(
    rng: random.Random,
    n_ops: int,
    keys: int = 3,
    clients: int = 5,
    spread: float = 3.0,
    pending_rate: float = 0.05,
) -> list[Operation]:
    """Run ops against a sequential register at times 0, 1, 2, ... and wrap each
    linearization point in a random interval; some writes lose their response."""
    state: dict[str, str | None] = {}
    written: dict[str, list[str]] = {}
    ops: list[Operation] = []
    for t in range(n_ops):
        key = f"k{rng.randrange(keys)}"
        current = state.get(key)
        invoke = t - rng.uniform(0, spread)
        complete: float | None = t + rng.uniform(0, spread)
        client = rng.randrange(clients)
        roll = rng.random()
        if roll < 0.4:
            op = Operation(client, PUT, key, invoke, complete, value=f"v{t}")
        elif roll < 0.8:
            op = Operation(client, GET, key, invoke, complete, value=current)
        else:
            options = [current, None, *written.get(key, [])[-2:]]
            expected = rng.choice(options)
            op = Operation(client, CAS, key, invoke, complete, value=f"v{t}", expected=expected)
            op.ok = expected == current
        if op.kind is not GET and rng.random() < pending_rate:
            op.complete = None
            op.ok = None
            if rng.random() < 0.5:
                ops.append(op)  # lost before it took effect
                continue
        elif op.kind is GET and rng.random() < pending_rate:
            op.complete = None
            op.value = "never-delivered"
        if op.kind is PUT or (op.kind is CAS and op.expected == current):
            assert op.value is not None
            state[key] = op.value
            written.setdefault(key, []).append(op.value)
        ops.append(op)
    rng.shuffle(ops)  # the checker must not rely on input order
    return ops


@pytest.mark.parametrize("seed", range(25))
def test_random_linearizable_history_passes_and_mutation_fails(seed: int) -> None:
    rng = random.Random(seed)
    ops = linearizable_history(rng, 300)
    result = check_history(ops)
    assert result.ok, result.explanation
    gets = [op for op in ops if op.kind is GET and op.complete is not None]
    victim = rng.choice(gets)
    victim.value = "never-written"
    bad = check_history(ops)
    assert_bad(bad, key=victim.key)
    assert "never-written" in bad.explanation


def test_simulator_sized_history_passes() -> None:
    rng = random.Random(1234)
    ops = linearizable_history(rng, 4000, keys=4, spread=2.5, pending_rate=0.03)
    result = check_history(ops)
    assert result.ok, result.explanation
    assert result.ops_checked == sum(
        1 for op in ops if op.kind is not GET or op.complete is not None
    )


def brute_force(ops: list[Operation]) -> bool:
    """Reference: try every real-time-respecting order (single key, tiny histories)."""
    live = [op for op in ops if op.complete is not None or op.kind is not GET]

    def extend(rest: list[Operation], value: str | None) -> bool:
        if all(op.complete is None for op in rest):
            return True
        for op in rest:
            if any(other.complete is not None and other.complete < op.invoke for other in rest):
                continue
            others = [o for o in rest if o is not op]
            if op.complete is None:
                applies = op.kind is PUT or op.expected == value
                if applies and extend(others, op.value):
                    return True
                continue
            if op.kind is GET:
                if op.value == value and extend(others, value):
                    return True
            elif op.kind is PUT:
                if extend(others, op.value):
                    return True
            elif op.ok:
                if op.expected == value and extend(others, op.value):
                    return True
            elif op.expected != value and extend(others, value):
                return True
        return False

    return extend(live, None)


def random_small_history(rng: random.Random) -> list[Operation]:
    values = ["a", "b", "c"]
    ops: list[Operation] = []
    for _ in range(rng.randint(1, 7)):
        invoke = rng.uniform(0, 10)
        complete: float | None = invoke + rng.uniform(0, 4)
        if rng.random() < 0.2:
            complete = None
        kind = rng.choice([PUT, GET, GET, CAS])
        value = rng.choice(values)
        if kind is GET:
            ops.append(get(1, invoke, complete, rng.choice([None, *values])))
        elif kind is PUT:
            ops.append(put(1, invoke, complete, value))
        else:
            ok = None if complete is None else rng.random() < 0.5
            ops.append(cas(1, invoke, complete, rng.choice([None, *values]), value, ok))
    return ops


def test_agrees_with_brute_force_on_small_random_histories() -> None:
    rng = random.Random(7)
    verdicts = {True: 0, False: 0}
    for _ in range(3000):
        ops = random_small_history(rng)
        expected = brute_force(ops)
        assert check_history(ops).ok == expected, ops
        verdicts[expected] += 1
    # Both verdicts must be well represented for the comparison to mean anything.
    assert min(verdicts.values()) > 300


def test_agrees_with_brute_force_on_perturbed_linearizable_histories() -> None:
    # Repeated values and many unknown outcomes exercise the pending-write reductions.
    rng = random.Random(11)
    verdicts = {True: 0, False: 0}
    for _ in range(400):
        ops = linearizable_history(rng, rng.randint(5, 8), keys=1, pending_rate=0.3)
        for op in ops:
            if op.value is not None and op.kind is not GET:
                op.value = f"v{int(op.value[1:]) % 3}"
        if rng.random() < 0.5:
            victim = rng.choice(ops)
            victim.invoke += rng.uniform(0, 4)
            if victim.complete is not None:
                victim.complete += rng.uniform(4, 6)
        expected = brute_force(ops)
        assert check_history(ops).ok == expected, ops
        verdicts[expected] += 1
    assert min(verdicts.values()) > 40


# ----------------------------------------------------------------- budget


def test_timeout_on_hard_history_with_tiny_budget() -> None:
    # Many mutually concurrent writes and a read that matches none of them: proving
    # non-linearizability means trying every subset of the writes.
    ops = [put(i, 0, 100, f"w{i}") for i in range(14)]
    ops.append(get(99, 0, 100, "nothing"))
    with pytest.raises(LinearizabilityTimeout) as info:
        check_history(ops, max_states=100)
    assert info.value.key == "k"
    assert info.value.sub_history_ops == 15
    assert "'k'" in str(info.value)
    assert "15 ops" in str(info.value)


def test_hard_history_decided_within_budget() -> None:
    ops = [put(i, 0, 100, f"w{i}") for i in range(8)]
    ops.append(get(99, 0, 100, "nothing"))
    assert_bad(check_history(ops))
    ops[-1].value = "w3"
    assert check_history(ops).ok


def test_failing_history_with_many_unknown_outcomes_decided_quickly() -> None:
    # A stale read late in a long history full of timed-out writes: refuting it must
    # not enumerate which of the lost writes took effect where.
    rng = random.Random(3)
    ops = linearizable_history(rng, 1500, keys=1, pending_rate=0.15)
    assert check_history(ops, max_states=20_000).ok
    reads = sorted(
        (op for op in ops if op.kind is GET and op.complete is not None), key=lambda o: o.invoke
    )
    victim = reads[-10]
    old = [
        op
        for op in ops
        if op.kind is PUT and op.complete is not None and op.complete < victim.invoke - 20
    ]
    victim.value = max(old, key=lambda o: o.invoke).value
    result = check_history(ops, max_states=50_000)
    assert_bad(result, key=victim.key)
