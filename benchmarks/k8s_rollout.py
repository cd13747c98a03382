"""Rolling replacement and a two-zone drain of an etcd group: the adapter vs per-cluster tools.

    python -m benchmarks.k8s_rollout

Three real kube-apiservers (one zone each), simulated kubelets running the members as real
etcd processes, a three-member hacoord cluster of real processes. While a writer keeps writing
to the group and a sampler asks every member's ``/health`` every 50 ms:

* **adapter**: a rollout of a new template across the three clusters, then a ``kubectl
  drain``-style drain of the members' nodes in two zones at once (cordon, then evict, retrying
  the refused evictions as kubectl does), with the eviction and fence webhooks installed;
* **baseline**, what a user gets from each cluster's own tools: every cluster's StatefulSet
  rolls its one member on its own (delete, recreate, wait for Ready) at the same time, and
  each cluster's PDB (``maxUnavailable: 1``, one member per cluster) lets both drains evict at
  once.

Reports time per replacement and in all, the fewest members up (answering) and healthy in
any sample, writes failed (calls that got no acknowledgement and were retried) and
acknowledged writes lost, and the webhook's latency. Prints one JSON object; progress on
stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

import hacoord
from hacoord.adapters.k8s import AdmissionWebhook, GroupConfig, Idle, K8sAdapter, Timings
from hacoord.adapters.k8s.adapter import election_name
from hacoord.adapters.k8s.etcd_group import etcd_template
from hacoord.adapters.k8s.etcd_traffic import stored_keys, watched
from hacoord.adapters.k8s.group_bed import EtcdGroupBed
from hacoord.adapters.k8s.install import install, uninstall
from hacoord.adapters.k8s.kube import ZoneClient
from hacoord.adapters.k8s.pods import member_pod
from hacoord.client import Client
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster
from hacoord.workflow import Status

TIMINGS = Timings(interval_s=0.2, api_timeout_s=3.0, ready_timeout_s=60, catch_up_timeout_s=60)
NEW = etcd_template(snapshot_count="5000")


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f}s")
        await asyncio.sleep(0.1)  # polling the API servers: there is no event to await


async def measured(
    config: GroupConfig, prefix: str, action: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """Run ``action`` under traffic; its report plus what the traffic saw."""
    started = time.monotonic()
    async with watched(config, prefix) as (writes, health):
        report = await action()
        acked = list(writes.acked)
        failed = writes.failed
    lost = set(acked) - await stored_keys(config, prefix)
    return {
        **report,
        "total_s": round(time.monotonic() - started, 2),
        "fewest_up": health.fewest_up,
        "fewest_healthy": health.fewest_healthy,
        "samples": len(health.up),
        "writes_acked": len(acked),
        "writes_failed": failed,
        "writes_lost": len(lost),
    }


async def adapter_run(adapter: K8sAdapter, done: Callable[[], bool], timeout_s: float) -> None:
    task = asyncio.create_task(adapter.run())

    async def finished() -> bool:
        await adapter.wait_ticks(1)
        return done() and isinstance(adapter.state.decision, Idle)

    try:
        await until(finished, timeout_s, "the adapter's replacements")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def drain(zone: ZoneClient, node: str, pods: list[str]) -> None:
    """What ``kubectl drain`` does: cordon, then evict each pod, retrying while refused."""
    await zone.core.patch_node(node, {"spec": {"unschedulable": True}})
    for name in pods:
        pod = await zone.get_pod(name)
        if pod is None or pod.spec.node_name != node:
            continue
        uid = pod.metadata.uid
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}}
        while True:
            current = await zone.get_pod(name)
            if current is None or current.metadata.uid != uid:
                break  # gone from the node: drained
            with contextlib.suppress(ApiException):  # 429: refused for now, try again
                await zone.core.create_namespaced_pod_eviction(name, zone.namespace, body)
            await asyncio.sleep(0.5)  # kubectl drain's retry interval is 5 s; we are quicker


async def with_adapter(
    bed: EtcdGroupBed, client: Client, certs: tuple[str, str, str]
) -> dict[str, Any]:
    config = bed.group("adapted", timings=TIMINGS)
    ca, cert, key = certs
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    webhook = AdmissionWebhook(client, config, election=election_name(config.name))
    await webhook.start("127.0.0.1", 0, tls)
    admins = {z.name: ZoneClient(z) for z in config.zones}
    for zone in admins.values():
        await zone.open()
        await install(zone, config, f"https://127.0.0.1:{webhook.port}", Path(ca).read_bytes())
    adapter = K8sAdapter(
        client, config, instance="bench", api_fencing=True, progress=lambda _: None
    )
    try:
        await adapter.bootstrap()
        say("adapter: rollout")

        async def rollout() -> dict[str, Any]:
            await adapter.set_template(NEW)
            await adapter_run(adapter, lambda: _succeeded(adapter) >= 3, 240)
            return {"replacements_s": _durations(adapter, 0)}

        report = {"rollout": await measured(config, "adapter-rollout", rollout)}
        say("adapter: drain in two zones at once")
        before = _succeeded(adapter)

        async def two_drains() -> dict[str, Any]:
            runner = asyncio.create_task(
                adapter_run(adapter, lambda: _succeeded(adapter) >= before + 2, 240)
            )
            nodes = {}
            for zone in ("zone-a", "zone-b"):
                member = f"{config.name}-{zone}"
                pod = await admins[zone].get_pod(member)
                assert pod is not None
                nodes[zone] = pod.spec.node_name
            await asyncio.gather(
                *(drain(admins[z], n, [f"{config.name}-{z}"]) for z, n in nodes.items())
            )
            await runner
            for zone, node in nodes.items():
                await admins[zone].core.patch_node(node, {"spec": {"unschedulable": False}})
            return {"replacements_s": _durations(adapter, before)}

        report["drain_two_zones"] = await measured(config, "adapter-drain", two_drains)
        latencies = [s * 1000 for s in webhook.latencies_s]
        report["webhook"] = {
            "reviews": len(latencies),
            "evictions_denied": webhook.denied_evictions,
            "writes_refused": webhook.refused_writes,
            "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
        }
        return report
    finally:
        await adapter.close()
        await bed.remove_group(config)
        for zone in admins.values():
            with contextlib.suppress(Exception):
                await uninstall(zone, config)
            await zone.close()
        await webhook.close()


async def baseline(bed: EtcdGroupBed, client: Client) -> dict[str, Any]:
    config = bed.group("plain", timings=TIMINGS)
    boot = K8sAdapter(client, config, instance="bench-boot", progress=lambda _: None)
    await boot.bootstrap()  # the same starting point; no adapter from here on
    await boot.close()
    zones = {z.name: ZoneClient(z) for z in config.zones}
    for zone in zones.values():
        await zone.open()

    async def recreate(member_name: str, *, cordon: bool) -> float:
        """One cluster's controller replacing its member: delete, recreate, wait for Ready."""
        started = time.monotonic()
        member = config.member(member_name)
        zone = zones[member.zone]
        pod = await zone.get_pod(member.name)
        assert pod is not None
        if cordon:
            await zone.core.patch_node(pod.spec.node_name, {"spec": {"unschedulable": True}})
        await zone.delete_pod(member.name, pod.metadata.uid)

        async def gone() -> bool:
            current = await zone.get_pod(member.name)
            return current is None or current.metadata.uid != pod.metadata.uid

        await until(gone, 60, f"{member.name} to terminate")
        await zone.create_pod(member_pod(config, member, NEW, token=0, replacement="baseline"))

        async def ready() -> bool:
            current = await zone.get_pod(member.name)
            conditions = (current.status.conditions if current and current.status else None) or []
            return any(c.type == "Ready" and c.status == "True" for c in conditions)

        await until(ready, 60, f"{member.name} to be Ready")
        if cordon:
            await zone.core.patch_node(pod.spec.node_name, {"spec": {"unschedulable": False}})
        return round(time.monotonic() - started, 2)

    try:
        say("baseline: every cluster rolls its member on its own")

        async def rollout() -> dict[str, Any]:
            times = await asyncio.gather(*(recreate(m.name, cordon=False) for m in config.members))
            return {"replacements_s": list(times)}

        report = {"rollout": await measured(config, "plain-rollout", rollout)}
        say("baseline: drain in two zones at once, each cluster's PDB allowing one eviction")

        async def two_drains() -> dict[str, Any]:
            names = [f"{config.name}-zone-a", f"{config.name}-zone-b"]
            times = await asyncio.gather(*(recreate(n, cordon=True) for n in names))
            return {"replacements_s": list(times)}

        report["drain_two_zones"] = await measured(config, "plain-drain", two_drains)
        return report
    finally:
        await bed.remove_group(config)
        for zone in zones.values():
            await zone.close()


def _succeeded(adapter: K8sAdapter) -> int:
    return sum(1 for r in adapter.state.finished if r.status is Status.SUCCEEDED)


def _durations(adapter: K8sAdapter, skip: int) -> list[float]:
    done = [r for r in adapter.state.finished if r.status is Status.SUCCEEDED][skip:]
    return [round((r.finished_at or r.created_at) - r.created_at, 2) for r in done]


def _certs(directory: Path) -> tuple[str, str, str]:
    """A CA and a serving certificate for 127.0.0.1, made with the openssl CLI."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (directory / "leaf.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=hacoord benchmark CA")  # fmt: skip
    openssl("req", "-new", *ec, "-keyout", "hook.key", "-out", "hook.csr", "-subj", "/CN=hook")
    openssl("x509", "-req", "-in", "hook.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "hook.crt", "-days", "2",
            "-extfile", "leaf.ext")  # fmt: skip
    return str(directory / "ca.crt"), str(directory / "hook.crt"), str(directory / "hook.key")


async def main(base: Path) -> dict[str, Any]:
    coord = LocalCluster(
        base / "coord", n=3, timing=Timing(heartbeat_ms=50, election_timeout_ms=500)
    )
    coord.start()
    (base / "certs").mkdir()
    certs = _certs(base / "certs")
    say("starting three Kubernetes clusters")
    try:
        async with EtcdGroupBed(base / "k8s") as bed:
            await coord.wait_for_leader()
            async with hacoord.connect(coord.endpoints()) as client:
                adapted = await with_adapter(bed, client, certs)
                plain = await baseline(bed, client)
    finally:
        await coord.close()
    return {
        "benchmark": "k8s_rollout",
        "members": 3,
        "zones": 3,
        "adapter": adapted,
        "baseline": plain,
    }


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="hacoord-k8s-bench-") as tmp:
        print(json.dumps(asyncio.run(main(Path(tmp))), indent=2))
