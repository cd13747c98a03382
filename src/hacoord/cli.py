"""The ``hacoord`` command line: serve, status, members, kv, leases, elections, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from hacoord import cli_coord, cli_k8s, cli_kafka, cli_mysql
from hacoord.raft.errors import ConfigError
from hacoord.server.config_file import load_config, parse_address
from hacoord.server.event_loop import run
from hacoord.transport.tcp import make_ssl_contexts


def _endpoints(args: argparse.Namespace) -> list[str]:
    """Base URLs of the members, from --config or --endpoints."""
    scheme = "https" if _client_tls(args) else "http"
    if args.config:
        cfg = load_config(Path(args.config))
        members = sorted(cfg.members.values(), key=lambda m: m.id)
        return [f"{scheme}://{m.http[0]}:{m.http[1]}" for m in members]
    if args.endpoints:
        out = []
        for item in args.endpoints.split(","):
            host, port = parse_address(item.strip(), "--endpoints")
            out.append(f"{scheme}://{host}:{port}")
        return out
    raise ConfigError("give --endpoints host:port,host:port or --config FILE")


def _client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """Client TLS context from --cacert/--cert/--key, else from the config's [tls]."""
    files = (args.tls_ca, args.tls_cert, args.tls_key)
    if any(files):
        if not all(files):
            raise ConfigError("--cacert, --cert and --key must be given together")
        return make_ssl_contexts(*files)[1]
    if args.config:
        tls = load_config(Path(args.config)).tls
        if tls is not None:
            return make_ssl_contexts(str(tls.ca), str(tls.cert), str(tls.key))[1]
    return None


def _session(args: argparse.Namespace, seconds: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=seconds),
        connector=aiohttp.TCPConnector(ssl=_client_tls(args) or False),
    )


async def _fetch_status(session: aiohttp.ClientSession, ep: str) -> dict[str, Any] | str:
    try:
        async with session.get(f"{ep}/status") as resp:
            data: dict[str, Any] = await resp.json()
            return data
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return f"unreachable ({type(exc).__name__})"


async def _status(args: argparse.Namespace) -> int:
    endpoints = _endpoints(args)
    async with _session(args, 2) as session:
        results = await asyncio.gather(*(_fetch_status(session, ep) for ep in endpoints))
    if args.json:
        print(json.dumps(dict(zip(endpoints, results, strict=True)), indent=2, sort_keys=True))
        return 0
    header = ("ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG")
    rows: list[tuple[str, ...]] = [header]
    leaders = set()
    for ep, st in zip(endpoints, results, strict=True):
        if isinstance(st, str):
            rows.append((ep, "-", st, "", "", "", "", ""))
            continue
        lag = "-"
        if st["role"] == "leader":
            leaders.add(st["id"])
            lag = ",".join(f"{p}:{v['lag']}" for p, v in st["peers"].items()) or "-"
        rows.append(
            (
                ep,
                str(st["id"]),
                st["role"],
                str(st["term"]),
                str(st["leader"] or "-"),
                str(st["commit_index"]),
                str(st["applied_index"]),
                lag,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if len(leaders) != 1:
        print(f"warning: {len(leaders)} members report themselves leader", file=sys.stderr)
        return 2
    return 0


async def _find_leader(session: aiohttp.ClientSession, endpoints: list[str]) -> str:
    for ep in endpoints:
        st = await _fetch_status(session, ep)
        if isinstance(st, dict) and st["role"] == "leader":
            return ep
    raise ConfigError(f"no member of {endpoints} reports itself leader")


async def _transfer(args: argparse.Namespace) -> int:
    endpoints = _endpoints(args)
    async with _session(args, 10) as session:
        leader = await _find_leader(session, endpoints)
        async with session.post(f"{leader}/transfer-leadership", json={"to": args.to}) as resp:
            body = await resp.json()
    if resp.status != 200:
        print(f"transfer failed: {body.get('error')}", file=sys.stderr)
        return 1
    print(f"leadership moved to member {args.to}")
    return 0


async def _put(args: argparse.Namespace) -> int:
    endpoints = _endpoints(args)
    async with _session(args, 10) as session:
        leader = await _find_leader(session, endpoints)
        async with session.put(f"{leader}/v1/kv/{args.key}", data=args.value.encode()) as r:
            body = await r.json()
    print(json.dumps(body, sort_keys=True))
    return 0 if r.status == 200 else 1


async def _get(args: argparse.Namespace) -> int:
    endpoints = _endpoints(args)
    consistency = "serializable" if args.serializable else "linearizable"
    async with _session(args, 10) as session:
        target = endpoints[0] if args.serializable else await _find_leader(session, endpoints)
        async with session.get(f"{target}/v1/kv/{args.key}?consistency={consistency}") as r:
            body = await r.json()
    print(json.dumps(body, sort_keys=True))
    return 0 if r.status == 200 else 1


async def _member(args: argparse.Namespace) -> int:
    endpoints = _endpoints(args)
    async with _session(args, 120) as session:
        if args.op == "list":
            leader = await _find_leader(session, endpoints)
            async with session.get(f"{leader}/members") as r:
                body = await r.json()
            for m in body["members"]:
                lag = m.get("lag", "")
                star = "*" if m["leader"] else " "
                print(
                    f"{star}{m['id']:>4}  {m['role']:<8} raft {m['raft']}  http {m['http']}  {lag}"
                )
            if body["joint"]:
                print("(a joint configuration is being left)")
            return 0
        payload: dict[str, Any] = {"force": args.force}
        if args.op in ("add", "add-learner", "replace"):
            if args.id is None or not args.raft or not args.http:
                raise ConfigError(
                    f"member {args.op} needs ID, --raft HOST:PORT and --http HOST:PORT"
                )
            payload.update(id=args.id, raft=args.raft, http=args.http)
        elif args.id is None:
            raise ConfigError(f"member {args.op} needs the member ID")
        else:
            payload["id"] = args.id
        if args.op == "replace":
            if args.old is None:
                raise ConfigError("member replace needs --old ID (the member to retire)")
            payload["old"] = args.old
        leader = await _find_leader(session, endpoints)
        async with session.post(f"{leader}/members/{args.op}", json=payload) as r:
            body = await r.json()
    if r.status != 200:
        print(f"member {args.op} failed: {body.get('error')}", file=sys.stderr)
        return 1
    print(f"member {args.op}: done; voters/learners now:")
    for m in body["members"]:
        print(f"  {m['id']}: {m['role']}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from hacoord.server.serve import serve

    cfg = load_config(Path(args.config))
    logging.basicConfig(
        level=cfg.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    run(serve(cfg), cfg.event_loop)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from hacoord.server.demo import run_demo

    return asyncio.run(run_demo(args.nodes, args.election_timeout_ms, args.dir))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="hacoord", description="hacoord coordinator")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run one cluster member")
    s.add_argument("--config", required=True, help="member TOML file")
    s.set_defaults(func=_serve)

    def with_endpoints(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--endpoints", help="HTTP endpoints, comma separated host:port")
        sp.add_argument("--config", help="read the members' endpoints (and TLS) from a member file")
        sp.add_argument("--cacert", dest="tls_ca", help="CA certificate of a TLS cluster")
        sp.add_argument("--cert", dest="tls_cert", help="client certificate for a TLS cluster")
        sp.add_argument("--key", dest="tls_key", help="client key for a TLS cluster")

    s = sub.add_parser("status", help="show every member's role, term and progress")
    with_endpoints(s)
    s.add_argument("--json", action="store_true", help="print raw JSON")
    s.set_defaults(func=lambda a: asyncio.run(_status(a)))

    s = sub.add_parser("transfer-leadership", help="move leadership to member TO")
    s.add_argument("to", type=int)
    with_endpoints(s)
    s.set_defaults(func=lambda a: asyncio.run(_transfer(a)))

    s = sub.add_parser("put", help="write a key through the leader")
    s.add_argument("key")
    s.add_argument("value")
    with_endpoints(s)
    s.set_defaults(func=lambda a: asyncio.run(_put(a)))

    s = sub.add_parser("get", help="read a key (linearizable unless --serializable)")
    s.add_argument("key")
    s.add_argument("--serializable", action="store_true")
    with_endpoints(s)
    s.set_defaults(func=lambda a: asyncio.run(_get(a)))

    s = sub.add_parser("member", help="list or change the cluster's members")
    s.add_argument("op", choices=("list", "add", "add-learner", "promote", "remove", "replace"))
    s.add_argument("id", nargs="?", type=int, help="the member to add/promote/remove")
    s.add_argument("--raft", help="new member's raft address host:port")
    s.add_argument("--http", help="new member's HTTP address host:port")
    s.add_argument("--old", type=int, help="with replace: the member to retire")
    s.add_argument("--force", action="store_true", help="skip the catch-up/reachability checks")
    with_endpoints(s)
    s.set_defaults(func=lambda a: asyncio.run(_member(a)))

    def coord_runner(job: cli_coord.Runner) -> Callable[[argparse.Namespace], int]:
        return lambda a: cli_coord.run(a, _endpoints(a), _client_tls(a), job)

    cli_coord.add_commands(sub, with_endpoints, coord_runner)
    cli_mysql.add_commands(sub, with_endpoints, coord_runner)
    cli_k8s.add_commands(sub, with_endpoints, coord_runner)
    cli_kafka.add_commands(sub, with_endpoints, coord_runner)

    s = sub.add_parser("demo", help="start a local cluster, kill its leader, watch failover")
    s.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    s.add_argument("--election-timeout-ms", type=float, default=300.0)
    s.add_argument("--dir", help="keep the cluster's files here (default: a temp dir)")
    s.set_defaults(func=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hacoord`` command."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"hacoord: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
