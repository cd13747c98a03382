"""``hacoord mysql status``: the topology as a readable tree (pure rendering)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hacoord.adapters.mysql.primary import PrimaryRecord
from hacoord.adapters.mysql.server import Probe
from hacoord.adapters.mysql.topology import Topology


def _server_line(name: str, probe: Probe, tags: list[str]) -> str:
    state = probe.state
    if state is None:
        return f"{name}  UNREACHABLE ({probe.error})"
    parts = [name, "read-only" if state.read_only else "writable"]
    r = state.replica
    if r is not None:
        io = "io ok" if r.io_running else f"io DOWN ({r.io_errno}: {r.io_error})"
        sql = "sql ok" if r.sql_running else f"sql DOWN ({r.sql_errno}: {r.sql_error})"
        lag = "" if r.seconds_behind is None else f", lag {r.seconds_behind}s"
        parts.append(f"{io}, {sql}{lag}")
    parts.append(f"gtid {state.executed or '-'}")
    return "  ".join(parts) + "".join(f"  [{t}]" for t in tags)


def render_status(
    topology: Topology,
    published: PrimaryRecord | None,
    decision: Mapping[str, Any] | None,
    observers: Mapping[str, Mapping[str, Any]],
    maintenance: set[str],
    quarantined: set[str],
) -> str:
    """The cluster as a tree: primary at the root, its replicas below, then the rest."""
    head = [topology.cluster]
    if published is not None:
        head.append(f"primary {published.host}  token {published.token}")
    else:
        head.append("no published primary")
    if decision:
        head.append(f"verdict {decision.get('verdict')}: {decision.get('reason')}")
    lines = ["  ".join(head)]

    def tags(name: str) -> list[str]:
        out = []
        if published is not None and name == published.host:
            out.append("published primary")
        if name in maintenance:
            out.append("maintenance")
        if name in quarantined:
            out.append("QUARANTINED")
        return out

    shown: set[str] = set()

    def branch(name: str, prefix: str, last: bool, depth: int) -> None:
        shown.add(name)
        connector = "`-- " if last else "|-- "
        lines.append(prefix + connector + _server_line(name, topology.probes[name], tags(name)))
        children = [c for c in topology.replicas_of(name) if c not in shown]
        for i, child in enumerate(children):
            if depth < 8:
                branch(
                    child, prefix + ("    " if last else "|   "), i == len(children) - 1, depth + 1
                )

    root = topology.primary
    if root is not None and root in topology.probes:
        branch(root, "", True, 0)
    rest = [n for n in topology.probes if n not in shown]
    if rest:
        lines.append("not under the primary:")
        for name in rest:
            lines.append("    " + _server_line(name, topology.probes[name], tags(name)))
    for problem in topology.problems:
        lines.append(f"problem: {problem}")
    if observers:
        views = []
        for member, obs in sorted(observers.items()):
            host = (obs.get("hosts") or {}).get(published.host if published else "", {})
            ok = host.get("up")
            views.append(f"{member} {'sees it' if ok else 'CANNOT reach it'}" if host else member)
        lines.append("observers of the primary: " + ", ".join(views))
    return "\n".join(lines)
