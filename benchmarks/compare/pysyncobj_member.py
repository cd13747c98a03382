"""One PySyncObj cluster member with a tiny HTTP front end (benchmark comparison).

PySyncObj has no network client, so this process runs a :class:`KVNode` (a
``SyncObj`` with PySyncObj's replicated ``ReplDict``) and serves it over HTTP with aiohttp::

    PUT /kv/{key}   body = value -> 200 once the replicated ``put`` committed,
                                    503 when this member is not the leader, the
                                    command failed or took longer than 2 s
    GET /kv/{key}                -> 200 with the local value, 404 when absent,
                                    503 when this member is not the leader
    GET /status                  -> {"leader": "host:port" | null, "self": "host:port",
                                     "is_leader": bool, "term": int, "commit_index": int}

Run it as::

    python -m benchmarks.compare.pysyncobj_member --self 127.0.0.1:P \\
        --partners 127.0.0.1:Q 127.0.0.1:R --http-port H --data-dir D \\
        --election-timeout-ms E

Notes on PySyncObj (0.3.17) behaviour that the harness relies on:

* Writes: a replicated call on a follower is forwarded to the leader by PySyncObj
  itself (``apply_command`` message). This front end nevertheless answers 503 on a
  non-leader so the harness always talks to the leader and finds a new one after a
  failover, like it does for the other systems.
* Reads are served from the local ``dict``. PySyncObj has no linearizable read
  (no ReadIndex, no leader lease check), so the harness reads from the member
  that currently claims leadership; a deposed leader may still answer stale data.
* Durability: the journal (``journalFile``) is an ``mmap``-ed file written in
  place; PySyncObj never calls ``fsync``/``msync`` on it while running (only on a
  clean shutdown, via ``mmap.flush()`` in ``_destroy``), and it has no option to
  enable it. The term/vote metadata file is rewritten with ``flush()`` but also
  without ``fsync``. A committed entry therefore survives a process kill (it is
  in the page cache) but not an OS crash or power loss.
* Replicated-call callbacks run on PySyncObj's tick thread; this module hands
  them back to the asyncio loop with ``call_soon_threadsafe`` instead of blocking
  executor threads on ``sync=True`` calls.
* Latency: with PySyncObj's default ``appendEntriesUseBatch=True`` a new command
  waits for the next tick (``autoTickPeriod`` = 50 ms), so one write takes about
  100 ms on an idle cluster; ``appendEntriesUseBatch=False`` (pass it through
  ``--conf-json``) sends immediately (about 1.5 ms) at similar throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from pysyncobj import (  # type: ignore[import-untyped]
    FAIL_REASON,
    SyncObj,
    SyncObjConf,
)
from pysyncobj.batteries import ReplDict  # type: ignore[import-untyped]

PUT_TIMEOUT_S = 2.0
"""How long the HTTP front end waits for a replicated ``put`` to commit."""

JOURNAL_NAME = "journal.bin"
DUMP_NAME = "dump.bin"

_STATE_LEADER = 2  # pysyncobj.syncobj._RAFT_STATE.LEADER


def make_conf(
    data_dir: Path,
    election_timeout_ms: int,
    overrides: Mapping[str, Any] | None = None,
) -> SyncObjConf:
    """The ``SyncObjConf`` every benchmark member uses.

    The journal and the full dump (log compaction snapshot) live in ``data_dir``;
    the election timeout is drawn from ``[E, 2E]`` and the leader heartbeats every
    ``E/6``. ``connectionRetryTime`` is lowered from its 5 s default to ``E`` so a
    restarted member is reconnected promptly (PySyncObj lets only the member with the
    larger address dial, so the other side otherwise waits out the full retry time).
    ``overrides`` are passed to ``SyncObjConf`` last.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    min_timeout = election_timeout_ms / 1000.0
    max_timeout = 2.0 * min_timeout
    kwargs: dict[str, Any] = {
        "journalFile": str(data_dir / JOURNAL_NAME),
        "fullDumpFile": str(data_dir / DUMP_NAME),
        "dynamicMembershipChange": False,
        "raftMinTimeout": min_timeout,
        "raftMaxTimeout": max_timeout,
        "appendEntriesPeriod": election_timeout_ms / 6000.0,
        "connectionTimeout": max(3.5, max_timeout),
        "connectionRetryTime": min_timeout,
    }
    kwargs.update(overrides or {})
    return SyncObjConf(**kwargs)


class KVNode:
    """A ``SyncObj`` member whose replicated state is a ``str -> bytes`` dictionary.

    The dictionary is PySyncObj's own ``ReplDict`` consumer: consumers exist before the
    tick thread starts replaying the journal, which a ``SyncObj`` subclass that sets
    its attributes after ``SyncObj.__init__`` cannot guarantee.
    """

    def __init__(self, self_addr: str, partners: list[str], conf: SyncObjConf) -> None:
        self.data = ReplDict()
        self.sync = SyncObj(self_addr, partners, conf, consumers=[self.data])

    def put(self, key: str, value: bytes, done: Callable[[Any, int], None]) -> None:
        """Submit a replicated put; ``done(result, fail_reason)`` runs on the tick thread.

        ``fail_reason`` is ``FAIL_REASON.SUCCESS`` once the entry committed and applied
        on this member.
        """
        self.data.set(key, value, callback=done)

    def local_get(self, key: str) -> bytes | None:
        """The value in this member's applied state (not linearizable)."""
        value = self.data.get(key)
        return value if isinstance(value, bytes) else None

    def is_leader(self) -> bool:
        """Whether this member is in the Raft leader state right now."""
        return bool(self.sync._isLeader())

    def status(self) -> dict[str, Any]:
        """Leader, self address, leadership, term and commit index as plain JSON."""
        st: dict[str, Any] | None = None
        for _ in range(10):
            try:
                st = self.sync.getStatus()
                break
            except RuntimeError:
                # getStatus iterates dicts the tick thread may be resizing.
                continue
        if st is None:  # pragma: no cover - practically unreachable
            st = {"leader": self.sync._getLeader(), "state": -1, "raft_term": -1, "commit_idx": -1}
        leader = st["leader"]
        return {
            "leader": leader.address if leader is not None else None,
            "self": self.sync.selfNode.address,
            "is_leader": st["state"] == _STATE_LEADER,
            "term": st["raft_term"],
            "commit_index": st["commit_idx"],
        }

    def destroy(self) -> None:
        """Stop the tick thread, close sockets and the journal, and wait for it."""
        self.sync.destroy_synchronous()


def build_app(node: KVNode) -> web.Application:
    """The aiohttp application serving ``node``."""
    routes = web.RouteTableDef()

    @routes.put("/kv/{key:.+}")
    async def put_kv(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        value = await request.read()
        if not node.is_leader():
            return web.json_response({"error": "not leader", **node.status()}, status=503)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()

        def _resolve(f: asyncio.Future[int], reason: int) -> None:
            if not f.done():
                f.set_result(reason)

        def _done(_result: Any, reason: int) -> None:
            loop.call_soon_threadsafe(_resolve, fut, reason)

        node.put(key, value, _done)
        try:
            reason = await asyncio.wait_for(fut, PUT_TIMEOUT_S)
        except TimeoutError:
            return web.json_response({"error": "timeout"}, status=503)
        if reason != FAIL_REASON.SUCCESS:
            return web.json_response({"error": "failed", "reason": reason}, status=503)
        return web.Response(status=200)

    @routes.get("/kv/{key:.+}")
    async def get_kv(request: web.Request) -> web.Response:
        if not node.is_leader():
            return web.json_response({"error": "not leader", **node.status()}, status=503)
        value = node.local_get(request.match_info["key"])
        if value is None:
            return web.Response(status=404)
        return web.Response(body=value, status=200)

    @routes.get("/status")
    async def status(_request: web.Request) -> web.Response:
        return web.json_response(node.status())

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.add_routes(routes)
    return app


async def serve(args: argparse.Namespace) -> None:
    """Run the member until SIGTERM/SIGINT."""
    overrides = json.loads(args.conf_json) if args.conf_json else None
    conf = make_conf(Path(args.data_dir), args.election_timeout_ms, overrides)
    node = KVNode(args.self_addr, list(args.partners), conf)
    runner = web.AppRunner(build_app(node), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.http_port, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logging.info("member %s serving HTTP on %d", args.self_addr, args.http_port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await asyncio.to_thread(node.destroy)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of a member process."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--self", dest="self_addr", required=True, help="raft address host:port")
    p.add_argument("--partners", nargs="+", required=True, help="other members host:port")
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--election-timeout-ms", type=int, required=True)
    p.add_argument("--conf-json", default="", help="extra SyncObjConf keyword arguments")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks.compare.pysyncobj_member``."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
