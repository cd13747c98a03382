"""Where the MySQL adapter keeps its state in the cluster KV (one place for every key)."""

from __future__ import annotations

from typing import Any

from hacoord.adapters.observations import read_reports
from hacoord.client.client import Client

MYSQL_PREFIX = "hacoord/mysql/"
ORCHESTRATOR_ELECTION = "mysql-orchestrator"


def cluster_prefix(cluster: str) -> str:
    """Every key of ``cluster`` starts with this."""
    return f"{MYSQL_PREFIX}{cluster}/"


def primary_key(cluster: str) -> str:
    """The published primary record."""
    return f"{cluster_prefix(cluster)}primary"


def quarantine_prefix(cluster: str) -> str:
    """Quarantined hosts, one key each saying why."""
    return f"{cluster_prefix(cluster)}quarantine/"


def quarantine_key(cluster: str, host: str) -> str:
    """Why ``host`` is quarantined (absent when it is not)."""
    return quarantine_prefix(cluster) + host


def agents_prefix(cluster: str) -> str:
    """Agent reports, one key per host, bound to the agent's lease."""
    return f"{cluster_prefix(cluster)}agents/"


def observers_prefix(cluster: str) -> str:
    """Monitor observations, one key per coordinator member, bound to its lease."""
    return f"{cluster_prefix(cluster)}observers/"


def maintenance_prefix(cluster: str) -> str:
    """Hosts in maintenance (one key each): never promoted, never failed over."""
    return f"{cluster_prefix(cluster)}maintenance/"


def ack_key(cluster: str) -> str:
    """The id of the last automatic failover a human acknowledged."""
    return f"{cluster_prefix(cluster)}ack"


def switchover_request_key(cluster: str) -> str:
    """A pending switchover request for the orchestrator."""
    return f"{cluster_prefix(cluster)}requests/switchover"


def decision_key(cluster: str) -> str:
    """The orchestrator's latest verdict on the primary and why."""
    return f"{cluster_prefix(cluster)}decision"


async def read_entries(client: Client, prefix: str, linearizable: bool = True) -> dict[str, Any]:
    """The JSON values under ``prefix``, by the rest of their key (a host or a member)."""
    return await read_reports(client, prefix, linearizable)
