"""A member's HTTP API ends waiting watches when it shuts down instead of holding on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import msgpack

from coordinator import single_member
from hacoord.server.config_file import Member
from hacoord.server.coord_ops import MAX_WATCH_WAIT_MS
from hacoord.server.http_api import HttpApi
from hacoord.server.local_cluster import free_ports


async def test_a_waiting_watch_is_answered_503_when_the_api_closes(tmp_path: Path) -> None:
    async with single_member(tmp_path) as service:
        port = free_ports(1)[0]
        members = {1: Member(1, ("127.0.0.1", 1), ("127.0.0.1", port))}
        api = HttpApi(service.node, service, members)
        await api.start("127.0.0.1", port)
        polls_before = service.watch_polls
        body = msgpack.packb(["/k", False, 1, MAX_WATCH_WAIT_MS])
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/v1/coord/watch"
            watch = asyncio.create_task(http.post(url, data=body))
            async with asyncio.timeout(10):
                while service.watch_polls == polls_before:  # the watch is waiting
                    await asyncio.sleep(0.01)
            closing = asyncio.create_task(api.close())
            # Without end_long_polls the watch would wait out its 60 s and answer 200.
            async with asyncio.timeout(30):
                response = await watch
                assert response.status == 503
                assert msgpack.unpackb(await response.read()) == [
                    "unavailable",
                    "the member is shutting down",
                ]
                await closing
