"""The eviction webhook and fencing enforced by the real kube-apiservers.

The module has its own three-zone test bed: the webhook configurations it installs (with
``failurePolicy: Fail``) must not reach the other modules' pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio.client.exceptions import ApiException

from certs import make_certs
from coordinator import local_client, single_member
from hacoord.adapters.k8s import (
    AdmissionWebhook,
    FencedError,
    GroupConfig,
    Idle,
    K8sAdapter,
    Timings,
    election_name,
)
from hacoord.adapters.k8s.group_bed import EtcdGroupBed
from hacoord.adapters.k8s.install import install, uninstall
from hacoord.adapters.k8s.kube import ZoneClient
from hacoord.adapters.k8s.pods import EVICTION_REQUESTED_BY, TOKEN
from hacoord.adapters.k8s.testbed import K8sUnavailableError
from hacoord.adapters.k8s.webhook import ADAPTER_GROUP, ADAPTER_USER, TOKEN_EXTRA
from hacoord.server.coordination import CoordinationService
from hacoord.workflow import Status
from k8s_support import until, watched

pytestmark = pytest.mark.asyncio(loop_scope="module")

TIMINGS = Timings(interval_s=0.2, api_timeout_s=3.0, ready_timeout_s=60, catch_up_timeout_s=60)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def k8s(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdGroupBed]:
    bed = EtcdGroupBed(tmp_path_factory.mktemp("k8s-webhook"))
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
async def fenced_group(
    k8s: EtcdGroupBed, coord: CoordinationService, name: str, tmp_path: Path
) -> AsyncIterator[tuple[GroupConfig, AdmissionWebhook]]:
    """A group whose zones call a webhook of this process, bootstrapped with fencing on."""
    config = k8s.group(name, timings=TIMINGS)
    ca, cert, key = make_certs(tmp_path, ("webhook",))["webhook"]
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    webhook = AdmissionWebhook(local_client(coord), config, election=election_name(name))
    await webhook.start("127.0.0.1", 0, tls)
    admins = {z.name: ZoneClient(z) for z in config.zones}
    try:
        for zone in admins.values():
            await zone.open()
            await install(zone, config, f"https://127.0.0.1:{webhook.port}", Path(ca).read_bytes())
        boot = K8sAdapter(local_client(coord), config, instance="boot", api_fencing=True)
        await boot.bootstrap()
        await boot.close()
        yield config, webhook
    finally:
        await k8s.remove_group(config)  # while the webhook still answers for its pods
        for zone in admins.values():
            with contextlib.suppress(Exception):
                await uninstall(zone, config)
            await zone.close()
        await webhook.close()


async def evict(zone: ZoneClient, pod: str) -> ApiException:
    """Ask the API server to evict ``pod`` as a drain would; return its refusal."""
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": zone.namespace},
    }
    with pytest.raises(ApiException) as refused:
        await zone.core.create_namespaced_pod_eviction(pod, zone.namespace, body)
    return refused.value


async def test_evictions_in_two_zones_at_once_are_denied_and_replaced_one_at_a_time(
    k8s: EtcdGroupBed, coord: CoordinationService, tmp_path: Path
) -> None:
    async with fenced_group(k8s, coord, "evict", tmp_path) as (config, webhook):
        zones = {z.name: ZoneClient(z) for z in config.zones}
        for zone in zones.values():
            await zone.open()
        try:
            refusals = await asyncio.gather(
                evict(zones["zone-a"], "evict-zone-a"), evict(zones["zone-b"], "evict-zone-b")
            )
            marked = {
                name: ((await zones[z].get_pod(name)).metadata.annotations or {}).get(  # type: ignore[union-attr]
                    EVICTION_REQUESTED_BY
                )
                for z, name in (("zone-a", "evict-zone-a"), ("zone-b", "evict-zone-b"))
            }
            adapter = K8sAdapter(local_client(coord), config, instance="a1", api_fencing=True)
            async with watched(config, "evict") as (writes, health):
                task = asyncio.create_task(adapter.run())
                try:

                    async def replaced_both() -> bool:
                        await adapter.wait_ticks(1)
                        done = [r for r in adapter.state.finished if r.status is Status.SUCCEEDED]
                        return len(done) == 2 and isinstance(adapter.state.decision, Idle)

                    await until(replaced_both, 120, "both evicted members to be replaced")
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            history = list(reversed(await adapter.store().history()))
            new_pods = {name: await zones[name[6:]].get_pod(name) for name in marked}
            await adapter.close()
        finally:
            for zone in zones.values():
                await zone.close()

    for refusal in refusals:
        assert refusal.status == 429
        assert "its adapter replaces members one at a time" in str(refusal.body)
    assert marked == {"evict-zone-a": "admin", "evict-zone-b": "admin"}
    assert webhook.denied_evictions == 2
    assert sorted(str(r.params["member"]) for r in history) == ["evict-zone-a", "evict-zone-b"]
    assert {str(r.params["why"]) for r in history} == {"eviction"}
    first, second = history
    assert first.finished_at is not None and second.created_at >= first.finished_at
    for name, pod in new_pods.items():
        assert pod is not None, name
        annotations = pod.metadata.annotations or {}
        assert EVICTION_REQUESTED_BY not in annotations  # the new pod is not to be evicted
        assert annotations[TOKEN] == str(first.token)
    assert health.fewest_up == len(config.members) - 1, f"members up: {health.up}"
    assert writes.acked


async def test_a_stale_adapter_mid_replacement_is_refused_by_the_api_server(
    k8s: EtcdGroupBed, coord: CoordinationService, tmp_path: Path
) -> None:
    async with fenced_group(k8s, coord, "stale", tmp_path) as (config, webhook):
        member = "stale-zone-b"
        paused, resume = asyncio.Event(), asyncio.Event()
        late: list[BaseException | bool] = []
        first = K8sAdapter(local_client(coord), config, instance="first", api_fencing=True)
        second = K8sAdapter(local_client(coord), config, instance="second", api_fencing=True)
        await first.open()
        zone_b = first.zones["zone-b"]
        delete = zone_b.delete_pod

        async def delete_after_a_pause(name: str, uid: str, *, force: bool = False) -> bool:
            # The first adapter stops (as if SIGSTOPped) just before it deletes the pod.
            paused.set()
            await resume.wait()
            try:
                deleted = await delete(name, uid, force=force)
            except BaseException as e:
                late.append(e)
                raise
            late.append(deleted)
            return deleted

        zone_b.delete_pod = delete_after_a_pause  # type: ignore[method-assign]
        await first.request_replacement(member)
        task_a = asyncio.create_task(first.run())
        task_b: asyncio.Task[None] | None = None
        try:
            await asyncio.wait_for(paused.wait(), 60)
            assert first.leadership is not None
            stale_token = first.leadership.token
            await local_client(coord).revoke(first.leadership.lease.id)  # its lock is gone
            task_b = asyncio.create_task(second.run())

            async def finished() -> bool:
                records = await second.store().history()
                return bool(records) and records[0].status is Status.SUCCEEDED

            await until(finished, 120, "the second adapter to finish the replacement")
            resume.set()  # the first wakes up and carries on with its delete
            await asyncio.wait_for(_settled(late), 30)
            # Its next write would hit a live member: only the API server's fence stops it.
            zone_c = first.zones["zone-c"]
            live = await zone_c.get_pod("stale-zone-c")
            assert live is not None
            with pytest.raises(FencedError) as stale_delete:
                await zone_c.delete_pod("stale-zone-c", str(live.metadata.uid))
            still = await zone_c.get_pod("stale-zone-c")
        finally:
            resume.set()
            for task in (task_a, task_b):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        history = await second.store().history()
        pod = await second.zones["zone-b"].get_pod(member)
        logs = sorted(p.name for p in (k8s.base_dir / "pods" / "zone-b").glob(f"{member}-*"))
        await first.close()
        await second.close()

    assert len(history) == 1 and history[0].takeovers
    # The late delete of the replaced pod did nothing: its uid is gone, or it was fenced.
    assert late[0] is False or isinstance(late[0], FencedError), late
    assert f"token {stale_token} is not current" in str(stale_delete.value)
    assert still is not None and still.metadata.uid == live.metadata.uid
    assert webhook.refused_writes >= 1
    assert pod is not None and (pod.metadata.annotations or {})[TOKEN] == str(history[0].token)
    assert len(logs) == 2, f"{member} ran {len(logs)} times: {logs}"  # replaced exactly once


async def _settled(late: list[BaseException | bool]) -> None:
    while not late:
        await asyncio.sleep(0.05)  # the stale delete is in flight in the first adapter's task


async def test_writes_without_the_current_token_or_without_a_quorum_are_refused(
    k8s: EtcdGroupBed, coord: CoordinationService, tmp_path: Path
) -> None:
    async with fenced_group(k8s, coord, "quorum", tmp_path) as (config, webhook):
        zone = config.zone("zone-c")

        async def attempt(token: int | None) -> Callable[[], Awaitable[Any]]:
            client = ZoneClient(zone)
            await client.open()
            if token is not None:
                client.fence_with(ADAPTER_USER, ADAPTER_GROUP, TOKEN_EXTRA, token)
            pod = await client.get_pod("quorum-zone-c")
            assert pod is not None

            async def annotate() -> Any:
                try:
                    return await client.annotate_pod(
                        "quorum-zone-c", pod.metadata.resource_version, {"test": "x"}
                    )
                finally:
                    await client.close()

            return annotate

        with pytest.raises(FencedError, match=r"token 999 is not current .nobody holds the lock"):
            await (await attempt(999))()
        leadership = await local_client(coord).election(election_name("quorum")).acquire(b"t")
        with pytest.raises(FencedError, match=f"token {leadership.token + 1} is not current"):
            await (await attempt(leadership.token + 1))()
        assert await (await attempt(leadership.token))() is not None  # the holder may write
        assert await (await attempt(None))() is not None  # not the adapter: not fenced

        stop = await attempt(leadership.token)
        await coord.node.stop(transfer=False)  # no coordination cluster to ask any more
        with pytest.raises(FencedError, match=r"cannot confirm token .* no answer from the coord"):
            await stop()
        zone_client = ZoneClient(zone)
        await zone_client.open()
        try:
            refusal = await evict(zone_client, "quorum-zone-c")  # evictions need no quorum
        finally:
            await zone_client.close()
        assert refusal.status == 429
        assert webhook.refused_writes == 3
