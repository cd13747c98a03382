"""The group's status as plain data (for the HTTP API and ``--json``) and as text."""

from __future__ import annotations

from typing import Any

from hacoord.adapters.k8s.adapter import K8sAdapter, election_name
from hacoord.adapters.k8s.plan import Blocked, Idle, Replace, unhealthy


async def group_status(adapter: K8sAdapter) -> dict[str, Any]:
    """Members per zone with health and lag, the decision, the replacement in progress."""
    decision, view, template = await adapter.decide()
    holder = await adapter.client.election(election_name(adapter.config.name)).leader()
    running = await adapter.store().running()
    max_lag = adapter.config.timings.max_lag_entries
    members = []
    for m in view.members:
        pod = m.pod
        members.append(
            {
                "name": m.name,
                "zone": m.zone,
                "pod": None
                if pod is None
                else {
                    "phase": pod.phase,
                    "ready": pod.ready,
                    "node": pod.node,
                    "revision": pod.revision,
                    "uid": pod.uid,
                    "eviction_requested_by": pod.eviction_requested_by or None,
                },
                "node_ready": m.node_ready,
                "node_cordoned": m.node_cordoned,
                "database_healthy": m.health.healthy,
                "lag": m.lag,
                "problem": unhealthy(m, max_lag),
            }
        )
    if isinstance(decision, Replace):
        summary = {
            "kind": "replace",
            "member": decision.member,
            "why": str(decision.why),
            "detail": decision.detail,
        }
    elif isinstance(decision, Blocked):
        summary = {"kind": "blocked", "reason": decision.reason}
    else:
        assert isinstance(decision, Idle)
        summary = {"kind": "idle"}
    return {
        "group": adapter.config.name,
        "desired_revision": template.revision,
        "active_instance": holder.value.decode() if holder else None,
        "token": holder.token if holder else None,
        "decision": summary,
        "in_progress": [
            {
                "id": r.id,
                "member": r.params.get("member"),
                "why": r.params.get("why"),
                "steps_done": [s.name for s in r.steps],
            }
            for r in running
        ],
        "unreachable_zones": dict(view.unreachable),
        "members": members,
    }


def render_status(status: dict[str, Any]) -> str:
    """A human-readable rendering of :func:`group_status`."""
    lines = [
        f"group {status['group']}: desired revision {status['desired_revision']}, "
        f"active {status['active_instance'] or 'nobody'} (token {status['token']})"
    ]
    decision = status["decision"]
    if decision["kind"] == "blocked":
        lines.append(f"  blocked: {decision['reason']}")
    elif decision["kind"] == "replace":
        lines.append(
            f"  next: replace {decision['member']} ({decision['why']}: {decision['detail']})"
        )
    else:
        lines.append("  idle: every member healthy and up to date")
    for run in status["in_progress"]:
        lines.append(
            f"  in progress: {run['id']} {run['member']} ({run['why']}), done: "
            + (", ".join(run["steps_done"]) or "nothing yet")
        )
    for zone, reason in status["unreachable_zones"].items():
        lines.append(f"  zone {zone} unreachable: {reason}")
    for m in status["members"]:
        pod = m["pod"]
        where = (
            "no pod"
            if pod is None
            else (
                f"{pod['phase']}{' Ready' if pod['ready'] else ''} on {pod['node'] or '-'}, "
                f"revision {pod['revision'] or '-'}"
            )
        )
        health = "healthy" if m["problem"] is None else m["problem"]
        lag = "" if m["lag"] is None else f", lag {m['lag']}"
        lines.append(f"  {m['zone']:<12} {m['name']:<24} {where}; {health}{lag}")
    return "\n".join(lines)
