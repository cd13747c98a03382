"""Group concurrent writes of one client into few requests.

Writes submitted during one pass of the event loop leave together, and while
batches are on their way, writes that arrive queue up and leave together in the next
request (at most ``max_batch`` each, at most ``max_inflight`` requests at once). A
lone write still goes out at once (in the next pass); under load one HTTP request and
one pass through the member's request handling carry many writes. Each write keeps
its own outcome.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from hacoord.client.transport import Transport
from hacoord.coord.results import error_from_wire


class SubmitBatcher:
    """Sends encoded requests through ``transport`` in batches."""

    def __init__(self, transport: Transport, max_batch: int = 256, max_inflight: int = 4) -> None:
        self.transport = transport
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queue: deque[tuple[bytes, float, asyncio.Future[Any]]] = deque()
        self._inflight = 0
        self._starting = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, data: bytes, deadline: float) -> Any:
        """Send one encoded request; returns its result in wire form or raises its error."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((data, deadline, fut))
        self._kick()
        return await fut

    def _kick(self) -> None:
        # A sender takes its batch when it starts, in the next pass of the event loop:
        # writers that one pass wakes together (a finished batch wakes all of its
        # writers) leave together instead of the first one taking a request alone.
        if self._queue and not self._starting and self._inflight < self.max_inflight:
            self._starting = True
            self._inflight += 1
            task = asyncio.create_task(self._send_next())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_next(self) -> None:
        self._starting = False
        batch: list[tuple[bytes, float, asyncio.Future[Any]]] = []
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            if not item[2].done():  # skip writes whose caller gave up before sending
                batch.append(item)
        self._kick()  # more than a batch is waiting
        if batch:
            await self._send(batch)
        else:
            self._inflight -= 1
            self._kick()

    async def _send(self, batch: list[tuple[bytes, float, asyncio.Future[Any]]]) -> None:
        try:
            deadline = min(item[1] for item in batch)
            if len(batch) == 1:
                outcomes = [["ok", await self.transport.call("submit", batch[0][0], deadline)]]
            else:
                body = [[item[0] for item in batch]]
                outcomes = await self.transport.call("submit_many", body, deadline)
        except BaseException as exc:
            for _, _, fut in batch:
                if fut.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    fut.cancel()  # the client is closing
                else:
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, _, fut), outcome in zip(batch, outcomes, strict=True):
                if fut.done():
                    continue
                if outcome[0] == "ok":
                    fut.set_result(outcome[1])
                else:
                    fut.set_exception(error_from_wire(outcome[1]))
        finally:
            self._inflight -= 1
            self._kick()

    async def close(self) -> None:
        """Cancel batches still on their way and writes still queued."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._queue:
            self._queue.popleft()[2].cancel()
