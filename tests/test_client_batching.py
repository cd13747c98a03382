"""SubmitBatcher: concurrent writes of one client share requests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hacoord.client.batching import SubmitBatcher


class EchoTransport:
    """Answers every write with its own payload, after one pass of the event loop."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def call(self, op: str, body: Any, deadline: float) -> Any:
        await asyncio.sleep(0)
        if op == "submit":
            self.calls.append((op, 1))
            return body
        self.calls.append((op, len(body[0])))
        return [["ok", item] for item in body[0]]

    async def close(self) -> None:
        pass


async def test_writers_woken_together_leave_in_one_request() -> None:
    transport = EchoTransport()
    batcher = SubmitBatcher(transport)
    deadline = time.monotonic() + 10

    async def writer(w: int) -> list[Any]:
        return [await batcher.submit(b"%d/%d" % (w, i), deadline) for i in range(3)]

    results = await asyncio.gather(*(writer(w) for w in range(8)))
    assert results == [[b"%d/%d" % (w, i) for i in range(3)] for w in range(8)]
    # Each round of writes leaves together, the first included; the next round starts
    # when a batch's answers wake all eight writers at once.
    assert transport.calls == [("submit_many", 8)] * 3


async def test_a_lone_write_goes_out_alone() -> None:
    transport = EchoTransport()
    batcher = SubmitBatcher(transport)
    assert await batcher.submit(b"solo", time.monotonic() + 10) == b"solo"
    assert transport.calls == [("submit", 1)]


async def test_closing_cancels_writes_not_sent_yet() -> None:
    batcher = SubmitBatcher(EchoTransport())
    write = asyncio.create_task(batcher.submit(b"late", time.monotonic() + 10))
    await asyncio.sleep(0)  # queued; its sender has not started
    await batcher.close()
    with pytest.raises(asyncio.CancelledError):
        await write
