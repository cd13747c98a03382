"""The coordination checks must be able to fail: on hand-made histories, and on
simulated runs with a deliberate bug planted (hacoord.sim.coord_bugs)."""

import pytest

from hacoord.sim.cluster import FaultRecord
from hacoord.sim.coord import CoordSimConfig, CoordSimulation
from hacoord.sim.coord_checks import (
    FaultSchedule,
    check_exclusive,
    check_no_needless_expiry,
    check_tokens,
)
from hacoord.sim.coord_history import (
    REASON_DEADLINE,
    ClientFault,
    CoordHistory,
    FencedWrite,
    HolderSpan,
    LeaseRecord,
)

VOTERS = frozenset({1, 2, 3})


def _lease(lease_id: int, client: int, granted: float, deadline: float) -> LeaseRecord:
    return LeaseRecord(lease_id, client, 1000, granted - 5, granted, deadline)


def _schedule(*faults: FaultRecord, client_faults: tuple[ClientFault, ...] = ()) -> FaultSchedule:
    return FaultSchedule(VOTERS, faults, client_faults, recovery_ms=400.0)


# ------------------------------------------------------------------ (a) exclusive


def test_exclusive_flags_a_holder_elected_before_the_previous_lease_ended() -> None:
    first = HolderSpan("e", 1, _lease(1, 1, 0, 2000), token=2, start=10)
    second = HolderSpan("e", 2, _lease(3, 2, 1500, 3000), token=4, start=1900)
    (violation,) = check_exclusive([first, second])
    assert violation.startswith("(a) election 'e': client 2")
    assert "held it until 2000.0 ms" in violation


def test_exclusive_accepts_holders_one_after_the_other() -> None:
    first = HolderSpan("e", 1, _lease(1, 1, 0, 2000), token=2, start=10, resigned_at=900)
    second = HolderSpan("e", 2, _lease(3, 2, 800, 3000), token=4, start=950)
    other = HolderSpan("f", 3, _lease(5, 3, 0, 3000), token=6, start=20)  # another election
    assert check_exclusive([first, second, other]) == []


# ------------------------------------------------------------------- (b) tokens


def test_tokens_flags_a_later_holder_with_a_smaller_token() -> None:
    history = CoordHistory()
    history.spans += [
        HolderSpan("e", 1, _lease(1, 1, 0, 500), token=7, start=10),
        HolderSpan("e", 2, _lease(3, 2, 600, 1500), token=7, start=700),
    ]
    (violation,) = check_tokens(history)
    assert "with token 7, not above token 7" in violation


def test_tokens_flags_a_fenced_write_going_back_to_an_older_token() -> None:
    history = CoordHistory()
    history.fenced += [FencedWrite("e", 1, 5, revision=10), FencedWrite("e", 2, 4, revision=11)]
    (violation,) = check_tokens(history)
    assert "revision 11 with token 4 after one with token 5" in violation


# ------------------------------------------------------------ (c) needless expiry


def _renewed_lease_expired_at(t: float) -> CoordHistory:
    history = CoordHistory()
    rec = _lease(1, 100, 0, t + 500)
    rec.expiry_proposed_at = t
    history.leases[1] = rec
    return history


def test_needless_expiry_flags_a_lease_expired_while_a_majority_was_healthy() -> None:
    crash = FaultRecord("crash", 2000, 2500, frozenset({1}))  # a minority, in the window
    (violation,) = check_no_needless_expiry(_renewed_lease_expired_at(3000), _schedule(crash))
    assert violation.startswith("(c) lease 1 of client 100")
    assert "only voters [1] of [1, 2, 3] were faulty" in violation


def test_needless_expiry_flags_a_client_giving_up_a_lease_it_renewed() -> None:
    history = CoordHistory()
    rec = _lease(1, 100, 0, 2500)
    rec.lost_reason, rec.lost_at = REASON_DEADLINE, 2500
    history.leases[1] = rec
    (violation,) = check_no_needless_expiry(history, _schedule())
    assert "marked lost by its client" in violation


@pytest.mark.parametrize(
    ("faults", "client_faults"),
    [
        ((FaultRecord("crash", 1800, 2200, frozenset({1, 2})),), ()),  # a majority down
        ((FaultRecord("slow", 2500, 2600),), ()),  # network-wide
        ((FaultRecord("reconfigure", 1000, 1000),), ()),  # voters changed
        ((), (ClientFault("hang", 100, 2000, 2600),)),  # the client hung
        ((), (ClientFault("cut", 100, 2000, 2600, frozenset({1})),)),  # the client was cut off
        (
            (
                FaultRecord("partition", 1700, 2100, groups=(frozenset({1}), frozenset({2, 3}))),
                FaultRecord("pause", 2200, 2300, frozenset({2})),
            ),
            (),
        ),  # two minorities one after the other
    ],
)
def test_needless_expiry_excuses_windows_that_are_not_clean(
    faults: tuple[FaultRecord, ...], client_faults: tuple[ClientFault, ...]
) -> None:
    schedule = _schedule(*faults, client_faults=client_faults)
    assert check_no_needless_expiry(_renewed_lease_expired_at(3000), schedule) == []


def test_needless_expiry_ignores_leases_the_client_stopped_renewing() -> None:
    stopped = _renewed_lease_expired_at(3000)
    stopped.leases[1].stopped_at = 2900
    assert check_no_needless_expiry(stopped, _schedule()) == []
    # Lost earlier (its own window was checked then): the cluster's expiry follows.
    lost = _renewed_lease_expired_at(3000)
    lost.leases[1].lost_reason, lost.leases[1].lost_at = REASON_DEADLINE, 1200
    violations = check_no_needless_expiry(lost, _schedule())
    assert len(violations) == 1 and "marked lost by its client" in violations[0]


# ------------------------------------------------------------------ planted bugs

PLANTED = [
    # bug, a seed it breaks, the property that catches it there
    ("unconfirmed_keepalive", 8, "(a)"),
    ("unconfirmed_keepalive", 135, "(c)"),
    ("token_from_lease", 10, "(b)"),
    ("lookup_before_timing", 2, "(c)"),
    ("checkpoint_restore", 236, "(a)"),
    ("checkpoint_restore", 799, "(a)"),
]


@pytest.mark.parametrize(("bug", "seed", "prop"), PLANTED)
def test_a_planted_bug_is_caught_and_the_same_seed_passes_without_it(
    bug: str, seed: int, prop: str
) -> None:
    broken = CoordSimulation(seed, CoordSimConfig(bugs=frozenset({bug}))).run()
    assert any(v.startswith(prop) for v in broken.violations), broken.violations
    assert CoordSimulation(seed).run().violations == []
