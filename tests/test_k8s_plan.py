"""The Kubernetes adapter's decisions and configuration checks, without any cluster."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hacoord.adapters.k8s import (
    Blocked,
    ConfigError,
    GroupConfig,
    GroupView,
    Idle,
    Member,
    MemberHealth,
    MemberView,
    PodTemplate,
    PodView,
    Replace,
    UnknownMemberError,
    Why,
    Zone,
    decide,
)
from hacoord.adapters.k8s.pods import member_pod

TEMPLATE = PodTemplate(image="etcd:3.7", env={"ETCD_SNAPSHOT_COUNT": "1000"})
NEW = replace(TEMPLATE, env={"ETCD_SNAPSHOT_COUNT": "2000"})


def config(first_zone: str = "") -> GroupConfig:
    zones = tuple(Zone(z, Path(f"/k/{z}")) for z in ("zone-a", "zone-b", "zone-c"))
    members = tuple(
        Member(f"db-{z[-1]}", z, f"http://127.0.0.1:{2379 + i}")
        for i, z in enumerate(("zone-a", "zone-b", "zone-c"))
    )
    return GroupConfig("orders", zones, members, TEMPLATE, first_zone=first_zone)


def healthy_view(cfg: GroupConfig, revision: str = TEMPLATE.revision) -> GroupView:
    members = tuple(
        MemberView(
            name=m.name,
            zone=m.zone,
            pod=PodView(f"uid-{m.name}", "1", "Running", True, revision, f"{m.zone}-n1", False),
            health=MemberHealth(True, 100, 100, is_leader=m.name == "db-a"),
            node_ready=True,
            lag=0,
        )
        for m in cfg.members
    )
    return GroupView(members, {}, 100)


def with_member(view: GroupView, name: str, **changes: object) -> GroupView:
    members = tuple(replace(m, **changes) if m.name == name else m for m in view.members)  # type: ignore[arg-type]
    return replace(view, members=members)


def failed_pod(view: GroupView, name: str) -> GroupView:
    pod = view.member(name).pod
    assert pod is not None
    return with_member(
        view,
        name,
        pod=replace(pod, phase="Failed", ready=False, message="exit 137"),
        health=MemberHealth(False, detail="no answer"),
        lag=None,
    )


def test_an_up_to_date_healthy_group_is_idle() -> None:
    cfg = config()
    assert decide(cfg, healthy_view(cfg), TEMPLATE.revision) == Idle()


def test_a_rollout_starts_with_the_first_zone_then_goes_in_order() -> None:
    cfg = config(first_zone="zone-b")
    view = healthy_view(cfg)
    decision = decide(cfg, view, NEW.revision)
    assert decision == Replace(
        "db-b", Why.ROLLOUT, f"revision {TEMPLATE.revision} -> {NEW.revision}"
    )
    pod_b = view.member("db-b").pod
    assert pod_b is not None
    done_b = with_member(view, "db-b", pod=replace(pod_b, revision=NEW.revision))
    assert isinstance(next_ := decide(cfg, done_b, NEW.revision), Replace)
    assert next_.member == "db-a"


def test_a_failed_member_is_repaired_before_the_rollout_goes_on() -> None:
    cfg = config()
    view = failed_pod(healthy_view(cfg), "db-c")
    decision = decide(cfg, view, NEW.revision)
    assert isinstance(decision, Replace)
    assert (decision.member, decision.why) == ("db-c", Why.REPAIR)
    assert "exit 137" in decision.detail


def test_repairs_run_while_paused_but_planned_work_does_not() -> None:
    cfg = config()
    assert decide(cfg, healthy_view(cfg), NEW.revision, paused=True) == Blocked(
        "planned replacements are paused"
    )
    decision = decide(cfg, failed_pod(healthy_view(cfg), "db-a"), NEW.revision, paused=True)
    assert isinstance(decision, Replace) and decision.why is Why.REPAIR


def test_planned_work_waits_for_a_member_that_is_starting() -> None:
    cfg = config()
    view = healthy_view(cfg)
    pod = view.member("db-a").pod
    assert pod is not None
    starting = with_member(view, "db-a", pod=replace(pod, ready=False))
    decision = decide(cfg, starting, NEW.revision)
    assert isinstance(decision, Blocked)
    assert "db-a: its pod is not Ready" in decision.reason


def test_a_lagging_member_blocks_planned_work() -> None:
    cfg = config()
    view = with_member(healthy_view(cfg), "db-b", lag=5000)
    decision = decide(cfg, view, NEW.revision)
    assert isinstance(decision, Blocked)
    assert "db-b: it is 5000 entries behind the leader (at most 1000)" in decision.reason


def test_an_unreachable_zone_blocks_everything_and_says_which() -> None:
    cfg = config()
    view = replace(
        failed_pod(healthy_view(cfg), "db-a"),
        unreachable={"zone-c": "zone zone-c: read pod db-c: API server unreachable (refused)"},
    )
    decision = decide(cfg, view, NEW.revision)
    assert isinstance(decision, Blocked)
    assert "zone zone-c: read pod db-c: API server unreachable" in decision.reason


def test_a_cordoned_node_goes_before_the_rollout() -> None:
    cfg = config()
    view = with_member(healthy_view(cfg), "db-c", node_cordoned=True)
    decision = decide(cfg, view, NEW.revision)
    assert isinstance(decision, Replace)
    assert (decision.member, decision.why) == ("db-c", Why.DRAIN)


def test_a_requested_replacement_runs_on_an_up_to_date_group() -> None:
    cfg = config()
    decision = decide(cfg, healthy_view(cfg), TEMPLATE.revision, requested=["db-b"])
    assert isinstance(decision, Replace)
    assert (decision.member, decision.why) == ("db-b", Why.REQUESTED)


def test_a_dead_node_whose_member_still_serves_waits_for_the_others() -> None:
    cfg = config()
    view = with_member(healthy_view(cfg), "db-a", node_ready=False)
    decision = decide(cfg, view, TEMPLATE.revision)
    assert isinstance(decision, Replace) and decision.why is Why.REPAIR
    assert "still answers" in decision.detail
    other_down = failed_pod(view, "db-b")
    first = decide(cfg, other_down, TEMPLATE.revision)
    assert isinstance(first, Replace) and first.member == "db-b"  # the dead one first


def test_the_pod_manifest_carries_token_revision_claim_and_probe() -> None:
    cfg = config()
    member = cfg.member("db-b")
    pod = member_pod(cfg, member, NEW, token=42, replacement="replace-1")
    annotations = pod["metadata"]["annotations"]
    assert annotations["hacoord.io/fencing-token"] == "42"
    assert annotations["hacoord.io/revision"] == NEW.revision
    assert annotations["hacoord.io/replacement"] == "replace-1"
    spec = pod["spec"]
    assert spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == "data-db-b"
    assert spec["containers"][0]["readinessProbe"]["httpGet"]["port"] == 2380
    assert {"name": "ETCD_SNAPSHOT_COUNT", "value": "2000"} in spec["containers"][0]["env"]


def test_template_revisions_follow_content() -> None:
    assert TEMPLATE.revision == PodTemplate.from_mapping(TEMPLATE.to_mapping()).revision
    assert TEMPLATE.revision != NEW.revision


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"members": ()}, "needs at least 3 members"),
        ({"first_zone": "zone-x"}, "first_zone 'zone-x' is not a zone"),
        ({"name": "Orders!"}, "group 'Orders!'"),
    ],
)
def test_bad_group_settings_are_named(change: dict[str, object], message: str) -> None:
    cfg = config()
    fields = {
        "name": cfg.name,
        "zones": cfg.zones,
        "members": cfg.members,
        "template": cfg.template,
        "first_zone": "",
    }
    fields.update(change)
    with pytest.raises(ConfigError, match=message):
        GroupConfig(**fields)  # type: ignore[arg-type]


def test_a_member_in_an_unknown_zone_is_refused() -> None:
    with pytest.raises(ConfigError, match="member db-x is in unknown zone 'zone-x'"):
        GroupConfig.from_mapping(
            {
                "name": "orders",
                "zones": [{"name": "zone-a", "kubeconfig": "a.yaml"}],
                "members": [
                    {"name": f"db-{i}", "zone": "zone-a", "endpoint": f"http://h:{i + 1}"}
                    for i in range(2)
                ]
                + [{"name": "db-x", "zone": "zone-x", "endpoint": "http://h:9"}],
                "template": {"image": "etcd"},
            }
        )


def test_missing_and_malformed_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="missing setting 'template'"):
        GroupConfig.from_mapping({"name": "orders", "zones": [], "members": []})
    with pytest.raises(ConfigError, match="endpoint 'localhost' must be http"):
        Member("db-a", "zone-a", "localhost")
    with pytest.raises(ConfigError, match="unknown timings no_such_timing"):
        GroupConfig.from_mapping(
            {
                "name": "orders",
                "zones": [{"name": "zone-a", "kubeconfig": "a.yaml"}],
                "members": [],
                "template": {"image": "etcd"},
                "timings": {"no_such_timing": 1},
            }
        )


def test_unknown_members_are_named_with_the_known_ones() -> None:
    with pytest.raises(UnknownMemberError, match=r"no member 'db-z' \(members: db-a, db-b, db-c\)"):
        config().member("db-z")
