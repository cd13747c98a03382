"""The verdict on each cluster and the control plane's next change (pure logic)."""

from __future__ import annotations

import pytest

from hacoord.adapters.kafka.config import ClusterConfig, GroupConfig, Mode, TopicConfig
from hacoord.adapters.kafka.detect import Health, Verdict, judge
from hacoord.adapters.kafka.plan import Change, ChangeKind, next_change
from hacoord.adapters.kafka.topology import ClusterState, Topology
from hacoord.adapters.observations import HostView, Observation

CLUSTERS = ("k1", "k2", "k3")


def seen(member: str, **views: HostView) -> Observation:
    return Observation(member, views)


UP = HostView(True)
DOWN = HostView(False, 3, "metadata: refused")
FAILING_ONCE = HostView(False, 1, "canary: no answer")


def test_down_needs_a_majority_of_all_members_not_of_those_reporting() -> None:
    two_of_five = [seen("m1", k1=DOWN), seen("m2", k1=DOWN)]
    verdict = judge("k1", two_of_five, members=5, failures_needed=2)
    assert verdict.health is Health.SUSPECT
    assert "need 3" in verdict.reason
    three = [*two_of_five, seen("m3", k1=DOWN)]
    verdict = judge("k1", three, members=5, failures_needed=2)
    assert verdict.health is Health.DOWN
    assert verdict.down == ("m1", "m2", "m3")
    assert verdict.reason.startswith("3 of 5 members cannot reach k1: metadata: refused")


def test_one_member_reaching_the_cluster_vetoes_down() -> None:
    views = [seen("m1", k1=DOWN), seen("m2", k1=DOWN), seen("m3", k1=UP)]
    verdict = judge("k1", views, members=3, failures_needed=2)
    assert verdict.health is Health.SUSPECT
    assert verdict.up == ("m3",) and verdict.down == ("m1", "m2")


def test_failures_below_the_threshold_do_not_count_as_down() -> None:
    views = [seen(m, k1=FAILING_ONCE) for m in ("m1", "m2", "m3")]
    assert judge("k1", views, 3, failures_needed=2).health is Health.SUSPECT
    assert judge("k1", views, 3, failures_needed=1).health is Health.DOWN


def test_up_needs_a_majority_and_no_report_is_unknown() -> None:
    assert judge("k1", [seen("m1", k1=UP)], 3, 2).health is Health.SUSPECT
    assert judge("k1", [seen("m1", k1=UP), seen("m2", k1=UP)], 3, 2).health is Health.UP
    unknown = judge("k1", [seen("m1", k2=UP)], 3, 2)
    assert unknown.health is Health.UNKNOWN and "no member reports on k1" in unknown.reason


def test_bad_member_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="members must be >= 1"):
        judge("k1", [], 0, 2)
    with pytest.raises(ValueError, match="failures_needed must be >= 1"):
        judge("k1", [], 3, 0)


def config(mode: Mode) -> GroupConfig:
    return GroupConfig(
        "orders",
        clusters=tuple(
            ClusterConfig(n, (f"127.0.0.1:{9092 + i}",)) for i, n in enumerate(CLUSTERS)
        ),
        topics=(TopicConfig("t"),),
        mode=mode,
    )


def verdicts(**health: Health) -> dict[str, Verdict]:
    out = {n: Verdict(n, Health.UP, f"{n} up") for n in CLUSTERS}
    out.update({n: Verdict(n, h, f"{n} {h}") for n, h in health.items()})
    return out


def plan(
    topology: Topology,
    seen_as: dict[str, Verdict],
    drained: dict[str, str] | None = None,
    up_since: dict[str, float] | None = None,
    now: float = 100.0,
    promote: str = "",
) -> Change | None:
    return next_change(
        topology, seen_as, drained or {}, up_since or {}, now, 30.0, promote_request=promote
    )


def test_nothing_to_do_when_the_topology_matches() -> None:
    topology = Topology.initial(config(Mode.PRIMARY))
    assert plan(topology, verdicts()) is None
    assert plan(topology, verdicts(k2=Health.SUSPECT, k3=Health.UNKNOWN)) is None


def test_a_dead_primary_is_drained_and_the_first_up_cluster_promoted_in_one_change() -> None:
    topology = Topology.initial(config(Mode.PRIMARY))
    change = plan(topology, verdicts(k1=Health.DOWN, k2=Health.SUSPECT))
    assert change == Change(ChangeKind.DRAIN, "k1", "k1 down", healthy=False, new_primary="k3")
    nowhere = plan(topology, verdicts(k1=Health.DOWN, k2=Health.DOWN, k3=Health.DOWN))
    assert nowhere is not None and nowhere.kind is ChangeKind.DRAIN
    assert nowhere.new_primary == ""


def test_a_primary_left_without_writes_is_replaced_once_another_is_up() -> None:
    topology = Topology.initial(config(Mode.PRIMARY))
    drained = topology.with_cluster("k1", ClusterState(False, False, "down"), "drain k1")
    assert plan(drained, verdicts(k1=Health.DOWN, k2=Health.DOWN, k3=Health.DOWN)) is not None
    after = drained.with_cluster("k2", ClusterState(False, False), "x").with_cluster(
        "k3", ClusterState(False, False), "y"
    )
    change = plan(after, verdicts(k1=Health.DOWN, k2=Health.DOWN, k3=Health.UP))
    assert change is not None and (change.kind, change.cluster) == (ChangeKind.PROMOTE, "k3")


def test_a_returning_cluster_is_readmitted_only_after_the_stable_time() -> None:
    topology = Topology.initial(config(Mode.MULTI_PRIMARY)).with_cluster(
        "k2", ClusterState(False, False, "down"), "drain k2"
    )
    assert plan(topology, verdicts(), up_since={"k2": 80.0}, now=100.0) is None
    change = plan(topology, verdicts(), up_since={"k2": 70.0}, now=100.0)
    assert change is not None and (change.kind, change.cluster) == (ChangeKind.READMIT, "k2")
    assert "up for 30 s" in change.reason
    assert plan(topology, verdicts(k2=Health.SUSPECT), up_since={"k2": 0.0}) is None


def test_an_operators_drain_keeps_health_and_its_undrain_readmits_at_once() -> None:
    topology = Topology.initial(config(Mode.PRIMARY))
    change = plan(topology, verdicts(), drained={"k1": "disk swap"})
    assert change is not None and change.kind is ChangeKind.DRAIN
    assert (change.cluster, change.healthy, change.automatic) == ("k1", True, False)
    assert change.new_primary == "k2" and "disk swap" in change.reason
    drained = topology.promoted("k2", "p").with_cluster(
        "k1", ClusterState(True, False, "disk swap"), "d"
    )
    assert plan(drained, verdicts(), drained={"k1": "disk swap"}) is None
    undrained = plan(drained, verdicts())
    assert undrained is not None and (undrained.kind, undrained.cluster) == (
        ChangeKind.READMIT,
        "k1",
    )


def test_a_drained_cluster_that_dies_loses_its_health() -> None:
    topology = Topology.initial(config(Mode.MULTI_PRIMARY)).with_cluster(
        "k3", ClusterState(True, False, "drained"), "d"
    )
    change = plan(topology, verdicts(k3=Health.DOWN), drained={"k3": ""})
    assert change is not None and (change.kind, change.healthy) == (ChangeKind.DRAIN, False)


def test_an_operators_promote_request_comes_first() -> None:
    topology = Topology.initial(config(Mode.PRIMARY))
    change = plan(topology, verdicts(k2=Health.DOWN), promote="k3")
    assert change == Change(
        ChangeKind.PROMOTE, "k3", "operator asked to promote k3", automatic=False
    )
