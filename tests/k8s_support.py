"""Waiting helper of the Kubernetes adapter's tests; the traffic helpers live in the library."""

from __future__ import annotations

import asyncio
import time

from hacoord.adapters.k8s.etcd_traffic import (
    HealthLog,
    WriteLog,
    member_ids,
    stored_keys,
    watched,
)

__all__ = ["HealthLog", "WriteLog", "member_ids", "stored_keys", "until", "watched"]


async def until(predicate: object, timeout_s: float, what: str) -> None:
    """Await ``predicate()`` (a coroutine function returning bool) until true, else fail."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)  # polling the API server: there is no event to await
