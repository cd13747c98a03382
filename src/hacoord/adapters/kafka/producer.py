"""HAProducer: at-least-once sends to an HA group, moving to another cluster on failure.

Every message carries a :data:`MESSAGE_ID_HEADER` so consumers can drop duplicates. A send
returns only after a cluster acknowledged it with ``acks=all``. When the cluster it tried
fails or does not answer within :attr:`ProducerOptions.attempt_timeout_s`, the send goes to
the next writable cluster of the topology (multi-primary mode), or waits for the control
plane to publish a new primary (primary mode), until
:attr:`ProducerOptions.delivery_timeout_s`; then :class:`NoClusterAvailableError` says what
each cluster answered. A send that timed out on one cluster may still land there later:
that is the duplicate the id header is for.

A message aiokafka refuses before sending (larger than ``max_request_size``) raises
:class:`MessageTooLargeError` at once instead of trying the other clusters.

The number of sends in flight is bounded (:attr:`ProducerOptions.max_pending`): a full buffer
makes ``send`` wait, and :class:`BufferFullError` ends a wait longer than
:attr:`ProducerOptions.buffer_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from hacoord.adapters.kafka import topics
from hacoord.adapters.kafka.clients import stop_quietly
from hacoord.adapters.kafka.config import ClusterConfig, GroupConfig
from hacoord.adapters.kafka.errors import (
    BufferFullError,
    ClusterUnreachableError,
    ConfigError,
    MessageTooLargeError,
    NoClusterAvailableError,
    ProducerClosedError,
)
from hacoord.adapters.kafka.topology import StaticTopology, Topology, TopologySource

MESSAGE_ID_HEADER = "hacoord-id"
"""The header carrying each message's id (bytes), the same on every cluster it lands on."""

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class ProducerOptions:
    """Timeouts, buffer bound and back-off of an :class:`HAProducer`."""

    attempt_timeout_s: float = 5.0
    """How long one cluster may take to acknowledge before the send moves on."""
    delivery_timeout_s: float = 30.0
    """How long one send may take in all, over every cluster and topology change."""
    max_pending: int = 10_000
    """Sends in flight at once; more wait (back-pressure)."""
    buffer_timeout_s: float = 10.0
    """How long a send waits for room in the buffer before :class:`BufferFullError`."""
    backoff_s: float = 0.5
    """A cluster that failed is skipped this long, doubling per failure in a row ..."""
    max_backoff_s: float = 8.0
    """... up to this."""
    linger_ms: int = 0
    """aiokafka's batching delay."""
    max_batch_size: int = 65_536
    """aiokafka's batch size in bytes."""
    client_options: dict[str, Any] = field(default_factory=dict)
    """More keyword arguments for every ``AIOKafkaProducer`` (``security_protocol``, ...)."""

    def __post_init__(self) -> None:
        for name in ("attempt_timeout_s", "delivery_timeout_s", "buffer_timeout_s", "backoff_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"producer: {name} must be > 0, got {getattr(self, name)}")
        if self.max_pending < 1:
            raise ConfigError(f"producer: max_pending must be >= 1, got {self.max_pending}")
        if self.max_backoff_s < self.backoff_s:
            raise ConfigError("producer: max_backoff_s must be >= backoff_s")
        reserved = {"bootstrap_servers", "acks", "request_timeout_ms", "client_id"}
        if bad := reserved & set(self.client_options):
            raise ConfigError(f"producer: client_options may not set {sorted(bad)}")


class SendResult(NamedTuple):
    """Where a message was acknowledged (a named tuple: it is made once per message)."""

    topic: str
    """The logical topic."""
    cluster: str
    partition: int
    offset: int
    message_id: bytes
    attempts: int
    """Clusters tried (1: the first one took it)."""


def _new_result(fields: tuple[str, str, int, int, bytes, int]) -> SendResult:
    """A :class:`SendResult` of ``fields`` in order, made without the named tuple's own
    ``__new__`` (a Python function: it costs twice as much, once per message)."""
    return tuple.__new__(SendResult, fields)


@dataclass(slots=True)
class ClusterStats:
    """What one cluster did for the producer."""

    acked: int = 0
    failed: int = 0
    last_error: str = ""
    skipped_until: float = 0.0


class _Link:
    """One cluster's aiokafka producer, started on first use and again after a failure."""

    def __init__(self, cluster: ClusterConfig, client_id: str, options: ProducerOptions) -> None:
        self.cluster = cluster
        self.client_id = client_id
        self.options = options
        self.producer: AIOKafkaProducer | None = None
        self.stats = ClusterStats()
        self.failures_in_row = 0
        self._starting: asyncio.Lock = asyncio.Lock()
        self.in_flight: dict[asyncio.Future[Any], float] = {}
        """aiokafka's future of every send awaited on this cluster, with its deadline."""
        self.generation = 0
        """Counts the times this cluster stopped being writable (see :meth:`abandon`)."""

    @property
    def skipping(self) -> bool:
        return time.monotonic() < self.stats.skipped_until

    async def ready(self) -> AIOKafkaProducer:
        if self.producer is not None:
            return self.producer
        async with self._starting:
            if self.producer is not None:
                return self.producer
            producer = AIOKafkaProducer(
                bootstrap_servers=self.cluster.bootstrap_servers,
                acks="all",
                request_timeout_ms=int(self.options.attempt_timeout_s * 1000),
                client_id=self.client_id,
                linger_ms=self.options.linger_ms,
                max_batch_size=self.options.max_batch_size,
                **self.options.client_options,
            )
            try:
                async with asyncio.timeout(self.options.attempt_timeout_s):
                    await producer.start()
            except BaseException as e:
                await stop_quietly(producer, self.options.attempt_timeout_s)
                if isinstance(e, Exception):
                    raise ClusterUnreachableError(
                        self.cluster.name, f"cannot connect: {e!r}"
                    ) from e
                raise
            self.producer = producer
            return producer

    def succeeded(self) -> None:
        self.stats.acked += 1
        self.failures_in_row = 0

    def failed(self, error: str) -> None:
        self.stats.failed += 1
        self.stats.last_error = error
        self.failures_in_row += 1
        backoff = min(
            self.options.max_backoff_s, self.options.backoff_s * 2 ** (self.failures_in_row - 1)
        )
        self.stats.skipped_until = time.monotonic() + backoff

    def abandon(self) -> None:
        """End every wait on this cluster: the topology no longer lists it as writable.

        aiokafka skips a message future that is already done, so failing it here ends our
        wait without touching aiokafka's own bookkeeping (the message may still land: a
        duplicate).
        """
        self.generation += 1
        for future in list(self.in_flight):
            if not future.done():
                future.set_exception(_Abandoned())

    def expire(self, now: float) -> None:
        """Fail the waits whose deadline has passed."""
        for future, deadline in list(self.in_flight.items()):
            if deadline <= now and not future.done():
                future.set_exception(TimeoutError())

    async def close(self) -> None:
        self.abandon()
        if self.producer is not None:
            producer, self.producer = self.producer, None
            await stop_quietly(producer, self.options.attempt_timeout_s)


class HAProducer:
    """Sends to an HA group's clusters, following its topology; see the module docstring.

    ``async with HAProducer(config, topology) as producer: await producer.send(...)``.
    Without a ``topology`` the producer writes to the group's clusters as configured
    (every cluster writable; in primary mode only the configured primary).
    """

    def __init__(
        self,
        config: GroupConfig,
        topology: TopologySource | None = None,
        options: ProducerOptions | None = None,
        client_id: str = "hacoord-producer",
    ) -> None:
        self.config = config
        self.topology = topology or StaticTopology(Topology.initial(config))
        self.options = options or ProducerOptions()
        self.client_id = client_id
        self._links: dict[str, _Link] = {}
        self._started = False
        self._in_flight = 0
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._rotation = itertools.count()
        self._ids = itertools.count()
        self._id_prefix = f"{uuid.uuid4().hex[:16]}-".encode()
        self._follow: asyncio.Task[None] | None = None
        self._sweep: asyncio.Task[None] | None = None
        self._writable: tuple[Topology | None, list[_Link]] = (None, [])
        self._closed = False
        self.buffer_full = 0
        """Sends refused because the buffer stayed full."""
        self.moved = 0
        """Sends acknowledged by another cluster than the first one tried."""

    async def start(self, check_topics: bool = True) -> None:
        """Prepare a link per cluster and follow the topology (connections open lazily).

        With ``check_topics``, every cluster that answers within ``attempt_timeout_s`` must
        hold every logical topic's physical topic (:class:`TopicMissingError` otherwise);
        clusters that do not answer are not waited for.
        """
        if self.topology.current.group != self.config.name:
            raise ConfigError(
                f"producer of group {self.config.name!r} given the topology of "
                f"{self.topology.current.group!r}"
            )
        if check_topics:
            await topics.check_topics(
                self.config, timeout=self.options.attempt_timeout_s, skip_unreachable=True
            )
        self._started = True
        self._links = {
            c.name: _Link(c, f"{self.client_id}-{c.name}", self.options)
            for c in self.config.clusters
        }
        self._follow = asyncio.create_task(self._follow_topology(), name="producer-topology")
        self._sweep = asyncio.create_task(self._expire_attempts(), name="producer-timeouts")

    async def close(self) -> None:
        """Stop every cluster's producer; later sends raise :class:`ProducerClosedError`."""
        self._closed = True
        for task in (self._follow, self._sweep):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(link.close() for link in self._links.values()))

    async def __aenter__(self) -> HAProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stats(self) -> dict[str, ClusterStats]:
        """Per cluster: messages acknowledged, attempts failed, the last error."""
        return {name: link.stats for name, link in self._links.items()}

    @property
    def in_flight(self) -> int:
        """Messages holding a slot of the bounded buffer (at most ``max_pending``)."""
        return self._in_flight

    def new_message_id(self) -> bytes:
        """A fresh id, unique across producers (a random prefix and a counter)."""
        return b"%s%d" % (self._id_prefix, next(self._ids))

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers = (),
        message_id: bytes | None = None,
    ) -> SendResult:
        """Send to the logical ``topic``; returns once a cluster acknowledged (``acks=all``).

        A message needs a ``key`` or a ``value`` (``ValueError`` otherwise).
        """
        if self._closed or not self._started:
            raise ProducerClosedError(f"producer of group {self.config.name} is not started")
        physical = self.config.topic(topic).physical
        if value is None and key is None:
            raise ValueError(f"topic {topic!r}: a message needs a key or a value, got neither")
        if self._in_flight < self.options.max_pending:
            self._in_flight += 1
        else:
            await self._wait_for_room()  # a slot is handed over
        try:
            mid = message_id or self.new_message_id()
            own = (MESSAGE_ID_HEADER, mid)
            all_headers = [*headers, own] if headers else [own]
            now = time.monotonic()
            deadline = now + self.options.delivery_timeout_s
            attempt_timeout = self.options.attempt_timeout_s
            errors: dict[str, str] = {}
            attempts = 0
            while True:
                topology = self.topology.current
                for link in self._candidates(topology, now):
                    if now >= deadline:
                        break
                    attempts += 1
                    # One attempt: aiokafka's own future is awaited. _expire_attempts fails it
                    # at its deadline and _Link.abandon when the cluster stops being writable,
                    # so no timer or extra task is made per message (this loop is the hot path
                    # of every send, hence inline).
                    in_flight = link.in_flight
                    future: asyncio.Future[Any] | None = None
                    try:
                        producer = link.producer or await link.ready()
                        generation = link.generation
                        # aiokafka bounds this wait (buffer room, metadata) by its request
                        # timeout, the attempt timeout.
                        future = await producer.send(physical, value, key=key, headers=all_headers)
                        if link.generation != generation:
                            future.add_done_callback(_retrieve)
                            future = None
                            raise _Abandoned
                        in_flight[future] = min(deadline, now + attempt_timeout)
                        metadata = await future
                    except _Abandoned:
                        errors[link.cluster.name] = "no longer writable in the topology"
                        break  # look at the new topology at once
                    except MessageSizeTooLargeError as e:
                        raise MessageTooLargeError(topic, str(e)) from e
                    except (KafkaError, ClusterUnreachableError, TimeoutError, OSError) as e:
                        error = _describe(e, attempt_timeout)
                        errors[link.cluster.name] = error
                        link.failed(error)
                        now = time.monotonic()
                        if self.topology.current is not topology:
                            break
                        continue
                    finally:
                        if future is not None:
                            in_flight.pop(future, None)
                    link.stats.acked += 1
                    link.failures_in_row = 0
                    if attempts > 1:
                        self.moved += 1
                    return _new_result(
                        (
                            topic,
                            link.cluster.name,
                            metadata.partition,
                            metadata.offset,
                            mid,
                            attempts,
                        )
                    )
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0:
                    raise NoClusterAvailableError(topic, errors or self._why_none(topology))
                await self.topology.newer_than(topology.version, min(remaining, self._next_retry()))
                now = time.monotonic()
        finally:
            self._release()

    async def send_many(
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        headers: Headers = (),
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Send a batch to the logical ``topic``; returns once every message is acknowledged.

        The same guarantees as :meth:`send` for each message (its own id, at least once,
        moved to another cluster on failure), at a fraction of the cost per message: the
        batch goes to one cluster in one go, and only the messages that cluster failed are
        sent again one by one. Returns the :class:`SendResult` of each message in order;
        with ``return_exceptions`` a message that could not be sent has its exception in
        its place instead of the first such exception being raised (after every message
        has an outcome).
        """
        if self._closed or not self._started:
            raise ProducerClosedError(f"producer of group {self.config.name} is not started")
        physical = self.config.topic(topic).physical
        count = len(values)
        keys = keys if keys is not None else [None] * count
        if len(keys) != count:
            raise ValueError(f"topic {topic!r}: {len(keys)} keys for {count} values")
        if any(v is None and k is None for v, k in zip(values, keys, strict=True)):
            raise ValueError(f"topic {topic!r}: a message needs a key or a value, got neither")
        if self._in_flight + count > self.options.max_pending:
            # No room for the whole batch now: one send per message, each waiting for its
            # own slot (a batch holding part of its slots while waiting could deadlock).
            sends = (self.send(topic, v, k, headers) for v, k in zip(values, keys, strict=True))
            outcomes = await asyncio.gather(*sends, return_exceptions=True)
        else:
            mids = [self.new_message_id() for _ in range(count)]
            self._in_flight += count
            try:
                outcomes, again = await self._send_batch(
                    topic, physical, values, keys, headers, mids
                )
            finally:
                for _ in range(count):
                    self._release()
            tried = again is not None
            again = list(range(count)) if again is None else again
            if again:
                await self._send_again(topic, values, keys, headers, mids, outcomes, again, tried)
        if not return_exceptions:
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        return outcomes

    async def _send_batch(
        self,
        topic: str,
        physical: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None],
        headers: Headers,
        mids: list[bytes],
    ) -> tuple[list[Any], list[int] | None]:
        """The batch to the first writable cluster: each message's outcome (``None`` for
        the ones to send again) and the indexes to send again (``None``: no cluster was
        tried, so every message goes again as a first attempt)."""
        count = len(values)
        outcomes: list[Any] = [None] * count
        now = time.monotonic()
        candidates = self._candidates(self.topology.current, now)
        if not candidates:
            return outcomes, None
        all_headers = [[*headers, (MESSAGE_ID_HEADER, mid)] for mid in mids]
        again = await self._batch_attempt(
            candidates[0], topic, physical, values, keys, all_headers, mids, outcomes,
            now + self.options.attempt_timeout_s,
        )  # fmt: skip
        return outcomes, again

    async def _send_again(
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None],
        headers: Headers,
        mids: list[bytes],
        outcomes: list[Any],
        again: list[int],
        tried: bool,
    ) -> None:
        """Send the messages at ``again`` one by one (each a :meth:`send` of its own, with
        its id and a slot of its own), filling in their outcomes; ``tried``: the batch
        attempt counts as each one's first."""
        retried = await asyncio.gather(
            *(self.send(topic, values[i], keys[i], headers, mids[i]) for i in again),
            return_exceptions=True,
        )
        for i, outcome in zip(again, retried, strict=True):
            if isinstance(outcome, SendResult) and tried:
                if outcome.attempts == 1:
                    self.moved += 1  # send counts a move only after its own first attempt
                outcome = outcome._replace(attempts=outcome.attempts + 1)
            outcomes[i] = outcome

    async def _batch_attempt(
        self,
        link: _Link,
        topic: str,
        physical: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None],
        headers: list[list[tuple[str, bytes]]],
        mids: list[bytes],
        outcomes: list[Any],
        deadline: float,
    ) -> list[int]:
        """Send every message to ``link``'s cluster; fills ``outcomes``, returns the indexes
        of the messages to send again (one by one, on any writable cluster)."""
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        again: list[int] = []
        error = ""
        try:
            producer = link.producer or await link.ready()
        except ClusterUnreachableError as e:
            link.failed(_describe(e, self.options.attempt_timeout_s))
            return list(range(len(values)))
        generation = link.generation
        in_flight = link.in_flight
        for i, (value, key) in enumerate(zip(values, keys, strict=True)):
            if error:
                again.append(i)
                continue
            try:
                future = await producer.send(physical, value, key=key, headers=headers[i])
            except MessageSizeTooLargeError as e:
                outcomes[i] = MessageTooLargeError(topic, str(e))
                continue
            except (KafkaError, TimeoutError, OSError) as e:
                error = _describe(e, self.options.attempt_timeout_s)
                again.append(i)
                continue
            in_flight[future] = deadline
            sent.append((i, future))
        if link.generation != generation:  # abandoned while the batch was being handed over
            for _, future in sent:
                if not future.done():
                    future.set_exception(_Abandoned())
        acked = 0
        try:
            for i, future in sent:
                try:
                    metadata = await future
                except _Abandoned:
                    again.append(i)
                    continue
                except (KafkaError, TimeoutError, OSError) as e:
                    error = error or _describe(e, self.options.attempt_timeout_s)
                    again.append(i)
                    continue
                acked += 1
                outcomes[i] = _new_result(
                    (topic, link.cluster.name, metadata.partition, metadata.offset, mids[i], 1)
                )
        finally:
            for _, future in sent:
                in_flight.pop(future, None)
        link.stats.acked += acked
        if error:
            link.failed(error)
        elif acked:
            link.failures_in_row = 0
        again.sort()
        return again

    async def _wait_for_room(self) -> None:
        """Until a finishing send hands over its slot; :class:`BufferFullError` after
        ``buffer_timeout_s``. Slots pass in the order the sends began waiting."""
        room = asyncio.get_running_loop().create_future()
        self._room_waiters.append(room)
        try:
            async with asyncio.timeout(self.options.buffer_timeout_s):
                await room
        except TimeoutError:
            if room.done() and not room.cancelled():
                return  # handed a slot just as the time ran out: use it
            self.buffer_full += 1
            raise BufferFullError(
                f"producer of group {self.config.name}: {self.options.max_pending} sends "
                f"in flight for {self.options.buffer_timeout_s:g} s"
            ) from None
        except BaseException:
            if room.done() and not room.cancelled():
                self._release()  # cancelled after it was handed a slot: pass it on
            else:
                room.cancel()
            raise

    def _release(self) -> None:
        """Hand this send's slot to the first send still waiting, or free it."""
        waiters = self._room_waiters
        while waiters:
            room = waiters.popleft()
            if not room.done():
                room.set_result(None)
                return
        self._in_flight -= 1

    def _candidates(self, topology: Topology, now: float) -> list[_Link]:
        """Writable clusters not backing off, rotated so sends spread over them."""
        cached, writable = self._writable
        if cached is not topology:
            writable = [self._links[n] for n in topology.writable() if n in self._links]
            self._writable = (topology, writable)
        if len(writable) == 1:  # primary mode: no list to make per send
            return writable if writable[0].stats.skipped_until <= now else []
        ready = [link for link in writable if link.stats.skipped_until <= now]
        if len(ready) > 1:
            shift = next(self._rotation) % len(ready)
            ready = ready[shift:] + ready[:shift]
        return ready

    def _next_retry(self) -> float:
        """Seconds until the first backing-off cluster may be tried again."""
        now = time.monotonic()
        waits = [link.stats.skipped_until - now for link in self._links.values() if link.skipping]
        return max(0.01, min(waits, default=self.options.backoff_s))

    def _why_none(self, topology: Topology) -> dict[str, str]:
        if not topology.writable():
            return {
                name: state.reason or ("not healthy" if not state.healthy else "drained")
                for name, state in topology.clusters.items()
            } or {"topology": f"v{topology.version} lists no writable cluster"}
        return {n: self._links[n].stats.last_error or "backing off" for n in topology.writable()}

    async def _expire_attempts(self) -> None:
        """Fail the attempts past their deadline, a few times per attempt timeout."""
        period = min(0.1, self.options.attempt_timeout_s / 10)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for link in self._links.values():
                if link.in_flight:
                    link.expire(now)

    async def _follow_topology(self) -> None:
        """Abandon the waits on clusters that a new topology no longer lists as writable."""
        version = self.topology.current.version
        writable = set(self.topology.current.writable())
        while True:
            if not await self.topology.newer_than(version, 3600.0):
                continue
            topology = self.topology.current
            version = topology.version
            now_writable = set(topology.writable())
            for name in writable - now_writable:
                if name in self._links:
                    self._links[name].abandon()
            for name in now_writable - writable:
                if name in self._links:  # a readmitted cluster is tried at once
                    self._links[name].stats.skipped_until = 0.0
                    self._links[name].failures_in_row = 0
            writable = now_writable


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _Abandoned(Exception):
    """The cluster of an attempt stopped being writable while the attempt waited."""


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"no acknowledgement within {timeout:g} s"
    if isinstance(error, ClusterUnreachableError):
        return str(error).split(": ", 1)[-1]
    return repr(error)
