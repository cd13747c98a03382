"""Run one member: RaftNode + TCP transport + HTTP API, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from hacoord.raft.node import NodeConfig, RaftNode, Transport
from hacoord.raft.types import Message, NodeId
from hacoord.server.config_file import ServerConfig
from hacoord.server.coordination import CoordinationService
from hacoord.server.event_loop import running_loop_name
from hacoord.server.http_api import HttpApi
from hacoord.server.membership import MembershipManager
from hacoord.server.state import ServerStateMachine
from hacoord.transport.tcp import TcpTransport, make_ssl_contexts

log = logging.getLogger("hacoord.serve")


def ssl_contexts(cfg: ServerConfig) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """``(server, client)`` contexts for mutual TLS, or ``(None, None)`` without [tls]."""
    if cfg.tls is None:
        return None, None
    return make_ssl_contexts(str(cfg.tls.ca), str(cfg.tls.cert), str(cfg.tls.key))


def build_node(cfg: ServerConfig, kv: ServerStateMachine) -> RaftNode:
    """Wire a RaftNode for ``cfg`` with a TCP transport (TLS when configured)."""
    server_ssl, client_ssl = ssl_contexts(cfg)
    peers = {m.id: m.raft for m in cfg.members.values() if m.id != cfg.node_id}

    def transport_factory(
        on_messages: Callable[[list[Message]], None], on_unreachable: Callable[[NodeId], None]
    ) -> Transport:
        return TcpTransport(
            cfg.node_id,
            cfg.cluster_id,
            cfg.me.raft,
            peers,
            on_messages,
            on_unreachable=on_unreachable,
            server_ssl=server_ssl,
            client_ssl=client_ssl,
        )

    node_cfg = NodeConfig(
        node_id=cfg.node_id,
        cluster_id=cfg.cluster_id,
        data_dir=cfg.data_dir,
        voters=frozenset(cfg.members) - {cfg.node_id} if cfg.join else frozenset(cfg.members),
        joining=cfg.join,
        timing=cfg.timing,
        snapshot_entries=cfg.snapshot_entries,
        max_pending_proposals=cfg.max_pending_proposals,
    )
    return RaftNode(node_cfg, kv, transport_factory)


@dataclass
class RunningMember:
    """A started member: its node, coordination service and HTTP API."""

    cfg: ServerConfig
    node: RaftNode
    service: CoordinationService
    api: HttpApi

    async def stop(self) -> None:
        """Stop serving; a leader hands over leadership first."""
        log.info("member %d shutting down", self.cfg.node_id)
        await self.node.stop(transfer=True)
        await self.service.stop()
        await self.api.close()


async def start_member(cfg: ServerConfig) -> RunningMember:
    """Start the member described by ``cfg`` (for embedding it in another program)."""
    kv = ServerStateMachine()
    node = build_node(cfg, kv)
    members = dict(cfg.members)
    membership = MembershipManager(node, kv, members)
    service = CoordinationService(node, kv)
    api = HttpApi(node, service, members, membership)
    await node.start()
    await service.start()
    await api.start(*cfg.me.http, ssl_context=ssl_contexts(cfg)[0])
    log.info(
        "member %d of cluster %s: raft %s:%d, http %s:%d, data %s, event loop %s",
        cfg.node_id,
        cfg.cluster_id,
        *cfg.me.raft,
        *cfg.me.http,
        cfg.data_dir,
        running_loop_name(),
    )
    return RunningMember(cfg, node, service, api)


async def wait_for_termination() -> None:
    """Return on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(cfg: ServerConfig) -> None:
    """Serve until a termination signal; a leader hands over leadership before exiting."""
    member = await start_member(cfg)
    try:
        await wait_for_termination()
    finally:
        await member.stop()


__all__ = ["RunningMember", "build_node", "serve", "start_member", "wait_for_termination"]
