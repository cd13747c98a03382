"""The coordination operations in wire form, shared by the HTTP routes and in-process clients.

Each operation takes a decoded msgpack body (``submit``: the encoded request bytes),
checks its shape, calls the :class:`~hacoord.server.coordination.CoordinationService`
and answers the ``ok`` payload in wire form; refusals are raised.
"""

from __future__ import annotations

from typing import Any

from hacoord.coord.commands import decode_request
from hacoord.coord.errors import InvalidCommandError
from hacoord.coord.results import event_to_wire, result_to_wire
from hacoord.server.coordination import CoordinationService

OPS = (
    "submit",
    "submit_many",
    "range",
    "watch",
    "keepalive",
    "keepalive_many",
    "leases",
    "ttl",
)
DEFAULT_TIMEOUT_S = 5.0
MAX_WATCH_WAIT_MS = 60_000
MAX_BATCH = 10_000


def _fields(items: Any, count: int, what: str) -> list[Any]:
    if not isinstance(items, list) or len(items) != count:
        raise InvalidCommandError(f"{what}: body must be a msgpack array of {count} items")
    return items


def _lease_id(body: Any, what: str) -> int:
    (lease_id,) = _fields(body, 1, what)
    if not isinstance(lease_id, int):
        raise InvalidCommandError(f"{what}: lease_id must be an int")
    return lease_id


def _batch(body: Any, what: str, kind: type, shape: str, noun: str) -> list[Any]:
    (items,) = _fields(body, 1, what)
    if not isinstance(items, list) or not all(isinstance(i, kind) for i in items):
        raise InvalidCommandError(f"{what}: body must be {shape}")
    if len(items) > MAX_BATCH:
        raise InvalidCommandError(f"{what}: at most {MAX_BATCH} {noun} per call")
    return items


async def run_op(
    service: CoordinationService, op: str, body: Any, timeout: float | None = None
) -> Any:
    """Run one operation; ``timeout`` (seconds) bounds waits on the cluster."""
    budget = DEFAULT_TIMEOUT_S if timeout is None else timeout
    if op == "submit":
        if not isinstance(body, bytes):
            raise InvalidCommandError("submit: body must be an encoded request")
        return result_to_wire(await service.submit(decode_request(body), budget))
    if op == "submit_many":
        items = _batch(body, op, bytes, "[[request bytes, ...]]", "requests")
        return await service.submit_many(items, budget)
    if op == "range":
        key, prefix, limit, linearizable = _fields(body, 4, op)
        if not isinstance(key, str) or not isinstance(limit, int) or limit < 0:
            raise InvalidCommandError("range: key must be a string and limit an int >= 0")
        result = await service.range(key, bool(prefix), limit, bool(linearizable), budget)
        return result_to_wire(result)
    if op == "watch":
        key, prefix, start, wait_ms = _fields(body, 4, op)
        if not isinstance(key, str) or not isinstance(start, int):
            raise InvalidCommandError("watch: key must be a string, from_revision an int")
        if not isinstance(wait_ms, int) or not 0 <= wait_ms <= MAX_WATCH_WAIT_MS:
            raise InvalidCommandError(f"watch: wait_ms must be in [0, {MAX_WATCH_WAIT_MS}]")
        wait_s = wait_ms / 1000 if timeout is None else min(wait_ms / 1000, timeout)
        batch = await service.watch(key, bool(prefix), start, wait_s)
        return [[event_to_wire(e) for e in batch.events], batch.next_revision]
    if op == "keepalive":
        return await service.keep_alive(_lease_id(body, op), budget)
    if op == "keepalive_many":
        return await service.keep_alive_many(
            _batch(body, op, int, "[[lease_id, ...]]", "leases"), budget
        )
    if op == "leases":
        _fields(body, 0, op)
        return service.lease_ids()
    if op == "ttl":
        return list(service.time_to_live(_lease_id(body, op)))
    raise InvalidCommandError(f"unknown operation {op!r}")
