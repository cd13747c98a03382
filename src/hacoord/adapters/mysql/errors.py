"""Errors of the MySQL adapter; each names the host and what went wrong."""

from __future__ import annotations


class MySQLAdapterError(Exception):
    """Base class of the adapter's errors."""


class ServerError(MySQLAdapterError):
    """A statement on one server failed."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host


class UnreachableError(ServerError):
    """The server did not accept a connection."""


class AccessDeniedError(ServerError):
    """The server refused the configured credentials."""


class NoSafeCandidateError(MySQLAdapterError):
    """No replica can be promoted without risk; ``reasons`` says why for each one."""

    def __init__(self, cluster: str, reasons: dict[str, str]) -> None:
        detail = "; ".join(f"{h}: {r}" for h, r in reasons.items()) or "no replicas"
        super().__init__(f"cluster {cluster}: no safe promotion candidate ({detail})")
        self.cluster = cluster
        self.reasons = reasons


class TopologyError(MySQLAdapterError):
    """The servers do not form the topology an operation needs."""


class FenceMismatchError(MySQLAdapterError):
    """The server's fence token is not the one the caller expected."""

    def __init__(self, cluster: str, expected: int, found: int | None) -> None:
        super().__init__(
            f"cluster {cluster}: this server carries fencing token {found}, expected {expected}:"
            " it is not the primary published with that token"
        )
        self.expected = expected
        self.found = found
