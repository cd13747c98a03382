"""The Kubernetes adapter daemon's HTTP API: status, history, operator actions, metrics.

- ``GET /metrics``: active, replacements by reason and outcome, healthy members, lag per
  member, webhook denials and refusals, webhook latency (Prometheus text)
- ``GET /v1/k8s/status``: members per zone (pod, node, health, lag), the next decision or what
  blocks it, the replacement in progress, the active instance and its token
- ``GET /v1/k8s/history?limit=N``: replacement records, newest first
- ``POST /v1/k8s/rollout``: ``{"template": {...}}`` (a whole template) or ``{"env": {...},
  "image": "..."}`` (changes to the desired one); answers the new revision
- ``POST /v1/k8s/replace``: ``{"member": "orders-zone-a"}``
- ``POST /v1/k8s/pause`` and ``POST /v1/k8s/resume``: planned replacements (repairs go on)

Every instance serves it; actions are recorded in the coordination cluster, where the active
instance picks them up.
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from hacoord.adapters.daemon_support import (
    JsonHttpServer,
    bad_request,
    json_body,
    not_found,
    record_json,
)
from hacoord.adapters.k8s.adapter import K8sAdapter
from hacoord.adapters.k8s.config import PodTemplate
from hacoord.adapters.k8s.errors import ConfigError, UnknownMemberError
from hacoord.adapters.k8s.observe import GroupView
from hacoord.adapters.k8s.status_view import group_status
from hacoord.adapters.k8s.webhook import AdmissionWebhook


class K8sHttpApi(JsonHttpServer):
    """aiohttp routes over the adapter and the coordination cluster."""

    def __init__(self, adapter: K8sAdapter, webhook: AdmissionWebhook | None = None) -> None:
        super().__init__()
        self.adapter = adapter
        self.webhook = webhook
        self.app.add_routes(
            [
                web.get("/metrics", self.metrics),
                web.get("/v1/k8s/status", self.status),
                web.get("/v1/k8s/history", self.history),
                web.post("/v1/k8s/rollout", self.rollout),
                web.post("/v1/k8s/replace", self.replace_member),
                web.post("/v1/k8s/pause", self.pause),
                web.post("/v1/k8s/resume", self.resume),
            ]
        )

    async def status(self, request: web.Request) -> web.Response:
        """``GET /v1/k8s/status``."""
        return web.json_response(await group_status(self.adapter))

    async def history(self, request: web.Request) -> web.Response:
        """``GET /v1/k8s/history?limit=N``."""
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            raise bad_request("limit must be an integer") from None
        records = await self.adapter.store().history(limit=limit)
        return web.json_response([record_json(r) for r in records])

    async def rollout(self, request: web.Request) -> web.Response:
        """``POST /v1/k8s/rollout``: publish a new desired template."""
        body = await json_body(request)
        try:
            if "template" in body:
                template = PodTemplate.from_mapping(body["template"])
            else:
                current = await self.adapter.desired_template()
                env = body.get("env", {})
                if not isinstance(env, dict):
                    raise ConfigError("env must be an object of names to strings")
                template = replace(
                    current,
                    image=str(body.get("image", current.image)),
                    env={**current.env, **{str(k): str(v) for k, v in env.items()}},
                )
        except ConfigError as e:
            raise bad_request(str(e)) from None
        revision = await self.adapter.set_template(template)
        return web.json_response({"revision": revision})

    async def replace_member(self, request: web.Request) -> web.Response:
        """``POST /v1/k8s/replace``: ask for one member's replacement."""
        body = await json_body(request)
        member = body.get("member")
        if not isinstance(member, str):
            raise bad_request("body needs 'member': the name of a member")
        try:
            await self.adapter.request_replacement(member)
        except UnknownMemberError as e:
            raise not_found(str(e)) from None
        return web.json_response({"requested": member})

    async def pause(self, request: web.Request) -> web.Response:
        """``POST /v1/k8s/pause``."""
        await self.adapter.set_paused(True)
        return web.json_response({"paused": True})

    async def resume(self, request: web.Request) -> web.Response:
        """``POST /v1/k8s/resume``."""
        await self.adapter.set_paused(False)
        return web.json_response({"paused": False})

    async def metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics`` in the Prometheus text format."""
        group = self.adapter.config.name
        lines = [
            "# TYPE hacoord_k8s_active gauge",
            f'hacoord_k8s_active{{group="{group}"}} {int(self.adapter.leading.is_set())}',
            "# TYPE hacoord_k8s_replacements_total counter",
        ]
        counts: dict[tuple[str, str], int] = {}
        for record in self.adapter.state.finished:
            key = (str(record.params.get("why", "")), str(record.status))
            counts[key] = counts.get(key, 0) + 1
        for (why, status), n in sorted(counts.items()):
            labels = f'group="{group}",why="{why}",status="{status}"'
            lines.append(f"hacoord_k8s_replacements_total{{{labels}}} {n}")
        lines += _view_metrics(group, self.adapter.state.view)
        if self.webhook is not None:
            hook = self.webhook
            lines += [
                "# TYPE hacoord_k8s_evictions_denied_total counter",
                f'hacoord_k8s_evictions_denied_total{{group="{group}"}} {hook.denied_evictions}',
                "# TYPE hacoord_k8s_fenced_writes_refused_total counter",
                f'hacoord_k8s_fenced_writes_refused_total{{group="{group}"}} {hook.refused_writes}',
                "# TYPE hacoord_k8s_webhook_reviews_total counter",
                f'hacoord_k8s_webhook_reviews_total{{group="{group}"}} {len(hook.latencies_s)}',
                "# TYPE hacoord_k8s_webhook_seconds_sum counter",
                f'hacoord_k8s_webhook_seconds_sum{{group="{group}"}} {sum(hook.latencies_s):.6f}',
            ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def _view_metrics(group: str, view: GroupView | None) -> list[str]:
    if view is None:
        return []
    healthy = sum(1 for m in view.members if m.health.healthy)
    lines: list[str] = [
        "# TYPE hacoord_k8s_members_healthy gauge",
        f'hacoord_k8s_members_healthy{{group="{group}"}} {healthy}',
        "# TYPE hacoord_k8s_member_lag_entries gauge",
    ]
    for m in view.members:
        if m.lag is not None:
            lines.append(
                f'hacoord_k8s_member_lag_entries{{group="{group}",member="{m.name}"}} {m.lag}'
            )
    return lines
