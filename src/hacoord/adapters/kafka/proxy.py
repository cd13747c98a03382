"""The produce proxy: HTTP producers for clients that do not embed the library.

``POST /topics/{topic}`` with a JSON batch::

    {"records": [{"value": "text", "key": "text", "headers": {"name": "text"}, "id": "text"}]}

``value``/``key`` are UTF-8 text; ``value_b64``/``key_b64`` carry binary as base64 (a
record has ``value`` or ``value_b64``; a null ``value`` is a tombstone). ``id`` is the
client's own message id, for retries; without one the proxy makes one. Every record goes
through the proxy's :class:`HAProducer` (following the group's topology, so the proxy moves
with the primary or around a dead cluster) and the answer comes once **every** record was
acknowledged (``acks=all``): ``200 {"topic", "topology_version", "results": [{"id",
"cluster", "partition", "offset"}]}`` in request order.

When some records could not be delivered the answer is ``503`` with ``Retry-After`` and
each record's outcome (acknowledged ones with their cluster and offset, the others with the
error): resend only the failed ones, with the same ids. A record whose send timed out may
still have landed, so a resend can store it twice; consumers drop the copy by its
``hacoord-id`` header. Bad input is a ``400`` naming the problem, an unknown topic a
``404``, a batch over the limits a ``413``; nothing of a refused batch is sent.

The proxy keeps no state of its own: run as many as needed, anywhere; each follows the
same topology record.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hacoord.adapters.daemon_support import JsonHttpServer, bad_request, json_body, not_found
from hacoord.adapters.kafka.config import GroupConfig
from hacoord.adapters.kafka.errors import KafkaAdapterError, UnknownTopicError
from hacoord.adapters.kafka.producer import HAProducer, ProducerOptions, SendResult
from hacoord.adapters.kafka.topology import TopologySource

_RECORD_KEYS = {"value", "value_b64", "key", "key_b64", "headers", "id"}
RETRY_AFTER_S = 1


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    """What one request may carry."""

    max_records: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_body_bytes < 1:
            raise ValueError("proxy limits max_records and max_body_bytes must be >= 1")


@dataclass(frozen=True, slots=True)
class _Record:
    value: bytes | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    message_id: bytes | None


def _too_large(message: str, limit: int, actual: int) -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(
        max_size=limit,
        actual_size=actual,
        text=json.dumps({"error": message}),
        content_type="application/json",
    )


class ProduceProxy(JsonHttpServer):
    """Serves ``POST /topics/{topic}``, ``GET /v1/proxy/status`` and ``GET /metrics``."""

    def __init__(
        self,
        config: GroupConfig,
        topology: TopologySource,
        options: ProducerOptions | None = None,
        limits: ProxyLimits | None = None,
        name: str = "proxy",
    ) -> None:
        super().__init__()
        self.config = config
        self.topology = topology
        self.limits = limits or ProxyLimits()
        self.name = name
        self.producer = HAProducer(config, topology, options, client_id=f"hacoord-{name}")
        self.app = web.Application(
            client_max_size=self.limits.max_body_bytes, middlewares=[self._count_answers]
        )
        self.app.add_routes(
            [
                web.post("/topics/{topic}", self.produce),
                web.get("/v1/proxy/status", self.status),
                web.get("/metrics", self.metrics),
            ]
        )
        self.responses: Counter[int] = Counter()
        """Answers given, by HTTP status."""
        self.acked: Counter[str] = Counter()
        """Records acknowledged, by cluster."""
        self.failed = 0
        """Records that no cluster took."""
        self.in_flight = 0
        """Batches being sent now."""

    async def start(self, host: str, port: int) -> None:
        """Start the producer (following the topology), then listen on ``host:port``."""
        await self.producer.start()
        try:
            await super().start(host, port)
        except BaseException:
            await self.producer.close()
            raise

    async def close(self) -> None:
        """Stop listening, then stop the producer."""
        await super().close()
        await self.producer.close()

    @web.middleware
    async def _count_answers(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPRequestEntityTooLarge as e:
            self.responses[e.status] += 1
            if e.content_type == "application/json":
                raise
            limit = self.limits.max_body_bytes
            raise _too_large(
                f"body over the proxy's limit of {limit} bytes", limit, request.content_length or 0
            ) from None
        except web.HTTPException as e:
            self.responses[e.status] += 1
            raise
        self.responses[response.status] += 1
        return response

    async def produce(self, request: web.Request) -> web.Response:
        """``POST /topics/{topic}``: send the batch, answer once every record is acknowledged."""
        topic = request.match_info["topic"]
        try:
            self.config.topic(topic)
        except UnknownTopicError as e:
            raise not_found(str(e)) from None
        if request.content_length is not None and request.content_length > (
            self.limits.max_body_bytes
        ):
            raise web.HTTPRequestEntityTooLarge(
                max_size=self.limits.max_body_bytes, actual_size=request.content_length
            )
        body = await json_body(request)
        records = self._parse(body)
        self.in_flight += 1
        try:
            outcomes = await asyncio.gather(
                *(self._send(topic, r) for r in records), return_exceptions=True
            )
        finally:
            self.in_flight -= 1
        results: list[dict[str, Any]] = []
        failures = 0
        for record, outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, SendResult):
                self.acked[outcome.cluster] += 1
                results.append(_acked(outcome))
            elif isinstance(outcome, KafkaAdapterError | TimeoutError):
                failures += 1
                mid = record.message_id.decode() if record.message_id else None
                results.append({"id": mid, "error": str(outcome) or type(outcome).__name__})
            else:
                raise outcome
        self.failed += failures
        answer = {
            "topic": topic,
            "topology_version": self.topology.current.version,
            "results": results,
        }
        if failures:
            answer["error"] = f"{failures} of {len(records)} records were not acknowledged"
            return web.json_response(
                answer, status=503, headers={"Retry-After": str(RETRY_AFTER_S)}
            )
        return web.json_response(answer)

    async def _send(self, topic: str, record: _Record) -> SendResult:
        message_id = record.message_id or self.producer.new_message_id()
        return await self.producer.send(
            topic, record.value, record.key, record.headers, message_id=message_id
        )

    def _parse(self, body: dict[str, Any]) -> list[_Record]:
        unknown = set(body) - {"records"}
        if unknown:
            raise bad_request(
                f'unknown field(s) {sorted(unknown)}: the body is {{"records": [...]}}'
            )
        raw = body.get("records")
        if not isinstance(raw, list):
            raise bad_request("'records' must be a list of records")
        if not raw:
            raise bad_request("'records' is empty: nothing to send")
        if len(raw) > self.limits.max_records:
            limit = self.limits.max_records
            raise _too_large(
                f"{len(raw)} records in one batch, over the proxy's limit of {limit}",
                limit,
                len(raw),
            )
        return [_record(i, r) for i, r in enumerate(raw)]

    async def status(self, request: web.Request) -> web.Response:
        """``GET /v1/proxy/status``: the topology the proxy follows and what it sent."""
        topology = self.topology.current
        return web.json_response(
            {
                "name": self.name,
                "group": self.config.name,
                "topology_version": topology.version,
                "mode": str(topology.mode),
                "primary": topology.primary,
                "writable": topology.writable(),
                "clusters": {
                    name: {"acked": s.acked, "failed": s.failed, "last_error": s.last_error}
                    for name, s in self.producer.stats().items()
                },
                "records_acked": sum(self.acked.values()),
                "records_failed": self.failed,
                "batches_in_flight": self.in_flight,
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics`` in the Prometheus text format."""
        base = f'group="{self.config.name}",proxy="{self.name}"'
        lines = ["# TYPE hacoord_kafka_proxy_requests_total counter"]
        for code, n in sorted(self.responses.items()):
            lines.append(f'hacoord_kafka_proxy_requests_total{{{base},code="{code}"}} {n}')
        lines.append("# TYPE hacoord_kafka_proxy_records_acked_total counter")
        for cluster in self.config.cluster_names:
            lines.append(
                f'hacoord_kafka_proxy_records_acked_total{{{base},cluster="{cluster}"}} '
                f"{self.acked[cluster]}"
            )
        lines += [
            "# TYPE hacoord_kafka_proxy_records_failed_total counter",
            f"hacoord_kafka_proxy_records_failed_total{{{base}}} {self.failed}",
            "# TYPE hacoord_kafka_proxy_batches_in_flight gauge",
            f"hacoord_kafka_proxy_batches_in_flight{{{base}}} {self.in_flight}",
            "# TYPE hacoord_kafka_proxy_topology_version gauge",
            f"hacoord_kafka_proxy_topology_version{{{base}}} {self.topology.current.version}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def _acked(result: SendResult) -> dict[str, Any]:
    return {
        "id": result.message_id.decode(errors="replace"),
        "cluster": result.cluster,
        "partition": result.partition,
        "offset": result.offset,
    }


def _record(index: int, raw: object) -> _Record:
    where = f"record {index}"
    if not isinstance(raw, dict):
        raise bad_request(f"{where}: must be an object")
    unknown = set(raw) - _RECORD_KEYS
    if unknown:
        raise bad_request(f"{where}: unknown field(s) {sorted(unknown)}")
    if ("value" in raw) == ("value_b64" in raw):
        raise bad_request(f"{where}: give exactly one of 'value' and 'value_b64'")
    if "key" in raw and "key_b64" in raw:
        raise bad_request(f"{where}: give at most one of 'key' and 'key_b64'")
    headers = raw.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise bad_request(f"{where}: 'headers' must be an object of names to strings")
    message_id = raw.get("id")
    if message_id is not None and (not isinstance(message_id, str) or not message_id):
        raise bad_request(f"{where}: 'id' must be a non-empty string")
    return _Record(
        value=_bytes(where, raw, "value"),
        key=_bytes(where, raw, "key"),
        headers=tuple((str(k), v.encode()) for k, v in headers.items()),
        message_id=message_id.encode() if message_id else None,
    )


def _bytes(where: str, raw: dict[str, Any], field: str) -> bytes | None:
    if f"{field}_b64" in raw:
        text = raw[f"{field}_b64"]
        if not isinstance(text, str):
            raise bad_request(f"{where}: '{field}_b64' must be a base64 string")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"{where}: '{field}_b64' is not valid base64") from None
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"{where}: '{field}' must be a string (use '{field}_b64' for binary)")
    return value.encode()
