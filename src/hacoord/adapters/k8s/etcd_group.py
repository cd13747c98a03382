"""An etcd cluster with one member per zone, as the adapter's managed database.

:func:`etcd_group` builds the :class:`GroupConfig` of such a group: etcd reads every flag from
an ``ETCD_*`` environment variable, so the template carries the settings all members share and
each member the URLs and name that are its own. The data directory lives under the volume
claim's mount, so a replacement pod finds the member's data and rejoins as the same member.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hacoord.adapters.k8s.config import GroupConfig, Member, PodTemplate, Timings, Zone

ETCD_IMAGE = "hacoord.local/etcd:v3.7.3"
"""The image name of etcd pods (the test bed's kubelet maps it to the built binary)."""


def etcd_template(image: str = ETCD_IMAGE, **settings: str) -> PodTemplate:
    """The pod template of etcd members; ``settings`` become ``ETCD_<NAME>`` variables."""
    env = {
        "ETCD_DATA_DIR": "/data/etcd",
        "ETCD_HEARTBEAT_INTERVAL": "50",
        "ETCD_ELECTION_TIMEOUT": "500",
        "ETCD_LOG_LEVEL": "warn",
    }
    env.update({f"ETCD_{name.upper()}": value for name, value in settings.items()})
    return PodTemplate(image=image, env=env, data_path="/data", readiness_path="/health")


def etcd_group(
    name: str,
    kubeconfigs: Mapping[str, Path],
    ports: Sequence[tuple[int, int]],
    *,
    namespace: str = "default",
    template: PodTemplate | None = None,
    timings: Timings | None = None,
    host: str = "127.0.0.1",
) -> GroupConfig:
    """A group with member ``<name>-<zone>`` in every zone; ``ports`` are (client, peer) pairs."""
    zones = tuple(Zone(z, path, namespace) for z, path in kubeconfigs.items())
    if len(ports) != len(zones):
        raise ValueError(f"{len(zones)} zones need {len(zones)} port pairs, got {len(ports)}")
    names = [f"{name}-{z.name}" for z in zones]
    peers = ",".join(f"{n}=http://{host}:{peer}" for n, (_, peer) in zip(names, ports, strict=True))
    members = tuple(
        Member(
            name=member,
            zone=zone.name,
            endpoint=f"http://{host}:{client}",
            env={
                "ETCD_NAME": member,
                "ETCD_LISTEN_CLIENT_URLS": f"http://{host}:{client}",
                "ETCD_ADVERTISE_CLIENT_URLS": f"http://{host}:{client}",
                "ETCD_LISTEN_PEER_URLS": f"http://{host}:{peer}",
                "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://{host}:{peer}",
                "ETCD_INITIAL_CLUSTER": peers,
                "ETCD_INITIAL_CLUSTER_STATE": "new",
                "ETCD_INITIAL_CLUSTER_TOKEN": name,
            },
        )
        for member, zone, (client, peer) in zip(names, zones, ports, strict=True)
    )
    return GroupConfig(
        name=name,
        zones=zones,
        members=members,
        template=template or etcd_template(),
        timings=timings or Timings(),
    )
