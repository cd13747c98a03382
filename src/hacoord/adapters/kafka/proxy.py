"""The produce proxy: HTTP producers for clients that do not embed the library.

``POST /topics/{topic}`` with a JSON batch::

    {"records": [{"value": "text", "key": "text", "headers": {"name": "text"}, "id": "text"}]}

``value``/``key`` are UTF-8 text; ``value_b64``/``key_b64`` carry binary as base64 (a
record has ``value`` or ``value_b64``; a null ``value`` is a tombstone and needs a key).
``id`` is the client's own message id, for retries; without one the proxy makes one. Every
record goes through the proxy's :class:`HAProducer` (following the group's topology, so the
proxy moves with the primary or around a dead cluster), all of them at once, and the answer
comes once **every** record was acknowledged (``acks=all``): ``200 {"topic",
"topology_version", "results": [{"id", "cluster", "partition", "offset"}]}`` in request
order.

When some records could not be delivered (no writable cluster within the producer's
``delivery_timeout_s``, a full buffer) the answer is ``503`` with ``Retry-After`` and each
record's outcome in request order: ``{"id", "cluster", "partition", "offset"}`` for the
acknowledged ones, ``{"id", "error"}`` for the others, with the id the proxy made when the
client gave none. Resend only the failed ones, with the same ids. A record whose send timed
out may still have landed, so a resend can store it twice; consumers drop the copy by its
``hacoord-id`` header. (An unexpected error answers ``500`` with the same per-record body.)

Bad input is refused whole, before anything is sent: ``400`` naming the problem, ``404``
for an unknown topic, ``413`` for a batch over :class:`ProxyLimits`, a body over them
(refused before it is read) or a record larger than the producer may send.

The proxy keeps no state of its own: run as many as needed, anywhere; each follows the same
topology record.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from hacoord.adapters.daemon_support import JsonHttpServer, bad_request, json_body, not_found
from hacoord.adapters.kafka.config import GroupConfig
from hacoord.adapters.kafka.errors import KafkaAdapterError, UnknownTopicError
from hacoord.adapters.kafka.producer import (
    MESSAGE_ID_HEADER,
    HAProducer,
    ProducerOptions,
    SendResult,
)
from hacoord.adapters.kafka.topology import TopologySource

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
"""The ``Retry-After`` of a ``503``."""

_RECORD_FIELDS = frozenset({"value", "value_b64", "key", "key_b64", "headers", "id"})
_AIOKAFKA_MAX_REQUEST_SIZE = 1_048_576  # aiokafka's default max_request_size

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    """What one request may carry; more is refused with ``413``."""

    max_records: int = 1000
    """Records in one batch."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Bytes of one request body (a longer one is refused before it is read)."""

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_body_bytes < 1:
            raise ValueError("proxy limits max_records and max_body_bytes must be >= 1")


@dataclass(frozen=True, slots=True)
class _Record:
    message_id: bytes
    value: bytes | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]


class ProduceProxy(JsonHttpServer):
    """Serves ``POST /topics/{topic}``, ``GET /v1/proxy/status`` and ``GET /metrics``.

    See the module docstring for the HTTP contract. :meth:`start` starts the proxy's own
    :class:`HAProducer` (following ``topology``, which must be started) and then listens;
    :meth:`close` stops listening (letting the batches in flight finish), then the producer.
    """

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
        self.max_message_bytes = int(
            self.producer.options.client_options.get("max_request_size", _AIOKAFKA_MAX_REQUEST_SIZE)
        )
        """The largest record the producer sends (its ``max_request_size``)."""
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
    async def _count_answers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            self.responses[e.status] += 1
            raise
        except Exception:
            self.responses[500] += 1
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
        declared = request.content_length
        if declared is not None and declared > self.limits.max_body_bytes:
            raise self._body_too_large(declared)
        try:
            body = await json_body(request)
        except web.HTTPRequestEntityTooLarge:  # aiohttp's client_max_size, on a chunked body
            raise self._body_too_large() from None
        records = self._parse(body)

        self.in_flight += 1
        try:
            outcomes = await asyncio.gather(
                *(self._send(topic, r) for r in records), return_exceptions=True
            )
        finally:
            self.in_flight -= 1
        return self._answer(topic, records, outcomes)

    async def _send(self, topic: str, record: _Record) -> SendResult:
        return await self.producer.send(
            topic, record.value, record.key, record.headers, message_id=record.message_id
        )

    def _answer(
        self, topic: str, records: list[_Record], outcomes: list[SendResult | BaseException]
    ) -> web.Response:
        results: list[dict[str, Any]] = []
        failed = unexpected = 0
        for record, outcome in zip(records, outcomes, strict=True):
            mid = record.message_id.decode()
            if isinstance(outcome, SendResult):
                self.acked[outcome.cluster] += 1
                results.append(
                    {
                        "id": mid,
                        "cluster": outcome.cluster,
                        "partition": outcome.partition,
                        "offset": outcome.offset,
                    }
                )
                continue
            if not isinstance(outcome, Exception):
                raise outcome
            failed += 1
            if not isinstance(outcome, KafkaAdapterError | TimeoutError):
                unexpected += 1
                log.error("%s: record %s of %s failed", self.name, mid, topic, exc_info=outcome)
            results.append({"id": mid, "error": str(outcome) or type(outcome).__name__})
        self.failed += failed
        answer: dict[str, Any] = {
            "topic": topic,
            "topology_version": self.topology.current.version,
            "results": results,
        }
        if not failed:
            return web.json_response(answer)
        answer["error"] = (
            f"{failed} of {len(records)} records were not acknowledged: resend them with their ids"
        )
        if unexpected:
            return web.json_response(answer, status=500)
        return web.json_response(answer, status=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    def _body_too_large(self, size: int = 0) -> web.HTTPRequestEntityTooLarge:
        limit = self.limits.max_body_bytes
        return _too_large(f"body over the proxy's limit of {limit} bytes", limit, size)

    def _parse(self, body: dict[str, Any]) -> list[_Record]:
        unknown = set(body) - {"records"}
        if unknown:
            raise bad_request(
                f'unknown field(s) {sorted(unknown)}: the body is {{"records": [...]}}'
            )
        if "records" not in body:
            raise bad_request("the body has no 'records': send {\"records\": [...]}")
        raw = body["records"]
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
        records: list[_Record] = []
        first_of: dict[bytes, int] = {}
        for index, item in enumerate(raw):
            record = _record(index, item, self.producer.new_message_id)
            if (earlier := first_of.setdefault(record.message_id, index)) != index:
                # The consumers would drop the second as a duplicate of the first.
                raise bad_request(
                    f"record {index}: id {record.message_id.decode()!r} is also record "
                    f"{earlier}'s; each record needs its own id"
                )
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(
                record.key, record.value, [*record.headers, (MESSAGE_ID_HEADER, record.message_id)]
            )
            if size > self.max_message_bytes:
                raise _too_large(
                    f"record {index} is {size} bytes, over the {self.max_message_bytes} the "
                    "producer may send (its max_request_size)",
                    self.max_message_bytes,
                    size,
                )
            records.append(record)
        return records

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
                "requests": {str(code): n for code, n in sorted(self.responses.items())},
                "records_acked": sum(self.acked.values()),
                "records_failed": self.failed,
                "records_moved": self.producer.moved,
                "buffer_full": self.producer.buffer_full,
                "batches_in_flight": self.in_flight,
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics`` in the Prometheus text format."""
        base = {"group": self.config.name, "proxy": self.name}
        lines = ["# TYPE hacoord_kafka_proxy_requests_total counter"]
        for code, n in sorted(self.responses.items()):
            labels = _labels(**base, code=str(code))
            lines.append(f"hacoord_kafka_proxy_requests_total{labels} {n}")
        lines.append("# TYPE hacoord_kafka_proxy_records_acked_total counter")
        for cluster in self.config.cluster_names:
            labels = _labels(**base, cluster=cluster)
            lines.append(f"hacoord_kafka_proxy_records_acked_total{labels} {self.acked[cluster]}")
        labels = _labels(**base)
        lines += [
            "# TYPE hacoord_kafka_proxy_records_failed_total counter",
            f"hacoord_kafka_proxy_records_failed_total{labels} {self.failed}",
            "# TYPE hacoord_kafka_proxy_batches_in_flight gauge",
            f"hacoord_kafka_proxy_batches_in_flight{labels} {self.in_flight}",
            "# TYPE hacoord_kafka_proxy_topology_version gauge",
            f"hacoord_kafka_proxy_topology_version{labels} {self.topology.current.version}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def _too_large(message: str, limit: int, actual: int) -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(
        max_size=limit,
        actual_size=actual,
        text=json.dumps({"error": message}),
        content_type="application/json",
    )


def _labels(**values: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in values.items()) + "}"


def _record(index: int, raw: object, new_id: Callable[[], bytes]) -> _Record:
    where = f"record {index}"
    if not isinstance(raw, dict):
        raise bad_request(f"{where}: must be an object")
    unknown = set(raw) - _RECORD_FIELDS
    if unknown:
        raise bad_request(f"{where}: unknown field(s) {sorted(unknown)}")
    if ("value" in raw) == ("value_b64" in raw):
        raise bad_request(f"{where}: give exactly one of 'value' and 'value_b64'")
    if "key" in raw and "key_b64" in raw:
        raise bad_request(f"{where}: give at most one of 'key' and 'key_b64'")
    value, key = _bytes(where, raw, "value"), _bytes(where, raw, "key")
    if value is None and key is None:
        raise bad_request(f"{where}: a tombstone (a null 'value') needs a 'key'")
    headers = raw.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise bad_request(f"{where}: 'headers' must be an object of names to strings")
    if MESSAGE_ID_HEADER in headers:
        raise bad_request(f"{where}: header {MESSAGE_ID_HEADER!r} is the proxy's; give 'id'")
    for name, text in headers.items():
        _utf8(where, f"header {name!r}", name)
        _utf8(where, f"header {name!r}", text)
    message_id = raw.get("id")
    if message_id is not None and (not isinstance(message_id, str) or not message_id):
        raise bad_request(f"{where}: 'id' must be a non-empty string")
    return _Record(
        message_id=new_id() if message_id is None else _utf8(where, "'id'", message_id),
        value=value,
        key=key,
        headers=tuple((name, text.encode()) for name, text in headers.items()),
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
    return _utf8(where, f"'{field}'", value)


def _utf8(where: str, what: str, text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # JSON may carry a lone surrogate ("\ud800")
        raise bad_request(f"{where}: {what} is not valid Unicode text") from None
