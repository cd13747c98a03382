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

from typing import Any

import msgpack
from aiohttp import web

from hacoord.coord.commands import decode_request
from hacoord.coord.errors import CoordError, InvalidCommandError
from hacoord.coord.results import error_to_wire, event_to_wire, result_to_wire
from hacoord.raft.errors import NotLeaderError, RaftError
from hacoord.server.config_file import Member
from hacoord.server.coordination import CoordinationService

CONTENT_TYPE = "application/x-msgpack"
MAX_WATCH_WAIT_MS = 60_000
MAX_BATCH = 10_000


def pack(body: list[Any], status: int = 200) -> web.Response:
    """A msgpack response."""
    return web.Response(body=msgpack.packb(body), status=status, content_type=CONTENT_TYPE)


def _fields(items: Any, count: int, what: str) -> list[Any]:
    if not isinstance(items, list) or len(items) != count:
        raise InvalidCommandError(f"{what}: body must be a msgpack array of {count} items")
    return items


class CoordRoutes:
    """Binds a :class:`CoordinationService` to ``/v1/coord/...`` routes."""

    def __init__(self, service: CoordinationService, members: dict[int, Member]) -> None:
        self.service = service
        self.members = members

    def routes(self) -> list[web.RouteDef]:
        """The routes to add to the member's application."""
        return [
            web.post("/v1/coord/submit", self.submit),
            web.post("/v1/coord/submit_many", self.submit_many),
            web.post("/v1/coord/range", self.range),
            web.post("/v1/coord/watch", self.watch),
            web.post("/v1/coord/keepalive", self.keepalive),
            web.post("/v1/coord/ttl", self.ttl),
            web.post("/v1/coord/keepalive_many", self.keepalive_many),
            web.post("/v1/coord/leases", self.leases),
        ]

    def _not_leader(self, exc: NotLeaderError) -> web.Response:
        member = self.members.get(exc.leader)
        http = f"{member.http[0]}:{member.http[1]}" if member else None
        return pack(["not_leader", exc.leader, http], 421)

    async def _body(self, request: web.Request) -> Any:
        data = await request.read()
        try:
            return msgpack.unpackb(data)
        except Exception as exc:
            raise InvalidCommandError(f"body is not valid msgpack: {exc}") from None

    async def _answer(self, work: Any) -> web.Response:
        try:
            return pack(["ok", await work])
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

    async def submit(self, request: web.Request) -> web.Response:
        """Body: an encoded :class:`~hacoord.coord.commands.Request`."""

        async def run() -> Any:
            req = decode_request(await request.read())
            return result_to_wire(await self.service.submit(req))

        return await self._answer(run())

    async def submit_many(self, request: web.Request) -> web.Response:
        """Body: ``[request, ...]`` (each an encoded request); one outcome per request."""

        async def run() -> Any:
            (items,) = _fields(await self._body(request), 1, "submit_many")
            if not isinstance(items, list) or not all(isinstance(i, bytes) for i in items):
                raise InvalidCommandError("submit_many: body must be [[request bytes, ...]]")
            if len(items) > MAX_BATCH:
                raise InvalidCommandError(f"submit_many: at most {MAX_BATCH} requests per call")
            return await self.service.submit_many(items)

        return await self._answer(run())

    async def range(self, request: web.Request) -> web.Response:
        """Body: ``[key, prefix, limit, linearizable]``."""

        async def run() -> Any:
            key, prefix, limit, linearizable = _fields(await self._body(request), 4, "range")
            if not isinstance(key, str) or not isinstance(limit, int) or limit < 0:
                raise InvalidCommandError("range: key must be a string and limit an int >= 0")
            result = await self.service.range(key, bool(prefix), limit, bool(linearizable))
            return result_to_wire(result)

        return await self._answer(run())

    async def watch(self, request: web.Request) -> web.Response:
        """Body: ``[key, prefix, from_revision, wait_ms]``; answers ``[events, next]``."""

        async def run() -> Any:
            key, prefix, start, wait_ms = _fields(await self._body(request), 4, "watch")
            if not isinstance(key, str) or not isinstance(start, int):
                raise InvalidCommandError("watch: key must be a string, from_revision an int")
            if not isinstance(wait_ms, int) or not 0 <= wait_ms <= MAX_WATCH_WAIT_MS:
                raise InvalidCommandError(f"watch: wait_ms must be in [0, {MAX_WATCH_WAIT_MS}]")
            batch = await self.service.watch(key, bool(prefix), start, wait_ms / 1000)
            return [[event_to_wire(e) for e in batch.events], batch.next_revision]

        return await self._answer(run())

    async def keepalive(self, request: web.Request) -> web.Response:
        """Body: ``[lease_id]``; answers the lease's TTL in milliseconds."""

        async def run() -> Any:
            (lease_id,) = _fields(await self._body(request), 1, "keepalive")
            if not isinstance(lease_id, int):
                raise InvalidCommandError("keepalive: lease_id must be an int")
            return await self.service.keep_alive(lease_id)

        return await self._answer(run())

    async def keepalive_many(self, request: web.Request) -> web.Response:
        """Body: ``[[lease_id, ...]]``; answers each TTL in ms (0: no such lease)."""

        async def run() -> Any:
            (ids,) = _fields(await self._body(request), 1, "keepalive_many")
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                raise InvalidCommandError("keepalive_many: body must be [[lease_id, ...]]")
            if len(ids) > MAX_BATCH:
                raise InvalidCommandError(f"keepalive_many: at most {MAX_BATCH} leases per call")
            return await self.service.keep_alive_many(ids)

        return await self._answer(run())

    async def leases(self, request: web.Request) -> web.Response:
        """Body: ``[]``; answers the ids of every live lease."""

        async def run() -> Any:
            _fields(await self._body(request), 0, "leases")
            return self.service.lease_ids()

        return await self._answer(run())

    async def ttl(self, request: web.Request) -> web.Response:
        """Body: ``[lease_id]``; answers ``[ttl_ms, remaining_ms]``."""

        async def run() -> Any:
            (lease_id,) = _fields(await self._body(request), 1, "ttl")
            if not isinstance(lease_id, int):
                raise InvalidCommandError("ttl: lease_id must be an int")
            return list(self.service.time_to_live(lease_id))

        return await self._answer(run())


__all__ = ["CONTENT_TYPE", "CoordRoutes", "pack"]
