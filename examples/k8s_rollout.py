"""A rollout of an etcd group across three local Kubernetes clusters, one member at a time.

    python examples/k8s_rollout.py

Starts three independent clusters (a real kube-apiserver and etcd each, built once from the Go
module proxy into ~/.cache/hacoord; the first run takes minutes), a simulated kubelet per
cluster that runs member pods as real etcd processes, and a three-member hacoord cluster. The
adapter bootstraps an etcd group with one member per cluster, then rolls a new pod template
out zone by zone while a writer keeps writing to the group, and prints each step, the fewest
members that answered at any sample, and how many acknowledged writes were lost.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
from pathlib import Path

import aiohttp

import hacoord
from hacoord.adapters.k8s import GroupConfig, Idle, K8sAdapter, Timings
from hacoord.adapters.k8s.etcd_group import etcd_template
from hacoord.adapters.k8s.group_bed import EtcdGroupBed
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster

started = time.monotonic()


def say(line: str) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)


async def write_and_sample(config: GroupConfig, acked: list[int], fewest: list[int]) -> None:
    """Write key i to any member that takes it; count members answering /health."""
    endpoints = [m.endpoint for m in config.members]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        i = at = 0
        while True:
            key = base64.b64encode(f"example/{i}".encode()).decode()
            try:
                async with http.post(f"{endpoints[at]}/v3/kv/put", json={"key": key}) as r:
                    if r.status == 200:
                        acked.append(i)
                        i += 1
            except (aiohttp.ClientError, TimeoutError):
                at = (at + 1) % len(endpoints)
            if i % 20 == 0:
                up = 0
                for endpoint in endpoints:
                    try:
                        async with http.get(f"{endpoint}/health") as r:
                            up += r.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                fewest[0] = min(fewest[0], up)


async def stored_indexes(config: GroupConfig) -> set[int]:
    start, end = (base64.b64encode(k.encode()).decode() for k in ("example/", "example0"))
    async with aiohttp.ClientSession() as http:
        body = {"key": start, "range_end": end, "keys_only": True}
        async with http.post(f"{config.members[0].endpoint}/v3/kv/range", json=body) as r:
            kvs = (await r.json(content_type=None)).get("kvs", [])
    return {int(base64.b64decode(kv["key"]).decode().split("/")[1]) for kv in kvs}


async def main(base: Path) -> None:
    coord = LocalCluster(
        base / "coord", n=3, timing=Timing(heartbeat_ms=50, election_timeout_ms=500)
    )
    coord.start()
    say("starting three Kubernetes clusters (kube-apiserver + etcd each) and their kubelets")
    async with EtcdGroupBed(base / "k8s") as bed:
        try:
            await coord.wait_for_leader()
            config = bed.group("orders", timings=Timings(interval_s=0.2))
            async with hacoord.connect(coord.endpoints()) as client:
                adapter = K8sAdapter(client, config, instance="adapter-1", progress=say)
                await adapter.bootstrap()
                acked: list[int] = []
                fewest = [len(config.members)]
                writer = asyncio.create_task(write_and_sample(config, acked, fewest))
                runner = asyncio.create_task(adapter.run())
                new = etcd_template(snapshot_count="5000")
                say(f"rolling out template revision {new.revision}")
                await adapter.set_template(new)
                while not (
                    isinstance(adapter.state.decision, Idle)
                    and adapter.state.view is not None
                    and all(
                        m.pod is not None and m.pod.revision == new.revision
                        for m in adapter.state.view.members
                    )
                ):
                    await adapter.wait_ticks(1)
                writer.cancel()
                runner.cancel()
                await asyncio.gather(writer, runner, return_exceptions=True)
                lost = set(acked) - await stored_indexes(config)
                say("replacements (oldest first):")
                for run in reversed(await adapter.store().history()):
                    steps = ", ".join(f"{s.name} {s.duration_s:.1f}s" for s in run.steps)
                    say(f"  {run.params['member']} ({run.params['why']}) {run.status}: {steps}")
                say(f"fewest members answering at any sample: {fewest[0]} of {len(config.members)}")
                say(f"writes acknowledged: {len(acked)}, lost: {len(lost)}")
                await adapter.close()
                await bed.remove_group(config)
        finally:
            await coord.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="hacoord-k8s-") as tmp:
        asyncio.run(main(Path(tmp)))
