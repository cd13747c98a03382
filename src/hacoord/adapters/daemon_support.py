"""What every adapter daemon shares: its TOML file checks, its JSON HTTP API plumbing and the
coordinator member it embeds."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import tomllib
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from hacoord.client.client import Client
from hacoord.client.transport import HttpTransport
from hacoord.server.config_file import load_config
from hacoord.server.serve import ssl_contexts, start_member
from hacoord.workflow import WorkflowRecord


@contextlib.asynccontextmanager
async def embedded_member(member_config: Path) -> AsyncIterator[tuple[Client, str, int]]:
    """Start the coordinator member of ``member_config`` in this process.

    Yields a client of it (forwarding to the leader through the members' HTTP APIs), the
    member's name (``member-<id>``) and the number of voting members; stops both at the end.
    """
    cfg = load_config(member_config)
    member = await start_member(cfg)
    scheme = "https" if cfg.tls else "http"
    others = [f"{scheme}://{m.http[0]}:{m.http[1]}" for m in cfg.members.values()]
    client = Client.local(member.service, forward=HttpTransport(others, ssl_contexts(cfg)[1]))
    try:
        yield client, f"member-{cfg.node_id}", len(cfg.members)
    finally:
        await client.close()
        await member.stop()


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel a daemon's background tasks and wait for each; how one ended is not asked."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Raise ``ValueError`` naming the first key of ``table`` not in ``allowed`` (with a hint)."""
    for key in table:
        if key not in allowed:
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"{where}: unknown setting {key!r}{hint}")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse ``path``; ``ValueError`` names the file and what is wrong with it."""
    try:
        return tomllib.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None


def record_json(record: WorkflowRecord) -> dict[str, Any]:
    """A workflow record as plain JSON."""
    return json.loads(record.to_json())  # type: ignore[no-any-return]


def bad_request(message: str) -> web.HTTPBadRequest:
    """A 400 whose JSON body says what is wrong."""
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def not_found(message: str) -> web.HTTPNotFound:
    """A 404 whose JSON body says what is missing."""
    return web.HTTPNotFound(text=json.dumps({"error": message}), content_type="application/json")


def conflict(message: str) -> web.HTTPConflict:
    """A 409 whose JSON body says what is in the way."""
    return web.HTTPConflict(text=json.dumps({"error": message}), content_type="application/json")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body (``{}`` if none); 400 if it is not one."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as e:
        raise bad_request(f"body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


class JsonHttpServer:
    """An aiohttp application that listens on one address until closed."""

    def __init__(self) -> None:
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (port 0: any free one, then in :attr:`port`)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
