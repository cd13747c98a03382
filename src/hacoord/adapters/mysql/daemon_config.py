"""The failover daemon's TOML configuration: clusters, timings, hooks, DNS.

Example (``mysql.toml``)::

    [daemon]
    http = "127.0.0.1:8480"        # this daemon's MySQL API (optional)
    probe_interval_s = 0.5
    probe_timeout_s = 1.0
    failures_to_confirm = 3        # consecutive failed probes before a member says "down"
    block_period_s = 3600          # anti-flapping
    orchestrator_ttl_s = 3
    agent_interval_s = 1

    [[clusters]]
    name = "orders"
    hosts = [
        { host = "10.0.0.1", port = 3306, promotion = "prefer" },
        { host = "10.0.0.2", port = 3306 },
        { host = "10.0.0.3", port = 3306, promotion = "must_not" },
    ]
    admin_user = "hacoord"
    admin_password_env = "HACOORD_MYSQL_ADMIN_PASSWORD"    # or admin_password_file
    replication_user = "repl"
    replication_password_file = "/etc/hacoord/repl.password"

    [clusters.hooks]                 # argv lists; env: HACOORD_CLUSTER, _OLD_PRIMARY, _TOKEN...
    pre_failover = ["/usr/local/bin/page-oncall"]
    fence = ["/usr/local/bin/power-off"]

    [clusters.dns]                   # RFC 2136, published after the primary opens
    server = "10.0.0.53"
    zone = "db.example."
    record = "orders-primary"
    ttl = 5
    tsig_name = "hacoord"
    tsig_secret_env = "HACOORD_TSIG_SECRET"

Passwords and secrets are read from the environment or from files, never from this
file, and never logged. Every problem is a :class:`ValueError` naming the file and
the setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacoord.adapters.daemon_support import check_keys, read_toml
from hacoord.adapters.mysql.config import ClusterConfig
from hacoord.adapters.mysql.orchestrator import OrchestratorTimings
from hacoord.server.config_file import parse_address

_DAEMON_KEYS = {
    "http",
    "probe_interval_s",
    "probe_timeout_s",
    "failures_to_confirm",
    "block_period_s",
    "orchestrator_ttl_s",
    "agent_interval_s",
    "probe_via",
}
_CLUSTER_KEYS = {
    "name",
    "hosts",
    "admin_user",
    "admin_password_env",
    "admin_password_file",
    "replication_user",
    "replication_password_env",
    "replication_password_file",
    "dialect",
    "semi_sync",
    "connect_timeout_s",
    "relay_log_wait_s",
    "catch_up_wait_s",
    "hooks",
    "dns",
    "max_lag_s",
    "max_disk_pct",
}
_HOOK_KEYS = {"fence", "pre_failover", "post_failover", "failed_failover"}
_DNS_KEYS = {
    "server",
    "port",
    "zone",
    "record",
    "ttl",
    "tsig_name",
    "tsig_secret_env",
    "tsig_secret_file",
    "tsig_algorithm",
    "targets",
}


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything the daemon, the agents and the CLI read from ``mysql.toml``."""

    clusters: tuple[ClusterConfig, ...]
    timings: OrchestratorTimings
    probe_interval_s: float = 0.5
    probe_timeout_s: float = 1.0
    agent_interval_s: float = 1.0
    http: tuple[str, int] | None = None
    probe_via: Mapping[str, tuple[str, int]] | None = None

    def cluster(self, name: str) -> ClusterConfig:
        """The cluster called ``name``."""
        for c in self.clusters:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.clusters)
        raise KeyError(f"no cluster {name!r} in the configuration (known: {known})")


def parse_daemon_config(
    raw: Mapping[str, Any], name: str, env: Mapping[str, str] | None = None
) -> DaemonConfig:
    """Check and convert a parsed TOML document."""
    env = os.environ if env is None else env
    check_keys(raw, {"daemon", "clusters"}, name)
    daemon = raw.get("daemon", {})
    check_keys(daemon, _DAEMON_KEYS, f"{name} [daemon]")
    clusters = raw.get("clusters")
    if not clusters:
        raise ValueError(f"{name}: no [[clusters]] configured")
    parsed = []
    for i, table in enumerate(clusters):
        where = f"{name} [[clusters]] #{i + 1} ({table.get('name', '?')})"
        check_keys(table, _CLUSTER_KEYS, where)
        check_keys(table.get("hooks", {}), _HOOK_KEYS, f"{where} [hooks]")
        check_keys(table.get("dns", {}), _DNS_KEYS, f"{where} [dns]")
        try:
            parsed.append(ClusterConfig.from_mapping(table, env))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{where}: {e}") from None
    names = [c.name for c in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: cluster names must be unique, got {names}")
    try:
        interval = float(daemon.get("probe_interval_s", 0.5))
        timings = OrchestratorTimings(
            interval_s=interval,
            failures_to_confirm=int(daemon.get("failures_to_confirm", 3)),
            block_period_s=float(daemon.get("block_period_s", 3600)),
            ttl_s=float(daemon.get("orchestrator_ttl_s", 3.0)),
        )
        probe_timeout = float(daemon.get("probe_timeout_s", 1.0))
        agent_interval = float(daemon.get("agent_interval_s", 1.0))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} [daemon]: {e}") from None
    for what, value in (
        ("probe_interval_s", interval),
        ("probe_timeout_s", probe_timeout),
        ("agent_interval_s", agent_interval),
        ("orchestrator_ttl_s", timings.ttl_s),
    ):
        if value <= 0:
            raise ValueError(f"{name} [daemon]: {what} must be > 0, got {value}")
    if timings.failures_to_confirm < 1:
        raise ValueError(f"{name} [daemon]: failures_to_confirm must be >= 1")
    http = parse_address(daemon["http"], f"{name} [daemon] http") if "http" in daemon else None
    via = {
        str(k): parse_address(v, f"{name} [daemon] probe_via")
        for k, v in daemon.get("probe_via", {}).items()
    }
    return DaemonConfig(
        clusters=tuple(parsed),
        timings=timings,
        probe_interval_s=interval,
        probe_timeout_s=probe_timeout,
        agent_interval_s=agent_interval,
        http=http,
        probe_via=via,
    )


def load_daemon_config(path: Path, env: Mapping[str, str] | None = None) -> DaemonConfig:
    """Read and check ``path``."""
    raw = read_toml(path)
    return parse_daemon_config(raw, str(path), env)
