"""Loading and validating a member's TOML configuration.

Example::

    [cluster]
    id = "prod-coord"
    heartbeat_ms = 50
    election_timeout_ms = 500

    [node]
    id = 1
    data_dir = "/var/lib/hacoord/1"
    # join = true    # a new member, added by the leader with `hacoord member add`
    # event_loop = "auto"   # "uvloop" if installed (pip install 'hacoord[uvloop]'), or "asyncio"

    [[members]]
    id = 1
    raft = "10.0.0.1:7001"
    http = "10.0.0.1:8001"
    # ... one [[members]] table per voter

    [tls]            # optional: mutual TLS for peer traffic
    ca = "ca.pem"
    cert = "node1.pem"
    key = "node1.key"

Every problem is reported as a :class:`ConfigError` naming the file, the field and
the rule it breaks.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacoord.raft.errors import ConfigError
from hacoord.raft.timing import Timing
from hacoord.server.event_loop import EVENT_LOOPS

_SECTIONS = {
    "cluster": {"id", "heartbeat_ms", "election_timeout_ms"},
    "node": {
        "id",
        "data_dir",
        "snapshot_entries",
        "max_pending_proposals",
        "log_level",
        "join",
        "event_loop",
    },
    "members": {"id", "raft", "http"},
    "tls": {"ca", "cert", "key"},
}


@dataclass(slots=True, frozen=True)
class Member:
    """One voter's addresses."""

    id: int
    raft: tuple[str, int]
    http: tuple[str, int]


@dataclass(slots=True, frozen=True)
class TlsFiles:
    """Paths of the CA, this member's certificate and its key."""

    ca: Path
    cert: Path
    key: Path


@dataclass(slots=True, frozen=True)
class ServerConfig:
    """A validated member configuration."""

    cluster_id: str
    node_id: int
    data_dir: Path
    members: dict[int, Member]
    timing: Timing
    snapshot_entries: int = 10_000
    max_pending_proposals: int = 10_000
    log_level: str = "INFO"
    tls: TlsFiles | None = None
    join: bool = False
    """This member joins an existing cluster: the leader adds it with ``hacoord member``."""
    event_loop: str = "auto"
    """The process's event loop (see :mod:`hacoord.server.event_loop`)."""

    @property
    def me(self) -> Member:
        """This member's own entry."""
        return self.members[self.node_id]


def parse_address(text: object, where: str) -> tuple[str, int]:
    """Parse ``host:port``; raises ConfigError naming ``where`` on bad input."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"{where} must be a 'host:port' string, got {text!r}")
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not host:
        raise ConfigError(f"{where}: missing host in {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{where}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{where}: port {port} is outside 1-65535")
    return host, port


def _check_keys(table: dict[str, Any], section: str, where: str) -> None:
    allowed = _SECTIONS[section]
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {sorted(allowed)}"
            raise ConfigError(f"{where}: unknown key '{key}' in [{section}]{hint}")


def _get(table: dict[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    if key not in table:
        if default is None:
            raise ConfigError(f"{where}: missing required key '{key}'")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(
            f"{where}: '{key}' must be {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def load_config(path: Path) -> ServerConfig:
    """Read and validate ``path``."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, str(path), base_dir=path.parent)


def parse_config(raw: dict[str, Any], name: str, base_dir: Path) -> ServerConfig:
    """Validate an already-parsed TOML document."""
    for section in raw:
        if section not in _SECTIONS:
            close = difflib.get_close_matches(section, _SECTIONS, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            raise ConfigError(f"{name}: unknown section [{section}]{hint}")
    cluster = raw.get("cluster")
    node = raw.get("node")
    if not isinstance(cluster, dict):
        raise ConfigError(f"{name}: missing [cluster] section")
    if not isinstance(node, dict):
        raise ConfigError(f"{name}: missing [node] section")
    _check_keys(cluster, "cluster", name)
    _check_keys(node, "node", name)
    cluster_id = _get(cluster, "id", str, f"{name} [cluster]")
    if not cluster_id.strip():
        raise ConfigError(f"{name} [cluster]: 'id' must not be empty")
    timing = Timing(
        heartbeat_ms=_get(cluster, "heartbeat_ms", float, f"{name} [cluster]", 50.0),
        election_timeout_ms=_get(cluster, "election_timeout_ms", float, f"{name} [cluster]", 500.0),
    )
    node_id = _get(node, "id", int, f"{name} [node]")
    data_dir = Path(_get(node, "data_dir", str, f"{name} [node]"))
    if not data_dir.is_absolute():
        data_dir = base_dir / data_dir
    snapshot_entries = _get(node, "snapshot_entries", int, f"{name} [node]", 10_000)
    if snapshot_entries < 1:
        raise ConfigError(f"{name} [node]: 'snapshot_entries' must be >= 1")
    max_pending = _get(node, "max_pending_proposals", int, f"{name} [node]", 10_000)
    if max_pending < 1:
        raise ConfigError(f"{name} [node]: 'max_pending_proposals' must be >= 1")
    log_level = _get(node, "log_level", str, f"{name} [node]", "INFO").upper()
    join = node.get("join", False)
    if not isinstance(join, bool):
        raise ConfigError(f"{name} [node]: 'join' must be true or false, got {join!r}")
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"{name} [node]: 'log_level' must be DEBUG, INFO, WARNING or ERROR")
    event_loop = _get(node, "event_loop", str, f"{name} [node]", "auto")
    if event_loop not in EVENT_LOOPS:
        raise ConfigError(
            f"{name} [node]: 'event_loop' must be {', '.join(EVENT_LOOPS)}, got {event_loop!r}"
        )

    members_raw = raw.get("members")
    if not isinstance(members_raw, list) or not members_raw:
        raise ConfigError(f"{name}: at least one [[members]] table is required")
    members: dict[int, Member] = {}
    seen_addresses: dict[tuple[str, int], str] = {}
    for i, table in enumerate(members_raw):
        where = f"{name} [[members]] #{i + 1}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        _check_keys(table, "members", where)
        mid = _get(table, "id", int, where)
        if mid <= 0:
            raise ConfigError(f"{where}: 'id' must be a positive integer, got {mid}")
        if mid in members:
            raise ConfigError(f"{where}: member id {mid} appears twice")
        raft = parse_address(_get(table, "raft", str, where), f"{where} 'raft'")
        http = parse_address(_get(table, "http", str, where), f"{where} 'http'")
        for addr, label in ((raft, "raft"), (http, "http")):
            if addr in seen_addresses:
                raise ConfigError(
                    f"{where}: {label} address {addr[0]}:{addr[1]} is already used by "
                    f"{seen_addresses[addr]}"
                )
            seen_addresses[addr] = f"member {mid} ({label})"
        members[mid] = Member(mid, raft, http)
    if node_id not in members:
        raise ConfigError(
            f"{name} [node]: id {node_id} is not one of the members {sorted(members)}"
        )
    tls = None
    if "tls" in raw:
        t = raw["tls"]
        if not isinstance(t, dict):
            raise ConfigError(f"{name}: [tls] must be a table")
        _check_keys(t, "tls", f"{name} [tls]")
        files = {}
        for key in ("ca", "cert", "key"):
            p = Path(_get(t, key, str, f"{name} [tls]"))
            p = p if p.is_absolute() else base_dir / p
            if not p.is_file():
                raise ConfigError(f"{name} [tls]: {key} file {p} does not exist")
            files[key] = p
        tls = TlsFiles(files["ca"], files["cert"], files["key"])
    return ServerConfig(
        cluster_id=cluster_id,
        node_id=node_id,
        data_dir=data_dir,
        members=members,
        timing=timing,
        snapshot_entries=snapshot_entries,
        max_pending_proposals=max_pending,
        log_level=log_level,
        tls=tls,
        join=join,
        event_loop=event_loop,
    )


def render_config(cfg: ServerConfig) -> str:
    """Write ``cfg`` back as TOML (used by ``hacoord demo`` to lay out a local cluster)."""
    lines = [
        "[cluster]",
        f'id = "{cfg.cluster_id}"',
        f"heartbeat_ms = {cfg.timing.heartbeat_ms:g}",
        f"election_timeout_ms = {cfg.timing.election_timeout_ms:g}",
        "",
        "[node]",
        f"id = {cfg.node_id}",
        f'data_dir = "{cfg.data_dir}"',
        f"snapshot_entries = {cfg.snapshot_entries}",
        f'log_level = "{cfg.log_level}"',
        f"join = {'true' if cfg.join else 'false'}",
        f'event_loop = "{cfg.event_loop}"',
    ]
    for m in sorted(cfg.members.values(), key=lambda m: m.id):
        lines += [
            "",
            "[[members]]",
            f"id = {m.id}",
            f'raft = "{m.raft[0]}:{m.raft[1]}"',
            f'http = "{m.http[0]}:{m.http[1]}"',
        ]
    if cfg.tls is not None:
        lines += [
            "",
            "[tls]",
            f'ca = "{cfg.tls.ca}"',
            f'cert = "{cfg.tls.cert}"',
            f'key = "{cfg.tls.key}"',
        ]
    return "\n".join(lines) + "\n"
