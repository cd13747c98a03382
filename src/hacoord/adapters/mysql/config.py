"""Configuration of a MySQL/MariaDB cluster under hacoord's care, checked on load."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hacoord.adapters.mysql.dialect import Dialect, dialect_named


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
        for what in ("connect_timeout_s", "relay_log_wait_s", "catch_up_wait_s"):
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

    @staticmethod
    def from_mapping(raw: Mapping[str, Any], secrets: Mapping[str, str]) -> ClusterConfig:
        """Build from a parsed TOML/JSON table; ``secrets`` maps ``*_password_env`` names."""
        try:
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
                fence_hook=tuple(str(a) for a in raw.get("fence_hook", ())),
            )
        except KeyError as e:
            raise ValueError(f"cluster {raw.get('name', '?')}: missing setting {e}") from None


def _secret(raw: Mapping[str, Any], who: str, secrets: Mapping[str, str]) -> str:
    env = raw.get(f"{who}_password_env")
    if env is None:
        raise KeyError(f"{who}_password_env")
    if env not in secrets:
        raise ValueError(f"cluster {raw.get('name', '?')}: environment variable {env} is not set")
    return secrets[env]
