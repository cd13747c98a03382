"""``hacoord mysql ...``: the failover daemon, the agent, status and operator actions."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hacoord.cli_support import adapter_config, print_history
from hacoord.client import Client


def _daemon_config(args: argparse.Namespace) -> Any:
    from hacoord.adapters.mysql.daemon_config import load_daemon_config

    return adapter_config("mysql", "--mysql-config", args.mysql_config, load_daemon_config)


async def _status(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.mysql.keys import (
        decision_key,
        maintenance_prefix,
        observers_prefix,
        quarantine_prefix,
        read_entries,
    )
    from hacoord.adapters.mysql.primary import read_primary
    from hacoord.adapters.mysql.status_view import render_status
    from hacoord.adapters.mysql.topology import discover

    config = _daemon_config(args)
    clusters = [config.cluster(args.cluster)] if args.cluster else list(config.clusters)
    for cfg in clusters:
        topology = await discover(cfg)
        published = await read_primary(client, cfg.name)
        decision = await client.get(decision_key(cfg.name))
        observers = await read_entries(client, observers_prefix(cfg.name))
        maintenance = set(await read_entries(client, maintenance_prefix(cfg.name)))
        quarantined = set(await read_entries(client, quarantine_prefix(cfg.name)))
        print(
            render_status(
                topology,
                published,
                json.loads(decision.value) if decision else None,
                observers,
                maintenance,
                quarantined,
            )
        )
    return 0


async def _switchover(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.mysql.adapter import NAMESPACE
    from hacoord.adapters.mysql.orchestrator import request_switchover
    from hacoord.workflow import WorkflowStore

    request_id = await request_switchover(client, args.cluster, args.to)
    print(f"switchover of {args.cluster} requested ({request_id}); waiting for the orchestrator")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.wait
    while loop.time() < deadline:
        for record in await WorkflowStore(client, NAMESPACE).history(args.cluster, 5):
            if record.params.get("request") == request_id and record.finished_at:
                print(
                    f"{record.id}: {record.status}" + (f" ({record.error})" if record.error else "")
                )
                return 0 if record.status == "succeeded" else 1
        await asyncio.sleep(0.2)  # polling the history for the outcome
    print("no outcome yet: is a daemon running? (the request stays queued)", file=sys.stderr)
    return 1


async def _ack(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.mysql.orchestrator import acknowledge

    acked = await acknowledge(client, args.cluster)
    print(f"acknowledged {acked}" if acked else "no automatic failover to acknowledge")
    return 0


async def _maintenance(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.mysql.orchestrator import set_maintenance

    await set_maintenance(client, args.cluster, args.host, args.state == "on", args.reason)
    print(f"{args.host}: maintenance {args.state}")
    return 0


async def _history(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.mysql.adapter import NAMESPACE
    from hacoord.workflow import WorkflowStore

    records = await WorkflowStore(client, NAMESPACE).history(args.cluster, args.limit)
    print_history(
        records, args.json, lambda r, steps: f"{r.id}  {r.status}  token {r.token}  {steps}"
    )
    return 0


async def _agent(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.mysql.agent import Agent

    config = _daemon_config(args)
    cluster = config.cluster(args.cluster)
    agent = Agent(
        client,
        cluster,
        args.host,
        interval_s=config.agent_interval_s,
        data_dir=Path(args.data_dir) if args.data_dir else None,
    )
    await agent.run()
    return 0


def _daemon(args: argparse.Namespace) -> int:
    from hacoord.adapters.mysql.daemon import run_daemon
    from hacoord.server.config_file import load_config
    from hacoord.server.event_loop import run

    _daemon_config(args)  # refused here, before the member starts
    member = load_config(Path(args.member))
    run(run_daemon(Path(args.member), Path(args.mysql_config)), member.event_loop)
    return 0


def add_commands(
    sub: Any,
    with_endpoints: Callable[[argparse.ArgumentParser], None],
    runner: Callable[[Callable[[Client, argparse.Namespace], Any]], Callable[..., int]],
) -> None:
    """Register ``hacoord mysql ...``."""
    p = sub.add_parser("mysql", help="MySQL/MariaDB failover: daemon, agent, status, actions")
    msub = p.add_subparsers(dest="mysql_command", required=True)

    def common(sp: argparse.ArgumentParser, config: bool = False) -> None:
        with_endpoints(sp)
        sp.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
        sp.add_argument("--mysql-config", required=config, help="the daemon's mysql.toml")

    s = msub.add_parser("daemon", help="run a coordinator member with monitor + orchestrator")
    s.add_argument("--member", required=True, help="the member's TOML (as for `hacoord serve`)")
    s.add_argument("--mysql-config", required=True, help="clusters, timings, hooks, DNS")
    s.set_defaults(func=_daemon)

    s = msub.add_parser("agent", help="report one mysqld's health into the coordinator")
    common(s, config=True)
    s.add_argument("--cluster", required=True)
    s.add_argument("--host", required=True, help="host:port of the server beside this agent")
    s.add_argument("--data-dir", help="its data directory (for disk usage)")
    s.set_defaults(func=runner(_agent))

    s = msub.add_parser("status", help="the topology as a tree, the primary and its token")
    common(s, config=True)
    s.add_argument("cluster", nargs="?")
    s.set_defaults(func=runner(_status))

    s = msub.add_parser("switchover", help="ask the orchestrator for a planned switchover")
    common(s)
    s.add_argument("cluster")
    s.add_argument("--to", help="host:port of the new primary (default: the best replica)")
    s.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the outcome")
    s.set_defaults(func=runner(_switchover))

    s = msub.add_parser("ack", help="acknowledge the last automatic failover (anti-flapping)")
    common(s)
    s.add_argument("cluster")
    s.set_defaults(func=runner(_ack))

    s = msub.add_parser("maintenance", help="put a host in maintenance or take it out")
    common(s)
    s.add_argument("cluster")
    s.add_argument("host")
    s.add_argument("state", choices=("on", "off"))
    s.add_argument("--reason", default="")
    s.set_defaults(func=runner(_maintenance))

    s = msub.add_parser("history", help="the cluster's workflow runs, newest first")
    common(s)
    s.add_argument("cluster")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=runner(_history))


__all__ = ["add_commands"]
