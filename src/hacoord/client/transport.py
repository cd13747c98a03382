"""How a client reaches the cluster: over HTTP, or in-process for an embedded member.

Both transports speak the same wire forms (:mod:`hacoord.server.coord_http`), so
the client code above them is one and the same.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from typing import Any, Protocol

import aiohttp
import msgpack

from hacoord.client.errors import UnavailableError
from hacoord.coord.errors import CoordError, InvalidCommandError
from hacoord.coord.results import error_from_wire
from hacoord.raft.errors import NotLeaderError, RaftError
from hacoord.server.coord_ops import run_op

LEADER_OPS = frozenset({"submit", "submit_many", "keepalive", "keepalive_many"})
MAX_RETRY_DELAY_S = 0.1
"""Retries stay frequent: a lease must be renewed soon after a failover ends."""
ATTEMPTS_PER_BUDGET = 3
"""One attempt may take at most this fraction of a call's time budget..."""
MIN_ATTEMPT_S = 0.2
"""...but never less than this (a loaded member still gets time to answer)."""


class Redirect(Exception):
    """The member asked is not the leader; ``http`` is the leader's address if known."""

    def __init__(self, leader: int, http: str | None) -> None:
        super().__init__(f"not the leader; leader is {leader or 'unknown'}")
        self.http = http


class Retryable(Exception):
    """The member could not serve the call now; another attempt may succeed."""


class Transport(Protocol):
    """Sends one call to the cluster, following leaders and retrying until a deadline."""

    async def call(self, op: str, body: Any, deadline: float) -> Any:
        """Run ``op`` and return the ``ok`` payload, or raise the refusal."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _raise_for(status: int, reply: list[Any]) -> Any:
    kind = reply[0]
    if kind == "ok":
        return reply[1]
    if kind == "not_leader":
        raise Redirect(reply[1], reply[2])
    if kind == "error":
        raise error_from_wire(reply[1])
    raise Retryable(f"{kind}: {reply[1]} (HTTP {status})")


class HttpTransport:
    """Calls members over HTTP(S); sticks to the leader once found."""

    def __init__(
        self,
        endpoints: list[str],
        ssl_context: ssl.SSLContext | None = None,
        attempt_timeout: float = 5.0,
    ) -> None:
        if not endpoints:
            raise ValueError("connect needs at least one endpoint (host:port)")
        scheme = "https" if ssl_context else "http"
        self.endpoints = [e if "://" in e else f"{scheme}://{e}" for e in endpoints]
        self.ssl_context = ssl_context
        self.attempt_timeout = attempt_timeout
        self._session: aiohttp.ClientSession | None = None
        self._preferred = random.randrange(len(self.endpoints))
        self._leader: str | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.ssl_context or False, limit=256)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _candidates(self, op: str) -> list[str]:
        start = self._preferred
        count = len(self.endpoints)
        ordered = [self.endpoints[(start + i) % count] for i in range(count)]
        if self._leader and op in LEADER_OPS:
            ordered = [self._leader, *(e for e in ordered if e != self._leader)]
        return ordered

    async def call(self, op: str, body: Any, deadline: float) -> Any:
        """POST to ``/v1/coord/<op>``, trying members in turn until ``deadline``."""
        data = body if isinstance(body, bytes) else msgpack.packb(body)
        # A hung member (paused, or cut off with its connections open) never answers:
        # each attempt may use only part of the budget, so others get their turn
        # while there is still time (a keep-alive's budget is what is left of the TTL).
        share = (deadline - time.monotonic()) / ATTEMPTS_PER_BUDGET
        problems: list[str] = []
        delay = 0.02
        redirected_to: set[str] = set()
        while time.monotonic() < deadline:
            new_leader = False
            for url in self._candidates(op):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    return await self._post(
                        url, op, data, self._timeout(op, body, remaining, share)
                    )
                except Redirect as exc:
                    problems.append(f"{url}: {exc}")
                    leader = f"{url.split('://')[0]}://{exc.http}" if exc.http else None
                    if leader and leader not in redirected_to and op in LEADER_OPS:
                        # Follow a redirect at once, but only once per target and pause:
                        # a follower may still name a leader that just died.
                        redirected_to.add(leader)
                        self._leader = leader
                        new_leader = True
                        break
                except Retryable as exc:
                    problems.append(f"{url}: {exc}")
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    problems.append(f"{url}: {exc or type(exc).__name__}")
                    if url == self._leader:
                        self._leader = None
            if new_leader:
                continue
            redirected_to.clear()
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, MAX_RETRY_DELAY_S)
        tried = "; ".join(problems[-6:]) or "no attempt fitted in the deadline"
        raise UnavailableError(f"{op}: no member answered before the deadline ({tried})")

    def _timeout(self, op: str, body: Any, remaining: float, share: float) -> float:
        if op == "watch":
            return min(remaining, float(body[3]) / 1000 + self.attempt_timeout)
        return min(remaining, self.attempt_timeout, max(share, MIN_ATTEMPT_S))

    async def _post(self, url: str, op: str, data: bytes, timeout: float) -> Any:
        async with self._http().post(
            f"{url}/v1/coord/{op}",
            data=data,
            headers={"Content-Type": "application/x-msgpack"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            raw = await resp.read()
            if resp.status == 413:
                raise InvalidCommandError(
                    f"{op}: the request of {len(data)} bytes is larger than the member accepts"
                )
            try:
                reply = msgpack.unpackb(raw)
            except Exception:
                raise Retryable(f"HTTP {resp.status} with a body that is not msgpack") from None
        result = _raise_for(resp.status, reply)
        if op in LEADER_OPS:
            self._leader = url
        return result

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class LocalTransport:
    """Calls a :class:`~hacoord.server.coordination.CoordinationService` in-process."""

    def __init__(self, service: Any, forward: Transport | None = None) -> None:
        self.service = service
        self.forward = forward
        """Where calls go that need the leader when this member is not it."""

    async def call(self, op: str, body: Any, deadline: float) -> Any:
        """Run ``op`` on the local member, waiting for a leader until ``deadline``."""
        delay = 0.02
        last = ""
        while True:
            try:
                return await self._once(op, body, deadline)
            except NotLeaderError as exc:
                if exc.leader and self.forward is not None:
                    return await self.forward.call(op, body, deadline)
                last = str(exc)
            except CoordError:
                raise
            except (RaftError, TimeoutError) as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() + delay >= deadline:
                raise UnavailableError(f"{op}: not served before the deadline ({last})")
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_S)

    async def _once(self, op: str, body: Any, deadline: float) -> Any:
        return await run_op(self.service, op, body, max(0.001, deadline - time.monotonic()))

    async def close(self) -> None:
        """Close the forwarding transport (the local service is not ours to stop)."""
        if self.forward is not None:
            await self.forward.close()


__all__ = ["HttpTransport", "LocalTransport", "Transport"]
