"""The Kubernetes adapter against three real kube-apiservers and a real etcd group.

One test bed (three zones, each an etcd + kube-apiserver with a simulated kubelet running the
member pods as etcd processes) serves the module; every test makes its own etcd group on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from coordinator import local_client, single_member
from hacoord.adapters.k8s import (
    AccessDeniedError,
    Blocked,
    GroupConfig,
    Idle,
    K8sAdapter,
    Replace,
    ReplacementBlockedError,
    Timings,
    UnknownMemberError,
    Why,
    Zone,
    ZoneError,
)
from hacoord.adapters.k8s.etcd_group import etcd_template
from hacoord.adapters.k8s.group_bed import EtcdGroupBed
from hacoord.adapters.k8s.kube import ZoneClient
from hacoord.adapters.k8s.pods import REVISION, TOKEN
from hacoord.adapters.k8s.testbed import K8sUnavailableError
from hacoord.server.coordination import CoordinationService
from hacoord.workflow import Status, WorkflowRecord
from k8s_support import member_ids, stored_keys, until, watched

pytestmark = pytest.mark.asyncio(loop_scope="module")

TIMINGS = Timings(interval_s=0.2, api_timeout_s=3.0, ready_timeout_s=60, catch_up_timeout_s=60)
NEW_TEMPLATE = etcd_template(snapshot_count="5000")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def k8s(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdGroupBed]:
    bed = EtcdGroupBed(tmp_path_factory.mktemp("k8s"))
    try:
        await bed.start()
    except K8sUnavailableError as e:
        await bed.close()
        if os.environ.get("CI") == "true":
            pytest.fail(f"kube-apiserver is required when CI=true but is unavailable: {e}")
        pytest.skip(f"kube-apiserver unavailable: {e}")
    try:
        yield bed
    finally:
        await bed.close()


@pytest_asyncio.fixture(loop_scope="module")
async def coord(tmp_path: Path) -> AsyncIterator[CoordinationService]:
    async with single_member(tmp_path / "coord") as service:
        yield service


@contextlib.asynccontextmanager
async def bootstrapped(
    k8s: EtcdGroupBed, coord: CoordinationService, name: str
) -> AsyncIterator[tuple[GroupConfig, list[str]]]:
    """A new etcd group, bootstrapped by an adapter; yields it and a log of progress lines."""
    config = k8s.group(name, timings=TIMINGS)
    lines: list[str] = []
    adapter = K8sAdapter(local_client(coord), config, instance="boot", progress=lines.append)
    try:
        await adapter.bootstrap()
        yield config, lines
    finally:
        await adapter.close()
        await k8s.remove_group(config)


async def run_until_idle(adapter: K8sAdapter, template_revision: str, timeout_s: float) -> None:
    async def settled() -> bool:
        await adapter.wait_ticks(1)
        view = adapter.state.view
        return (
            isinstance(adapter.state.decision, Idle)
            and view is not None
            and all(m.pod is not None and m.pod.revision == template_revision for m in view.members)
        )

    await until(settled, timeout_s, "the group to be idle on the new revision")


def replaced_members(history: list[WorkflowRecord]) -> list[tuple[str, str]]:
    """(member, why) of each succeeded replacement, oldest first."""
    return [
        (str(r.params["member"]), str(r.params["why"]))
        for r in reversed(history)
        if r.status is Status.SUCCEEDED
    ]


async def pods_of(config: GroupConfig) -> dict[str, dict[str, str]]:
    """member -> {uid, revision, token} as the API servers have them."""
    found = {}
    for member in config.members:
        zone = ZoneClient(config.zone(member.zone))
        await zone.open()
        try:
            pod = await zone.get_pod(member.name)
        finally:
            await zone.close()
        assert pod is not None, f"{member.name} has no pod"
        annotations = pod.metadata.annotations or {}
        found[member.name] = {
            "uid": str(pod.metadata.uid),
            "revision": annotations.get(REVISION, ""),
            "token": annotations.get(TOKEN, ""),
            "node": str(pod.spec.node_name or ""),
        }
    return found


async def test_a_rollout_across_three_clusters_keeps_a_quorum_and_loses_no_write(
    k8s: EtcdGroupBed, coord: CoordinationService
) -> None:
    async with bootstrapped(k8s, coord, "roll") as (config, _):
        config = replace(config, first_zone="zone-b")
        ids_before = await member_ids(config)
        before = await pods_of(config)
        adapter = K8sAdapter(local_client(coord), config, instance="a1")
        async with watched(config, "roll") as (writes, health):
            task = asyncio.create_task(adapter.run())
            try:
                revision = await adapter.set_template(NEW_TEMPLATE)
                await run_until_idle(adapter, revision, timeout_s=180)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            acked, acked_at = list(writes.acked), list(writes.acked_at)
        history = await adapter.store().history()
        after = await pods_of(config)
        stored = await stored_keys(config, "roll")
        ids_after = await member_ids(config)
        await adapter.close()

    assert [m for m, _ in replaced_members(history)] == [
        "roll-zone-b",
        "roll-zone-a",
        "roll-zone-c",
    ]
    assert {why for _, why in replaced_members(history)} == {str(Why.ROLLOUT)}
    assert all(r.status is Status.SUCCEEDED for r in history)
    for record in history:
        caught_up = record.output("caught-up")
        assert caught_up["applied_index"] >= caught_up["target_index"] > 0
    for name, pod in after.items():
        assert pod["uid"] != before[name]["uid"], f"{name} was not replaced"
        assert pod["revision"] == revision
        assert pod["token"] == str(history[0].token)
    # The replacements re-attached each member's volume: the same etcd members, no new ones.
    assert ids_after == ids_before
    for record in history:  # the group took writes while each member was being replaced
        assert record.finished_at is not None
        during = [t for t in acked_at if record.created_at <= t <= record.finished_at]
        assert during, f"no write acknowledged during {record.id}"
    # Never more than one member down at once; the others kept (or quickly re-elected) a leader.
    assert health.fewest_up == len(config.members) - 1, f"members up: {health.up}"
    assert len(health.up) > 20 and max(health.healthy) == len(config.members)
    assert len(acked) > 50
    lost = set(acked) - stored
    assert not lost, f"{len(lost)} acknowledged writes lost"


async def test_an_unplanned_kill_during_a_rollout_is_repaired_first(
    k8s: EtcdGroupBed, coord: CoordinationService
) -> None:
    async with bootstrapped(k8s, coord, "kill") as (config, _):
        victim = "kill-zone-c"
        first_done = asyncio.Event()

        def progress(line: str) -> None:
            if line.endswith("kill-zone-a replaced") and not first_done.is_set():
                first_done.set()
                k8s.kubelet_of(config, victim).kill_process(victim)

        adapter = K8sAdapter(local_client(coord), config, instance="a1", progress=progress)
        async with watched(config, "kill") as (writes, health):
            task = asyncio.create_task(adapter.run())
            try:
                revision = await adapter.set_template(NEW_TEMPLATE)
                await asyncio.wait_for(first_done.wait(), 120)
                await run_until_idle(adapter, revision, timeout_s=180)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            acked = list(writes.acked)
        history = await adapter.store().history()
        stored = await stored_keys(config, "kill")
        await adapter.close()

    assert replaced_members(history) == [
        ("kill-zone-a", "rollout"),
        (victim, "repair"),
        ("kill-zone-b", "rollout"),
    ]
    # The repair and the rollout never took a second member down beside the killed one.
    assert health.fewest_up == len(config.members) - 1, f"members up: {health.up}"
    assert not set(acked) - stored


async def test_an_adapter_that_dies_mid_replacement_is_finished_by_the_next_exactly_once(
    k8s: EtcdGroupBed, coord: CoordinationService
) -> None:
    async with bootstrapped(k8s, coord, "crash") as (config, _):
        before = await pods_of(config)
        deleted = asyncio.Event()

        def progress_a(line: str) -> None:
            if ": delete done" in line:
                deleted.set()

        first = K8sAdapter(local_client(coord), config, instance="first", progress=progress_a)
        second = K8sAdapter(local_client(coord), config, instance="second")
        await first.request_replacement("crash-zone-b")
        task_a = asyncio.create_task(first.run())
        await first.leading.wait()
        task_b = asyncio.create_task(second.run())
        try:
            await asyncio.wait_for(deleted.wait(), 60)
            task_a.cancel()  # the first dies between two steps of its replacement
            await asyncio.gather(task_a, return_exceptions=True)
            await asyncio.wait_for(second.leading.wait(), 30)

            async def replaced_once() -> bool:
                records = await second.store().history()
                return bool(records) and records[0].status is not Status.RUNNING

            await until(replaced_once, 120, "the resumed replacement to finish")
            await second.wait_ticks(2)
        finally:
            task_b.cancel()
            await asyncio.gather(task_b, return_exceptions=True)
        history = await second.store().history()
        after = await pods_of(config)
        logs = sorted(p.name for p in (k8s.base_dir / "pods" / "zone-b").glob("crash-zone-b-*"))
        await first.close()
        await second.close()

    assert len(history) == 1, [r.id for r in history]
    record = history[0]
    assert record.status is Status.SUCCEEDED, record.error
    assert record.takeovers, "the second adapter did not take the run over"
    assert record.token > record.steps[0].token
    assert after["crash-zone-b"]["uid"] != before["crash-zone-b"]["uid"]
    assert after["crash-zone-b"]["token"] == str(record.token)
    assert after["crash-zone-a"]["uid"] == before["crash-zone-a"]["uid"]
    assert after["crash-zone-c"]["uid"] == before["crash-zone-c"]["uid"]
    assert len(logs) == 2, f"crash-zone-b ran {len(logs)} times: {logs}"  # first pod + one


async def run_until_replaced(adapter: K8sAdapter, count: int, timeout_s: float) -> None:
    """Run ``adapter`` until ``count`` replacements succeeded and it is idle again."""
    task = asyncio.create_task(adapter.run())

    async def done() -> bool:
        await adapter.wait_ticks(1)
        succeeded = [r for r in adapter.state.finished if r.status is Status.SUCCEEDED]
        return len(succeeded) >= count and isinstance(adapter.state.decision, Idle)

    try:
        await until(done, timeout_s, f"{count} replacements and an idle group")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_member_on_a_cordoned_node_moves_to_another_node(
    k8s: EtcdGroupBed, coord: CoordinationService
) -> None:
    async with bootstrapped(k8s, coord, "drain") as (config, _):
        ids_before = await member_ids(config)
        before = await pods_of(config)
        node = before["drain-zone-b"]["node"]
        zone = ZoneClient(config.zone("zone-b"))
        await zone.open()
        adapter = K8sAdapter(local_client(coord), config, instance="a1")
        await zone.core.patch_node(node, {"spec": {"unschedulable": True}})
        try:
            await run_until_replaced(adapter, 1, timeout_s=120)
        finally:
            await zone.core.patch_node(node, {"spec": {"unschedulable": False}})
            await zone.close()
        history = await adapter.store().history()
        after = await pods_of(config)
        ids_after = await member_ids(config)
        await adapter.close()

    assert replaced_members(history) == [("drain-zone-b", "drain")]
    assert after["drain-zone-b"]["node"] not in ("", node)
    assert after["drain-zone-a"]["uid"] == before["drain-zone-a"]["uid"]
    assert ids_after == ids_before  # the same member, its volume re-attached on the new node


async def test_a_member_on_a_dead_node_is_force_deleted_and_replaced_elsewhere(
    k8s: EtcdGroupBed, coord: CoordinationService
) -> None:
    async with bootstrapped(k8s, coord, "dead") as (config, _):
        ids_before = await member_ids(config)
        before = await pods_of(config)
        node = before["dead-zone-c"]["node"]
        kubelet = k8s.kubelets["zone-c"]
        adapter = K8sAdapter(local_client(coord), config, instance="a1")
        await kubelet.fail_node(node)
        try:
            await run_until_replaced(adapter, 1, timeout_s=120)
        finally:
            await kubelet.recover_node(node)
        history = await adapter.store().history()
        after = await pods_of(config)
        ids_after = await member_ids(config)
        await adapter.close()

    assert replaced_members(history) == [("dead-zone-c", "repair")]
    assert history[0].output("preflight")["force"] is True  # its kubelet will never confirm
    assert after["dead-zone-c"]["node"] not in ("", node)
    assert ids_after == ids_before


async def test_a_zone_whose_api_server_is_down_blocks_replacements_and_says_why(
    k8s: EtcdGroupBed, coord: CoordinationService
) -> None:
    async with bootstrapped(k8s, coord, "down") as (config, _):
        adapter = K8sAdapter(local_client(coord), config, instance="a1")
        await adapter.open()
        await adapter.set_template(NEW_TEMPLATE)
        k8s.clusters.kill_apiserver("zone-c")
        try:
            decision, _, _ = await adapter.decide()
        finally:
            await k8s.clusters.restart_apiserver("zone-c")
        assert isinstance(decision, Blocked)
        assert "zone zone-c" in decision.reason and "unreachable" in decision.reason
        decision, _, _ = await adapter.decide()
        assert isinstance(decision, Replace) and decision.member == "down-zone-a"
        with pytest.raises(ReplacementBlockedError, match="pods exist for down-zone-a"):
            await adapter.bootstrap()  # a running group is never bootstrapped over
        await adapter.close()


async def test_bad_input_gets_a_clear_error(
    k8s: EtcdGroupBed, coord: CoordinationService, tmp_path: Path
) -> None:
    config = k8s.group("bad", timings=TIMINGS)
    adapter = K8sAdapter(local_client(coord), config)
    with pytest.raises(UnknownMemberError, match="no member 'bad-zone-x'"):
        await adapter.request_replacement("bad-zone-x")

    missing = ZoneClient(Zone("zone-a", tmp_path / "nope.yaml"))
    with pytest.raises(ZoneError, match=r"zone zone-a: kubeconfig .*nope.yaml does not exist"):
        await missing.open()
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("clusters: [}")
    with pytest.raises(ZoneError, match=r"garbage\.yaml is not usable"):
        await ZoneClient(Zone("zone-a", garbage)).open()

    limited = ZoneClient(Zone("zone-a", k8s.clusters.limited_kubeconfig("zone-a"), "db"))
    await limited.open()
    try:
        with pytest.raises(
            AccessDeniedError, match=r"zone zone-a: list pods in db: refused \(403\)"
        ):
            await limited.check()
    finally:
        await limited.close()
    await adapter.close()
