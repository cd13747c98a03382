"""Errors of the Kubernetes adapter; each names the zone, member or object concerned."""

from __future__ import annotations

FENCE_MARKER = "hacoord fence"
"""Starts every denial of the fence webhook, so a client can tell a fenced write."""


class K8sAdapterError(Exception):
    """Base class of the adapter's errors."""


class ConfigError(K8sAdapterError, ValueError):
    """The adapter's configuration is invalid; the message names the setting."""


class UnknownMemberError(K8sAdapterError, KeyError):
    """A member name that the configuration does not list."""

    def __init__(self, member: str, known: list[str]) -> None:
        super().__init__(member)
        self.member = member
        self.known = known

    def __str__(self) -> str:
        return f"no member {self.member!r} (members: {', '.join(self.known)})"


class ZoneError(K8sAdapterError):
    """A call to one zone's API server failed."""

    def __init__(self, zone: str, message: str, status: int = 0) -> None:
        super().__init__(f"zone {zone}: {message}")
        self.zone = zone
        self.status = status
        """The HTTP status the API server answered (0: no answer)."""


class ZoneUnreachableError(ZoneError):
    """The zone's API server did not answer (down, wrong address, timeout)."""


class AccessDeniedError(ZoneError):
    """The API server refused the adapter's credentials or RBAC forbids the call."""


class FencedError(AccessDeniedError):
    """The API server refused a write because its fencing token is no longer current."""


class ConflictError(ZoneError):
    """A precondition (resourceVersion, uid) did not hold: someone else changed the object."""


class ReplacementBlockedError(K8sAdapterError):
    """A replacement cannot start now without risking the quorum; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
