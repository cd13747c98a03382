"""Members that run inside the calling process, talking TCP on 127.0.0.1.

For embedding several members in one service process, and for tests and benchmarks
that want real transports and disks without separate processes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hacoord.raft.node import NodeConfig, RaftNode, StateMachine, Transport
from hacoord.raft.types import Message, NodeId
from hacoord.transport.tcp import TcpTransport


def in_process_member(
    nid: NodeId,
    addrs: dict[NodeId, tuple[str, int]],
    data_dir: Path,
    state_machine: StateMachine,
    cluster_id: str = "local",
    **node_options: Any,
) -> RaftNode:
    """A member of the cluster whose voters listen at ``addrs`` (one entry per member).

    Its data lives in ``data_dir / f"m{nid}"``; ``node_options`` go to
    :class:`~hacoord.raft.node.NodeConfig` (timing, snapshot sizes, ...).
    """

    def transport(
        on_messages: Callable[[list[Message]], None], on_unreachable: Callable[[NodeId], None]
    ) -> Transport:
        peers = {p: a for p, a in addrs.items() if p != nid}
        return TcpTransport(
            nid, cluster_id, addrs[nid], peers, on_messages, on_unreachable=on_unreachable
        )

    cfg = NodeConfig(
        node_id=nid,
        cluster_id=cluster_id,
        data_dir=data_dir / f"m{nid}",
        voters=frozenset(addrs),
        **node_options,
    )
    return RaftNode(cfg, state_machine, transport, rng=random.Random(nid))
