"""The Kafka adapter daemon's TOML configuration: probing, control timings, HTTP, proxy, group.

Example (``kafka.toml``; examples/kafka.toml is a complete one)::

    [daemon]
    http = "127.0.0.1:8470"        # status, actions and /metrics (optional)
    probe_interval_s = 0.5         # each member probes every cluster this often
    probe_timeout_s = 2.0
    failures_to_confirm = 2        # failed probes in a row before a member says "down"
    readmit_after_s = 30           # anti-flapping: a returning cluster must stay up this long
    control_ttl_s = 3              # lease of the control election
    canary_topic = "hacoord-canary"
    probe_via = { k1 = "10.0.0.5:9092" }   # this member dials these bootstrap servers instead

    [proxy]                        # optional: serve the produce proxy from this daemon
    listen = "127.0.0.1:8471"
    max_records = 1000             # per request
    max_body_bytes = 8388608
    attempt_timeout_s = 5          # of one cluster's acknowledgement
    delivery_timeout_s = 30        # of a record, over every cluster

    [group]
    name = "orders"
    mode = "primary"
    clusters = [ { name = "k1", bootstrap = ["10.0.1.1:9092"] }, ... ]
    topics = [ { name = "events", partitions = 6 } ]

Every problem is a ``ValueError`` naming the file and the setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hacoord.adapters.daemon_support import check_keys, read_toml
from hacoord.adapters.kafka.config import GroupConfig, TopicConfig
from hacoord.adapters.kafka.errors import ConfigError, UnknownClusterError
from hacoord.adapters.kafka.plane import ControlTimings
from hacoord.adapters.kafka.producer import ProducerOptions
from hacoord.adapters.kafka.watchdog import DEFAULT_CANARY_TOPIC
from hacoord.server.config_file import parse_address

_DAEMON_KEYS = {
    "http",
    "probe_interval_s",
    "probe_timeout_s",
    "failures_to_confirm",
    "readmit_after_s",
    "control_ttl_s",
    "canary_topic",
    "probe_via",
}
_PROXY_KEYS = {
    "listen",
    "max_records",
    "max_body_bytes",
    "attempt_timeout_s",
    "delivery_timeout_s",
}
DEFAULT_MAX_RECORDS = 1000
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Where the produce proxy listens, how much one request may carry, its producer's timeouts."""

    listen: tuple[str, int]
    max_records: int = DEFAULT_MAX_RECORDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    producer: ProducerOptions = field(default_factory=ProducerOptions)


@dataclass(frozen=True, slots=True)
class KafkaDaemonConfig:
    """Everything ``hacoord kafka serve`` and ``hacoord kafka proxy`` read from ``kafka.toml``."""

    group: GroupConfig
    timings: ControlTimings = field(default_factory=ControlTimings)
    """The control plane's; its ``interval_s`` and ``probe_timeout_s`` are the watchdog's too."""
    canary_topic: str = DEFAULT_CANARY_TOPIC
    http: tuple[str, int] | None = None
    probe_via: Mapping[str, str] = field(default_factory=dict)
    """Per cluster, the bootstrap servers this member's watchdog dials instead."""
    proxy: ProxySettings | None = None

    @property
    def probe_interval_s(self) -> float:
        """How often the watchdog probes every cluster (and the control plane decides)."""
        return self.timings.interval_s

    @property
    def probe_timeout_s(self) -> float:
        """How long one probe of one cluster may take."""
        return self.timings.probe_timeout_s


def parse_kafka_config(raw: Mapping[str, Any], name: str) -> KafkaDaemonConfig:
    """Check and convert a parsed TOML document (``name``: the file, for messages)."""
    check_keys(raw, {"daemon", "proxy", "group"}, name)
    daemon = _table(raw, "daemon", name)
    check_keys(daemon, _DAEMON_KEYS, f"{name} [daemon]")
    if "group" not in raw:
        raise ValueError(f"{name}: no [group] configured")
    try:
        group = GroupConfig.from_mapping(_table(raw, "group", name))
    except ConfigError as e:
        raise ValueError(f"{name} [group]: {e}") from None
    where = f"{name} [daemon]"
    timings = ControlTimings(
        interval_s=_seconds(daemon, "probe_interval_s", 0.5, where),
        failures_to_confirm=_count(daemon, "failures_to_confirm", 2, where),
        readmit_after_s=_seconds(daemon, "readmit_after_s", 30.0, where, allow_zero=True),
        ttl_s=_seconds(daemon, "control_ttl_s", 3.0, where),
        probe_timeout_s=_seconds(daemon, "probe_timeout_s", 2.0, where),
    )
    canary = daemon.get("canary_topic", DEFAULT_CANARY_TOPIC)
    try:
        TopicConfig(str(canary))  # the name check of every topic
    except ConfigError:
        raise ValueError(f"{where}: canary_topic {canary!r} is not a Kafka topic name") from None
    http = parse_address(daemon["http"], f"{where} http") if "http" in daemon else None
    return KafkaDaemonConfig(
        group=group,
        timings=timings,
        canary_topic=str(canary),
        http=http,
        probe_via=_probe_via(daemon.get("probe_via", {}), group, f"{where} probe_via"),
        proxy=_proxy(_table(raw, "proxy", name), f"{name} [proxy]") if "proxy" in raw else None,
    )


def load_kafka_config(path: Path) -> KafkaDaemonConfig:
    """Read and check ``path``."""
    return parse_kafka_config(read_toml(path), str(path))


def _table(raw: Mapping[str, Any], key: str, name: str) -> Mapping[str, Any]:
    table = raw.get(key, {})
    if not isinstance(table, Mapping):
        raise ValueError(f"{name}: {key} must be a table ([{key}])")
    return table


def _probe_via(raw: object, group: GroupConfig, where: str) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ValueError(f'{where} must be a table of cluster = "host:port,..."')
    via = {}
    for cluster, servers in raw.items():
        try:
            group.cluster(str(cluster))
        except UnknownClusterError as e:
            raise ValueError(f"{where}: {e}") from None
        items = servers.split(",") if isinstance(servers, str) else servers
        if not isinstance(items, list) or not items:
            raise ValueError(f"{where} {cluster}: give host:port servers, got {servers!r}")
        for item in items:
            parse_address(item.strip() if isinstance(item, str) else item, f"{where} {cluster}")
        via[str(cluster)] = ",".join(str(item).strip() for item in items)
    return via


def _proxy(table: Mapping[str, Any], where: str) -> ProxySettings:
    check_keys(table, _PROXY_KEYS, where)
    if "listen" not in table:
        raise ValueError(f"{where}: missing setting 'listen' (host:port)")
    attempt = _seconds(table, "attempt_timeout_s", 5.0, where)
    delivery = _seconds(table, "delivery_timeout_s", 30.0, where)
    if attempt > delivery:
        raise ValueError(
            f"{where}: attempt_timeout_s ({attempt}) must not exceed delivery_timeout_s "
            f"({delivery})"
        )
    return ProxySettings(
        listen=parse_address(table["listen"], f"{where} listen"),
        max_records=_count(table, "max_records", DEFAULT_MAX_RECORDS, where),
        max_body_bytes=_count(table, "max_body_bytes", DEFAULT_MAX_BODY_BYTES, where),
        producer=ProducerOptions(attempt_timeout_s=attempt, delivery_timeout_s=delivery),
    )


def _seconds(
    table: Mapping[str, Any], key: str, default: float, where: str, allow_zero: bool = False
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: {key} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{where}: {key} must be {'>=' if allow_zero else '>'} 0, got {value}")
    return float(value)


def _count(table: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: {key} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{where}: {key} must be >= 1, got {value}")
    return value
