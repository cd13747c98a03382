"""A rollout of an etcd group across three local Kubernetes clusters, one member at a time.

    python examples/k8s_rollout.py

Starts three independent clusters (a real kube-apiserver and etcd each, built once from the Go
module proxy into ~/.cache/hacoord; the first run takes minutes), a simulated kubelet per
cluster that runs member pods as real etcd processes, and a three-member hacoord cluster. The
adapter bootstraps an etcd group with one member per cluster, then rolls a new pod template
out zone by zone while a writer keeps writing to the group, and prints each step, the fewest
members up (answering) and healthy (knowing a leader) at any sample, and how many acknowledged
writes were lost.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import hacoord
from hacoord.adapters.k8s import Idle, K8sAdapter, Timings
from hacoord.adapters.k8s.etcd_group import etcd_template
from hacoord.adapters.k8s.etcd_traffic import stored_keys, watched
from hacoord.adapters.k8s.group_bed import EtcdGroupBed
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster

started = time.monotonic()


def say(line: str) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)


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
                runner = asyncio.create_task(adapter.run())
                new = etcd_template(snapshot_count="5000")
                async with watched(config, "example") as (writes, health):
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
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
                lost = set(writes.acked) - await stored_keys(config, "example")
                say("replacements (oldest first):")
                for run in reversed(await adapter.store().history()):
                    steps = ", ".join(f"{s.name} {s.duration_s:.1f}s" for s in run.steps)
                    say(f"  {run.params['member']} ({run.params['why']}) {run.status}: {steps}")
                n = len(config.members)
                say(f"fewest members up at any sample: {health.fewest_up} of {n}")
                # A member is healthy when it knows a leader: right after the leader's pod is
                # deleted the others can be between leaders for a moment, still a quorum.
                say(f"fewest members healthy at any sample: {health.fewest_healthy} of {n}")
                say(f"writes acknowledged: {len(writes.acked)}, lost: {len(lost)}")
                await adapter.close()
                await bed.remove_group(config)
        finally:
            await coord.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="hacoord-k8s-") as tmp:
        asyncio.run(main(Path(tmp)))
