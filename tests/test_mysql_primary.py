"""The published primary record: fenced, never replaced by a lower token, watchable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coordinator import local_client, single_member
from hacoord.adapters.mysql.primary import (
    PrimaryRecord,
    publish_primary,
    read_primary,
    watch_primary,
)
from hacoord.client import Client
from hacoord.workflow import FencedOutError


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    async with single_member(tmp_path) as service, local_client(service) as c:
        yield c


def record(host: str, token: int) -> PrimaryRecord:
    return PrimaryRecord("db1", host, token, "0-1-5", f"wf-{token}", 1.0)


async def test_publish_watch_and_refuse_lower_tokens(client: Client) -> None:
    seen: list[PrimaryRecord | None] = []
    updates = asyncio.Event()

    async def follow() -> None:
        async for published in watch_primary(client, "db1"):
            seen.append(published)
            if len(seen) == 3:
                updates.set()
                return

    watcher = asyncio.create_task(follow())
    first = await client.election("orch").acquire(b"a", ttl_s=5)
    await publish_primary(first, record("db-1:3306", first.token))
    await first.resign()
    second = await client.election("orch").acquire(b"b", ttl_s=5)
    await publish_primary(second, record("db-2:3306", second.token))
    await updates.wait()
    await watcher
    assert [r.host if r else None for r in seen] == [None, "db-1:3306", "db-2:3306"]

    with pytest.raises(FencedOutError, match=f"fencing token {first.token} is older"):
        await publish_primary(first, record("db-1:3306", first.token))
    current = await read_primary(client, "db1")
    assert current is not None and current.host == "db-2:3306" and current.token == second.token
    await second.resign()
    with pytest.raises(FencedOutError, match="leadership ended"):
        await publish_primary(second, record("db-3:3306", second.token))
    assert await read_primary(client, "db1") == current
    with pytest.raises(ValueError, match="not a primary record"):
        PrimaryRecord.from_json(b'{"host": 1}')
