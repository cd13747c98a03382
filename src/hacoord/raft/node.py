"""The asyncio driver around the pure core: ticks, storage, transport, apply loop.

``RaftNode`` owns one :class:`~hacoord.raft.core.RaftCore` and performs its IO:

* a ticker task calls ``core.tick()`` every tick;
* the ready loop sends early messages, hands the batch to a dedicated writer thread
  (one fsync per batch), applies committed entries to the user's state machine
  while that thread writes, sends the remaining messages once the batch is
  durable, serves ReadIndex reads and advances. A follower whose disk syncs fast
  writes on the event loop itself instead (see ``follower_inline_sync_ms``);
* proposals are batched: everything queued while a batch is persisted goes into the
  next append.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from hacoord.raft.config import CoreConfig
from hacoord.raft.core import RaftCore
from hacoord.raft.errors import (
    CommandRejectedError,
    ConfigError,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
)
from hacoord.raft.heap import release_free_heap
from hacoord.raft.metrics import Histogram, counter, gauge
from hacoord.raft.snapshot_transfer import (
    DEFAULT_CHUNK_BYTES,
    SnapshotAssembler,
    SnapshotSender,
    is_ack,
)
from hacoord.raft.storage.disk import DiskStorage
from hacoord.raft.storage.writer import AsyncStorageWriter
from hacoord.raft.timing import Timing
from hacoord.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    NodeId,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)

log = logging.getLogger("hacoord.node")


class StateMachine(Protocol):
    """What a RaftNode replicates. ``apply`` must be deterministic."""

    def apply(self, entry: Entry) -> Any:
        """Apply one committed NORMAL entry; the return value resolves ``propose``."""

    def snapshot(self) -> bytes:
        """Serialize the whole state (taken at the last applied index)."""

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot."""


@runtime_checkable
class SnapshotsInBackground(Protocol):
    """A state machine whose snapshots are serialized on a thread, off the event loop.

    A node snapshots such a state machine by calling :meth:`capture` on the event loop
    and running what it returns on a thread, so a large state does not hold up
    heartbeats and replication for the time it takes to serialize.
    """

    def capture(self) -> Callable[[], bytes | memoryview]:
        """Take a consistent view of the state now, cheaply; return a function that
        serializes that view (the bytes ``snapshot()`` would have returned, or a
        memoryview of them: copying a large serialization into ``bytes`` holds the GIL,
        and so the event loop, for as long as the copy takes) and is safe to run on
        another thread while the state goes on changing."""


class Transport(Protocol):
    """Delivers messages to peers; see :class:`hacoord.transport.tcp.TcpTransport`."""

    def send(self, m: Message) -> None:
        """Queue ``m`` for delivery without waiting."""

    def update_peers(self, peers: dict[NodeId, tuple[str, int]]) -> None:
        """Replace the table of peer addresses (after a membership change)."""

    async def start(self) -> None:
        """Begin listening and dialling."""

    async def close(self) -> None:
        """Stop and release sockets."""


TransportFactory = Callable[[Callable[[list[Message]], None], Callable[[NodeId], None]], Transport]
"""Builds the transport, given the node's ``on_messages`` and ``on_unreachable`` callbacks."""


@dataclass(slots=True, frozen=True)
class NodeConfig:
    """Settings of one member."""

    node_id: NodeId
    cluster_id: str
    data_dir: Path
    voters: frozenset[NodeId]
    timing: Timing = field(default_factory=Timing)
    snapshot_entries: int = 10_000
    """Applied entries between automatic snapshots (and log compaction)."""
    max_pending_proposals: int = 10_000
    max_msg_bytes: int = 1 << 20
    max_inflight: int = 64
    snapshot_chunk_bytes: int = DEFAULT_CHUNK_BYTES
    follower_inline_sync_ms: float = 2.0
    """A follower fsyncs on the event loop itself, saving two thread switches on every
    write's path, while its last fsync took at most this long; 0: always on the
    writer thread. A leader always syncs on the writer thread."""
    pre_vote: bool = True
    check_quorum: bool = True
    joining: bool = False
    """A new member: it is not among ``voters`` and waits to be added by the leader."""

    def __post_init__(self) -> None:
        if self.joining:
            if self.node_id in self.voters:
                raise ConfigError(f"a joining member ({self.node_id}) cannot be a voter already")
        elif self.node_id not in self.voters:
            raise ConfigError(
                f"node_id {self.node_id} is not among the voters {sorted(self.voters)}"
            )
        if not self.cluster_id:
            raise ConfigError("cluster_id must be a non-empty string")
        if self.snapshot_entries < 1:
            raise ConfigError(f"snapshot_entries must be >= 1, got {self.snapshot_entries}")
        if self.follower_inline_sync_ms < 0:
            raise ConfigError(
                f"follower_inline_sync_ms must be >= 0, got {self.follower_inline_sync_ms}"
            )
        if self.max_pending_proposals < 1:
            raise ConfigError(
                f"max_pending_proposals must be >= 1, got {self.max_pending_proposals}"
            )

    def core_config(self) -> CoreConfig:
        """The tick-based configuration of the core."""
        return CoreConfig(
            node_id=self.node_id,
            election_ticks=self.timing.election_ticks,
            heartbeat_ticks=self.timing.heartbeat_ticks,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            max_msg_bytes=self.max_msg_bytes,
            max_inflight=self.max_inflight,
        )


class NodeMetrics:
    """Counters and histograms exported on ``/metrics``."""

    def __init__(self) -> None:
        self.commit_latency = Histogram(
            "hacoord_commit_latency_seconds", "Time from propose() to the entry being applied."
        )
        self.fsync_latency = Histogram(
            "hacoord_fsync_latency_seconds", "Time to persist one Ready batch (write + sync)."
        )
        self.peer_rtt = Histogram("hacoord_peer_rtt_seconds", "Heartbeat round-trip time to peers.")
        self.proposals = 0
        self.proposals_failed = 0
        self.applied_entries = 0
        self.batches = 0
        self.snapshots = 0
        self.snapshot_seconds = 0.0
        """Time the last snapshot took, from capture to the log compacted."""
        self.snapshot_bytes = 0

    def render(self, node: RaftNode) -> str:
        """The Prometheus text exposition for ``node``."""
        core = node.core
        lines: list[str] = []
        lines += gauge("hacoord_term", "Current Raft term.", core.term)
        lines += gauge("hacoord_is_leader", "1 when this member leads.", int(node.is_leader))
        lines += counter(
            "hacoord_leader_changes_total",
            "Leader changes seen by this member.",
            core.leader_changes,
        )
        lines += gauge("hacoord_commit_index", "Commit index.", core.log.committed)
        lines += gauge("hacoord_applied_index", "Applied index.", core.log.applied)
        lines += counter("hacoord_proposals_total", "Proposals accepted.", self.proposals)
        lines += counter(
            "hacoord_proposals_failed_total",
            "Proposals refused or dropped.",
            self.proposals_failed,
        )
        lines += counter("hacoord_ready_batches_total", "Ready batches handled.", self.batches)
        lines += counter("hacoord_snapshots_total", "Snapshots taken.", self.snapshots)
        lines += gauge(
            "hacoord_snapshot_seconds",
            "Time the last snapshot took (serializing, writing, compacting).",
            self.snapshot_seconds,
        )
        lines += gauge("hacoord_snapshot_bytes", "Size of the last snapshot.", self.snapshot_bytes)
        for hist in (self.commit_latency, self.fsync_latency, self.peer_rtt):
            lines += list(hist.render())
        return "\n".join(lines) + "\n"


@dataclass(slots=True)
class _Proposal:
    data: bytes
    future: asyncio.Future[Any]
    started: float


class RaftNode:
    """One cluster member, driving a :class:`RaftCore` with real IO."""

    def __init__(
        self,
        config: NodeConfig,
        state_machine: StateMachine,
        transport_factory: TransportFactory,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.sm = state_machine
        self.metrics = NodeMetrics()
        self._storage = DiskStorage(config.data_dir)
        persisted = self._storage.load()
        self.core = RaftCore(
            config.core_config(),
            ConfState(config.voters),
            rng or random.Random(),
            persisted,
        )
        if persisted.snapshot is not None:
            self.sm.restore(persisted.snapshot.data_bytes())
        self._writer = AsyncStorageWriter(
            self._storage, inline_sync_s=config.follower_inline_sync_ms / 1000
        )
        self.transport = transport_factory(self._on_messages, self._on_unreachable)
        self._wake = asyncio.Event()
        self._queue: deque[_Proposal] = deque()
        self._queue_space = asyncio.Condition()
        self._inflight: dict[int, tuple[int, _Proposal]] = {}
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._reads_asked: dict[bytes, NodeId] = {}
        """The leader each pending read was sent to (this member's id when it leads)."""
        self._reads_waiting_apply: list[tuple[int, asyncio.Future[int]]] = []
        self._read_seq = 0
        self._heartbeat_sent: dict[NodeId, float] = {}
        self._assembler = SnapshotAssembler()
        self._snapshot_sender = SnapshotSender(config.snapshot_chunk_bytes)
        self._tasks: list[asyncio.Task[None]] = []
        self._snapshotting: asyncio.Task[None] | None = None
        self._heap_release: asyncio.Future[bool] | None = None
        self._snapshot_wanted = False
        self._stopping = False
        self._waiters: list[asyncio.Event] = []
        self.last_role = Role.FOLLOWER
        self.fatal: BaseException | None = None
        self._seen_conf_index = self.core.conf_index
        self.on_conf_change: Callable[[ConfState, bytes], None] | None = None
        """Called (conf, context) whenever a new configuration is applied here."""

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the transport, the ticker and the ready loop."""
        await self.transport.start()
        self._tasks = [
            asyncio.create_task(self._ticker(), name=f"hacoord-tick-{self.id}"),
            asyncio.create_task(self._ready_loop(), name=f"hacoord-ready-{self.id}"),
        ]
        log.info("node %d started (cluster %s)", self.id, self.config.cluster_id)

    async def stop(self, transfer: bool = True) -> None:
        """Stop; a leader first hands leadership to its most caught-up peer."""
        if self._stopping:
            return
        if transfer and self.is_leader and len(self.config.voters) > 1:
            await self._transfer_before_stop()
        self._stopping = True
        tasks = [*self._tasks, *([self._snapshotting] if self._snapshotting else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.transport.close()
        await self._writer.close()
        self._storage.close()
        self._fail_all(RaftError(f"node {self.id} stopped"))
        log.info("node %d stopped", self.id)

    async def _transfer_before_stop(self) -> None:
        peers = self.core.progress
        candidates = sorted((pr.match, peer) for peer, pr in peers.items() if peer != self.id)
        if not candidates:
            return
        target = candidates[-1][1]
        try:
            self.core.transfer_leadership(target)
        except RaftError:
            return
        self._wake.set()
        deadline = self.config.timing.election_timeout_ms / 1000
        try:
            async with asyncio.timeout(deadline):
                await self._wait_not_leader()
            log.info("node %d handed leadership to %d before stopping", self.id, target)
        except TimeoutError:
            log.warning("node %d: leadership transfer to %d did not finish", self.id, target)

    async def _wait_not_leader(self) -> None:
        while self.is_leader:
            await self._changed()

    # ------------------------------------------------------------ public API

    @property
    def id(self) -> NodeId:
        """This member's id."""
        return self.config.node_id

    @property
    def is_leader(self) -> bool:
        """Whether this member currently leads."""
        return self.core.role is Role.LEADER

    @property
    def leader_id(self) -> NodeId:
        """The leader this member knows of (0 if none)."""
        return self.core.leader

    async def propose(self, data: bytes) -> Any:
        """Replicate ``data``; returns the state machine's result once applied here.

        Raises :class:`NotLeaderError` (with the leader's id when known) on a follower.
        Waits for queue space when ``max_pending_proposals`` are already pending.
        """
        (fut,) = await self.propose_many([data])
        return await fut

    async def propose_many(self, items: Sequence[bytes]) -> list[asyncio.Future[Any]]:
        """Queue several proposals at once, in order; returns once all are queued.

        Each future resolves like :meth:`propose` would for its item. Raises
        :class:`NotLeaderError` on a follower; waits for queue space whenever
        ``max_pending_proposals`` are already pending.
        """
        self._check_running()
        if not self.is_leader:
            self.metrics.proposals_failed += len(items)
            raise NotLeaderError(self.id, self.core.leader)
        loop = asyncio.get_running_loop()
        limit = self.config.max_pending_proposals
        started = time.perf_counter()
        futures: list[asyncio.Future[Any]] = []
        for data in items:
            if len(self._queue) >= limit:
                self._wake.set()
                async with self._queue_space:
                    await self._queue_space.wait_for(lambda: len(self._queue) < limit)
            fut: asyncio.Future[Any] = loop.create_future()
            self._queue.append(_Proposal(data, fut, started))
            futures.append(fut)
        self._wake.set()
        return futures

    async def read_index(self, timeout: float | None = None) -> int:
        """A linearizable read barrier: returns once this member has applied every
        entry committed before the call, so local state can be read safely."""
        self._check_running()
        self._read_seq += 1
        ctx = self._read_seq.to_bytes(8, "big")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.core.read_index(ctx)
        self._reads[ctx] = fut
        self._reads_asked[ctx] = self.core.leader
        self._wake.set()
        limit = (
            timeout if timeout is not None else 2 * self.config.timing.election_timeout_ms / 1000
        )
        try:
            async with asyncio.timeout(limit):
                return await fut
        finally:
            self._reads.pop(ctx, None)
            self._reads_asked.pop(ctx, None)

    async def transfer_leadership(self, to: NodeId, timeout: float | None = None) -> None:
        """Hand leadership to ``to`` and wait until it has taken over."""
        self._check_running()
        self.core.transfer_leadership(to)
        self._wake.set()
        limit = (
            timeout if timeout is not None else 2 * self.config.timing.election_timeout_ms / 1000
        )

        async def until_done() -> None:
            while self.core.leader != to or self.is_leader:
                await self._changed()

        try:
            async with asyncio.timeout(limit):
                await until_done()
        except TimeoutError as exc:
            raise RaftError(
                f"leadership transfer from {self.id} to {to} did not finish in {limit:.2f}s"
            ) from exc

    async def change_membership(
        self,
        voters: frozenset[NodeId],
        learners: frozenset[NodeId],
        context: bytes = b"",
        timeout: float | None = None,
    ) -> None:
        """Move the cluster to ``voters``/``learners`` and wait until it is done.

        Voter changes go through a joint configuration, which the leader leaves by
        itself; this returns once the final configuration is applied here.
        """
        self._check_running()
        index = self.core.propose_conf_change(voters, learners, context)
        self._wake.set()
        limit = (
            timeout if timeout is not None else 10 * self.config.timing.election_timeout_ms / 1000
        )

        try:
            await self._until(
                lambda: self.core.conf_index >= index and not self.core.conf.voters_outgoing,
                limit,
            )
        except TimeoutError as exc:
            raise RaftError(
                f"membership change (entry {index}) was not applied within {limit:.1f}s; "
                "it may still complete"
            ) from exc

    async def wait_applied(self, index: int, timeout: float) -> None:
        """Wait until this member has applied ``index``."""
        await self._until(lambda: self.core.log.applied >= index, timeout)

    async def wait_compacted(self, index: int, timeout: float) -> None:
        """Wait until a snapshot of this member covers ``index`` (its log starts after)."""
        await self._until(lambda: self.core.log.snapshot_index >= index, timeout)

    async def wait_for_leader(self, timeout: float) -> NodeId:
        """Wait until some leader is known; returns its id."""
        await self._until(lambda: bool(self.core.leader), timeout)
        return self.core.leader

    async def _until(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait until ``done()`` holds, checking after every change; ``TimeoutError``."""

        async def until_done() -> None:
            while not done():
                await self._changed()

        async with asyncio.timeout(timeout):
            await until_done()

    def status(self) -> dict[str, Any]:
        """The core's status plus driver facts."""
        st = self.core.status()
        st["cluster_id"] = self.config.cluster_id
        st["pending_proposals"] = len(self._queue) + len(self._inflight)
        return st

    # -------------------------------------------------------------- internals

    def _check_running(self) -> None:
        if self._stopping:
            raise RaftError(f"node {self.id} is stopping")
        if self.fatal is not None:
            raise RaftError(f"node {self.id} failed: {self.fatal}") from self.fatal

    async def _changed(self) -> None:
        ev = asyncio.Event()
        self._waiters.append(ev)
        try:
            await ev.wait()
        finally:
            if ev in self._waiters:
                self._waiters.remove(ev)

    def _notify_waiters(self) -> None:
        for ev in self._waiters:
            ev.set()
        self._waiters.clear()

    def _on_messages(self, msgs: list[Message]) -> None:
        if self._stopping:
            return
        now = time.perf_counter()
        for m in msgs:
            if m.type is MessageType.SNAPSHOT:
                if is_ack(m):
                    for chunk in self._snapshot_sender.on_ack(m):
                        self.transport.send(chunk)
                    continue
                assembled, ack = self._assembler.add(m)
                if ack is not None:
                    self.transport.send(ack)
                if assembled is None:
                    continue
                m = assembled
            if m.type is MessageType.HEARTBEAT_RESP:
                sent = self._heartbeat_sent.pop(m.frm, None)
                if sent is not None:
                    self.metrics.peer_rtt.observe(now - sent)
            try:
                self.core.step(m)
            except RaftError as exc:
                log.warning("node %d: dropped message from %d: %s", self.id, m.frm, exc)
        self._wake.set()

    def _on_unreachable(self, peer: NodeId) -> None:
        self.core.report_unreachable(peer)

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.timing.tick_ms / 1000
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += interval
            behind = loop.time() - next_at
            if behind > 5 * interval:
                # We were stalled (e.g. SIGSTOP): do not replay missed ticks in a burst.
                next_at = loop.time() + interval
            self.core.tick()
            self._wake.set()

    async def _ready_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._flush_proposals()
                while self.core.has_ready():
                    await self._handle_ready(self.core.ready())
                    self._flush_proposals()
                self._maybe_snapshot()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fatal = exc
            log.exception("node %d: ready loop failed; the member stops serving", self.id)
            self._fail_all(RaftError(f"node {self.id} failed: {exc}"))
            raise

    def _flush_proposals(self) -> None:
        if not self._queue:
            return
        batch = list(self._queue)
        self._queue.clear()
        try:
            indexes = self.core.propose_batch([p.data for p in batch])
        except (NotLeaderError, ProposalDroppedError) as exc:
            self.metrics.proposals_failed += len(batch)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
        else:
            term = self.core.term
            for index, p in zip(indexes, batch, strict=True):
                self._inflight[index] = (term, p)
            self.metrics.proposals += len(batch)
        self._release_queue_space()

    def _release_queue_space(self) -> None:
        async def notify() -> None:
            async with self._queue_space:
                self._queue_space.notify_all()

        asyncio.get_running_loop().create_task(notify())

    async def _handle_ready(self, rd: Ready) -> None:
        self.metrics.batches += 1
        apply_early = rd.snapshot is None
        if apply_early and not rd.entries and rd.committed_entries:
            # Nothing new to replicate: the early messages only spread the commit index
            # (or are heartbeats), so the clients waiting on these entries are answered
            # first and the messages leave in the next pass of the event loop.
            waiting = len(self._inflight)
            self._apply_all(rd.committed_entries)
            apply_early = False
            if rd.early_messages:
                asyncio.get_running_loop().call_soon(self._send_all, rd.early_messages)
            if len(self._inflight) < waiting:
                await asyncio.sleep(0)  # the answered clients' handlers run first
        else:
            self._send_all(rd.early_messages)
        saving: asyncio.Future[None] | None = None
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            started = time.perf_counter()
            saving = self._writer.submit(
                rd.hard_state,
                rd.entries,
                rd.snapshot,
                sync=rd.must_sync,
                may_block=self.core.role is Role.FOLLOWER,
            )
            saving.add_done_callback(self._fsync_observer(started))
        if apply_early and (saving is None or not saving.done()):
            # The core hands out only entries that are already durable here, so they
            # are applied while the writer thread writes this batch: a leader answers
            # its clients without waiting for the fsync of the entries after theirs.
            self._apply_all(rd.committed_entries)
            apply_early = False
        if saving is not None:
            await saving
        for m in rd.messages:
            self._send(m)
        if apply_early:  # the batch was written right here: its acknowledgements go first
            self._apply_all(rd.committed_entries)
        if rd.snapshot is not None:
            self.sm.restore(rd.snapshot.data_bytes())
            self._reads_waiting_apply.clear()
            self._apply_all(rd.committed_entries)
        self.core.advance(rd)
        if rd.snapshot is not None:
            self._installed(rd.snapshot)
        if self.core.conf_index != self._seen_conf_index:
            self._seen_conf_index = self.core.conf_index
            log.info(
                "node %d applied configuration %s at index %d",
                self.id,
                self.core.conf,
                self.core.conf_index,
            )
            if self.on_conf_change is not None:
                self.on_conf_change(self.core.conf, self.core.conf_context)
            self._notify_waiters()
        for rs in rd.read_states:
            # Confirmed: from now on the read only waits for this member to apply.
            fut = self._reads.pop(rs.context, None)
            self._reads_asked.pop(rs.context, None)
            if fut is not None and not fut.done():
                self._reads_waiting_apply.append((rs.index, fut))
        self._serve_reads()
        if rd.soft_state is not None:
            self._on_soft_state_change()
        else:
            self._notify_waiters()  # wake waiters on applied/commit progress
        self._maybe_snapshot()

    def _send_all(self, msgs: list[Message]) -> None:
        for m in msgs:
            self._send(m)

    def _send(self, m: Message) -> None:
        if m.type is MessageType.HEARTBEAT:
            self._heartbeat_sent.setdefault(m.to, time.perf_counter())
        if m.type is MessageType.SNAPSHOT:
            for chunk in self._snapshot_sender.start(m):
                self.transport.send(chunk)
            # The follower answers once installed; if a chunk is lost, the leader's
            # next probe finds it still behind and sends the snapshot again.
            self.core.report_snapshot(m.to, failed=False)
            return
        self.transport.send(m)

    def _fsync_observer(self, started: float) -> Callable[[asyncio.Future[None]], None]:
        def observe(_: asyncio.Future[None]) -> None:
            self.metrics.fsync_latency.observe(time.perf_counter() - started)

        return observe

    def _apply_all(self, entries: list[Entry]) -> None:
        now = time.perf_counter()
        for entry in entries:
            self._apply(entry, now)

    def _apply(self, entry: Entry, now: float) -> None:
        result: Any = None
        error: BaseException | None = None
        if entry.kind is EntryKind.NORMAL:
            try:
                result = self.sm.apply(entry)
            except CommandRejectedError as exc:
                error = exc
            except Exception as exc:  # a state-machine bug must not stop replication
                log.exception("node %d: state machine failed on entry %d", self.id, entry.index)
                error = exc
        self.metrics.applied_entries += 1
        pending = self._inflight.pop(entry.index, None)
        if pending is None:
            return
        term, proposal = pending
        if proposal.future.done():
            return
        if term != entry.term:
            self.metrics.proposals_failed += 1
            proposal.future.set_exception(
                ProposalDroppedError(
                    f"entry {entry.index} was replaced by a new leader before it committed"
                )
            )
        elif error is not None:
            proposal.future.set_exception(error)
        else:
            self.metrics.commit_latency.observe(now - proposal.started)
            proposal.future.set_result(result)

    def _serve_reads(self) -> None:
        if not self._reads_waiting_apply:
            return
        applied = self.core.log.applied
        still = []
        for index, fut in self._reads_waiting_apply:
            if index <= applied:
                if not fut.done():
                    fut.set_result(index)
            else:
                still.append((index, fut))
        self._reads_waiting_apply = still

    def _on_soft_state_change(self) -> None:
        role = self.core.role
        if self.last_role is Role.LEADER and role is not Role.LEADER:
            # Reads confirmed by this member's heartbeat rounds are lost with leadership.
            err = NotLeaderError(self.id, self.core.leader)
            for ctx, fut in list(self._reads.items()):
                if not fut.done():
                    fut.set_exception(err)
                self._reads.pop(ctx, None)
            for p in self._queue:
                if not p.future.done():
                    p.future.set_exception(err)
            self._queue.clear()
        elif role is not Role.LEADER:
            self._ask_the_new_leader()
        if role is not self.last_role:
            log.info(
                "node %d is now %s in term %d (leader %d)",
                self.id,
                role.name.lower(),
                self.core.term,
                self.core.leader,
            )
        self.last_role = role
        self._notify_waiters()

    def _ask_the_new_leader(self) -> None:
        """Send pending reads again when the leader they went to is no longer leader.

        The old leader may have died with them; without this a read would wait out
        its whole timeout although a new leader could answer it at once. A repeated
        answer is harmless: each read takes the first. With no leader known, the
        reads fail with :class:`NotLeaderError` and the caller retries.
        """
        leader = self.core.leader
        for ctx, fut in list(self._reads.items()):
            if fut.done() or self._reads_asked.get(ctx) == leader:
                continue
            if leader:
                self.core.read_index(ctx)
                self._reads_asked[ctx] = leader
                self._wake.set()
            else:
                fut.set_exception(NotLeaderError(self.id, 0))
                self._reads.pop(ctx, None)

    def _maybe_snapshot(self) -> None:
        """Start a snapshot once enough entries were applied since the last one (or one
        was asked for); it runs beside the ready loop, which goes on replicating and
        applying meanwhile.

        Called only by the ready loop between batches, where the state machine is at
        exactly ``log.applied``: within a batch it may already have applied entries
        the core does not count as applied yet.
        """
        core = self.core
        if self._snapshotting is not None or self._stopping or self.fatal is not None:
            return
        behind = core.log.applied - core.log.snapshot_index
        wanted = self._snapshot_wanted and behind > 0
        self._snapshot_wanted = False
        if not wanted and behind < self.config.snapshot_entries:
            return
        applied = core.log.applied
        term = core.log.term(applied)
        if term is None:
            return
        meta = SnapshotMeta(applied, term, core.conf)
        if isinstance(self.sm, SnapshotsInBackground):
            view: Callable[[], bytes | memoryview] | bytes = self.sm.capture()
        else:
            view = self.sm.snapshot()
        self._snapshotting = asyncio.create_task(
            self._snapshot(meta, view), name=f"hacoord-snapshot-{self.id}"
        )

    async def take_snapshot(self, timeout: float = 60.0) -> int:
        """Snapshot what this member has applied and compact its log, now (after a
        snapshot already running); returns the index the member's snapshot covers.

        Members snapshot on their own every ``snapshot_entries`` entries; this is for
        operators and tools (a short log before a planned restart, measuring).
        """

        if self.fatal is not None or self._stopping:
            raise RaftError(f"node {self.id} is not serving")
        target = self.core.log.applied
        self._snapshot_wanted = True
        self._wake.set()
        await self._until(
            lambda: self.core.log.snapshot_index >= target or self.fatal is not None, timeout
        )
        if self.fatal is not None:
            raise RaftError(f"node {self.id} failed: {self.fatal}")
        return self.core.log.snapshot_index

    async def _snapshot(
        self, meta: SnapshotMeta, view: Callable[[], bytes | memoryview] | bytes
    ) -> None:
        started = time.perf_counter()
        try:
            data = view if isinstance(view, bytes) else await asyncio.to_thread(view)
            # A snapshot installed from the leader meanwhile already covers this one.
            if meta.index > self.core.log.snapshot_index:
                # The stored snapshot reads its data from the file: the serialized
                # bytes are freed when this task ends.
                stored = await self._writer.compact(Snapshot(meta, data))
                self.core.compact(stored)
                self.metrics.snapshots += 1
                self.metrics.snapshot_bytes = len(data)
                del data, view
                # The compacted entries are free now, but the allocator keeps most of
                # their pages (interleaved with the values that outlive them).
                await asyncio.to_thread(release_free_heap)
                self.metrics.snapshot_seconds = time.perf_counter() - started
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fatal = exc
            log.exception("node %d: snapshot failed; the member stops serving", self.id)
            for task in self._tasks:
                task.cancel()
            self._fail_all(RaftError(f"node {self.id} failed: {exc}"))
        finally:
            self._snapshotting = None
        self._notify_waiters()
        self._wake.set()  # the ready loop starts the next one if the log grew meanwhile

    def _installed(self, received: Snapshot) -> None:
        """After a snapshot from the leader is stored and restored: the core keeps the
        stored copy (a view of its file) instead of the received bytes, and the heap the
        replaced state left free goes back to the system, as after a snapshot of our own."""
        stored = self._storage.stored_snapshot
        if stored is not None and stored.meta == received.meta:
            self.core.compact(stored)  # nothing left to drop: it only swaps the copy
        if self._heap_release is None or self._heap_release.done():
            self._heap_release = asyncio.ensure_future(asyncio.to_thread(release_free_heap))

    def _fail_all(self, exc: BaseException) -> None:
        for _, p in self._inflight.values():
            if not p.future.done():
                p.future.set_exception(exc)
        self._inflight.clear()
        for p in self._queue:
            if not p.future.done():
                p.future.set_exception(exc)
        self._queue.clear()
        for fut in self._reads.values():
            if not fut.done():
                fut.set_exception(exc)
        self._reads.clear()
