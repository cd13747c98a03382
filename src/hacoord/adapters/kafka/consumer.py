"""HAConsumer: reads the union of an HA group's clusters; a dead or hung one never stalls the rest.

One aiokafka consumer per cluster, in the same consumer group name in each cluster, each in
its own background task that delivers into one bounded queue. A cluster that cannot be
reached (down, hung, not yet back) is retried forever with back-off in its own task, so a
start or restart skips it and picks it up when it returns; the live clusters keep
delivering. Offsets are committed per cluster (:meth:`HAConsumer.commit` commits what the
caller has taken). A commit runs in its reader's background and holds the caller at most
:attr:`ConsumerOptions.commit_timeout_s`; one that outlives that marks its cluster slow, and
until that commit answers, the next calls do not wait for that cluster at all. Offsets that
could not be committed (a dead, hung or slow cluster) are kept and committed when it answers
again, so a dead cluster holds up neither delivery nor the caller's commit loop.

Delivery is at least once. With :attr:`ConsumerOptions.dedup_window` > 0, a message whose
:data:`~hacoord.adapters.kafka.producer.MESSAGE_ID_HEADER` was among the last that many ids
delivered is dropped (counted in :attr:`HAConsumer.duplicates`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from hacoord.adapters.kafka.clients import stop_quietly
from hacoord.adapters.kafka.config import ClusterConfig, GroupConfig
from hacoord.adapters.kafka.errors import ConfigError
from hacoord.adapters.kafka.producer import MESSAGE_ID_HEADER

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """Polling, buffering, retry and duplicate-drop settings of an :class:`HAConsumer`."""

    poll_interval_ms: int = 200
    """Longest wait of one fetch from one cluster."""
    max_records: int = 500
    """Most records one fetch hands over."""
    buffer_batches: int = 64
    """Fetched batches waiting for the caller, over all clusters; more wait (back-pressure)."""
    request_timeout_s: float = 10.0
    """Timeout of one request to a cluster (start, commit, stop)."""
    commit_timeout_s: float = 0.05
    """Longest :meth:`HAConsumer.commit` waits for one cluster's commit (a healthy cluster
    answers in a few ms); a slower one goes on in the background, bounded by
    ``request_timeout_s``, and that cluster's offsets stay taken for the next call."""
    retry_backoff_s: float = 0.5
    """Back-off before connecting to a failed cluster again, doubling ..."""
    max_retry_backoff_s: float = 5.0
    """... up to this."""
    dedup_window: int = 100_000
    """How many recent message ids are remembered to drop duplicates (0: keep every copy)."""
    auto_offset_reset: str = "earliest"
    """Where a consumer group new to a cluster starts: ``earliest`` or ``latest``."""
    session_timeout_ms: int = 10_000
    client_options: dict[str, Any] = field(default_factory=dict)
    """More keyword arguments for every ``AIOKafkaConsumer``."""

    def __post_init__(self) -> None:
        if self.poll_interval_ms < 1:
            raise ConfigError(
                f"consumer: poll_interval_ms must be >= 1, got {self.poll_interval_ms}"
            )
        for name in ("max_records", "buffer_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"consumer: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("request_timeout_s", "commit_timeout_s", "retry_backoff_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"consumer: {name} must be > 0, got {getattr(self, name)}")
        if self.dedup_window < 0:
            raise ConfigError(f"consumer: dedup_window must be >= 0, got {self.dedup_window}")
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ConfigError(
                f"consumer: auto_offset_reset must be 'earliest' or 'latest', "
                f"got {self.auto_offset_reset!r}"
            )
        reserved = {"bootstrap_servers", "group_id", "enable_auto_commit", "client_id"}
        if bad := reserved & set(self.client_options):
            raise ConfigError(f"consumer: client_options may not set {sorted(bad)}")


@dataclass(frozen=True, slots=True)
class HARecord:
    """One message as read from one cluster."""

    cluster: str
    topic: str
    """The logical topic."""
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    message_id: bytes | None
    """The producer's id (``None`` for a message sent without :class:`HAProducer`)."""
    timestamp_ms: int


class ReaderState(StrEnum):
    """Where one cluster's reader is."""

    CONNECTING = "connecting"
    READING = "reading"
    FAILED = "failed"
    """Its last attempt failed; it tries again after a back-off."""


@dataclass(slots=True)
class ReaderStats:
    """What one cluster's reader has done."""

    state: ReaderState = ReaderState.CONNECTING
    delivered: int = 0
    failures: int = 0
    last_error: str = ""
    last_fetch_at: float = 0.0
    """``time.monotonic()`` of its last fetch that answered (with or without records)."""
    committed: int = 0
    commit_failures: int = 0
    commit_slow: bool = False
    """Its last commit outlived ``commit_timeout_s`` and has not answered yet, or timed out:
    commits do not wait for this cluster until one answers."""


class _Reader:
    """Reads one cluster into the shared queue, reconnecting forever."""

    def __init__(
        self,
        owner: HAConsumer,
        cluster: ClusterConfig,
        topics: list[str],
        queue: asyncio.Queue[list[HARecord]],
    ) -> None:
        self.owner = owner
        self.cluster = cluster
        self.topics = topics
        self.queue = queue
        self.options = owner.options
        self.stats = ReaderStats()
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None
        self.commit_task: asyncio.Task[bool] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"consumer-{self.cluster.name}")

    async def close(self) -> None:
        for task in (self.commit_task, self.task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._drop_consumer()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._connect()
                failures = 0
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                self.stats.failures += 1
                self.stats.state = ReaderState.FAILED
                self.stats.last_error = repr(e)
                log.info("%s: reader failed (%r); trying again", self.cluster.name, e)
                await self._drop_consumer()
                backoff = min(
                    self.options.max_retry_backoff_s,
                    self.options.retry_backoff_s * 2 ** (failures - 1),
                )
                await asyncio.sleep(backoff)

    async def _connect(self) -> None:
        self.stats.state = ReaderState.CONNECTING
        options = self.options
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.cluster.bootstrap_servers,
            group_id=self.owner.group_id,
            client_id=f"{self.owner.client_id}-{self.cluster.name}",
            enable_auto_commit=False,
            auto_offset_reset=options.auto_offset_reset,
            request_timeout_ms=int(options.request_timeout_s * 1000),
            session_timeout_ms=options.session_timeout_ms,
            heartbeat_interval_ms=max(100, options.session_timeout_ms // 3),
            fetch_max_wait_ms=options.poll_interval_ms,
            **options.client_options,
        )
        try:
            async with asyncio.timeout(options.request_timeout_s):
                await consumer.start()
        except BaseException:
            await stop_quietly(consumer, options.request_timeout_s)
            raise
        self.consumer = consumer
        self.stats.state = ReaderState.READING

    async def _read(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        name = self.cluster.name
        logical = self.owner.logical
        # getmany's own timeout bounds a fetch from a live broker; the outer one catches a
        # consumer stuck on a hung coordinator or metadata request.
        poll_ms = self.options.poll_interval_ms
        bound = poll_ms / 1000 + self.options.request_timeout_s
        while True:
            async with asyncio.timeout(bound):
                batches = await consumer.getmany(
                    timeout_ms=poll_ms, max_records=self.options.max_records
                )
            self.stats.last_fetch_at = time.monotonic()
            for tp, records in batches.items():
                if records:
                    batch = [_record(name, logical[tp.topic], r) for r in records]
                    await self.queue.put(batch)

    async def commit(self, offsets: dict[TopicPartition, int], wait_s: float) -> bool:
        """Commit ``offsets`` in the background, waiting up to ``wait_s`` for the answer.

        False at once while an earlier commit is still running, and without waiting while
        this cluster is slow; the caller keeps the offsets for its next call either way.
        """
        consumer = self.consumer
        if consumer is None or self.stats.state is not ReaderState.READING:
            return False
        if self.commit_task is not None and not self.commit_task.done():
            return False
        task = asyncio.create_task(
            self._commit(consumer, offsets), name=f"commit-{self.cluster.name}"
        )
        self.commit_task = task
        if self.stats.commit_slow:
            return False
        done, _ = await asyncio.wait({task}, timeout=wait_s)
        if task in done:
            return task.result()
        self.stats.commit_slow = True
        return False

    async def wait_for_commit(self) -> None:
        """Until the commit running in the background (if one is) has answered."""
        if self.commit_task is not None:
            await asyncio.wait({self.commit_task})

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
        name = self.cluster.name
        try:
            async with asyncio.timeout(self.options.request_timeout_s):
                await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as e:
            # A rebalance moved these partitions: their next owner reads from the last
            # committed offset (at least once), so ours are dropped.
            self.stats.commit_failures += 1
            self.stats.commit_slow = False
            log.info("%s: commit refused after a rebalance (%r); offsets dropped", name, e)
        except (KafkaError, TimeoutError, OSError) as e:
            self.stats.commit_failures += 1
            self.stats.last_error = f"commit: {e!r}"
            # A cluster that answered with an error is not slow; one that never answered is.
            self.stats.commit_slow = isinstance(e, TimeoutError)
            return False
        else:
            self.stats.committed += 1
            self.stats.commit_slow = False
        self.owner._forget_committed(name, offsets)
        return True

    async def _drop_consumer(self) -> None:
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            await stop_quietly(consumer, self.options.request_timeout_s)


def _record(cluster: str, topic: str, r: ConsumerRecord[bytes, bytes]) -> HARecord:
    headers = tuple(r.headers or ())
    mid = next((v for k, v in headers if k == MESSAGE_ID_HEADER), None)
    return HARecord(
        cluster, topic, r.partition, r.offset, r.key, r.value, headers, mid, r.timestamp
    )


class HAConsumer:
    """Reads logical topics from every cluster of an HA group; see the module docstring.

    ``async with HAConsumer(config, "my-group") as consumer:`` then
    ``records = await consumer.getmany()`` and ``await consumer.commit()`` after
    processing them, or ``async for record in consumer``.
    """

    def __init__(
        self,
        config: GroupConfig,
        group_id: str,
        topics: Iterable[str] | None = None,
        options: ConsumerOptions | None = None,
        client_id: str = "hacoord-consumer",
    ) -> None:
        if not group_id:
            raise ConfigError("consumer: group_id must not be empty")
        self.config = config
        self.group_id = group_id
        self.client_id = client_id
        self.options = options or ConsumerOptions()
        names = list(topics) if topics is not None else [t.name for t in config.topics]
        if not names:
            raise ConfigError("consumer: no topics to read")
        self.topics = [config.topic(n) for n in names]
        self.logical = {t.physical: t.name for t in self.topics}
        self._queue: asyncio.Queue[list[HARecord]] = asyncio.Queue(self.options.buffer_batches)
        self._readers: dict[str, _Reader] = {}
        self._taken: dict[str, dict[TopicPartition, int]] = {}
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self.duplicates = 0
        """Messages dropped because their id was delivered before."""

    async def start(self) -> None:
        """Start a reader per cluster; returns at once (no cluster needs to be up)."""
        physical = [t.physical for t in self.topics]
        for cluster in self.config.clusters:
            reader = _Reader(self, cluster, physical, self._queue)
            self._readers[cluster.name] = reader
            self._taken[cluster.name] = {}
            reader.start()

    async def close(self, commit: bool = True) -> None:
        """Commit what was taken (unless ``commit=False``) and stop every reader.

        The last commit waits for each cluster up to ``request_timeout_s`` (after a commit
        still running there has answered), except for a cluster whose last commit timed
        out: its offsets are given up (delivered again: at least once).
        """
        if commit:
            await self._last_commit()
        await asyncio.gather(*(r.close() for r in self._readers.values()))

    async def _last_commit(self) -> None:
        async def last(name: str, reader: _Reader) -> None:
            await reader.wait_for_commit()
            if self._taken[name] and not reader.stats.commit_slow:
                await reader.commit(dict(self._taken[name]), self.options.request_timeout_s)
                await reader.wait_for_commit()

        await asyncio.gather(*(last(n, r) for n, r in self._readers.items()))

    async def __aenter__(self) -> HAConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stats(self) -> dict[str, ReaderStats]:
        """Per cluster: reader state, messages delivered, failures, last error."""
        return {name: r.stats for name, r in self._readers.items()}

    async def getmany(self, timeout: float = 1.0, max_records: int = 0) -> list[HARecord]:
        """Records from any cluster, waiting up to ``timeout`` seconds for the first batch.

        Returns what is buffered (up to ``max_records`` batches' worth if given), or ``[]``.
        """
        batches: list[list[HARecord]] = []
        try:
            async with asyncio.timeout(timeout):
                batches.append(await self._queue.get())
        except TimeoutError:
            return []
        while not self._queue.empty() and (
            max_records <= 0 or sum(map(len, batches)) < max_records
        ):
            batches.append(self._queue.get_nowait())
        out: list[HARecord] = []
        for batch in batches:
            for record in batch:
                if self._take(record):
                    out.append(record)
        return out

    async def __aiter__(self) -> AsyncIterator[HARecord]:
        while True:
            for record in await self.getmany(timeout=3600.0):
                yield record

    def _take(self, record: HARecord) -> bool:
        """Mark ``record`` as taken (its offset is committed next); whether it is new."""
        tp = TopicPartition(self.config.topic(record.topic).physical, record.partition)
        self._taken[record.cluster][tp] = record.offset + 1
        self._readers[record.cluster].stats.delivered += 1
        window = self.options.dedup_window
        if window == 0 or record.message_id is None:
            return True
        if record.message_id in self._seen:
            self._seen.move_to_end(record.message_id)
            self.duplicates += 1
            return False
        self._seen[record.message_id] = None
        if len(self._seen) > window:
            self._seen.popitem(last=False)
        return True

    async def commit(self) -> dict[str, bool]:
        """Commit, per cluster and at once, the offsets after every record taken.

        Returns which clusters committed. Waits at most ``commit_timeout_s`` for any of
        them, and not at all for a cluster still slow from an earlier commit; a cluster
        that did not commit keeps its offsets for the next call (and they are dropped from
        it as soon as a commit still running in the background answers).
        """
        names = [n for n, taken in self._taken.items() if taken]
        wait_s = self.options.commit_timeout_s
        results = await asyncio.gather(
            *(self._readers[n].commit(dict(self._taken[n]), wait_s) for n in names)
        )
        return dict(zip(names, results, strict=True))

    async def wait_for_commits(self) -> None:
        """Until every commit running in the background has answered (or timed out)."""
        await asyncio.gather(*(r.wait_for_commit() for r in self._readers.values()))

    def _forget_committed(self, cluster: str, offsets: dict[TopicPartition, int]) -> None:
        """Drop the committed ``offsets`` of ``cluster`` unless a later record moved them."""
        taken = self._taken[cluster]
        for tp, offset in offsets.items():
            if taken.get(tp) == offset:
                del taken[tp]
