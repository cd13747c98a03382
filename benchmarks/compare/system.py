"""What the comparison harness needs from each system under test.

Every system runs as three member processes on 127.0.0.1 and is driven over the
network from the benchmark process. Members are numbered 0, 1, 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class System(Protocol):
    """A 3-member cluster the workloads can drive."""

    name: str
    supports_leases: bool

    async def start(self, base_dir: Path, election_timeout_ms: int) -> None:
        """Start all three members (fsync on) and return once a leader serves writes."""
        ...

    async def stop(self) -> None:
        """Stop every member and release connections."""
        ...

    async def put(self, key: str, value: bytes) -> None:
        """One committed write through the network client (retrying across failovers
        until it succeeds or 10 s pass, then raising)."""
        ...

    async def get(self, key: str) -> bytes | None:
        """One linearizable read through the network client."""
        ...

    async def leader(self) -> int:
        """The current leader's member number, or -1 when none is known."""
        ...

    def kill(self, member: int) -> None:
        """SIGKILL one member and reap it."""
        ...

    def restart(self, member: int) -> None:
        """Start a killed member again with its data directory."""
        ...

    async def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Return once all three members run and follow one leader."""
        ...

    async def lease_grant(self, ttl_s: int) -> int:
        """Grant a lease (only when ``supports_leases``)."""
        ...

    async def lease_keepalive(self, lease_id: int) -> None:
        """Renew a lease once (only when ``supports_leases``)."""
        ...

    async def lease_ids(self) -> set[int]:
        """Ids of the leases that exist now (only when ``supports_leases``)."""
        ...

    async def embedded_rate(self, seconds: float, base_dir: Path) -> float | None:
        """Pipelined commits per second of an in-process 3-member cluster driven from the
        benchmark process itself (no network client), or None when the system has no
        embedded mode."""
        ...

    def pid(self, member: int) -> int | None:
        """PID of a member's process (for CPU sampling), None when not running."""
        ...
