"""The async client: KV, transactions, leases, watches, elections and locks.

Writes carry this client's id and a sequence number, so a write retried after a
timeout or a leader change is applied at most once (the state machine answers the
retry with the first outcome).
"""

from __future__ import annotations

import contextlib
import random
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from hacoord.client.batching import SubmitBatcher
from hacoord.client.election import Election
from hacoord.client.errors import UnavailableError
from hacoord.client.leases import Lease
from hacoord.client.transport import HttpTransport, LocalTransport, Transport
from hacoord.coord.commands import (
    Command,
    Delete,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Request,
    Txn,
    encode_request,
)
from hacoord.coord.election import LOCK_PREFIX
from hacoord.coord.errors import CompactedError, LeaseNotFoundError
from hacoord.coord.results import (
    DeleteResult,
    Event,
    KeyValue,
    LeaseGrantResult,
    LeaseRevokeResult,
    PutResult,
    RangeResult,
    Result,
    TxnResult,
    event_from_wire,
    result_from_wire,
)

DEFAULT_DEADLINE_S = 10.0


class Client:
    """A connection to a hacoord cluster; see :func:`connect` and :meth:`local`."""

    def __init__(self, transport: Transport, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        self.transport = transport
        self.deadline_s = deadline_s
        self.client_id = random.SystemRandom().randrange(1, 1 << 62)
        self._seq = 0
        self._outstanding: set[int] = set()
        self._batcher = SubmitBatcher(transport)
        self._leases: set[Lease] = set()

    @classmethod
    def local(cls, service: Any, forward: Transport | None = None) -> Client:
        """A client of the member running in this process (embedded mode).

        ``forward`` (e.g. an :class:`HttpTransport` to the other members) takes the
        writes and keep-alives this member cannot serve while it does not lead.
        """
        return cls(LocalTransport(service, forward))

    async def close(self) -> None:
        """Stop keeping leases alive (they then expire) and close connections."""
        for lease in list(self._leases):
            await lease.stop()
        await self._batcher.close()
        await self.transport.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.deadline_s if timeout is None else timeout)

    # ------------------------------------------------------------------ writes

    async def submit(self, cmd: Command, timeout: float | None = None) -> Result:
        """Apply any command exactly once; returns its result or raises its refusal."""
        self._seq += 1
        seq = self._seq
        self._outstanding.add(seq)
        request = Request(cmd, self.client_id, seq, min(self._outstanding))
        try:
            wire = await self._batcher.submit(encode_request(request), self._deadline(timeout))
        finally:
            self._outstanding.discard(seq)
        return result_from_wire(wire)

    async def put(self, key: str, value: bytes, lease: int = 0) -> PutResult:
        """Set ``key``; with ``lease``, the key goes when the lease does."""
        result = await self.submit(Put(key, value, lease))
        assert isinstance(result, PutResult)
        return result

    async def delete(self, key: str, prefix: bool = False) -> DeleteResult:
        """Remove ``key`` (or every key under it with ``prefix``)."""
        result = await self.submit(Delete(key, prefix))
        assert isinstance(result, DeleteResult)
        return result

    async def txn(self, txn: Txn) -> TxnResult:
        """Run a transaction: compares, then success or failure operations."""
        result = await self.submit(txn)
        assert isinstance(result, TxnResult)
        return result

    # ------------------------------------------------------------------- reads

    async def range(
        self, key: str, prefix: bool = False, limit: int = 0, linearizable: bool = True
    ) -> RangeResult:
        """Read keys; ``linearizable=False`` reads one member's local state (faster,
        possibly stale)."""
        body = [key, prefix, limit, linearizable]
        result = result_from_wire(await self.transport.call("range", body, self._deadline(None)))
        assert isinstance(result, RangeResult)
        return result

    async def get(self, key: str, linearizable: bool = True) -> KeyValue | None:
        """One key, or ``None``."""
        result = await self.range(key, linearizable=linearizable)
        return result.kvs[0] if result.kvs else None

    async def watch(
        self, key: str, prefix: bool = False, start_revision: int = 0, poll_s: float = 10.0
    ) -> AsyncGenerator[Event, None]:
        """Yield every change to ``key`` (or under it) from ``start_revision`` on, in order.

        ``start_revision`` 0 means "changes after now". The watch survives member and
        leader changes without a gap or a duplicate; when the history it needs was
        compacted it raises :class:`~hacoord.coord.errors.CompactedError`.
        """
        if start_revision <= 0:
            start_revision = (await self.range(key, prefix, limit=1)).revision + 1
        next_rev = start_revision
        wait_ms = int(poll_s * 1000)
        while True:
            try:
                events, next_rev = await self._watch_once(key, prefix, next_rev, wait_ms)
            except UnavailableError:
                continue  # keep trying: a watch outlives outages
            for event in events:
                yield event

    async def _watch_once(
        self, key: str, prefix: bool, start: int, wait_ms: int
    ) -> tuple[list[Event], int]:
        deadline = self._deadline(wait_ms / 1000 + self.deadline_s)
        wire = await self.transport.call("watch", [key, prefix, start, wait_ms], deadline)
        return [event_from_wire(e) for e in wire[0]], int(wire[1])

    # ------------------------------------------------------------------ leases

    async def grant(self, ttl_s: float, keep_alive: bool = True) -> Lease:
        """Create a lease of ``ttl_s`` seconds, kept alive in the background by default."""
        result = await self.submit(LeaseGrant(int(ttl_s * 1000)))
        assert isinstance(result, LeaseGrantResult)
        lease = Lease(self, result.lease_id, result.ttl_ms / 1000, started=time.monotonic())
        if keep_alive:
            self._leases.add(lease)
            lease.start()
        return lease

    async def revoke(self, lease_id: int) -> LeaseRevokeResult:
        """End a lease now; its keys are deleted."""
        for lease in list(self._leases):
            if lease.id == lease_id:
                await lease.stop()
                self._leases.discard(lease)
        result = await self.submit(LeaseRevoke(lease_id))
        assert isinstance(result, LeaseRevokeResult)
        return result

    async def keep_alive_once(self, lease_id: int, timeout: float | None = None) -> float:
        """Renew a lease once; returns its TTL in seconds."""
        ttl_ms = await self.transport.call("keepalive", [lease_id], self._deadline(timeout))
        return int(ttl_ms) / 1000

    async def keep_alive_many(
        self, lease_ids: list[int], timeout: float | None = None
    ) -> list[float]:
        """Renew many leases in one call; each TTL in seconds (0 for a missing lease)."""
        ttls = await self.transport.call("keepalive_many", [lease_ids], self._deadline(timeout))
        return [int(t) / 1000 for t in ttls]

    async def leases(self) -> list[int]:
        """Ids of every live lease."""
        ids = await self.transport.call("leases", [], self._deadline(None))
        return [int(i) for i in ids]

    async def time_to_live(self, lease_id: int) -> tuple[float, float]:
        """``(ttl, remaining)`` of a lease in seconds."""
        ttl, remaining = await self.transport.call("ttl", [lease_id], self._deadline(None))
        return ttl / 1000, remaining / 1000

    # --------------------------------------------------------------- elections

    def election(self, name: str) -> Election:
        """An election (leader election with fencing tokens) called ``name``."""
        return Election(self, name)

    def lock(self, name: str) -> Election:
        """A mutex called ``name``: the same mechanism as an election."""
        return Election(self, name, prefix=LOCK_PREFIX)


@contextlib.asynccontextmanager
async def connect(
    endpoints: Sequence[str],
    *,
    ssl_context: ssl.SSLContext | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> AsyncIterator[Client]:
    """Connect to the members at ``endpoints`` (``host:port`` of their HTTP API).

    ``async with hacoord.connect(["127.0.0.1:7001", ...]) as client: ...``
    """
    client = Client(HttpTransport(list(endpoints), ssl_context), deadline_s)
    try:
        yield client
    finally:
        await client.close()


__all__ = [
    "Client",
    "CompactedError",
    "LeaseNotFoundError",
    "connect",
]
