"""Run one member: RaftNode + TCP transport + HTTP API, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable

from hacoord.raft.node import NodeConfig, RaftNode, Transport
from hacoord.raft.types import Message, NodeId
from hacoord.server.config_file import ServerConfig
from hacoord.server.coordination import CoordinationService
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


async def serve(cfg: ServerConfig) -> None:
    """Serve until a termination signal; a leader hands over leadership before exiting."""
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
        "member %d of cluster %s: raft %s:%d, http %s:%d, data %s",
        cfg.node_id,
        cfg.cluster_id,
        *cfg.me.raft,
        *cfg.me.http,
        cfg.data_dir,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("member %d shutting down", cfg.node_id)
        await node.stop(transfer=True)
        await service.stop()
        await api.close()


__all__ = ["build_node", "serve"]
