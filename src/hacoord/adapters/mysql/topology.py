"""Topology discovery from the servers themselves, and the choice of a new primary."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from hacoord.adapters.mysql.config import ClusterConfig, Promotion
from hacoord.adapters.mysql.errors import NoSafeCandidateError
from hacoord.adapters.mysql.gtid import Position
from hacoord.adapters.mysql.server import MySQLServer, Probe


def servers(cfg: ClusterConfig) -> dict[str, MySQLServer]:
    """An admin handle on every configured host, by ``host:port``."""
    return {
        h.name: MySQLServer(h, cfg.admin, cfg.dialect, cfg.connect_timeout_s) for h in cfg.hosts
    }


@dataclass(frozen=True, slots=True)
class Topology:
    """Who replicates from whom, as the servers report it."""

    cluster: str
    probes: dict[str, Probe]
    primary: str | None
    """The server the others replicate from (or the only writable one)."""
    problems: tuple[str, ...] = ()

    def replicas_of(self, source: str) -> list[str]:
        """Reachable servers replicating from ``source``."""
        return [
            name
            for name, p in self.probes.items()
            if p.state and p.state.replica and _source(p) == source
        ]

    def describe(self) -> list[str]:
        """One line per server, for logs and the CLI."""
        lines = []
        for name, p in self.probes.items():
            if p.state is None:
                lines.append(f"{name}: unreachable ({p.error})")
                continue
            s = p.state
            role = "primary" if name == self.primary else "replica" if s.replica else "standalone"
            extra = f" of {_source(p)}" if s.replica else ""
            if s.replica and s.replica.broken:
                extra += f" BROKEN ({s.replica.sql_errno}: {s.replica.sql_error})"
            ro = "read-only" if s.read_only else "writable"
            lines.append(f"{name}: {role}{extra}, {ro}, gtid {s.executed or '-'}")
        return lines


def _source(p: Probe) -> str | None:
    if p.state is None or p.state.replica is None:
        return None
    r = p.state.replica
    return f"{r.source_host}:{r.source_port}"


async def discover(cfg: ClusterConfig) -> Topology:
    """Probe every host at once and work out the replication topology."""
    handles = servers(cfg)
    results = await asyncio.gather(*(s.probe() for s in handles.values()))
    probes = dict(zip(handles, results, strict=True))
    problems: list[str] = []
    writable = [
        n for n, p in probes.items() if p.state and not p.state.replica and not p.state.read_only
    ]
    sources = Counter(s for p in probes.values() if (s := _source(p)) is not None)
    primary: str | None = None
    if len(writable) > 1:
        problems.append(f"more than one writable primary: {', '.join(writable)}")
    if writable:
        primary = writable[0]
    elif sources:
        primary = sources.most_common(1)[0][0]
    for source in sources:
        if source not in probes:
            problems.append(f"a replica replicates from {source}, which is not in the cluster")
    for name, p in probes.items():
        if p.state is None:
            problems.append(f"{name} unreachable: {p.error}")
        elif p.state.replica and p.state.replica.broken:
            r = p.state.replica
            problems.append(f"{name} replication broken: {r.sql_errno} {r.sql_error}")
    return Topology(cfg.name, probes, primary, tuple(problems))


@dataclass(frozen=True, slots=True)
class Candidate:
    """The replica chosen for promotion and why the others were not."""

    host: str
    received: str
    """GTIDs it has received (its relay log included): what it must apply."""
    rejected: dict[str, str] = field(default_factory=dict)


def choose_candidate(
    cfg: ClusterConfig,
    topology: Topology,
    old_primary: str,
    wanted: str | None = None,
    exclude: Iterable[str] = (),
) -> Candidate:
    """The most advanced safe replica of ``old_primary`` (or check ``wanted``).

    Safe: reachable, replicating from ``old_primary`` by GTID, SQL thread without
    error, binary log on, promotion rule not ``must_not``. Most advanced: received
    GTIDs (relay log included) covering every other candidate's; ties go to
    ``prefer`` hosts, then to configured order.
    """
    rejected: dict[str, str] = {}
    excluded = set(exclude)
    eligible: list[tuple[str, Position, str]] = []
    for h in cfg.hosts:
        if h.name == old_primary:
            continue
        probe = topology.probes.get(h.name) or Probe(h, error="not probed")
        reason = "in maintenance" if h.name in excluded else _unsafe(cfg, probe, old_primary)
        if reason is None and wanted is not None and h.name != wanted:
            reason = "not the requested candidate"
        if reason is not None:
            rejected[h.name] = reason
            continue
        state = probe.state
        assert state is not None and state.replica is not None
        received = state.replica.received or state.executed
        eligible.append((h.name, cfg.dialect.parse_position(received), received))
    if not eligible:
        raise NoSafeCandidateError(cfg.name, rejected)
    order = {h.name: i for i, h in enumerate(cfg.hosts)}

    def key(item: tuple[str, Position, str]) -> tuple[int, int, int, int]:
        name, pos, _ = item
        covers_all = all(pos.covers(other) for _, other, _ in eligible)
        prefer = cfg.host(name).promotion is Promotion.PREFER
        return (-int(covers_all), -pos.rank(), -int(prefer), order[name])

    best = min(eligible, key=key)
    for name, _, _ in eligible:
        if name != best[0]:
            rejected[name] = f"less advanced or less preferred than {best[0]}"
    return Candidate(best[0], best[2], rejected)


def _unsafe(cfg: ClusterConfig, probe: Probe, old_primary: str) -> str | None:
    host = cfg.host(probe.host.name)
    if host.promotion is Promotion.MUST_NOT:
        return "promotion rule is must_not"
    if probe.state is None:
        return f"unreachable ({probe.error})"
    replica = probe.state.replica
    if replica is None:
        return "does not replicate from anyone"
    if _source(probe) != old_primary:
        return f"replicates from {_source(probe)}, not from {old_primary}"
    if replica.broken:
        return f"replication broken by error {replica.sql_errno}: {replica.sql_error}"
    if not replica.uses_gtid:
        return "replicates by file position, not by GTID"
    if not probe.state.log_bin:
        return "binary log is off"
    return None
