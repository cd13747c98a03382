"""The admission webhook each zone's API server calls: evictions and fenced pod writes.

Two validating webhooks, served over HTTPS by :class:`AdmissionWebhook` (any process with a
coordination client may serve them; every adapter instance can):

``/v1/k8s/<group>/zones/<zone>/eviction`` (``pods/eviction`` CREATE)
    An eviction of a member pod (a ``kubectl drain``, an instance retirement) is **denied**
    with HTTP 429, so drains retry it, and the pod is **annotated** with who asked, why and
    when. The adapter then replaces that member itself, serialised with every other
    replacement and only while all members are healthy; once the pod is gone from the node,
    the drain's retry finds nothing left to evict. So a drain never takes two members at once,
    even when two zones drain together. This needs no coordination quorum: it always answers
    within its timeout.

``/v1/k8s/<group>/zones/<zone>/fence`` (pods CREATE, UPDATE, DELETE of the group)
    A write made by the adapter's identity (:data:`ADAPTER_USER`, impersonated by the adapter
    with its fencing token as the user extra :data:`TOKEN_EXTRA`) is allowed only if that
    token is the current holder's of the group's election, read linearizably from the
    coordination cluster. A stale adapter (paused, partitioned, its lock taken over) is thus
    refused **by the API server**, whatever it believes. When the coordination cluster does not
    answer within ``token_timeout_s`` the write is denied with that reason. Writes by other
    identities (kubelets, operators) are not the adapter's and pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from hacoord.adapters.k8s.config import GroupConfig
from hacoord.adapters.k8s.errors import FENCE_MARKER, ConflictError, ZoneError
from hacoord.adapters.k8s.kube import ZoneClient
from hacoord.adapters.k8s.pods import (
    EVICTION_REASON,
    EVICTION_REQUESTED_AT,
    EVICTION_REQUESTED_BY,
)
from hacoord.client.client import Client
from hacoord.client.election import Election

log = logging.getLogger("hacoord.k8s.webhook")

ADAPTER_USER = "hacoord:k8s-adapter"
"""The user the adapter impersonates for every write, so the fence webhook can tell its writes."""
ADAPTER_GROUP = "hacoord:k8s-adapters"
"""The group of :data:`ADAPTER_USER`; RBAC grants it what the adapter needs."""
TOKEN_EXTRA = "hacoord.io/fencing-token"
"""The user extra carrying the adapter's fencing token."""


class AdmissionWebhook:
    """aiohttp routes answering AdmissionReview requests of the group's zones."""

    def __init__(
        self,
        client: Client,
        config: GroupConfig,
        *,
        election: str,
        token_timeout_s: float = 2.0,
    ) -> None:
        self.client = client
        self.config = config
        self.election = Election(client, election)
        self.token_timeout_s = token_timeout_s
        self.zones = {z.name: ZoneClient(z, timeout_s=token_timeout_s) for z in config.zones}
        self.latencies_s: list[float] = []
        """How long each review took to answer (for the benchmark and metrics)."""
        self.denied_evictions = 0
        self.refused_writes = 0
        self.app = web.Application()
        base = f"/v1/k8s/{config.name}/zones/{{zone}}"
        self.app.add_routes(
            [
                web.post(f"{base}/eviction", self.eviction),
                web.post(f"{base}/fence", self.fence),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.port = 0

    def path(self, zone: str, kind: str) -> str:
        """The URL path of webhook ``kind`` (``eviction`` or ``fence``) for ``zone``."""
        return f"/v1/k8s/{self.config.name}/zones/{zone}/{kind}"

    async def start(self, host: str, port: int, tls: ssl.SSLContext) -> None:
        """Open the zones' clients and listen on ``host:port`` over TLS (port 0: any)."""
        for zone in self.zones.values():
            await zone.open()
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=tls).start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening and close the zones' clients."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for zone in self.zones.values():
            await zone.close()

    async def eviction(self, request: web.Request) -> web.Response:
        """Deny the eviction of a member pod and record the request on the pod."""
        started = time.monotonic()
        review, zone = await _review(request), request.match_info["zone"]
        req = review.get("request", {})
        name, namespace = str(req.get("name", "")), str(req.get("namespace", ""))
        member = self._member(zone, name, namespace)
        if member is None:
            return self._answer(review, started, allowed=True)
        user = str(req.get("userInfo", {}).get("username", "?"))
        recorded = ""
        if not req.get("dryRun"):
            recorded = await self._record_eviction(zone, name, user)
        self.denied_evictions += 1
        message = (
            f"hacoord: {name} is a member of database group {self.config.name}; its adapter "
            "replaces members one at a time, when every member is healthy. The eviction is "
            f"recorded and {name} will be moved off its node; retry the drain.{recorded}"
        )
        return self._answer(review, started, allowed=False, code=429, message=message)

    async def fence(self, request: web.Request) -> web.Response:
        """Allow the adapter's writes only with the current holder's fencing token."""
        started = time.monotonic()
        review = await _review(request)
        req = review.get("request", {})
        user = req.get("userInfo", {})
        if user.get("username") != ADAPTER_USER:
            return self._answer(review, started, allowed=True)
        what = f"{req.get('operation', '?')} pod {req.get('name', '?')}"
        carried = (user.get("extra") or {}).get(TOKEN_EXTRA) or []
        try:
            token = int(carried[0])
        except (IndexError, ValueError):
            return self._refuse(review, started, f"{what}: the request carries no fencing token")
        try:
            async with asyncio.timeout(self.token_timeout_s):
                holder = await self.election.leader()
        except Exception as e:  # no quorum, a timeout, a member down: never allow blindly
            why = str(e) or type(e).__name__
            return self._refuse(
                review,
                started,
                f"{what}: cannot confirm token {token}: no answer from the coordination "
                f"cluster within {self.token_timeout_s:g}s ({why})",
            )
        if holder is None or holder.token != token:
            current = "nobody holds the lock" if holder is None else f"current is {holder.token}"
            return self._refuse(
                review, started, f"{what}: token {token} is not current ({current})"
            )
        return self._answer(review, started, allowed=True)

    def _refuse(self, review: Mapping[str, Any], started: float, why: str) -> web.Response:
        self.refused_writes += 1
        log.warning("refused a write of the adapter: %s", why)
        return self._answer(
            review, started, allowed=False, code=403, message=f"{FENCE_MARKER}: {why}"
        )

    def _member(self, zone: str, name: str, namespace: str) -> str | None:
        if zone not in self.zones or self.config.zone(zone).namespace != namespace:
            return None
        for member in self.config.members:
            if member.name == name and member.zone == zone:
                return member.name
        return None

    async def _record_eviction(self, zone: str, name: str, user: str) -> str:
        annotations = {
            EVICTION_REQUESTED_BY: user,
            EVICTION_REQUESTED_AT: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            EVICTION_REASON: "eviction API (node drain or retirement)",
        }
        client = self.zones[zone]
        try:
            for _ in range(5):
                pod = await client.get_pod(name)
                if pod is None:
                    return ""
                if (pod.metadata.annotations or {}).get(EVICTION_REQUESTED_BY):
                    return ""  # recorded by an earlier retry of the drain
                with contextlib.suppress(ConflictError):
                    await client.annotate_pod(name, pod.metadata.resource_version, annotations)
                    return ""
        except ZoneError as e:
            return f" (recording it failed: {e})"
        return " (recording it failed: the pod kept changing)"

    def _answer(
        self,
        review: Mapping[str, Any],
        started: float,
        *,
        allowed: bool,
        code: int = 200,
        message: str = "",
    ) -> web.Response:
        response: dict[str, Any] = {
            "uid": review.get("request", {}).get("uid", ""),
            "allowed": allowed,
        }
        if not allowed:
            response["status"] = {"code": code, "message": message}
        self.latencies_s.append(time.monotonic() - started)
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": response,
            }
        )


async def _review(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not an AdmissionReview (not JSON)") from None
    if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
        raise web.HTTPBadRequest(text="the body is not an AdmissionReview (no request)")
    return body
