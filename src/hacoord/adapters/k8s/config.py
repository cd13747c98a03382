"""Configuration of a database group spread over several Kubernetes clusters, checked on load.

A *group* is one replicated database (an etcd or hacoord cluster, say) with members in several
independent Kubernetes clusters, one *zone* per cluster (one API server each). Every member is
a pod with a stable name and a persistent volume claim that survives its replacement, built
from the group's :class:`PodTemplate` plus the member's own environment.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hacoord.adapters.k8s.errors import ConfigError, UnknownMemberError

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""A DNS-1123 label: what Kubernetes accepts as a pod, claim or namespace name."""


def _check_name(what: str, name: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(
            f"{what} {name!r}: use 1-63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )


@dataclass(frozen=True, slots=True)
class Zone:
    """One Kubernetes cluster: how to reach its API server and where the members live."""

    name: str
    kubeconfig: Path
    namespace: str = "default"
    context: str | None = None

    def __post_init__(self) -> None:
        _check_name("zone", self.name)
        _check_name(f"zone {self.name}: namespace", self.namespace)


@dataclass(frozen=True, slots=True)
class Member:
    """One database member: its pod (named like the member), zone, volume and endpoint."""

    name: str
    zone: str
    endpoint: str
    """Where the database member answers (``http://127.0.0.1:2379``); probed for health."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment of this member only, added to the template's."""
    volume_claim: str = ""
    """The persistent volume claim re-attached to every replacement (default ``data-<name>``)."""

    def __post_init__(self) -> None:
        _check_name("member", self.name)
        if not self.volume_claim:
            object.__setattr__(self, "volume_claim", f"data-{self.name}")
        _check_name(f"member {self.name}: volume_claim", self.volume_claim)
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
            raise ConfigError(
                f"member {self.name}: endpoint {self.endpoint!r} must be http(s)://host:port"
            )

    @property
    def port(self) -> int:
        """The TCP port of :attr:`endpoint` (the pod's readiness probe port)."""
        port = urlsplit(self.endpoint).port
        assert port is not None  # checked in __post_init__
        return port


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """What every member pod runs; a change to it is a rollout (a new :attr:`revision`)."""

    image: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    data_path: str = "/data"
    """Where the member's volume claim is mounted in the container."""
    readiness_path: str = "/health"
    """HTTP path of the readiness probe, on the member's endpoint port."""

    def __post_init__(self) -> None:
        if not self.image:
            raise ConfigError("pod template: image must not be empty")
        if not self.data_path.startswith("/"):
            raise ConfigError(f"pod template: data_path {self.data_path!r} must be absolute")
        if not self.readiness_path.startswith("/"):
            raise ConfigError(
                f"pod template: readiness_path {self.readiness_path!r} must start with '/'"
            )

    @property
    def revision(self) -> str:
        """A short digest of everything in the template: equal templates, equal revisions."""
        canonical = json.dumps(
            {
                "image": self.image,
                "args": list(self.args),
                "env": dict(sorted(self.env.items())),
                "data_path": self.data_path,
                "readiness_path": self.readiness_path,
            },
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def to_mapping(self) -> dict[str, Any]:
        """A JSON-able form, read back by :meth:`from_mapping`."""
        return {
            "image": self.image,
            "args": list(self.args),
            "env": dict(self.env),
            "data_path": self.data_path,
            "readiness_path": self.readiness_path,
        }

    @staticmethod
    def from_mapping(raw: Mapping[str, Any]) -> PodTemplate:
        """Build from a parsed TOML/JSON table; errors name the bad setting."""
        if "image" not in raw:
            raise ConfigError("pod template: missing setting 'image'")
        return PodTemplate(
            image=str(raw["image"]),
            args=tuple(str(a) for a in raw.get("args", ())),
            env=_string_table("pod template: env", raw.get("env", {})),
            data_path=str(raw.get("data_path", "/data")),
            readiness_path=str(raw.get("readiness_path", "/health")),
        )


@dataclass(frozen=True, slots=True)
class Timings:
    """How long the adapter waits for each phase of a replacement, and how often it looks."""

    interval_s: float = 1.0
    """Time between two looks at the group when nothing is happening."""
    api_timeout_s: float = 5.0
    """Timeout of one call to an API server or a member's endpoint."""
    gone_timeout_s: float = 60.0
    """How long an old pod may take to terminate."""
    ready_timeout_s: float = 120.0
    """How long a replacement may take to become Ready and healthy."""
    catch_up_timeout_s: float = 120.0
    """How long a replacement may take to apply what the leader had committed."""
    max_lag_entries: int = 1000
    """A member further behind the leader's commit index than this is not healthy."""

    def __post_init__(self) -> None:
        for name in ("interval_s", "api_timeout_s", "gone_timeout_s", "ready_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"timings: {name} must be > 0, got {getattr(self, name)}")
        if self.catch_up_timeout_s <= 0:
            raise ConfigError(
                f"timings: catch_up_timeout_s must be > 0, got {self.catch_up_timeout_s}"
            )
        if self.max_lag_entries < 0:
            raise ConfigError(f"timings: max_lag_entries must be >= 0, got {self.max_lag_entries}")


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """A database group: its zones, members and pod template, and the rollout order."""

    name: str
    zones: tuple[Zone, ...]
    members: tuple[Member, ...]
    template: PodTemplate
    first_zone: str = ""
    """The zone a rollout starts with (the canary); default the first zone listed."""
    timings: Timings = field(default_factory=Timings)

    def __post_init__(self) -> None:
        _check_name("group", self.name)
        zone_names = [z.name for z in self.zones]
        if not zone_names:
            raise ConfigError(f"group {self.name}: needs at least one zone")
        if len(set(zone_names)) != len(zone_names):
            raise ConfigError(f"group {self.name}: zones listed twice: {zone_names}")
        names = [m.name for m in self.members]
        if len(names) < 3:
            raise ConfigError(
                f"group {self.name}: needs at least 3 members to survive a replacement, "
                f"got {len(names)}"
            )
        if len(set(names)) != len(names):
            raise ConfigError(f"group {self.name}: members listed twice: {names}")
        claims = [(m.zone, m.volume_claim) for m in self.members]
        if len(set(claims)) != len(claims):
            raise ConfigError(f"group {self.name}: two members share a volume claim in one zone")
        for m in self.members:
            if m.zone not in zone_names:
                raise ConfigError(
                    f"group {self.name}: member {m.name} is in unknown zone {m.zone!r} "
                    f"(zones: {', '.join(zone_names)})"
                )
        if not self.first_zone:
            object.__setattr__(self, "first_zone", zone_names[0])
        elif self.first_zone not in zone_names:
            raise ConfigError(
                f"group {self.name}: first_zone {self.first_zone!r} is not a zone "
                f"(zones: {', '.join(zone_names)})"
            )

    @property
    def quorum(self) -> int:
        """How many members must be up for the database to serve writes."""
        return len(self.members) // 2 + 1

    def member(self, name: str) -> Member:
        """The member called ``name``; :class:`UnknownMemberError` names the known ones."""
        for m in self.members:
            if m.name == name:
                return m
        raise UnknownMemberError(name, [m.name for m in self.members])

    def zone(self, name: str) -> Zone:
        """The zone called ``name``."""
        for z in self.zones:
            if z.name == name:
                return z
        raise ConfigError(f"group {self.name}: no zone {name!r}")

    def rollout_order(self) -> list[Member]:
        """Members in the order a rollout replaces them: the first zone's, then the others'."""
        zone_rank = {z.name: i for i, z in enumerate(self.zones)}
        zone_rank[self.first_zone] = -1
        return sorted(self.members, key=lambda m: zone_rank[m.zone])

    @staticmethod
    def from_mapping(raw: Mapping[str, Any], base_dir: Path | None = None) -> GroupConfig:
        """Build from a parsed TOML/JSON table; relative kubeconfig paths are under ``base_dir``.

        Raises :class:`ConfigError` naming the missing or bad setting.
        """
        group = raw.get("name", "?")
        try:
            zones = tuple(
                Zone(
                    name=str(z["name"]),
                    kubeconfig=_path(str(z["kubeconfig"]), base_dir),
                    namespace=str(z.get("namespace", "default")),
                    context=str(z["context"]) if "context" in z else None,
                )
                for z in raw["zones"]
            )
            members = tuple(
                Member(
                    name=str(m["name"]),
                    zone=str(m["zone"]),
                    endpoint=str(m["endpoint"]),
                    env=_string_table(f"member {m.get('name', '?')}: env", m.get("env", {})),
                    volume_claim=str(m.get("volume_claim", "")),
                )
                for m in raw["members"]
            )
            timings = _timings(group, raw.get("timings", {}))
            return GroupConfig(
                name=str(raw["name"]),
                zones=zones,
                members=members,
                template=PodTemplate.from_mapping(raw["template"]),
                first_zone=str(raw.get("first_zone", "")),
                timings=timings,
            )
        except KeyError as e:
            raise ConfigError(f"group {group}: missing setting {e}") from None
        except TypeError as e:
            raise ConfigError(f"group {group}: bad setting: {e}") from None


def _timings(group: object, raw: Mapping[str, Any]) -> Timings:
    known = set(Timings.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"group {group}: unknown timings {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    return Timings(**raw)


def _path(value: str, base_dir: Path | None) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


def _string_table(what: str, raw: object) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{what}: must be a table of names to strings")
    return {str(k): str(v) for k, v in raw.items()}
