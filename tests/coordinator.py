"""A one-member coordination cluster in this process, for tests of code built on it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from hacoord.client import Client
from hacoord.raft.timing import Timing
from hacoord.server.coordination import CoordinationService
from hacoord.server.in_process import in_process_member
from hacoord.server.local_cluster import free_ports
from hacoord.server.state import ServerStateMachine


@contextlib.asynccontextmanager
async def single_member(data_dir: Path) -> AsyncIterator[CoordinationService]:
    """Start a one-member cluster, wait until it leads, yield its service."""
    sm = ServerStateMachine()
    node = in_process_member(
        1,
        {1: ("127.0.0.1", free_ports(1)[0])},
        data_dir,
        sm,
        cluster_id="test",
        timing=Timing(heartbeat_ms=30, election_timeout_ms=300),
    )
    service = CoordinationService(node, sm)
    await node.start()
    await service.start()
    try:
        await node.wait_for_leader(10)
        yield service
    finally:
        await service.stop()
        await node.stop(transfer=False)


def local_client(service: CoordinationService) -> Client:
    """A client calling ``service`` directly."""
    return Client.local(service)
