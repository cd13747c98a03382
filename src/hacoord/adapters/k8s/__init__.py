"""Kubernetes adapter: quorum-aware, one-at-a-time replacement of database member pods.

A database with members in several independent Kubernetes clusters (one zone each) keeps its
quorum while its pods are rolled out, drained or repaired. See ``docs/k8s.md``.
"""

from hacoord.adapters.k8s.adapter import K8sAdapter, election_name
from hacoord.adapters.k8s.config import GroupConfig, Member, PodTemplate, Timings, Zone
from hacoord.adapters.k8s.database import EtcdProbe, MemberHealth, MemberProbe
from hacoord.adapters.k8s.errors import (
    AccessDeniedError,
    ConfigError,
    ConflictError,
    FencedError,
    K8sAdapterError,
    ReplacementBlockedError,
    UnknownMemberError,
    ZoneError,
    ZoneUnreachableError,
)
from hacoord.adapters.k8s.observe import GroupView, MemberView, PodView, observe
from hacoord.adapters.k8s.plan import Blocked, Decision, Idle, Replace, Why, decide
from hacoord.adapters.k8s.webhook import AdmissionWebhook

__all__ = [
    "AccessDeniedError",
    "AdmissionWebhook",
    "Blocked",
    "ConfigError",
    "ConflictError",
    "Decision",
    "EtcdProbe",
    "FencedError",
    "GroupConfig",
    "GroupView",
    "Idle",
    "K8sAdapter",
    "K8sAdapterError",
    "Member",
    "MemberHealth",
    "MemberProbe",
    "MemberView",
    "PodTemplate",
    "PodView",
    "Replace",
    "ReplacementBlockedError",
    "Timings",
    "UnknownMemberError",
    "Why",
    "Zone",
    "ZoneError",
    "ZoneUnreachableError",
    "decide",
    "election_name",
    "observe",
]
