"""The comparison's outputs: a Markdown table, goal ratios, and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def markdown(results: dict[str, Any]) -> str:
    """One table per workload, systems side by side."""
    systems = list(results["systems"])
    lines = [f"Election timeout {results['election_timeout_ms']} ms; quick={results['quick']}", ""]

    def table(title: str, rows: list[tuple[str, list[Any]]]) -> None:
        lines.extend([f"### {title}", "", "| | " + " | ".join(systems) + " |"])
        lines.append("| --- |" + " --- |" * len(systems))
        for label, values in rows:
            lines.append(f"| {label} | " + " | ".join(_cell(v) for v in values) + " |")
        lines.append("")

    def get(system: str, *path: Any) -> Any:
        node: Any = results["systems"][system]
        for part in path:
            if node is None:
                return None
            if isinstance(part, int):
                node = node[part] if isinstance(node, list) and part < len(node) else None
            else:
                node = node.get(part) if isinstance(node, dict) else None
        return node

    table(
        "Serial commit latency (one client, 64-byte writes)",
        [(f"{q} ms", [get(s, "serial", f"{q}_ms") for s in systems]) for q in ("p50", "p99")],
    )
    concurrencies = results["plan"]["concurrencies"]
    rows = []
    for i, c in enumerate(concurrencies):
        rows.append((f"c={c} ops/s", [get(s, "throughput", i, "ops_per_s") for s in systems]))
        rows.append((f"c={c} p99 ms", [get(s, "throughput", i, "p99_ms") for s in systems]))
    rows.append(("embedded ops/s", [get(s, "embedded_ops_per_s") for s in systems]))
    table("Write throughput over the network", rows)
    table(
        "Failover (SIGKILL the leader until a write commits)",
        [
            (f"{q} ms", [get(s, "failover", f"{q}_ms") for s in systems])
            for q in ("p50", "p99", "max")
        ],
    )
    table(
        "Leases kept alive every second",
        [
            (label, [get(s, "leases", key) for s in systems])
            for label, key in (
                ("leases", "leases"),
                ("spurious expiries", "spurious_expiries"),
                ("leader CPU %", "leader_cpu_percent"),
                ("keep-alive p99 ms", "keepalive_p99_ms"),
            )
        ],
    )
    table(
        "Linearizable reads",
        [("reads/s", [get(s, "reads", "ops_per_s") for s in systems])],
    )
    if results.get("goals"):
        lines.extend(["### Goals", ""])
        for goal, value in results["goals"].items():
            lines.append(f"- {goal}: {_cell(value)}")
    return "\n".join(lines) + "\n"


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """The ratios the project set itself as goals (None where a system is missing)."""
    s = results["systems"]

    def at64(name: str) -> float | None:
        for row in s.get(name, {}).get("throughput", []):
            if row["concurrency"] == 64:
                return float(row["ops_per_s"])
        return None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    h, e, p = s.get("hacoord", {}), s.get("etcd", {}), s.get("pysyncobj", {})
    return {
        "network throughput c=64, hacoord / etcd (goal >= 3)": ratio(at64("hacoord"), at64("etcd")),
        "embedded, hacoord (fsync) / pysyncobj in-process (goal >= 2)": ratio(
            h.get("embedded_ops_per_s"), p.get("embedded_ops_per_s")
        ),
        "serial p50, hacoord / etcd (goal <= 1)": ratio(
            h.get("serial", {}).get("p50_ms"), e.get("serial", {}).get("p50_ms")
        ),
        "failover p99, hacoord / etcd (goal <= 1)": ratio(
            h.get("failover", {}).get("p99_ms"), e.get("failover", {}).get("p99_ms")
        ),
        "failover p99, hacoord / pysyncobj (goal <= 1)": ratio(
            h.get("failover", {}).get("p99_ms"), p.get("failover", {}).get("p99_ms")
        ),
        "hacoord failover max / election timeout (goal <= 3)": h.get("failover", {}).get(
            "max_x_election_timeout"
        ),
        "hacoord spurious lease expiries (goal 0)": h.get("leases", {}).get("spurious_expiries"),
        "hacoord leader CPU % with the leases (goal < 50)": h.get("leases", {}).get(
            "leader_cpu_percent"
        ),
    }


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Latency CDFs, throughput vs concurrency, failover distribution (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = results["systems"]
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, data in systems.items():
        samples = sorted(data.get("serial", {}).get("samples_ms", []))
        if samples:
            ax.plot(samples, [(i + 1) / len(samples) for i in range(len(samples))], label=name)
    ax.set_xlabel("serial commit latency (ms)")
    ax.set_ylabel("fraction of writes")
    ax.set_xscale("log")
    ax.legend()
    ax.set_title("Serial commit latency CDF")
    written.append(_save(fig, out_dir / "latency_cdf.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, data in systems.items():
        rows = data.get("throughput", [])
        if rows:
            ax.plot(
                [r["concurrency"] for r in rows], [r["ops_per_s"] for r in rows], "o-", label=name
            )
    ax.set_xlabel("concurrent writers")
    ax.set_ylabel("writes/s")
    ax.set_xscale("log", base=2)
    ax.legend()
    ax.set_title("Throughput vs concurrency")
    written.append(_save(fig, out_dir / "throughput.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    names = [n for n, d in systems.items() if d.get("failover", {}).get("samples_ms")]
    if names:
        ax.boxplot([systems[n]["failover"]["samples_ms"] for n in names], tick_labels=names)
    ax.axhline(results["election_timeout_ms"], linestyle="--", label="election timeout")
    ax.set_ylabel("kill -> first commit (ms)")
    ax.legend()
    ax.set_title("Failover time")
    written.append(_save(fig, out_dir / "failover.png"))
    plt.close("all")
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
