"""An asyncio TCP proxy whose links can be cut, black-holed or stalled, for tests.

Put a :class:`FaultProxy` between two members (point one member's peer address at
the proxy, and the proxy at the other member) and change :attr:`FaultProxy.mode`:

* ``"pass"``: bytes are forwarded both ways;
* ``"drop"``: bytes are read and discarded both ways (the TCP connection stays up,
  like a black-holed link; the byte stream is left with a hole in it);
* ``"hold"``: nothing more is forwarded or read, so TCP back-pressure builds up;
  the bytes already read are held and delivered once the mode is back to ``"pass"``
  (or discarded if it becomes ``"drop"``).

:meth:`FaultProxy.reset` closes the current connections (the proxy keeps listening),
which is how a test makes members notice a partition or heal a ``"drop"`` hole.

Counters (``bytes_forwarded``, ``bytes_dropped``, ``bytes_held``, ``connections``)
and :meth:`FaultProxy.wait_until` let tests wait for an effect without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

MODES = ("pass", "drop", "hold")
_CHUNK = 64 * 1024


class FaultProxy:
    """A TCP proxy on 127.0.0.1 forwarding to ``target``, with a runtime fault ``mode``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.bytes_forwarded = 0
        self.bytes_dropped = 0
        self.bytes_held = 0
        """Bytes read while in ``"hold"`` and not yet forwarded or dropped."""
        self.connections = 0
        """Connections accepted so far."""
        self._mode = "pass"
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._wakers: set[asyncio.Task[None]] = set()

    @property
    def mode(self) -> str:
        """``"pass"``, ``"drop"`` or ``"hold"``; takes effect immediately."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {value!r}")
        self._mode = value
        self._notify()

    async def start(self) -> None:
        """Listen on 127.0.0.1, port chosen by the OS (see :attr:`port`)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; it is re-checked on every proxy event."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def reset(self) -> None:
        """Close every current connection (both sides); keep listening."""
        conns = list(self._conns)
        for task in conns:
            task.cancel()
        await asyncio.gather(*conns, return_exceptions=True)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        await self.reset()
        if self._server is not None:
            await self._server.wait_closed()

    # -- internals --------------------------------------------------------------

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        # Condition.notify needs the lock; schedule it so sync code may call this.
        try:
            task = asyncio.get_running_loop().create_task(wake())
        except RuntimeError:  # no loop running: nobody can be waiting
            return
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self.connections += 1
        self._notify()
        up_writer: asyncio.StreamWriter | None = None
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return
            pumps = [
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            try:
                # Either direction ending (EOF or error) ends the whole connection.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for p in pumps:
                    p.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except asyncio.CancelledError:
            pass  # reset()/close(); start_server logs handler tasks that end cancelled
        finally:
            self._conns.discard(task)
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    async def _wait_not_hold(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._mode != "hold")

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                if self._mode == "hold":
                    await self._wait_not_hold()
                data = await reader.read(_CHUNK)
                if not data:
                    return
                if self._mode == "hold":
                    self.bytes_held += len(data)
                    self._notify()
                    await self._wait_not_hold()
                    self.bytes_held -= len(data)
                if self._mode == "drop":
                    self.bytes_dropped += len(data)
                else:
                    writer.write(data)
                    await writer.drain()
                    self.bytes_forwarded += len(data)
                self._notify()
