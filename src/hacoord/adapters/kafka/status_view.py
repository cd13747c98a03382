"""An HA group's status as plain data (for the HTTP API and ``--json``) and as text."""

from __future__ import annotations

import json
from typing import Any

from hacoord.adapters.kafka.config import GroupConfig
from hacoord.adapters.kafka.keys import decisions_key, drained_prefix, observers_prefix
from hacoord.adapters.kafka.topology import control_election, read_topology
from hacoord.adapters.observations import read_reports
from hacoord.client.client import Client


async def group_status(client: Client, config: GroupConfig) -> dict[str, Any]:
    """The published topology, the active control plane's verdicts, drains, members' views."""
    group = config.name
    topology = await read_topology(client, group)
    holder = await client.election(control_election(group)).leader()
    decided = await client.get(decisions_key(group))
    decisions: dict[str, Any] = json.loads(decided.value) if decided else {}
    verdicts = decisions.get("verdicts", {})
    drained = await read_reports(client, drained_prefix(group))
    observers = await read_reports(client, observers_prefix(group))
    clusters = {}
    for name in config.cluster_names:
        state = topology.clusters.get(name) if topology else None
        verdict = verdicts.get(name)
        clusters[name] = {
            "healthy": state.healthy if state else None,
            "writable": state.writable if state else None,
            "primary": topology is not None and topology.primary == name,
            "reason": state.reason if state else "",
            "drained": str(drained[name].get("reason", "")) if name in drained else None,
            "verdict": verdict["health"] if verdict else None,
            "verdict_reason": verdict["reason"] if verdict else None,
            "views": {
                member: {
                    "up": bool(view["up"]),
                    "failures": int(view.get("failures", 0)),
                    "error": str(view.get("error", "")),
                }
                for member, observation in sorted(observers.items())
                if (view := observation.get("hosts", {}).get(name)) is not None
            },
        }
    return {
        "group": group,
        "mode": str(config.mode),
        "active": holder.value.decode() if holder else None,
        "active_token": holder.token if holder else None,
        "topology": None
        if topology is None
        else {
            "version": topology.version,
            "token": topology.token,
            "primary": topology.primary,
            "mode": str(topology.mode),
            "reason": topology.reason,
            "updated_at": topology.updated_at,
        },
        "decided_by": decisions.get("by"),
        "decided_at": decisions.get("at"),
        "clusters": clusters,
    }


def render_status(status: dict[str, Any]) -> str:
    """A human-readable rendering of :func:`group_status`: a line per cluster, then views."""
    active = status["active"]
    control = (
        f"control plane {active} (token {status['active_token']})"
        if active
        else ("no active control plane")
    )
    topology = status["topology"]
    head = f"group {status['group']} ({status['mode']}): "
    if topology is None:
        lines = [head + f"no topology published yet; {control}"]
    else:
        primary = f", primary {topology['primary']}" if topology["primary"] else ""
        lines = [
            head + f"topology v{topology['version']} (token {topology['token']}){primary}; "
            f"{control}",
            f"  last change: {topology['reason']}",
        ]
    width = max(len(name) for name in status["clusters"])
    for name, cluster in status["clusters"].items():
        lines.append(f"  {name:<{width}}  {_cluster_text(cluster)}")
    members = sorted({m for c in status["clusters"].values() for m in c["views"]})
    if members:
        lines.append("member views:")
    for member in members:
        seen = []
        for name, cluster in status["clusters"].items():
            view = cluster["views"].get(member)
            if view is None:
                seen.append(f"{name} not probed")
            elif view["up"]:
                seen.append(f"{name} up")
            else:
                seen.append(f"{name} DOWN x{view['failures']} ({view['error']})")
        lines.append(f"  {member}: " + ", ".join(seen))
    return "\n".join(lines)


def _cluster_text(cluster: dict[str, Any]) -> str:
    parts = []
    if cluster["healthy"] is None:
        parts.append("not in the topology")
    else:
        health = "healthy" if cluster["healthy"] else "UNHEALTHY"
        writes = "writable" if cluster["writable"] else "NOT WRITABLE"
        why = f" ({cluster['reason']})" if cluster["reason"] else ""
        parts.append(f"{health}, {writes}{why}")
    if cluster["primary"]:
        parts.append("PRIMARY")
    if cluster["drained"] is not None:
        parts.append(f"drained by an operator: {cluster['drained'] or 'no reason given'}")
    if cluster["verdict"] is not None:
        parts.append(f"verdict {cluster['verdict']}: {cluster['verdict_reason']}")
    else:
        parts.append("no verdict yet")
    return "  ".join(parts)
