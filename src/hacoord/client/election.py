"""Elections and locks for clients: campaign, hold with a fencing token, resign."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hacoord.client.leases import Lease
from hacoord.coord.commands import TxnOp
from hacoord.coord.election import (
    ELECTION_PREFIX,
    Holder,
    campaign_txn,
    candidate_key,
    candidates_prefix,
    holder_of,
    proclaim_txn,
    resign_txn,
    while_holding,
)
from hacoord.coord.results import Event, EventType, TxnResult

if TYPE_CHECKING:
    from hacoord.client.client import Client

log = logging.getLogger(__name__)


@dataclass
class Leadership:
    """Held leadership (or lock): its fencing token and the lease that keeps it."""

    election: Election
    holder: Holder
    lease: Lease

    @property
    def token(self) -> int:
        """The fencing token: strictly greater than every earlier holder's."""
        return self.holder.token

    async def lost(self) -> None:
        """Return once this leadership may have ended: stop acting on it."""
        await self.lease.lost()

    @property
    def is_lost(self) -> bool:
        """Whether the leadership may have ended."""
        return self.lease.is_lost

    async def fenced(self, *ops: TxnOp) -> TxnResult:
        """Apply ``ops`` only while still holding (checked inside one transaction)."""
        return await self.election.client.txn(while_holding(self.holder, ops))

    async def proclaim(self, value: bytes) -> bool:
        """Publish a new value as the holder; ``False`` when no longer holding."""
        result = await self.election.client.txn(proclaim_txn(self.holder, value))
        if result.succeeded:
            self.holder = Holder(self.holder.key, value, self.holder.token, self.holder.lease)
        return result.succeeded

    async def resign(self) -> None:
        """Give the leadership up now and end its lease."""
        with contextlib.suppress(Exception):
            await self.election.client.txn(resign_txn(self.holder))
        await self.election.client.revoke(self.lease.id)


class Election:
    """A named election (or lock) in the cluster."""

    def __init__(self, client: Client, name: str, prefix: str = ELECTION_PREFIX) -> None:
        self.client = client
        self.name = name
        self.prefix = prefix
        self.candidates = candidates_prefix(name, prefix)
        self.recampaigns = 0
        """How often a waiting candidate's lease ended and it campaigned again."""

    async def leader(self) -> Holder | None:
        """The current holder (linearizable read), or ``None``."""
        return holder_of((await self.client.range(self.candidates, prefix=True)).kvs)

    async def observe(self) -> AsyncIterator[Holder | None]:
        """Yield the holder now and after every change of holder or value."""
        result = await self.client.range(self.candidates, prefix=True)
        current = holder_of(result.kvs)
        yield current
        kvs = {kv.key: kv for kv in result.kvs}
        async for event in self.client.watch(self.candidates, True, result.revision + 1):
            if event.type is EventType.PUT:
                kvs[event.kv.key] = event.kv
            else:
                kvs.pop(event.kv.key, None)
            new = holder_of(list(kvs.values()))
            if new != current:
                current = new
                yield current

    @contextlib.asynccontextmanager
    async def campaign(self, value: bytes, ttl_s: float = 5.0) -> AsyncIterator[Leadership]:
        """Wait until elected; resign on leaving the block.

        ``async with client.election("db").campaign(b"host-1") as leadership:`` then
        act with ``leadership.token`` and stop when ``await leadership.lost()`` returns.
        """
        leadership = await self.acquire(value, ttl_s)
        try:
            yield leadership
        finally:
            with contextlib.suppress(Exception):
                await leadership.resign()

    async def acquire(self, value: bytes, ttl_s: float = 5.0) -> Leadership:
        """Campaign until elected and return the leadership (resign it yourself).

        A candidate whose lease ends while it waits (the cluster expired it, or no
        keep-alive got through within the TTL) was never issued a token, so it
        campaigns again with a fresh lease, behind the candidates already waiting;
        :attr:`recampaigns` counts how often. Errors reaching the cluster (for
        example :class:`~hacoord.client.errors.UnavailableError` when a grant cannot
        be made before the client's deadline) propagate with their reason.
        """
        while True:
            lease = await self.client.grant(ttl_s)
            try:
                leadership = await self._wait_elected(lease, value)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.client.revoke(lease.id))
                raise
            if leadership is not None:
                return leadership
            reason = lease.lost_reason or "its candidate key was deleted"
            log.warning(
                "%s: the lease of this candidate ended while waiting (%s); "
                "campaigning again with a new lease",
                self.name,
                reason,
            )
            self.recampaigns += 1
            await lease.stop()
            with contextlib.suppress(Exception):
                await self.client.revoke(lease.id)

    async def _wait_elected(self, lease: Lease, value: bytes) -> Leadership | None:
        """The leadership once elected, or ``None`` when the lease ended first."""
        key = candidate_key(self.name, lease.id, self.prefix)
        await self.client.txn(campaign_txn(self.name, lease.id, value, self.prefix))
        while True:
            result = await self.client.range(self.candidates, prefix=True)
            mine = next((kv for kv in result.kvs if kv.key == key), None)
            if mine is None or lease.is_lost:
                return None
            holder = holder_of(result.kvs)
            assert holder is not None
            if holder.key == key:
                return Leadership(self, holder, lease)
            # Wait for a candidate ahead of us to go (or for our lease to be lost).
            ahead = {kv.key for kv in result.kvs if kv.create_revision < mine.create_revision}
            await self._wait_for_deletion(ahead, result.revision + 1, lease)

    async def _wait_for_deletion(self, keys: set[str], start: int, lease: Lease) -> None:
        watch = self.client.watch(self.candidates, True, start, poll_s=min(5.0, lease.ttl_s))
        lost = asyncio.create_task(lease.lost())
        nxt: asyncio.Future[Event] | None = None
        try:
            while True:
                nxt = asyncio.ensure_future(anext(watch))
                done, _ = await asyncio.wait({nxt, lost}, return_when=asyncio.FIRST_COMPLETED)
                if lost in done:
                    return
                event = nxt.result()
                nxt = None
                if event.type is EventType.DELETE and event.kv.key in keys:
                    return
        finally:
            # Stop the pending read before closing the generator it is running in.
            pending = [t for t in (lost, nxt) if t is not None]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await watch.aclose()


__all__ = ["Election", "Leadership"]
