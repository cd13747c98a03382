"""Database-level health of the managed members, beside what Kubernetes says about their pods.

A pod can be Ready while its member is cut off from the others or far behind. Before a
planned replacement the adapter asks every member itself (:class:`MemberProbe`), and after one
it waits until the new member has applied what the leader had committed. :class:`EtcdProbe`
does this for etcd through its HTTP gateway (``/health`` and ``/v3/maintenance/status``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from hacoord.adapters.k8s.config import Member


@dataclass(frozen=True, slots=True)
class MemberHealth:
    """What one member says about itself."""

    healthy: bool
    """It answers and belongs to a quorum that has a leader."""
    applied_index: int = 0
    """The last log index it applied."""
    commit_index: int = 0
    """The last log index it knows to be committed (the leader's is the group's)."""
    is_leader: bool = False
    detail: str = ""
    """Why it is not healthy (empty when it is)."""


class MemberProbe(Protocol):
    """Asks a database member about its health and progress."""

    async def health(self, member: Member) -> MemberHealth:
        """The member's health; never raises for an unreachable member (healthy=False)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class EtcdProbe:
    """:class:`MemberProbe` for etcd v3 members (``Member.endpoint`` is a client URL)."""

    def __init__(self, timeout_s: float = 2.0) -> None:
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def health(self, member: Member) -> MemberHealth:
        """``/health`` (has a leader, answers a read) plus the raft indexes of its status."""
        base = member.endpoint.rstrip("/")
        try:
            health = await self._json("GET", f"{base}/health")
            status = await self._json("POST", f"{base}/v3/maintenance/status", {})
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            return MemberHealth(healthy=False, detail=f"{member.name}: no answer ({_why(e)})")
        header = status.get("header", {})
        applied = int(status.get("raftAppliedIndex", 0))
        committed = int(status.get("raftIndex", 0))
        is_leader = str(header.get("member_id", "")) == str(status.get("leader", "-"))
        if str(health.get("health")) != "true":
            reason = health.get("reason") or "etcd reports unhealthy"
            return MemberHealth(False, applied, committed, is_leader, f"{member.name}: {reason}")
        errors = status.get("errors") or []
        if errors:
            return MemberHealth(
                False, applied, committed, is_leader, f"{member.name}: {'; '.join(errors)}"
            )
        return MemberHealth(True, applied, committed, is_leader)

    async def _json(self, method: str, url: str, body: object = None) -> dict[str, Any]:
        async with self._http().request(method, url, json=body) as response:
            if response.status != 200:
                raise ValueError(f"{url} answered HTTP {response.status}")
            data = await response.json(content_type=None)
        if not isinstance(data, dict):
            raise ValueError(f"{url} answered {type(data).__name__}, not an object")
        return data


def _why(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__
