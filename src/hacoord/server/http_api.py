"""The HTTP admin and KV API of a member (aiohttp). Documented in docs/http-api.md."""

from __future__ import annotations

import json
import ssl
from typing import Any

from aiohttp import web

from hacoord.coord.commands import Delete, Put, Request
from hacoord.coord.errors import CoordError, InvalidCommandError
from hacoord.coord.results import DeleteResult, PutResult
from hacoord.raft.errors import NotLeaderError, ProposalDroppedError, RaftError
from hacoord.raft.node import RaftNode
from hacoord.raft.types import Role
from hacoord.server.config_file import Member, parse_address
from hacoord.server.coord_http import CoordRoutes
from hacoord.server.coordination import CoordinationService
from hacoord.server.membership import DEFAULT_MAX_LAG, MembershipManager

MAX_VALUE_BYTES = 1 << 20
REQUEST_TIMEOUT_S = 5.0


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, sort_keys=True) + "\n", status=status, content_type="application/json"
    )


class HttpApi:
    """Routes for one member. ``members`` maps ids to addresses for leader hints."""

    def __init__(
        self,
        node: RaftNode,
        service: CoordinationService,
        members: dict[int, Member],
        membership: MembershipManager | None = None,
    ) -> None:
        self.node = node
        self.service = service
        self.members = members
        self.membership = membership
        self._coord_routes = CoordRoutes(service, members)
        self.app = web.Application(client_max_size=MAX_VALUE_BYTES + 4096)
        self.app.add_routes(
            [
                web.get("/health", self.health),
                web.get("/status", self.status),
                web.get("/metrics", self.metrics),
                web.post("/transfer-leadership", self.transfer_leadership),
                web.get("/v1/kv/{key}", self.kv_get),
                web.put("/v1/kv/{key}", self.kv_put),
                web.delete("/v1/kv/{key}", self.kv_delete),
                web.get("/members", self.members_list),
                web.post("/members/{op}", self.members_change),
                *self._coord_routes.routes(),
            ]
        )
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on ``host:port`` (HTTPS requiring client certificates with ``ssl_context``)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=ssl_context).start()

    async def close(self) -> None:
        """Stop listening; waiting watches are answered 503 at once (see ``end_long_polls``)."""
        self._coord_routes.end_long_polls()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------- handlers

    def _not_leader(self, exc: NotLeaderError) -> web.Response:
        body: dict[str, Any] = {"error": str(exc), "leader": exc.leader}
        member = self.members.get(exc.leader)
        if member is not None:
            body["leader_http"] = f"{member.http[0]}:{member.http[1]}"
        return _json(body, 421)

    async def health(self, request: web.Request) -> web.Response:
        """200 when this member can serve: running, and a leader is known."""
        node = self.node
        problems = []
        if node.fatal is not None:
            problems.append(f"failed: {node.fatal}")
        if not node.leader_id:
            problems.append("no leader known")
        body = {"ok": not problems, "node": node.id, "role": node.core.role.name.lower()}
        if problems:
            body["problems"] = problems
            return _json(body, 503)
        return _json(body)

    async def status(self, request: web.Request) -> web.Response:
        """The member's Raft status as JSON."""
        return _json(self.node.status())

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format."""
        text = self.node.metrics.render(self.node) + self.service.render_metrics()
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def transfer_leadership(self, request: web.Request) -> web.Response:
        """Body ``{"to": ID}``: hand leadership to that voter and wait for it."""
        try:
            body = await request.json()
            to = int(body["to"])
        except (ValueError, KeyError, TypeError):
            return _json({"error": 'body must be JSON like {"to": 2}'}, 400)
        if to not in self.node.config.voters:
            return _json({"error": f"{to} is not a voter of this cluster"}, 400)
        try:
            await self.node.transfer_leadership(to)
        except NotLeaderError as exc:
            return self._not_leader(exc)
        except RaftError as exc:
            return _json({"error": str(exc)}, 409)
        return _json({"ok": True, "leader": to})

    async def kv_get(self, request: web.Request) -> web.Response:
        """Read a key; ``?consistency=serializable`` reads local state without ReadIndex."""
        key = request.match_info["key"]
        consistency = request.query.get("consistency", "linearizable")
        if consistency not in ("linearizable", "serializable"):
            return _json({"error": "consistency must be linearizable or serializable"}, 400)
        try:
            result = await self.service.range(
                key, linearizable=consistency == "linearizable", timeout=REQUEST_TIMEOUT_S
            )
        except NotLeaderError as exc:
            return self._not_leader(exc)
        except (TimeoutError, RaftError) as exc:
            return _json({"error": f"read not confirmed: {exc or 'timeout'}"}, 503)
        if not result.kvs:
            return _json({"key": key, "found": False, "revision": result.revision}, 404)
        kv = result.kvs[0]
        return _json(
            {
                "key": key,
                "found": True,
                "value": kv.value.decode("utf-8", "replace"),
                "index": kv.mod_revision,
                "create_revision": kv.create_revision,
                "version": kv.version,
                "lease": kv.lease,
            }
        )

    async def _write(self, request: Request) -> web.Response:
        try:
            result = await self.service.submit(request, timeout=REQUEST_TIMEOUT_S)
        except NotLeaderError as exc:
            return self._not_leader(exc)
        except InvalidCommandError as exc:
            return _json({"error": str(exc)}, 400)
        except CoordError as exc:
            return _json({"error": str(exc)}, 409)
        except ProposalDroppedError as exc:
            return _json({"error": str(exc)}, 503)
        except TimeoutError:
            return _json({"error": "write not committed in time; outcome unknown"}, 504)
        except RaftError as exc:
            return _json({"error": str(exc)}, 503)
        assert isinstance(result, PutResult | DeleteResult)
        return _json({"ok": True, "index": result.revision, "leader": self.node.id})

    async def kv_put(self, request: web.Request) -> web.Response:
        """Set a key to the request body."""
        if self.node.core.role is not Role.LEADER:
            return self._not_leader(NotLeaderError(self.node.id, self.node.leader_id))
        value = await request.read()
        return await self._write(Request(Put(request.match_info["key"], value)))

    async def kv_delete(self, request: web.Request) -> web.Response:
        """Remove a key."""
        return await self._write(Request(Delete(request.match_info["key"])))

    async def members_list(self, request: web.Request) -> web.Response:
        """The configuration: voters, learners, addresses, and lag on the leader."""
        if self.membership is None:
            return _json({"error": "membership API not enabled"}, 404)
        return _json(self.membership.describe())

    async def members_change(self, request: web.Request) -> web.Response:
        """``add``, ``add-learner``, ``promote``, ``remove`` or ``replace`` (JSON body)."""
        mm = self.membership
        if mm is None:
            return _json({"error": "membership API not enabled"}, 404)
        op = request.match_info["op"]
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            force = bool(body.get("force", False))
            max_lag = int(body.get("max_lag", DEFAULT_MAX_LAG))
            if max_lag < 0:
                raise ValueError("max_lag must be >= 0")

            def member() -> Member:
                return Member(
                    int(body["id"]),
                    parse_address(body["raft"], "raft"),
                    parse_address(body["http"], "http"),
                )

            if op == "add":
                await mm.add(member(), max_lag=max_lag)
            elif op == "add-learner":
                await mm.add_learner(member())
            elif op == "promote":
                await mm.promote(int(body["id"]), max_lag=max_lag, force=force)
            elif op == "remove":
                await mm.remove(int(body["id"]), force=force)
            elif op == "replace":
                await mm.replace(int(body["old"]), member(), max_lag=max_lag)
            else:
                return _json({"error": f"unknown operation {op!r}"}, 404)
        except NotLeaderError as exc:
            return self._not_leader(exc)
        except (KeyError, ValueError, TypeError) as exc:
            return _json({"error": f"bad request body: {exc!r}"}, 400)
        except RaftError as exc:
            return _json({"error": str(exc)}, 409)
        return _json({"ok": True, **mm.describe()})
