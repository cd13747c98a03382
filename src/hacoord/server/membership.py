"""Membership operations of a running member: list, add, promote, remove, replace.

Member addresses travel in the CONFIG entry's context (msgpack map id -> [raft host,
raft port, http host, http port]) and are kept in the KV state machine, so that a
member that catches up from a snapshot learns them too. Every applied configuration
updates the transport's peer table and the HTTP API's leader hints.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgpack

from hacoord.raft.errors import NotLeaderError, RaftError
from hacoord.raft.node import RaftNode
from hacoord.raft.quorum import has_quorum
from hacoord.raft.types import ConfState, NodeId
from hacoord.server.config_file import Member
from hacoord.server.state import ServerStateMachine

log = logging.getLogger("hacoord.membership")

DEFAULT_MAX_LAG = 100
"""A learner is promoted only once it is at most this many entries behind."""


class MembershipError(RaftError):
    """A membership request that cannot be carried out (the message says why)."""


def encode_addresses(members: dict[NodeId, Member]) -> bytes:
    """CONFIG entry context for ``members``."""
    packed: bytes = msgpack.packb(
        {m.id: [m.raft[0], m.raft[1], m.http[0], m.http[1]] for m in members.values()}
    )
    return packed


def decode_addresses(context: bytes) -> dict[NodeId, Member]:
    """Inverse of :func:`encode_addresses` (empty for an empty context)."""
    if not context:
        return {}
    raw = msgpack.unpackb(context, strict_map_key=False)
    return {int(k): Member(int(k), (v[0], int(v[1])), (v[2], int(v[3]))) for k, v in raw.items()}


class MembershipManager:
    """Keeps addresses in step with the configuration and runs membership changes."""

    def __init__(
        self, node: RaftNode, kv: ServerStateMachine, members: dict[NodeId, Member]
    ) -> None:
        self.node = node
        self.kv = kv
        self.members = members
        """Shared with the HTTP API: updated in place."""
        node.on_conf_change = self._on_conf_change

    # ------------------------------------------------------------ applying

    def _on_conf_change(self, conf: ConfState, context: bytes) -> None:
        book = decode_addresses(context)
        if book:
            self.kv.addresses = {
                m.id: (m.raft[0], m.raft[1], m.http[0], m.http[1]) for m in book.values()
            }
        else:
            book = {
                mid: Member(mid, (a[0], a[1]), (a[2], a[3])) for mid, a in self.kv.addresses.items()
            }
        for mid, member in book.items():
            self.members[mid] = member
        wanted = conf.all_members()
        for mid in list(self.members):
            if mid not in wanted and mid != self.node.id:
                del self.members[mid]
        peers = {mid: m.raft for mid, m in self.members.items() if mid != self.node.id}
        self.node.transport.update_peers(peers)

    # ------------------------------------------------------------ queries

    def describe(self) -> dict[str, Any]:
        """Voters, learners, addresses and (on the leader) each member's lag."""
        conf = self.node.core.conf
        status = self.node.core.status()
        out = []
        for mid in sorted(conf.all_members()):
            m = self.members.get(mid)
            entry: dict[str, Any] = {
                "id": mid,
                "role": "voter" if conf.is_voter(mid) else "learner",
                "raft": f"{m.raft[0]}:{m.raft[1]}" if m else None,
                "http": f"{m.http[0]}:{m.http[1]}" if m else None,
                "leader": mid == self.node.leader_id,
            }
            peer = status["peers"].get(mid)
            if peer is not None:
                entry["lag"] = peer["lag"]
                entry["recent_active"] = peer["recent_active"]
            out.append(entry)
        return {
            "members": out,
            "joint": bool(conf.voters_outgoing),
            "config_index": self.node.core.conf_index,
        }

    # ------------------------------------------------------------ changes

    def _require_leader(self) -> None:
        if not self.node.is_leader:
            raise NotLeaderError(self.node.id, self.node.leader_id)

    async def _change(
        self, voters: frozenset[NodeId], learners: frozenset[NodeId], book: dict[NodeId, Member]
    ) -> None:
        await self.node.change_membership(voters, learners, encode_addresses(book))

    def _book_with(self, extra: Member | None = None) -> dict[NodeId, Member]:
        book = dict(self.members)
        if extra is not None:
            book[extra.id] = extra
        return book

    async def add_learner(self, member: Member) -> None:
        """Add ``member`` as a non-voting learner."""
        self._require_leader()
        conf = self.node.core.conf
        if member.id in conf.learners:
            return  # already done (a retried request)
        if member.id in conf.all_members():
            raise MembershipError(f"member {member.id} is already a voter")
        book = self._book_with(member)
        await self._change(conf.voters, conf.learners | {member.id}, book)

    async def wait_caught_up(self, mid: NodeId, max_lag: int, timeout: float) -> None:
        """Wait until ``mid`` is at most ``max_lag`` entries behind the leader."""
        deadline = time.monotonic() + timeout
        while True:
            self._require_leader()
            peer = self.node.core.progress.get(mid)
            lag = self.node.core.log.last_index() - peer.match if peer else None
            if lag is not None and lag <= max_lag:
                return
            if time.monotonic() > deadline:
                raise MembershipError(
                    f"member {mid} did not catch up within {timeout:.0f}s "
                    f"(still {lag if lag is not None else 'unknown'} entries behind)"
                )
            await asyncio.sleep(0.05)

    async def promote(
        self, mid: NodeId, max_lag: int = DEFAULT_MAX_LAG, force: bool = False
    ) -> None:
        """Make learner ``mid`` a voter, once it has caught up (unless ``force``)."""
        self._require_leader()
        conf = self.node.core.conf
        if mid not in conf.learners:
            raise MembershipError(f"member {mid} is not a learner")
        if not force:
            await self.wait_caught_up(mid, max_lag, timeout=30)
        await self._change(conf.voters | {mid}, conf.learners - {mid}, self._book_with())

    async def add(self, member: Member, max_lag: int = DEFAULT_MAX_LAG) -> None:
        """Add a voter safely: as a learner first, promoted once caught up."""
        if member.id in self.node.core.conf.voters:
            return  # already done (a retried request)
        await self.add_learner(member)
        await self.promote(member.id, max_lag)

    def _check_reachable(self, voters: frozenset[NodeId], force: bool) -> None:
        if force:
            return
        status = self.node.core.status()["peers"]
        reachable = {self.node.id} | {p for p, st in status.items() if st["recent_active"]}
        if not has_quorum(ConfState(voters), reachable & voters):
            raise MembershipError(
                f"refusing: fewer than a majority of the new voters {sorted(voters)} are "
                f"reachable (reachable: {sorted(reachable & voters)}); use force to override"
            )

    async def remove(self, mid: NodeId, force: bool = False) -> None:
        """Remove voter or learner ``mid`` (the leader itself steps down afterwards)."""
        self._require_leader()
        conf = self.node.core.conf
        if mid not in conf.all_members():
            raise MembershipError(f"member {mid} is not in the cluster")
        voters = conf.voters - {mid}
        if not voters:
            raise MembershipError("cannot remove the last voter")
        self._check_reachable(voters, force)
        await self._change(voters, conf.learners - {mid}, self._book_with())

    async def replace(self, old: NodeId, new: Member, max_lag: int = DEFAULT_MAX_LAG) -> None:
        """Swap voter ``old`` for ``new`` in one joint change, after ``new`` caught up."""
        self._require_leader()
        conf = self.node.core.conf
        if new.id in conf.voters and old not in conf.all_members():
            return  # already done (a retried request)
        if old not in conf.voters:
            raise MembershipError(f"member {old} is not a voter")
        await self.add_learner(new)
        await self.wait_caught_up(new.id, max_lag, timeout=30)
        self._require_leader()
        conf = self.node.core.conf
        voters = (conf.voters - {old}) | {new.id}
        self._check_reachable(voters, force=False)
        await self._change(voters, conf.learners - {new.id}, self._book_with())
