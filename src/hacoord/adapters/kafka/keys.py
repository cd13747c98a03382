"""Where the Kafka adapter keeps its state in the coordinator (one place for every key).

The topology record itself is :func:`hacoord.adapters.kafka.topology.topology_key`.
"""

from __future__ import annotations

KEY_PREFIX = "/hacoord/kafka"
NAMESPACE = "kafka"
"""The workflow namespace of the control plane's reconfigurations."""


def group_prefix(group: str) -> str:
    """Every key of ``group`` starts with this."""
    return f"{KEY_PREFIX}/{group}/"


def observers_prefix(group: str) -> str:
    """Watchdog observations, one key per coordinator member, bound to its lease."""
    return f"{group_prefix(group)}observers/"


def drained_prefix(group: str) -> str:
    """Clusters drained by an operator, one key each saying why."""
    return f"{group_prefix(group)}drained/"


def promote_request_key(group: str) -> str:
    """A pending request to promote a cluster, for the control plane."""
    return f"{group_prefix(group)}requests/promote"


def decisions_key(group: str) -> str:
    """The control plane's latest verdict on every cluster and why."""
    return f"{group_prefix(group)}decisions"
