"""The published primary of each cluster: a watchable record carrying the token."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

from hacoord.adapters.fenced_record import publish_fenced
from hacoord.adapters.mysql.keys import primary_key, quarantine_key
from hacoord.client.client import Client
from hacoord.client.election import Leadership
from hacoord.coord.errors import FencingTokenError
from hacoord.coord.results import EventType

__all__ = [
    "PrimaryRecord",
    "primary_key",
    "publish_primary",
    "quarantine_key",
    "read_primary",
    "watch_primary",
]


@dataclass(frozen=True, slots=True)
class PrimaryRecord:
    """Which server is the primary, under which token, and since which GTIDs."""

    cluster: str
    host: str
    """``host:port`` of the primary."""
    token: int
    """The fencing token of the orchestrator that promoted it (also in its fence table)."""
    promoted_at: str
    """The primary's GTID position when it was opened for writes."""
    workflow: str
    published_at: float

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @staticmethod
    def from_json(data: bytes) -> PrimaryRecord:
        """Decode a stored record; ``ValueError`` names what is wrong."""
        try:
            return PrimaryRecord(**json.loads(data))
        except (TypeError, ValueError) as e:
            raise ValueError(f"not a primary record: {e}") from e


async def read_primary(client: Client, cluster: str) -> PrimaryRecord | None:
    """The published primary of ``cluster`` (linearizable), or ``None``."""
    kv = await client.get(primary_key(cluster))
    return None if kv is None else PrimaryRecord.from_json(kv.value)


async def watch_primary(client: Client, cluster: str) -> AsyncIterator[PrimaryRecord | None]:
    """Yield the published primary now and after every change."""
    key = primary_key(cluster)
    result = await client.range(key)
    yield PrimaryRecord.from_json(result.kvs[0].value) if result.kvs else None
    async for event in client.watch(key, False, result.revision + 1):
        yield PrimaryRecord.from_json(event.kv.value) if event.type is EventType.PUT else None


async def publish_primary(leadership: Leadership, record: PrimaryRecord) -> int:
    """Publish ``record`` while holding ``leadership``; never replace a newer token.

    Returns the revision of the write. Raises :class:`FencedOutError` when the
    leadership ended or a record with a newer token is already published.
    """
    key = primary_key(record.cluster)

    def refuse_over(stored: bytes) -> str | None:
        published = PrimaryRecord.from_json(stored)
        if published.token > record.token:
            return str(FencingTokenError(key, record.token, published.token))
        return None

    return await publish_fenced(leadership, key, record.to_json(), refuse_over, record.workflow)
