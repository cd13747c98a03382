"""The Kafka adapter daemon's HTTP API: status, history, operator actions, metrics.

- ``GET /metrics``: this member's probes (up, consecutive failures, latency), whether its
  control plane is active, the topology (version, per cluster healthy/writable/primary), the
  verdicts by health, and the reconfigurations this member ran by kind and status
  (Prometheus text)
- ``GET /v1/kafka/status``: :func:`~hacoord.adapters.kafka.status_view.group_status`
- ``GET /v1/kafka/history?limit=N``: reconfiguration records, newest first
- ``POST /v1/kafka/drain``: ``{"cluster": "k1", "reason": "disk swap"}``
- ``POST /v1/kafka/undrain``: ``{"cluster": "k1"}``
- ``POST /v1/kafka/promote``: ``{"cluster": "k2", "wait_s": 30}``; answers the finished
  record (200), or 202 with the request id when it has not finished within ``wait_s``, or
  409 while a promotion of another cluster waits

Every member's daemon serves it; actions are recorded in the coordinator, where the active
control plane picks them up. An unknown cluster is a 404 naming the known ones.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hacoord.adapters.daemon_support import (
    JsonHttpServer,
    bad_request,
    conflict,
    json_body,
    not_found,
    record_json,
)
from hacoord.adapters.kafka.config import GroupConfig
from hacoord.adapters.kafka.detect import Health
from hacoord.adapters.kafka.errors import (
    KafkaAdapterError,
    PromotePendingError,
    UnknownClusterError,
)
from hacoord.adapters.kafka.plane import (
    ControlPlane,
    drain,
    history,
    request_promote,
    undrain,
    wait_for_request,
)
from hacoord.adapters.kafka.status_view import group_status
from hacoord.adapters.kafka.watchdog import Watchdog
from hacoord.client.client import Client

DEFAULT_PROMOTE_WAIT_S = 30.0


class KafkaHttpApi(JsonHttpServer):
    """aiohttp routes over the coordinator and, when given, this member's watchdog and plane."""

    def __init__(
        self,
        client: Client,
        config: GroupConfig,
        watchdog: Watchdog | None = None,
        plane: ControlPlane | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.config = config
        self.watchdog = watchdog
        self.plane = plane
        self.app.add_routes(
            [
                web.get("/metrics", self.metrics),
                web.get("/v1/kafka/status", self.status),
                web.get("/v1/kafka/history", self.history),
                web.post("/v1/kafka/drain", self.drain),
                web.post("/v1/kafka/undrain", self.undrain),
                web.post("/v1/kafka/promote", self.promote),
            ]
        )

    async def status(self, request: web.Request) -> web.Response:
        """``GET /v1/kafka/status``."""
        return web.json_response(await group_status(self.client, self.config))

    async def history(self, request: web.Request) -> web.Response:
        """``GET /v1/kafka/history?limit=N``."""
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            raise bad_request("limit must be an integer") from None
        if limit < 1:
            raise bad_request(f"limit must be >= 1, got {limit}")
        records = await history(self.client).history(self.config.name, limit)
        return web.json_response([record_json(r) for r in records])

    async def drain(self, request: web.Request) -> web.Response:
        """``POST /v1/kafka/drain``: producers leave the cluster (the active plane acts)."""
        body = await json_body(request)
        cluster = self._cluster(body)
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise bad_request(f"reason must be a string, got {reason!r}")
        await drain(self.client, self.config, cluster, reason)
        return web.json_response({"cluster": cluster, "drained": True, "reason": reason})

    async def undrain(self, request: web.Request) -> web.Response:
        """``POST /v1/kafka/undrain``: answers whether the cluster was drained."""
        cluster = self._cluster(await json_body(request))
        was = await undrain(self.client, self.config, cluster)
        return web.json_response({"cluster": cluster, "drained": False, "was_drained": was})

    async def promote(self, request: web.Request) -> web.Response:
        """``POST /v1/kafka/promote``: queued for the active plane; waits up to ``wait_s``."""
        body = await json_body(request)
        cluster = self._cluster(body)
        wait_s = body.get("wait_s", DEFAULT_PROMOTE_WAIT_S)
        if not isinstance(wait_s, int | float) or isinstance(wait_s, bool) or wait_s < 0:
            raise bad_request(f"wait_s must be a number of seconds >= 0, got {wait_s!r}")
        try:
            request_id = await request_promote(self.client, self.config, cluster)
        except PromotePendingError as e:
            raise conflict(str(e)) from None
        except KafkaAdapterError as e:  # a multi-primary group has no primary to move
            raise bad_request(str(e)) from None
        record = await wait_for_request(self.client, self.config.name, request_id, wait_s)
        if record is None:
            return web.json_response({"request": request_id, "status": "queued"}, status=202)
        return web.json_response(record_json(record))

    def _cluster(self, body: dict[str, Any]) -> str:
        cluster = body.get("cluster")
        if not isinstance(cluster, str):
            raise bad_request('body needs "cluster": the name of one of the group\'s clusters')
        try:
            self.config.cluster(cluster)
        except UnknownClusterError as e:
            raise not_found(str(e)) from None
        return cluster

    async def metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics`` in the Prometheus text format."""
        status = await group_status(self.client, self.config)
        lines = self._probe_metrics() + self._plane_metrics() + _group_metrics(status)
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    def _probe_metrics(self) -> list[str]:
        if self.watchdog is None:
            return []
        group, member = self.config.name, self.watchdog.member
        up, failures, latency = (
            _family("probe_up", "gauge", "Whether this member's last probe of a cluster passed."),
            _family("probe_failures", "gauge", "This member's failed probes in a row."),
            _family("probe_latency_seconds", "gauge", "How long this member's last probe took."),
        )
        for cluster, view in self.watchdog.views.items():
            labels = _labels(group=group, member=member, cluster=cluster)
            up.append(f"hacoord_kafka_probe_up{labels} {int(view.up)}")
            failures.append(f"hacoord_kafka_probe_failures{labels} {view.failures}")
            latency.append(f"hacoord_kafka_probe_latency_seconds{labels} {view.latency_s:.6f}")
        return up + failures + latency

    def _plane_metrics(self) -> list[str]:
        if self.plane is None:
            return []
        group = self.config.name
        active = _family("control_active", "gauge", "Whether this member's control plane acts.")
        active.append(
            f"hacoord_kafka_control_active{_labels(group=group, member=self.plane.member)} "
            f"{int(self.plane.leading.is_set())}"
        )
        runs = _family(
            "reconfigurations_total", "counter", "Reconfigurations this member ran, by outcome."
        )
        counts: dict[tuple[str, str], int] = {}
        for record in self.plane.state.finished:
            key = (record.kind, str(record.status))
            counts[key] = counts.get(key, 0) + 1
        for (kind, outcome), n in sorted(counts.items()):
            labels = _labels(group=group, kind=kind, status=outcome)
            runs.append(f"hacoord_kafka_reconfigurations_total{labels} {n}")
        return active + runs


def _group_metrics(status: dict[str, Any]) -> list[str]:
    """The published topology and the active plane's verdicts (the same on every member)."""
    group = status["group"]
    topology = status["topology"]
    version = _family("topology_version", "gauge", "Version of the published topology.")
    if topology is not None:
        labels = _labels(group=group)
        version.append(f"hacoord_kafka_topology_version{labels} {topology['version']}")
    families = {
        name: _family(f"cluster_{name}", "gauge", f"Whether the topology has the cluster {name}.")
        for name in ("healthy", "writable", "primary")
    }
    verdict = _family("verdict", "gauge", "The active control plane's verdict, by health.")
    for cluster, c in status["clusters"].items():
        labels = _labels(group=group, cluster=cluster)
        if c["healthy"] is not None:
            for name, family in families.items():
                family.append(f"hacoord_kafka_cluster_{name}{labels} {int(bool(c[name]))}")
        if c["verdict"] is not None:
            for health in Health:
                one = _labels(group=group, cluster=cluster, health=str(health))
                verdict.append(f"hacoord_kafka_verdict{one} {int(c['verdict'] == health)}")
    return version + [line for family in families.values() for line in family] + verdict


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP hacoord_kafka_{name} {help_text}", f"# TYPE hacoord_kafka_{name} {kind}"]


def _labels(**values: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in values.items()) + "}"
