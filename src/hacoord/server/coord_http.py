"""HTTP routes of the coordination API: msgpack bodies in and out.

Every response body is a msgpack array whose first item says what it is:

======  ===============================================  =====================
status  body                                             meaning
======  ===============================================  =====================
200     ``["ok", result]``                                done
400     ``["error", ["invalid", message]]``               malformed request
409     ``["error", error]``                              refused (e.g. no such lease)
421     ``["not_leader", leader_id, "host:port" | nil]``  ask the leader
503     ``["unavailable", message]``                      retry later
504     ``["timeout", message]``                          outcome unknown
======  ===============================================  =====================

Results and errors use the wire forms of :mod:`hacoord.coord.results`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

import msgpack
from aiohttp import web

from hacoord.coord.errors import CoordError, InvalidCommandError
from hacoord.coord.results import error_to_wire
from hacoord.raft.errors import NotLeaderError, RaftError
from hacoord.server.config_file import Member
from hacoord.server.coord_ops import OPS, run_op
from hacoord.server.coordination import CoordinationService

CONTENT_TYPE = "application/x-msgpack"


def pack(body: list[Any], status: int = 200) -> web.Response:
    """A msgpack response."""
    return web.Response(body=msgpack.packb(body), status=status, content_type=CONTENT_TYPE)


class CoordRoutes:
    """Binds a :class:`CoordinationService` to ``/v1/coord/<op>`` routes (see
    :mod:`hacoord.server.coord_ops` for the operations and their bodies)."""

    def __init__(self, service: CoordinationService, members: dict[int, Member]) -> None:
        self.service = service
        self.members = members
        self._closing = asyncio.Event()

    def routes(self) -> list[web.RouteDef]:
        """The routes to add to the member's application."""
        return [web.post(f"/v1/coord/{op}", self.handle) for op in OPS]

    def end_long_polls(self) -> None:
        """Answer every waiting watch now, and later ones at once, with 503.

        The member is shutting down: its watchers resume on another member from their
        ``next_revision`` instead of holding the shutdown up for their whole wait.
        """
        self._closing.set()

    async def _unless_closing(self, op: Awaitable[Any]) -> tuple[bool, Any]:
        """``(True, result)`` of ``op``, or ``(False, None)`` once long polls end."""
        if self._closing.is_set():
            return False, None
        running = asyncio.ensure_future(op)
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({running, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not running.done():
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
        if running.cancelled():
            return False, None
        return True, running.result()

    def _not_leader(self, exc: NotLeaderError) -> web.Response:
        member = self.members.get(exc.leader)
        http = f"{member.http[0]}:{member.http[1]}" if member else None
        return pack(["not_leader", exc.leader, http], 421)

    async def handle(self, request: web.Request) -> web.Response:
        """Decode the body, run the operation named by the path, answer its outcome."""
        op = request.path.rsplit("/", 1)[1]
        try:
            data = await request.read()
            if op == "submit":
                body: Any = data  # the encoded request itself
            else:
                try:
                    body = msgpack.unpackb(data)
                except Exception as exc:
                    raise InvalidCommandError(f"body is not valid msgpack: {exc}") from None
            if op != "watch":
                return pack(["ok", await run_op(self.service, op, body)])
            answered, result = await self._unless_closing(run_op(self.service, op, body))
            if not answered:
                return pack(["unavailable", "the member is shutting down"], 503)
            return pack(["ok", result])
        except NotLeaderError as exc:
            return self._not_leader(exc)
        except InvalidCommandError as exc:
            return pack(["error", ["invalid", str(exc)]], 400)
        except CoordError as exc:
            return pack(["error", error_to_wire(exc)], 409)
        except TimeoutError:
            return pack(["timeout", "not confirmed in time; the outcome is unknown"], 504)
        except RaftError as exc:
            return pack(["unavailable", str(exc)], 503)


__all__ = ["CONTENT_TYPE", "CoordRoutes", "pack"]
