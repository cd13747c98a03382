"""The Kubernetes adapter daemon's TOML configuration: the group, the instance, HTTP, webhook.

Example (``k8s.toml``; examples/k8s.toml is a complete one)::

    [daemon]
    instance = "adapter-1"          # default: the host name
    http = "127.0.0.1:8490"         # status, actions and /metrics (optional)
    ttl_s = 5                       # of the adapter election's lease
    api_fencing = true              # writes carry the fencing token, checked by the webhook

    [webhook]                       # optional: serve the eviction and fence webhooks
    listen = "127.0.0.1:8491"
    url = "https://127.0.0.1:8491"  # what the API servers call
    cert_file = "/etc/hacoord/webhook.crt"
    key_file = "/etc/hacoord/webhook.key"
    ca_file = "/etc/hacoord/webhook-ca.crt"   # the caBundle handed to the API servers
    install = true                  # create RBAC, webhook configuration and PDB at start

    [group]
    name = "orders"
    first_zone = "zone-a"
    template = { image = "etcd:v3.7.3", env = { ETCD_DATA_DIR = "/data/etcd" } }
    zones = [ { name = "zone-a", kubeconfig = "a.kubeconfig", namespace = "db" }, ... ]
    members = [ { name = "orders-a", zone = "zone-a", endpoint = "http://10.0.0.1:2379" }, ... ]

Relative paths are relative to the file. Every problem is a ``ValueError`` naming the file and
the setting.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacoord.adapters.daemon_support import check_keys, read_toml
from hacoord.adapters.k8s.config import GroupConfig
from hacoord.server.config_file import parse_address

_DAEMON_KEYS = {"instance", "http", "ttl_s", "api_fencing"}
_WEBHOOK_KEYS = {"listen", "url", "cert_file", "key_file", "ca_file", "install"}
_GROUP_KEYS = {"name", "first_zone", "template", "zones", "members", "timings"}


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Where the admission webhook listens, its certificate, and what API servers call."""

    listen: tuple[str, int]
    url: str
    cert_file: Path
    key_file: Path
    ca_file: Path
    install: bool = True


@dataclass(frozen=True, slots=True)
class K8sDaemonConfig:
    """Everything ``hacoord k8s serve`` needs."""

    group: GroupConfig
    instance: str
    http: tuple[str, int] | None = None
    ttl_s: float = 5.0
    api_fencing: bool = False
    webhook: WebhookSettings | None = None


def parse_k8s_config(raw: dict[str, Any], name: str, base_dir: Path) -> K8sDaemonConfig:
    """Check and convert a parsed TOML document."""
    check_keys(raw, {"daemon", "webhook", "group"}, name)
    daemon = raw.get("daemon", {})
    check_keys(daemon, _DAEMON_KEYS, f"{name} [daemon]")
    if "group" not in raw:
        raise ValueError(f"{name}: no [group] configured")
    check_keys(raw["group"], _GROUP_KEYS, f"{name} [group]")
    try:
        group = GroupConfig.from_mapping(raw["group"], base_dir)
    except ValueError as e:
        raise ValueError(f"{name} [group]: {e}") from None
    try:
        ttl_s = float(daemon.get("ttl_s", 5.0))
    except (TypeError, ValueError):
        raise ValueError(f"{name} [daemon]: ttl_s must be a number") from None
    if ttl_s <= 0:
        raise ValueError(f"{name} [daemon]: ttl_s must be > 0, got {ttl_s}")
    http = parse_address(daemon["http"], f"{name} [daemon] http") if "http" in daemon else None
    webhook = None
    if "webhook" in raw:
        table = raw["webhook"]
        where = f"{name} [webhook]"
        check_keys(table, _WEBHOOK_KEYS, where)
        missing = [
            k for k in ("listen", "url", "cert_file", "key_file", "ca_file") if k not in table
        ]
        if missing:
            raise ValueError(f"{where}: missing setting {', '.join(missing)}")
        if not str(table["url"]).startswith("https://"):
            raise ValueError(f"{where}: url must be https:// (API servers call webhooks over TLS)")
        files = {k: _path(str(table[k]), base_dir) for k in ("cert_file", "key_file", "ca_file")}
        for key, path in files.items():
            if not path.is_file():
                raise ValueError(f"{where}: {key} {path} does not exist")
        webhook = WebhookSettings(
            listen=parse_address(table["listen"], f"{where} listen"),
            url=str(table["url"]),
            install=bool(table.get("install", True)),
            **files,
        )
    api_fencing = bool(daemon.get("api_fencing", webhook is not None))
    if api_fencing and webhook is None:
        raise ValueError(
            f"{name} [daemon]: api_fencing needs the fence webhook: configure [webhook]"
        )
    return K8sDaemonConfig(
        group=group,
        instance=str(daemon.get("instance", socket.gethostname())),
        http=http,
        ttl_s=ttl_s,
        api_fencing=api_fencing,
        webhook=webhook,
    )


def load_k8s_config(path: Path) -> K8sDaemonConfig:
    """Read and check ``path``."""
    return parse_k8s_config(read_toml(path), str(path), path.parent)


def _path(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path
