"""``hacoord kafka ...``: the daemon, the produce proxy, status and operator actions."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hacoord.cli_support import adapter_config, print_history
from hacoord.client import Client

if TYPE_CHECKING:  # annotations only: `hacoord` starts without the workflow engine
    from hacoord.workflow import WorkflowRecord

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _config(args: argparse.Namespace) -> Any:
    from hacoord.adapters.kafka.daemon_config import load_kafka_config

    return adapter_config("kafka", "--kafka-config", args.kafka_config, load_kafka_config)


def _serve(args: argparse.Namespace) -> int:
    from hacoord.adapters.kafka.daemon import run_daemon
    from hacoord.server.config_file import load_config
    from hacoord.server.event_loop import run

    _config(args)  # refused here, before the member starts
    member = load_config(Path(args.member))
    logging.basicConfig(level=member.log_level, format=_LOG_FORMAT)
    run(run_daemon(Path(args.member), Path(args.kafka_config)), member.event_loop)
    return 0


async def _proxy(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.kafka.daemon import run_proxy
    from hacoord.server.config_file import parse_address

    config = _config(args)
    if args.listen:
        try:
            listen = parse_address(args.listen, "--listen")
        except ValueError as e:
            raise SystemExit(f"hacoord kafka: configuration error: {e}") from None
    elif config.proxy is not None:
        listen = config.proxy.listen
    else:
        raise SystemExit("hacoord kafka proxy: give --listen host:port or configure [proxy]")
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    await run_proxy(client, config, listen)
    return 0


async def _status(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.kafka.status_view import group_status, render_status

    status = await group_status(client, _config(args).group)
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return 0


async def _drain(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.kafka.errors import UnknownClusterError
    from hacoord.adapters.kafka.plane import drain

    try:
        await drain(client, _config(args).group, args.cluster, args.reason)
    except UnknownClusterError as e:
        raise SystemExit(f"hacoord kafka drain: {e}") from None
    print(f"{args.cluster}: drained; producers leave it once the control plane publishes it")
    return 0


async def _undrain(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.kafka.errors import UnknownClusterError
    from hacoord.adapters.kafka.plane import undrain

    try:
        was = await undrain(client, _config(args).group, args.cluster)
    except UnknownClusterError as e:
        raise SystemExit(f"hacoord kafka undrain: {e}") from None
    print(f"{args.cluster}: undrained" if was else f"{args.cluster} was not drained")
    return 0


async def _promote(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.kafka.errors import KafkaAdapterError
    from hacoord.adapters.kafka.plane import request_promote, wait_for_request

    group = _config(args).group
    try:
        request_id = await request_promote(client, group, args.cluster)
    except KafkaAdapterError as e:  # unknown cluster, multi-primary group, one pending
        raise SystemExit(f"hacoord kafka promote: {e}") from None
    print(f"promotion of {args.cluster} requested ({request_id}); waiting for the control plane")
    record = await wait_for_request(client, group.name, request_id, args.wait)
    if record is None:
        print("no outcome yet: is a daemon running? (the request stays queued)", file=sys.stderr)
        return 1
    print(f"{record.id}: {record.status}" + (f" ({record.error})" if record.error else ""))
    return 0 if record.status == "succeeded" else 1


async def _history(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.kafka.plane import history

    def line(record: WorkflowRecord, steps: str) -> str:
        params = record.params
        what = params.get("cluster") or ",".join(params.get("clusters", ()))
        how = "automatic" if params.get("automatic", True) else "operator"
        return (
            f"{record.id}  {record.kind} {what} ({how}: {params.get('reason', '')})  "
            f"{record.status}  token {record.token}  {steps}"
        )

    records = await history(client).history(_config(args).group.name, args.limit)
    print_history(records, args.json, line)
    return 0


def add_commands(
    sub: Any,
    with_endpoints: Callable[[argparse.ArgumentParser], None],
    runner: Callable[[Callable[[Client, argparse.Namespace], Any]], Callable[..., int]],
) -> None:
    """Register ``hacoord kafka ...``."""
    p = sub.add_parser("kafka", help="Kafka HA groups: daemon, proxy, status, actions")
    ksub = p.add_subparsers(dest="kafka_command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        with_endpoints(sp)
        sp.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
        sp.add_argument("--kafka-config", required=True, help="the daemon's kafka.toml")

    s = ksub.add_parser("serve", help="run a coordinator member with watchdog + control plane")
    s.add_argument("--member", required=True, help="the member's TOML (as for `hacoord serve`)")
    s.add_argument("--kafka-config", required=True, help="the group, timings, HTTP, proxy")
    s.set_defaults(func=_serve)

    s = ksub.add_parser("proxy", help="run a produce proxy (HTTP to the group's clusters)")
    common(s)
    s.add_argument("--listen", help="host:port to listen on (default: [proxy] listen)")
    s.set_defaults(func=runner(_proxy))

    s = ksub.add_parser("status", help="the topology, every cluster's verdict, members' views")
    common(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=runner(_status))

    s = ksub.add_parser("drain", help="move producers off a cluster until undrained")
    common(s)
    s.add_argument("cluster")
    s.add_argument("--reason", default="", help="recorded with the drain and the topology")
    s.set_defaults(func=runner(_drain))

    s = ksub.add_parser("undrain", help="let producers use a drained cluster again")
    common(s)
    s.add_argument("cluster")
    s.set_defaults(func=runner(_undrain))

    s = ksub.add_parser("promote", help="make a cluster the primary (primary mode)")
    common(s)
    s.add_argument("cluster")
    s.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the outcome")
    s.set_defaults(func=runner(_promote))

    s = ksub.add_parser("history", help="the group's reconfigurations, newest first")
    common(s)
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=runner(_history))


__all__ = ["add_commands"]
