"""Traffic and observation of an etcd group under replacement: a writer and a health sampler.

Used by the adapter's tests, example and benchmark: :func:`watched` writes keys one after the
other to any member that takes them and samples every member's ``/health`` every 50 ms, so
"0 acknowledged writes lost" and "never more than one member down" are measured, not assumed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from hacoord.adapters.k8s import GroupConfig


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class WriteLog:
    """Writes the group acknowledged, and how many calls failed."""

    acked: list[str] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)
    """Wall-clock time of each acknowledgement (workflow records use the same clock)."""
    failed: int = 0


@dataclass
class HealthLog:
    """Per sample: how many members answered at all (are up), and how many said healthy."""

    up: list[int] = field(default_factory=list)
    healthy: list[int] = field(default_factory=list)

    @property
    def fewest_up(self) -> int:
        """The fewest members that answered in any sample."""
        return min(self.up)

    @property
    def fewest_healthy(self) -> int:
        """The fewest members that said healthy in any sample."""
        return min(self.healthy)


async def _probe(session: aiohttp.ClientSession, endpoint: str) -> tuple[bool, bool]:
    """(up, healthy): up is any HTTP answer; healthy is etcd's own verdict."""
    try:
        async with session.get(f"{endpoint}/health") as r:
            body = await r.json(content_type=None)
            return True, r.status == 200 and body.get("health") == "true"
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False, False


async def _write_forever(config: GroupConfig, log: WriteLog, prefix: str) -> None:
    endpoints = [m.endpoint for m in config.members]
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        i, at = 0, 0
        while True:
            key = f"{prefix}/{i:06d}"
            body = {"key": _b64(key), "value": _b64(str(i))}
            try:
                async with session.post(f"{endpoints[at]}/v3/kv/put", json=body) as r:
                    data = await r.json(content_type=None)
                    ok = r.status == 200 and "header" in data
            except (aiohttp.ClientError, TimeoutError, ValueError):
                ok = False
            if ok:
                log.acked.append(key)
                log.acked_at.append(time.time())
                i += 1
            else:
                log.failed += 1
                at = (at + 1) % len(endpoints)  # try the next member
                await asyncio.sleep(0.05)  # back off before the retry, not a synchronisation


async def _sample_forever(config: GroupConfig, log: HealthLog) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while True:
            answers = await asyncio.gather(*(_probe(session, m.endpoint) for m in config.members))
            log.up.append(sum(up for up, _ in answers))
            log.healthy.append(sum(healthy for _, healthy in answers))
            await asyncio.sleep(0.05)  # the sampling period


@contextlib.asynccontextmanager
async def watched(config: GroupConfig, prefix: str) -> AsyncIterator[tuple[WriteLog, HealthLog]]:
    """Write to the group and sample its health until the block ends."""
    writes, health = WriteLog(), HealthLog()
    tasks = [
        asyncio.create_task(_write_forever(config, writes, prefix)),
        asyncio.create_task(_sample_forever(config, health)),
    ]
    try:
        yield writes, health
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def stored_keys(config: GroupConfig, prefix: str) -> set[str]:
    """Every key under ``prefix`` in the group, read linearizably from a healthy member."""
    start = _b64(prefix + "/")
    end = _b64(prefix + "0")  # '0' follows '/': the end of the prefix range
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for member in config.members:
            body = {"key": start, "range_end": end, "keys_only": True}
            try:
                async with session.post(f"{member.endpoint}/v3/kv/range", json=body) as r:
                    data = await r.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
            if r.status == 200 and "header" in data:
                return {base64.b64decode(kv["key"]).decode() for kv in data.get("kvs", [])}
    raise RuntimeError("no member of the group answered a range read")


async def member_ids(config: GroupConfig) -> set[str]:
    """The etcd member ids of the group, as one member lists them."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for member in config.members:
            try:
                async with session.post(f"{member.endpoint}/v3/cluster/member/list", json={}) as r:
                    data = await r.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
            if r.status == 200:
                return {str(m["ID"]) for m in data["members"]}
    raise RuntimeError("no member of the group listed the members")
