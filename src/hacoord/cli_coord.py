"""``hacoord kv|lease|elect``: the coordination API from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from hacoord.client import Client, connect
from hacoord.client.errors import ClientError
from hacoord.coord.errors import CoordError
from hacoord.coord.results import Event, KeyValue

Runner = Callable[[Client, argparse.Namespace], Coroutine[Any, Any, int]]


def _kv_json(kv: KeyValue) -> dict[str, Any]:
    return {
        "key": kv.key,
        "value": kv.value.decode("utf-8", "replace"),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    }


def _event_json(event: Event) -> dict[str, Any]:
    body = {"type": event.type.name.lower(), "revision": event.revision, "key": event.kv.key}
    if event.type.name == "PUT":
        body["value"] = event.kv.value.decode("utf-8", "replace")
    return body


def _print(data: Any) -> None:
    print(json.dumps(data, sort_keys=True), flush=True)


async def _kv(client: Client, args: argparse.Namespace) -> int:
    if args.op == "get":
        result = await client.range(args.key, args.prefix, linearizable=not args.serializable)
        for kv in result.kvs:
            _print(_kv_json(kv))
        return 0 if result.kvs else 1
    if args.op == "put":
        if args.value is None:
            raise CoordError("kv put needs KEY and VALUE")
        put = await client.put(args.key, args.value.encode(), lease=args.lease)
        _print({"revision": put.revision})
        return 0
    if args.op == "del":
        deleted = await client.delete(args.key, args.prefix)
        _print({"revision": deleted.revision, "deleted": [kv.key for kv in deleted.deleted]})
        return 0
    async for event in client.watch(args.key, args.prefix, args.rev):
        _print(_event_json(event))
    return 0


async def _lease(client: Client, args: argparse.Namespace) -> int:
    if args.op == "grant":
        lease = await client.grant(args.ttl, keep_alive=False)
        _print({"lease": lease.id, "ttl_s": lease.ttl_s})
        return 0
    if args.id is None:
        raise CoordError(f"lease {args.op} needs the lease ID")
    if args.op == "revoke":
        result = await client.revoke(args.id)
        _print({"lease": args.id, "deleted": list(result.deleted)})
    elif args.op == "ttl":
        ttl, remaining = await client.time_to_live(args.id)
        _print({"lease": args.id, "ttl_s": ttl, "remaining_s": remaining})
    else:
        _print({"lease": args.id, "ttl_s": await client.keep_alive_once(args.id)})
    return 0


async def _elect(client: Client, args: argparse.Namespace) -> int:
    election = client.election(args.name)
    if args.observe:
        async for holder in election.observe():
            held = (
                None if holder is None else {"value": holder.value.decode(), "token": holder.token}
            )
            _print(held)
        return 0
    if args.value is None:
        raise CoordError("elect needs NAME and VALUE (or --observe)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with election.campaign(args.value.encode(), ttl_s=args.ttl) as leadership:
        _print({"elected": args.name, "value": args.value, "token": leadership.token})
        lost = asyncio.create_task(leadership.lost())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (lost, stopped):
            task.cancel()
        if leadership.is_lost:
            print(f"leadership lost: {leadership.lease.lost_reason}", file=sys.stderr)
            return 1
    _print({"resigned": args.name, "token": leadership.token})
    return 0


def run(args: argparse.Namespace, endpoints: list[str], ssl_context: Any, job: Runner) -> int:
    """Connect and run one command; refusals and outages become exit code 1."""

    async def main() -> int:
        async with connect(endpoints, ssl_context=ssl_context, deadline_s=args.timeout) as client:
            return await job(client, args)

    try:
        return asyncio.run(main())
    except (CoordError, ClientError) as exc:
        print(f"hacoord: {exc}", file=sys.stderr)
        return 1


def add_commands(
    sub: Any, with_endpoints: Callable[[argparse.ArgumentParser], None], runner: Any
) -> None:
    """Register ``kv``, ``lease`` and ``elect`` on the ``hacoord`` parser."""

    def common(sp: argparse.ArgumentParser) -> None:
        with_endpoints(sp)
        sp.add_argument("--timeout", type=float, default=10.0, help="seconds per call")

    s = sub.add_parser("kv", help="read, write, delete or watch keys")
    s.add_argument("op", choices=("get", "put", "del", "watch"))
    s.add_argument("key")
    s.add_argument("value", nargs="?")
    s.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    s.add_argument("--lease", type=int, default=0, help="with put: attach to this lease")
    s.add_argument("--rev", type=int, default=0, help="with watch: start at this revision")
    s.add_argument("--serializable", action="store_true", help="with get: local read")
    common(s)
    s.set_defaults(func=runner(_kv))

    s = sub.add_parser("lease", help="grant, revoke, renew or inspect a lease")
    s.add_argument("op", choices=("grant", "revoke", "keepalive", "ttl"))
    s.add_argument("id", nargs="?", type=int, help="lease id (all but grant)")
    s.add_argument("--ttl", type=float, default=10.0, help="with grant: seconds")
    common(s)
    s.set_defaults(func=runner(_lease))

    s = sub.add_parser("elect", help="campaign (hold until Ctrl-C) or --observe an election")
    s.add_argument("name")
    s.add_argument("value", nargs="?")
    s.add_argument("--observe", action="store_true", help="print every change of holder")
    s.add_argument("--ttl", type=float, default=5.0, help="lease TTL of the candidate")
    common(s)
    s.set_defaults(func=runner(_elect))
