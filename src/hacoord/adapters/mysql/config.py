"""Configuration of a MySQL/MariaDB cluster under hacoord's care, checked on load."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hacoord.adapters.mysql.dialect import Dialect, dialect_named

if TYPE_CHECKING:
    from hacoord.adapters.dns import DnsSettings


class Promotion(enum.StrEnum):
    """Promotion rule of a host: preferred, neutral, or never promoted."""

    PREFER = "prefer"
    NEUTRAL = "neutral"
    MUST_NOT = "must_not"


@dataclass(frozen=True, slots=True)
class Host:
    """One database server: where it listens and its promotion rule."""

    host: str
    port: int = 3306
    promotion: Promotion = Promotion.NEUTRAL

    @property
    def name(self) -> str:
        """``host:port``, how the host is named in records and messages."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user and password; the password never appears in ``repr`` or logs."""

    user: str
    password: str = field(repr=False)


_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Everything the adapter needs to know about one replicated cluster."""

    name: str
    hosts: tuple[Host, ...]
    admin: Credentials
    """Used by hacoord to inspect, fence, promote and repoint (needs SUPER-like rights)."""
    replication: Credentials
    """Used by replicas to connect to their source."""
    dialect: Dialect = field(default_factory=lambda: dialect_named("mariadb"))
    semi_sync: bool = True
    connect_timeout_s: float = 3.0
    relay_log_wait_s: float = 30.0
    """How long a failover candidate may take to apply its relay log."""
    catch_up_wait_s: float = 30.0
    """How long a switchover waits for the candidate to apply the old primary's GTIDs."""
    fence_hook: tuple[str, ...] = ()
    """Command run to fence an unreachable old primary (power off, firewall)."""
    pre_failover_hook: tuple[str, ...] = ()
    """Run before an automatic failover; a non-zero exit aborts it."""
    post_failover_hook: tuple[str, ...] = ()
    """Run after a failover succeeded."""
    failed_failover_hook: tuple[str, ...] = ()
    """Run after a failover failed."""
    dns: DnsSettings | None = None
    """Where to publish the primary's name (RFC 2136), if anywhere."""
    dns_targets: Mapping[str, str] = field(default_factory=dict)
    """What to publish for each host (``host:port`` -> address or name); default its host."""
    max_lag_s: float = 60.0
    """Replication lag above which the monitor raises an alert."""
    max_disk_pct: float = 90.0
    """Disk usage above which the monitor raises an alert."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"cluster name {self.name!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if len(self.hosts) < 2:
            raise ValueError(f"cluster {self.name}: needs at least 2 hosts, got {len(self.hosts)}")
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError(f"cluster {self.name}: hosts listed twice: {names}")
        for h in self.hosts:
            if not 0 < h.port < 65536:
                raise ValueError(f"cluster {self.name}: host {h.host} has bad port {h.port}")
        for target in self.dns_targets:
            if target not in names:
                raise ValueError(f"cluster {self.name}: dns target for unknown host {target}")
        for what in ("connect_timeout_s", "relay_log_wait_s", "catch_up_wait_s", "max_lag_s"):
            if getattr(self, what) <= 0:
                raise ValueError(f"cluster {self.name}: {what} must be > 0")

    def host(self, name: str) -> Host:
        """The host called ``name`` (``host:port``); ``KeyError`` names the known ones."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"cluster {self.name} has no host {name!r} (hosts: {self.host_names()})")

    def host_names(self) -> list[str]:
        """``host:port`` of every host, in configured order."""
        return [h.name for h in self.hosts]

    def dns_target(self, host: str) -> str:
        """The address or name published in DNS for ``host``."""
        return self.dns_targets.get(host) or self.host(host).host

    @staticmethod
    def from_mapping(raw: Mapping[str, Any], secrets: Mapping[str, str]) -> ClusterConfig:
        """Build from a parsed TOML/JSON table.

        Passwords come from ``<who>_password_env`` (a name looked up in ``secrets``,
        normally the environment) or ``<who>_password_file``; never from the table.
        """
        try:
            hooks = raw.get("hooks", {})
            hosts = tuple(
                Host(
                    str(h["host"]),
                    int(h.get("port", 3306)),
                    Promotion(h.get("promotion", "neutral")),
                )
                for h in raw["hosts"]
            )
            return ClusterConfig(
                name=str(raw["name"]),
                hosts=hosts,
                admin=Credentials(str(raw["admin_user"]), _secret(raw, "admin", secrets)),
                replication=Credentials(
                    str(raw["replication_user"]), _secret(raw, "replication", secrets)
                ),
                dialect=dialect_named(str(raw.get("dialect", "mariadb"))),
                semi_sync=bool(raw.get("semi_sync", True)),
                connect_timeout_s=float(raw.get("connect_timeout_s", 3.0)),
                relay_log_wait_s=float(raw.get("relay_log_wait_s", 30.0)),
                catch_up_wait_s=float(raw.get("catch_up_wait_s", 30.0)),
                fence_hook=tuple(str(a) for a in hooks.get("fence", ())),
                pre_failover_hook=tuple(str(a) for a in hooks.get("pre_failover", ())),
                post_failover_hook=tuple(str(a) for a in hooks.get("post_failover", ())),
                failed_failover_hook=tuple(str(a) for a in hooks.get("failed_failover", ())),
                dns=_dns(raw, secrets),
                dns_targets={
                    str(k): str(v) for k, v in raw.get("dns", {}).get("targets", {}).items()
                },
                max_lag_s=float(raw.get("max_lag_s", 60.0)),
                max_disk_pct=float(raw.get("max_disk_pct", 90.0)),
            )
        except KeyError as e:
            raise ValueError(f"cluster {raw.get('name', '?')}: missing setting {e}") from None


def _secret(
    raw: Mapping[str, Any], who: str, secrets: Mapping[str, str], what: str = "password"
) -> str:
    cluster = raw.get("name", "?")
    env, path = raw.get(f"{who}_{what}_env"), raw.get(f"{who}_{what}_file")
    if env is not None:
        if env not in secrets:
            raise ValueError(f"cluster {cluster}: environment variable {env} is not set")
        return secrets[env]
    if path is not None:
        try:
            return Path(path).read_text().strip()
        except OSError as e:
            raise ValueError(f"cluster {cluster}: cannot read {who}_{what}_file: {e}") from None
    raise KeyError(f"{who}_{what}_env (or {who}_{what}_file)")


def _dns(raw: Mapping[str, Any], secrets: Mapping[str, str]) -> DnsSettings | None:
    table = raw.get("dns")
    if table is None:
        return None
    from hacoord.adapters.dns import DnsSettings

    has_key = "tsig_name" in table
    return DnsSettings(
        server=str(table["server"]),
        port=int(table.get("port", 53)),
        zone=str(table["zone"]),
        record=str(table["record"]),
        ttl=int(table.get("ttl", 5)),
        tsig_name=str(table["tsig_name"]) if has_key else None,
        tsig_secret=_secret({**table, "name": raw.get("name")}, "tsig", secrets, "secret")
        if has_key
        else None,
        tsig_algorithm=str(table.get("tsig_algorithm", "hmac-sha256")),
    )
