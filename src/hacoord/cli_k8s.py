"""``hacoord k8s ...``: the adapter daemon, status and operator actions."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from hacoord.cli_support import adapter_config, print_history
from hacoord.client import Client

if TYPE_CHECKING:  # annotations only: `hacoord` starts without the workflow engine
    from hacoord.workflow import WorkflowRecord


def _config(args: argparse.Namespace) -> Any:
    from hacoord.adapters.k8s.daemon_config import load_k8s_config

    return adapter_config("k8s", "--k8s-config", args.k8s_config, load_k8s_config)


def _adapter(client: Client, args: argparse.Namespace) -> Any:
    from hacoord.adapters.k8s import K8sAdapter

    return K8sAdapter(client, _config(args).group, instance="cli")


async def _serve(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.k8s.daemon import K8sDaemon
    from hacoord.server.serve import wait_for_termination

    daemon = K8sDaemon(client, _config(args))
    await daemon.start()
    try:
        await wait_for_termination()
    finally:
        await daemon.stop()
    return 0


async def _status(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.k8s.status_view import group_status, render_status

    adapter = _adapter(client, args)
    await adapter.open()
    try:
        status = await group_status(adapter)
    finally:
        await adapter.close()
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return 0


async def _rollout(client: Client, args: argparse.Namespace) -> int:
    adapter = _adapter(client, args)
    current = await adapter.desired_template()
    env = dict(current.env)
    for item in args.set or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"hacoord k8s rollout: --set wants NAME=VALUE, got {item!r}")
        env[name] = value
    template = replace(current, image=args.image or current.image, env=env)
    if template.revision == current.revision:
        print(f"revision {current.revision} is already the desired one: nothing to roll out")
        return 0
    revision = await adapter.set_template(template)
    print(f"rollout to revision {revision} requested (was {current.revision})")
    return 0


async def _replace(client: Client, args: argparse.Namespace) -> int:
    from hacoord.adapters.k8s import UnknownMemberError

    try:
        await _adapter(client, args).request_replacement(args.member)
    except UnknownMemberError as e:
        raise SystemExit(f"hacoord k8s replace: {e}") from None
    print(f"replacement of {args.member} requested; it runs when every member is healthy")
    return 0


async def _pause(client: Client, args: argparse.Namespace) -> int:
    await _adapter(client, args).set_paused(args.k8s_command == "pause")
    print("planned replacements " + ("paused" if args.k8s_command == "pause" else "resumed"))
    return 0


async def _history(client: Client, args: argparse.Namespace) -> int:
    def line(record: WorkflowRecord, steps: str) -> str:
        return (
            f"{record.id}  {record.params.get('member')} ({record.params.get('why')})  "
            f"{record.status}  token {record.token}  {steps}"
        )

    records = await _adapter(client, args).store().history(limit=args.limit)
    print_history(records, args.json, line, steps_in_seconds=True)
    return 0


def add_commands(
    sub: Any,
    with_endpoints: Callable[[argparse.ArgumentParser], None],
    runner: Callable[[Callable[[Client, argparse.Namespace], Any]], Callable[..., int]],
) -> None:
    """Register ``hacoord k8s ...``."""
    p = sub.add_parser("k8s", help="Kubernetes adapter: daemon, status, rollout, replace")
    ksub = p.add_subparsers(dest="k8s_command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        with_endpoints(sp)
        sp.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
        sp.add_argument("--k8s-config", required=True, help="the adapter's k8s.toml")

    s = ksub.add_parser("serve", help="run an adapter instance (+ webhook, + HTTP API)")
    common(s)
    s.set_defaults(func=runner(_serve))

    s = ksub.add_parser("status", help="members per zone, health, lag, what runs or blocks")
    common(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=runner(_status))

    s = ksub.add_parser("rollout", help="publish a new desired pod template")
    common(s)
    s.add_argument("--image", help="the new image")
    s.add_argument("--set", action="append", metavar="NAME=VALUE", help="an env variable")
    s.set_defaults(func=runner(_rollout))

    s = ksub.add_parser("replace", help="ask for one member's replacement")
    common(s)
    s.add_argument("member")
    s.set_defaults(func=runner(_replace))

    for name, what in (("pause", "pause planned replacements"), ("resume", "resume them")):
        s = ksub.add_parser(name, help=what)
        common(s)
        s.set_defaults(func=runner(_pause))

    s = ksub.add_parser("history", help="replacement records, newest first")
    common(s)
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=runner(_history))


__all__ = ["add_commands"]
