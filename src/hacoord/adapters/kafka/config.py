"""Configuration of an HA group: several independent Kafka clusters acting as one, checked on load.

An *HA group* is a set of independent Kafka clusters (regions) that together carry a set of
*logical topics*; every logical topic has a *physical topic* in every cluster. In
``primary`` mode every producer writes to one cluster (the primary) and consumers read all
of them; in ``multi-primary`` mode producers write to any healthy cluster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hacoord.adapters.daemon_support import check_keys
from hacoord.adapters.kafka.errors import ConfigError, UnknownClusterError, UnknownTopicError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
"""What Kafka accepts as a topic name."""
_HOST_PORT = re.compile(r"^[^\s:,]+:\d{1,5}$")


def _check_name(what: str, name: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(
            f"{what} {name!r}: use 1-63 letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )


class Mode(StrEnum):
    """How producers pick a cluster."""

    PRIMARY = "primary"
    """All producers write to the primary cluster; the control plane moves it on failure."""
    MULTI_PRIMARY = "multi-primary"
    """Producers write to any healthy, writable cluster."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """One Kafka cluster of the group and how to reach it."""

    name: str
    bootstrap: tuple[str, ...]
    """``host:port`` of one or more of its brokers."""
    replication_factor: int = 1
    """Replication factor of the physical topics the adapter creates in this cluster."""

    def __post_init__(self) -> None:
        _check_name("cluster", self.name)
        if not self.bootstrap:
            raise ConfigError(f"cluster {self.name}: bootstrap lists no broker")
        for address in self.bootstrap:
            if not _HOST_PORT.match(address) or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
                raise ConfigError(
                    f"cluster {self.name}: bootstrap address {address!r} must be host:port"
                )
        if self.replication_factor < 1:
            raise ConfigError(
                f"cluster {self.name}: replication_factor must be >= 1, "
                f"got {self.replication_factor}"
            )

    @property
    def bootstrap_servers(self) -> str:
        """The bootstrap list as aiokafka takes it."""
        return ",".join(self.bootstrap)


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """One logical topic and its physical topic in every cluster."""

    name: str
    partitions: int = 1
    physical: str = ""
    """The physical topic's name in every cluster (default: the logical name)."""

    def __post_init__(self) -> None:
        if not _TOPIC.match(self.name):
            raise ConfigError(f"topic {self.name!r}: not a valid Kafka topic name")
        if not self.physical:
            object.__setattr__(self, "physical", self.name)
        if not _TOPIC.match(self.physical):
            raise ConfigError(
                f"topic {self.name}: physical {self.physical!r} is not a valid Kafka topic name"
            )
        if self.partitions < 1:
            raise ConfigError(f"topic {self.name}: partitions must be >= 1, got {self.partitions}")


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """An HA group: its clusters, its logical topics and its mode."""

    name: str
    clusters: tuple[ClusterConfig, ...]
    topics: tuple[TopicConfig, ...]
    mode: Mode = Mode.MULTI_PRIMARY
    primary: str = ""
    """The first primary in ``primary`` mode (default: the first cluster listed)."""
    topic_by_name: Mapping[str, TopicConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name("group", self.name)
        names = [c.name for c in self.clusters]
        if not names:
            raise ConfigError(f"group {self.name}: needs at least one cluster")
        if len(set(names)) != len(names):
            raise ConfigError(f"group {self.name}: clusters listed twice: {names}")
        topics = [t.name for t in self.topics]
        if not topics:
            raise ConfigError(f"group {self.name}: needs at least one topic")
        if len(set(topics)) != len(topics):
            raise ConfigError(f"group {self.name}: topics listed twice: {topics}")
        physical = [t.physical for t in self.topics]
        if len(set(physical)) != len(physical):
            raise ConfigError(f"group {self.name}: two topics share a physical topic")
        if self.primary and self.primary not in names:
            raise ConfigError(
                f"group {self.name}: primary {self.primary!r} is not one of its clusters {names}"
            )
        if not self.primary:
            object.__setattr__(self, "primary", names[0])
        object.__setattr__(self, "topic_by_name", {t.name: t for t in self.topics})

    @property
    def cluster_names(self) -> list[str]:
        """The clusters' names, in configuration order."""
        return [c.name for c in self.clusters]

    def cluster(self, name: str) -> ClusterConfig:
        """The cluster called ``name``; :class:`UnknownClusterError` if there is none."""
        for c in self.clusters:
            if c.name == name:
                return c
        raise UnknownClusterError(name, self.cluster_names)

    def topic(self, name: str) -> TopicConfig:
        """The logical topic called ``name``; :class:`UnknownTopicError` if there is none."""
        try:
            return self.topic_by_name[name]
        except KeyError:
            raise UnknownTopicError(name, list(self.topic_by_name)) from None

    def logical_topic(self, physical: str) -> str:
        """The logical topic whose physical topic is ``physical``."""
        for t in self.topics:
            if t.physical == physical:
                return t.name
        raise UnknownTopicError(physical, [t.physical for t in self.topics])

    @staticmethod
    def from_mapping(raw: Mapping[str, Any]) -> GroupConfig:
        """Build from a parsed TOML/JSON table (``[group]``); errors name the bad setting."""
        try:
            check_keys(raw, {"name", "mode", "primary", "clusters", "topics"}, "group")
            for key in ("name", "clusters", "topics"):
                if key not in raw:
                    raise ConfigError(f"group: missing setting {key!r}")
            name = str(raw["name"])
            mode_text = str(raw.get("mode", Mode.MULTI_PRIMARY))
            try:
                mode = Mode(mode_text)
            except ValueError:
                raise ConfigError(
                    f"group {name}: mode {mode_text!r} must be one of "
                    f"{', '.join(m.value for m in Mode)}"
                ) from None
            return GroupConfig(
                name=name,
                clusters=tuple(_cluster(name, c) for c in _tables(name, "clusters", raw)),
                topics=tuple(_topic(name, t) for t in _tables(name, "topics", raw)),
                mode=mode,
                primary=str(raw.get("primary", "")),
            )
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _tables(group: str, key: str, raw: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tables = raw[key]
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise ConfigError(f"group {group}: {key} must be a list of tables ([[group.{key}]])")
    return tables


def _cluster(group: str, raw: Mapping[str, Any]) -> ClusterConfig:
    where = f"group {group}: cluster {raw.get('name', '?')}"
    check_keys(raw, {"name", "bootstrap", "replication_factor"}, where)
    for key in ("name", "bootstrap"):
        if key not in raw:
            raise ConfigError(f"{where}: missing setting {key!r}")
    bootstrap = raw["bootstrap"]
    if isinstance(bootstrap, str):
        bootstrap = [b.strip() for b in bootstrap.split(",") if b.strip()]
    if not isinstance(bootstrap, list):
        raise ConfigError(f"{where}: bootstrap must be a list of host:port or one string")
    return ClusterConfig(
        name=str(raw["name"]),
        bootstrap=tuple(str(b) for b in bootstrap),
        replication_factor=_int(where, "replication_factor", raw.get("replication_factor", 1)),
    )


def _topic(group: str, raw: Mapping[str, Any]) -> TopicConfig:
    where = f"group {group}: topic {raw.get('name', '?')}"
    check_keys(raw, {"name", "partitions", "physical"}, where)
    if "name" not in raw:
        raise ConfigError(f"{where}: missing setting 'name'")
    return TopicConfig(
        name=str(raw["name"]),
        partitions=_int(where, "partitions", raw.get("partitions", 1)),
        physical=str(raw.get("physical", "")),
    )


def _int(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
    return value
