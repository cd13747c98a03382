"""The daemon's HTTP API: clusters, topology, primary and token, history, operator actions.

- ``GET /metrics``: probes, alerts, verdicts, failovers, tokens (Prometheus text)
- ``GET /v1/mysql/clusters``: every cluster, its primary and verdict
- ``GET /v1/mysql/clusters/{name}``: topology, primary, observers, agents
- ``GET /v1/mysql/clusters/{name}/history?limit=N``: workflow runs, newest first
- ``POST /v1/mysql/clusters/{name}/switchover``: ``{"candidate": "host:port", "wait_s": 30}``
- ``POST /v1/mysql/clusters/{name}/acknowledge``: lift anti-flapping after a failover
- ``POST /v1/mysql/clusters/{name}/maintenance``: ``{"host": "h:p", "on": true, "reason": ""}``

Every member's daemon serves it; actions are handed to whichever member holds the
orchestrator election, through the cluster KV.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from typing import Any

from aiohttp import web

from hacoord.adapters.daemon_support import bad_request, json_body, record_json
from hacoord.adapters.mysql.adapter import NAMESPACE, MySQLAdapter
from hacoord.adapters.mysql.keys import (
    agents_prefix,
    decision_key,
    maintenance_prefix,
    observers_prefix,
    quarantine_prefix,
    read_entries,
)
from hacoord.adapters.mysql.monitor import Monitor
from hacoord.adapters.mysql.orchestrator import (
    Orchestrator,
    acknowledge,
    request_switchover,
    set_maintenance,
)
from hacoord.adapters.mysql.primary import PrimaryRecord, read_primary
from hacoord.client.client import Client
from hacoord.workflow import WorkflowStore


class MySQLHttpApi:
    """aiohttp routes over the adapter and the cluster KV."""

    def __init__(
        self,
        client: Client,
        adapter: MySQLAdapter,
        monitor: Monitor | None = None,
        orchestrator: Orchestrator | None = None,
    ) -> None:
        self.client = client
        self.adapter = adapter
        self.monitor = monitor
        self.orchestrator = orchestrator
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/metrics", self.metrics),
                web.get("/v1/mysql/clusters", self.clusters),
                web.get("/v1/mysql/clusters/{name}", self.cluster),
                web.get("/v1/mysql/clusters/{name}/history", self.history),
                web.post("/v1/mysql/clusters/{name}/switchover", self.switchover),
                web.post("/v1/mysql/clusters/{name}/acknowledge", self.acknowledge),
                web.post("/v1/mysql/clusters/{name}/maintenance", self.maintenance),
            ]
        )
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    def _name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if name not in self.adapter.clusters:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"no cluster {name!r}"}), content_type="application/json"
            )
        return name

    async def _body(self, request: web.Request) -> dict[str, Any]:
        return await json_body(request)

    async def _summary(self, name: str, primary: PrimaryRecord | None) -> dict[str, Any]:
        decision = await self.client.get(decision_key(name))
        return {
            "name": name,
            "primary": primary.host if primary else None,
            "token": primary.token if primary else None,
            "decision": json.loads(decision.value) if decision else None,
        }

    async def clusters(self, request: web.Request) -> web.Response:
        """``GET /v1/mysql/clusters``."""
        return web.json_response(
            [
                await self._summary(n, await read_primary(self.client, n))
                for n in self.adapter.clusters
            ]
        )

    async def cluster(self, request: web.Request) -> web.Response:
        """``GET /v1/mysql/clusters/{name}``: everything an operator looks at first."""
        name = self._name(request)
        primary = await read_primary(self.client, name)
        summary = await self._summary(name, primary)
        topology = await self.adapter.discover(name)
        servers = {}
        for host, probe in topology.probes.items():
            state = probe.state
            servers[host] = {
                "reachable": state is not None,
                "error": probe.error,
                "read_only": state.read_only if state else None,
                "gtid": state.executed if state else None,
                "source": f"{state.replica.source_host}:{state.replica.source_port}"
                if state and state.replica
                else None,
                "io_running": state.replica.io_running if state and state.replica else None,
                "sql_running": state.replica.sql_running if state and state.replica else None,
                "sql_error": state.replica.sql_error if state and state.replica else None,
            }
        return web.json_response(
            {
                **summary,
                "published": asdict(primary) if primary else None,
                "topology": {
                    "primary": topology.primary,
                    "servers": servers,
                    "problems": list(topology.problems),
                    "lines": topology.describe(),
                },
                "observers": await read_entries(self.client, observers_prefix(name)),
                "agents": await read_entries(self.client, agents_prefix(name)),
                "maintenance": await read_entries(self.client, maintenance_prefix(name)),
                "quarantined": await read_entries(self.client, quarantine_prefix(name)),
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics``: this member's view, in the Prometheus text format."""
        lines = [
            "# HELP hacoord_mysql_probe_up Whether this member's last probe of a server worked.",
            "# TYPE hacoord_mysql_probe_up gauge",
        ]
        if self.monitor is not None:
            for cluster, views in self.monitor.views.items():
                for host, view in views.items():
                    labels = f'cluster="{cluster}",host="{host}"'
                    lines.append(f"hacoord_mysql_probe_up{{{labels}}} {int(view.up)}")
            lines += [
                "# HELP hacoord_mysql_alerts Alerts raised from agent reports.",
                "# TYPE hacoord_mysql_alerts gauge",
            ]
            for cluster, alerts in self.monitor.alerts.items():
                for host, found in alerts.items():
                    labels = f'cluster="{cluster}",host="{host}"'
                    lines.append(f"hacoord_mysql_alerts{{{labels}}} {len(found)}")
        if self.orchestrator is not None:
            lines += [
                "# HELP hacoord_mysql_orchestrator Whether this member is the orchestrator.",
                "# TYPE hacoord_mysql_orchestrator gauge",
                f"hacoord_mysql_orchestrator {int(self.orchestrator.leading.is_set())}",
                "# HELP hacoord_mysql_failovers_total Automatic failovers run by this member.",
                "# TYPE hacoord_mysql_failovers_total counter",
                f"hacoord_mysql_failovers_total {self.orchestrator.failovers}",
                "# HELP hacoord_mysql_verdict The orchestrator's verdict on each primary.",
                "# TYPE hacoord_mysql_verdict gauge",
            ]
            for cluster, decision in self.orchestrator.decisions.items():
                labels = f'cluster="{cluster}",verdict="{decision.verdict.value}"'
                lines.append(f"hacoord_mysql_verdict{{{labels}}} 1")
        for name in self.adapter.clusters:
            primary = await read_primary(self.client, name)
            if primary is not None:
                lines.append(f'hacoord_mysql_primary_token{{cluster="{name}"}} {primary.token}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def history(self, request: web.Request) -> web.Response:
        """``GET /v1/mysql/clusters/{name}/history``."""
        name = self._name(request)
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            raise bad_request("limit must be an integer") from None
        records = await WorkflowStore(self.client, NAMESPACE).history(name, limit)
        return web.json_response([record_json(r) for r in records])

    async def switchover(self, request: web.Request) -> web.Response:
        """``POST .../switchover``: queued for the orchestrator; waits up to ``wait_s``."""
        name = self._name(request)
        body = await self._body(request)
        candidate = body.get("candidate")
        if candidate is not None:
            try:
                self.adapter.config(name).host(str(candidate))
            except KeyError as e:
                raise bad_request(str(e.args[0])) from None
        wait_s = body.get("wait_s", 30.0)
        if not isinstance(wait_s, int | float) or isinstance(wait_s, bool) or wait_s < 0:
            raise bad_request(f"wait_s must be a number of seconds >= 0, got {wait_s!r}")
        request_id = await request_switchover(self.client, name, candidate)
        deadline = time.monotonic() + wait_s
        store = WorkflowStore(self.client, NAMESPACE)
        while time.monotonic() < deadline:
            for record in await store.history(name, limit=5):
                if record.params.get("request") == request_id and record.finished_at:
                    return web.json_response(record_json(record))
            await asyncio.sleep(0.2)  # polling the history for the outcome
        return web.json_response({"request": request_id, "status": "queued"}, status=202)

    async def acknowledge(self, request: web.Request) -> web.Response:
        """``POST .../acknowledge``."""
        name = self._name(request)
        acked = await acknowledge(self.client, name)
        return web.json_response({"acknowledged": acked})

    async def maintenance(self, request: web.Request) -> web.Response:
        """``POST .../maintenance``."""
        name = self._name(request)
        body = await self._body(request)
        host = body.get("host")
        if not isinstance(host, str) or not isinstance(body.get("on"), bool):
            raise bad_request('body must be {"host": "host:port", "on": true|false}')
        try:
            self.adapter.config(name).host(host)
        except KeyError as e:
            raise bad_request(str(e.args[0])) from None
        await set_maintenance(self.client, name, host, body["on"], str(body.get("reason", "")))
        return web.json_response({"host": host, "maintenance": body["on"]})
