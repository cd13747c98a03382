"""Three local Kubernetes clusters running etcd groups, for tests, examples and benchmarks.

:class:`EtcdGroupBed` starts a :class:`~hacoord.adapters.k8s.testbed.K8sTestBed` (one etcd +
kube-apiserver per zone) and a :class:`~hacoord.adapters.k8s.kubelet.SimKubelet` per zone with
two nodes each (it runs member pods as real etcd processes). :meth:`EtcdGroupBed.group` hands out
the :class:`GroupConfig` of a new etcd group with one member per zone (fresh names, claims and
ports, so several groups can come and go on one bed); the adapter then bootstraps and replaces
its members through the real API servers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from hacoord.adapters.k8s.binaries import ensure_binaries
from hacoord.adapters.k8s.config import GroupConfig, PodTemplate, Timings
from hacoord.adapters.k8s.etcd_group import ETCD_IMAGE, etcd_group
from hacoord.adapters.k8s.kube import ZoneClient
from hacoord.adapters.k8s.kubelet import SimKubelet
from hacoord.adapters.k8s.testbed import K8sTestBed
from hacoord.testing.processes import free_ports

NAMESPACE = "db"


class EtcdGroupBed:
    """Zones with kubelets, and an etcd group configured across them."""

    def __init__(
        self,
        base_dir: Path,
        zones: Sequence[str] = ("zone-a", "zone-b", "zone-c"),
    ) -> None:
        self.base_dir = base_dir
        self.zone_names = tuple(zones)
        self.clusters = K8sTestBed(base_dir / "clusters", self.zone_names)
        self.kubelets: dict[str, SimKubelet] = {}

    def nodes(self, zone: str) -> list[str]:
        """The node names of ``zone``'s kubelet."""
        return [f"{zone}-node-1", f"{zone}-node-2"]

    async def start(self) -> None:
        """Start the clusters and kubelets; the member pods are not created yet."""
        binaries = ensure_binaries()
        await self.clusters.start()
        for zone in self.zone_names:
            kubelet = SimKubelet(
                self.clusters.kubeconfig(zone),
                NAMESPACE,
                self.nodes(zone),
                images={ETCD_IMAGE: binaries.etcd},
                volume_root=self.base_dir / "volumes" / zone,
                log_dir=self.base_dir / "pods" / zone,
                zone=zone,
            )
            await kubelet.start()
            self.kubelets[zone] = kubelet

    def group(
        self, name: str, *, template: PodTemplate | None = None, timings: Timings | None = None
    ) -> GroupConfig:
        """The configuration of a new etcd group ``name`` with a member in every zone."""
        ports = free_ports(2 * len(self.zone_names))
        return etcd_group(
            name,
            {zone: self.clusters.kubeconfig(zone) for zone in self.zone_names},
            list(zip(ports[::2], ports[1::2], strict=True)),
            namespace=NAMESPACE,
            template=template,
            timings=timings,
        )

    async def remove_group(self, config: GroupConfig) -> None:
        """Delete the group's pods at once (grace 0), so its etcd processes stop."""
        for member in config.members:
            zone = ZoneClient(config.zone(member.zone))
            with contextlib.suppress(Exception):
                await zone.open()
                pod = await zone.get_pod(member.name)
                if pod is not None:
                    await zone.delete_pod(member.name, str(pod.metadata.uid), force=True)
            await zone.close()

    async def close(self) -> None:
        """Stop the kubelets (and their etcd processes), then the clusters."""
        for kubelet in self.kubelets.values():
            with contextlib.suppress(Exception):
                await kubelet.close()
        await self.clusters.close()

    def kubelet_of(self, config: GroupConfig, member: str) -> SimKubelet:
        """The kubelet of the zone ``member`` lives in."""
        return self.kubelets[config.member(member).zone]

    async def __aenter__(self) -> EtcdGroupBed:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
