"""Real Apache Kafka clusters (KRaft mode) on loopback, for tests, examples and benchmarks.

:class:`KafkaTestBed` runs N independent Kafka clusters, each of one node (``k1``, ``k2``,
...) or one cluster of three nodes. Every node (:class:`KafkaBroker`) is one JVM running
Kafka 4.4.0 (the jars come from Maven Central through :mod:`hacoord.adapters.kafka.jars`)
as broker *and* KRaft controller, with a broker listener and a controller listener on free
ports of 127.0.0.1, its own data directory and a log file (log4j2, INFO) under
``base_dir/<cluster>/node<id>/``; nothing is printed on the test's stdout.

Storage is formatted with Kafka's own ``kafka.tools.StorageTool`` (``format --standalone``
for a one-node cluster, ``format --initial-controllers ...`` on every node of a three-node
cluster: a KIP-853 dynamic controller quorum of the three nodes). A one-node cluster runs
with replication factor 1 everywhere (``min.insync.replicas=1``), a three-node cluster with
replication factor 3 and ``min.insync.replicas=2`` (topics, consumer offsets, transaction
state). Other choices, all overridable with ``extra_properties``:

* ``auto.create.topics.enable=false``: a topic exists only once somebody created it, as on a
  production cluster (a producer sending to a missing topic gets an error, not a new topic);
* ``group.initial.rebalance.delay.ms=0`` and four partitions for the offsets and transaction
  topics, so the first consumer group is served at once;
* ``broker.heartbeat.interval.ms=500`` and ``broker.session.timeout.ms=3000``: the controller
  fences a dead (killed, paused) node after 3 s instead of 9 s, which moves partition
  leadership and shrinks the ISR of a three-node cluster that quickly;
* few threads, a 4 MB log cleaner buffer, 16 MB segments; the JVM gets ``-Xmx384m``, the
  serial collector and the C1 compiler only: with ``-XX:TieredStopAtLevel=1`` three
  clusters are ready in 5.5 s instead of 8.5 s here, and C1 code is fast enough for tests.
  (A dynamic AppCDS archive of Kafka's classes would save another second, but it is tied to
  the exact JVM and only written by a clean JVM exit, so the bed does without.)

:meth:`KafkaBroker.kill` (SIGKILL), :meth:`KafkaBroker.pause` (SIGSTOP),
:meth:`KafkaBroker.resume` (SIGCONT) and :meth:`KafkaBroker.restart` (same ports, same data)
make the failures. Processes get a parent-death signal (see
:func:`hacoord.testing.processes.parent_death_prefix`), so they die with the Python process;
start them from a thread that lives as long as the bed (an event loop thread does). The
processes are asyncio subprocesses of the loop that started them: use one event loop for a
bed's whole life.

Measured on a 2-core machine (Java 17, 3 runs each): three one-node clusters, started in
parallel, are ready (every node answers metadata, a topic was created and deleted again)
in 4.9-5.4 s, formatting included; one three-node cluster in 5.4-6.3 s. With two busy loops
taking both cores, three one-node clusters take 6.8-9.5 s. A SIGKILLed node restarts in
4.5-5.5 s, most of it waiting out its old session: the controller answers
``DUPLICATE_BROKER_REGISTRATION`` until ``broker.session.timeout.ms`` has passed since the
old incarnation's last heartbeat. Each node's RSS is 165-180 MB once ready.

Run ``python -m hacoord.adapters.kafka.testbed --dir DIR`` to keep clusters running from the
command line; it prints one JSON line describing them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from hacoord.adapters.kafka.jars import KafkaJarsError, ensure_jars, find_java
from hacoord.testing.processes import (
    file_size,
    free_ports,
    parent_death_prefix,
    read_tail,
    wait_until_stopped,
)

__all__ = [
    "JVM_OPTIONS",
    "JvmSettings",
    "KafkaBroker",
    "KafkaCluster",
    "KafkaStartError",
    "KafkaTestBed",
    "KafkaUnavailableError",
    "resolve_jvm",
]

_HOST = "127.0.0.1"
_START_TIMEOUT = 60.0
_FORMAT_TIMEOUT = 60.0
_POLL_INTERVAL = 0.1
_PROBE_TIMEOUT = 2.0
_PORT_RETRIES = 3
_BIND_FAILURE_MARKERS = ("Address already in use", "BindException")
_READY_TOPIC = "__hacoord_testbed_ready"
_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC_OR_PARTITION = 3

JVM_OPTIONS = (
    "-Xmx384m",
    "-Xms128m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
"""JVM options of every broker and of the storage tool (a small heap, a fast start)."""

_LOG4J2 = """\
status = warn
name = hacoord-kafka
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class KafkaUnavailableError(RuntimeError):
    """Java or Maven is missing, or the Kafka jars cannot be fetched (see ``jars``)."""


class KafkaStartError(RuntimeError):
    """A Kafka process failed to start or the cluster is not ready; the message has log tails."""


@dataclass(frozen=True)
class JvmSettings:
    """How to run Kafka's classes: the ``java`` binary, the jar directory and JVM options."""

    java: str
    lib: Path
    options: tuple[str, ...] = JVM_OPTIONS

    def command(self, main_class: str, *args: str, log4j2: Path | None = None) -> list[str]:
        """The command line running ``main_class`` with ``args`` on Kafka's class path."""
        system = [f"-Dlog4j2.configurationFile={log4j2}"] if log4j2 is not None else []
        return [
            self.java,
            *self.options,
            *system,
            "-cp",
            str(self.lib / "*"),
            main_class,
            *args,
        ]


def resolve_jvm() -> JvmSettings:
    """Find ``java`` and fetch the jars if needed; :class:`KafkaUnavailableError` if impossible."""
    try:
        lib = ensure_jars()
        java = find_java()
    except KafkaJarsError as e:
        raise KafkaUnavailableError(str(e)) from e
    return JvmSettings(java=java, lib=lib)


def _kafka_uuid() -> str:
    """A random Kafka ``Uuid`` as Kafka prints it (URL-safe base64 without padding)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka avoids these too: they look like options
            return text


async def _all(coroutines: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run ``coroutines`` concurrently; on the first failure cancel the rest and raise it."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as failed:
        first = failed.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def _process_alive(proc: asyncio.subprocess.Process | None) -> bool:
    return proc is not None and proc.returncode is None


class KafkaBroker:
    """One Kafka node of a :class:`KafkaCluster`: a JVM that is broker and KRaft controller.

    The cluster creates its nodes, assigns their ports and formats their storage; a node's
    ports and data directory stay the same across :meth:`kill` and :meth:`restart`.
    """

    def __init__(self, cluster: str, node_id: int, directory: Path) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.dir = directory
        self.broker_port = 0
        self.controller_port = 0
        self.directory_id = _kafka_uuid()
        self._jvm: JvmSettings | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._paused = False

    def __repr__(self) -> str:
        return (
            f"KafkaBroker({self.cluster!r}, node {self.node_id}, {self.bootstrap}, "
            f"{'running' if self.running else 'stopped'}{', paused' if self._paused else ''})"
        )

    # ------------------------------------------------------------------ paths

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:<broker port>``: where clients reach this node."""
        return f"{_HOST}:{self.broker_port}"

    @property
    def controller_endpoint(self) -> str:
        """``127.0.0.1:<controller port>``: the node's KRaft controller listener."""
        return f"{_HOST}:{self.controller_port}"

    @property
    def data_dir(self) -> Path:
        """The log directory (``log.dirs``), metadata log included."""
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        """The broker's log4j2 log (appended to across restarts)."""
        return self.dir / "server.log"

    @property
    def console_file(self) -> Path:
        """The JVM's stdout and stderr (normally empty; JVM crashes end up here)."""
        return self.dir / "console.log"

    @property
    def properties_file(self) -> Path:
        """The broker's ``server.properties``."""
        return self.dir / "server.properties"

    @property
    def log4j2_file(self) -> Path:
        """The broker's log4j2 configuration."""
        return self.dir / "log4j2.properties"

    # ------------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        """Whether the process is alive (a paused process is alive)."""
        return _process_alive(self._proc)

    @property
    def paused(self) -> bool:
        """Whether the process is stopped with SIGSTOP (see :meth:`pause`)."""
        return self._paused and self.running

    @property
    def pid(self) -> int | None:
        """The JVM's pid while it runs, else ``None``."""
        return self._proc.pid if self._proc is not None and self.running else None

    # -------------------------------------------------------------- lifecycle

    async def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Launch the process on the formatted storage and wait until the broker is ready.

        Ready means it answers a metadata request that lists itself: it has registered with
        the controller quorum and is unfenced (in a three-node cluster that needs a quorum of
        controllers). Raises :class:`KafkaStartError` with the log tail if the process exits or
        is not ready within ``timeout`` seconds.
        """
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        offset = file_size(self.log_file)
        await self._launch()
        try:
            await self.wait_ready(timeout, log_offset=offset)
        except BaseException:
            await self.kill()
            raise

    async def restart(self, timeout: float = _START_TIMEOUT) -> None:
        """Start the node again on its data directory and ports (SIGKILL it first if running).

        Waits until it is ready, like :meth:`start`.
        """
        if self.running:
            await self.kill()
        await self.start(timeout)

    async def kill(self) -> None:
        """SIGKILL the process (a crash: no controlled shutdown) and wait until it is gone.

        Works on a paused process too; does nothing if it is not running.
        """
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP the process: it keeps its sockets but answers nothing until :meth:`resume`.

        Returns once every thread of it has stopped (see
        :func:`~hacoord.testing.processes.wait_until_stopped`): a request sent after this
        call gets no answer. The kernel still accepts TCP connections on its ports; requests
        time out.
        """
        pid = self._signal(signal.SIGSTOP)
        self._paused = True
        wait_until_stopped(pid)

    def resume(self) -> None:
        """SIGCONT a paused process."""
        self._signal(signal.SIGCONT)
        self._paused = False

    async def wait_ready(self, timeout: float = _START_TIMEOUT, *, log_offset: int = 0) -> None:
        """Wait until this node answers metadata listing itself (registered and unfenced).

        Raises :class:`KafkaStartError` (with the log from byte ``log_offset`` on) if the
        process is not running or exits meanwhile, or after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            self._check_alive(log_offset)
            answer = await self._probe()
            if answer is None:
                return
            last = answer
            if time.monotonic() > deadline:
                raise KafkaStartError(
                    f"{self._name()} not ready after {timeout:.0f}s (last: {last})\n"
                    + self.log_tail(log_offset)
                )
            await asyncio.sleep(_POLL_INTERVAL)

    def log_tail(self, offset: int = 0, lines: int = 40) -> str:
        """The end of the node's log (and of the JVM's console output, if any), for errors."""
        parts = [f"--- {self.log_file} (tail):\n" + read_tail(self.log_file, offset, lines)]
        console = read_tail(self.console_file, 0, 20)
        if console.strip():
            parts.append(f"--- {self.console_file} (tail):\n{console}")
        return "\n".join(parts)

    # -------------------------------------------------------------- internals

    def _name(self) -> str:
        return f"Kafka node {self.node_id} of {self.cluster} ({self.bootstrap})"

    def _signal(self, signum: signal.Signals) -> int:
        """Send ``signum`` to the running process; returns its pid."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            raise RuntimeError(f"{self!r} is not running")
        proc.send_signal(signum)
        return proc.pid

    def _check_alive(self, log_offset: int) -> None:
        proc = self._proc
        if proc is None:
            raise KafkaStartError(f"{self._name()} was never started")
        if proc.returncode is not None:
            raise KafkaStartError(
                f"{self._name()} exited with code {proc.returncode}\n" + self.log_tail(log_offset)
            )

    def _configure(self, jvm: JvmSettings, properties: Mapping[str, str]) -> None:
        """Write ``server.properties`` and the log4j2 configuration (the cluster calls this)."""
        self._jvm = jvm
        self.dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(
            "".join(f"{key}={value}\n" for key, value in properties.items())
        )
        self.log4j2_file.write_text(_LOG4J2.format(log=self.log_file))

    async def _format(self, cluster_id: str, initial_controllers: str | None) -> None:
        """Wipe the data directory and format it with Kafka's StorageTool."""
        assert self._jvm is not None
        if self.data_dir.exists():
            await asyncio.to_thread(shutil.rmtree, self.data_dir)
        args = ["format", "-t", cluster_id, "-c", str(self.properties_file)]
        if initial_controllers is None:
            args.append("--standalone")
        else:
            args += ["--initial-controllers", initial_controllers]
        log = self.dir / "format.log"
        command = self._jvm.command("kafka.tools.StorageTool", *args, log4j2=self.log4j2_file)
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *parent_death_prefix(),
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            async with asyncio.timeout(_FORMAT_TIMEOUT):
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if code != 0:
            raise KafkaStartError(
                f"formatting the storage of {self._name()} failed with exit code {code}:\n"
                + read_tail(log)
            )

    async def _launch(self) -> None:
        if self._jvm is None:
            raise RuntimeError(f"{self!r} is not configured (start it through its cluster)")
        command = self._jvm.command(
            "kafka.Kafka", str(self.properties_file), log4j2=self.log4j2_file
        )
        self._paused = False
        with self.console_file.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *parent_death_prefix(),
                *command,
                cwd=self.dir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )

    async def _probe(self) -> str | None:
        """``None`` if the node answers metadata listing itself, else what went wrong."""
        # A plain TCP connect first: aiokafka logs an error for every refused bootstrap.
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT):
                _, writer = await asyncio.open_connection(_HOST, self.broker_port)
        except (OSError, TimeoutError) as e:
            return f"connect: {e!r}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        client = AIOKafkaClient(
            bootstrap_servers=self.bootstrap,
            request_timeout_ms=int(_PROBE_TIMEOUT * 1000),
            client_id="hacoord-testbed-probe",
        )
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT * 2):
                await client.bootstrap()
            if client.cluster.broker_metadata(self.node_id) is None:
                return "its metadata does not list it yet (not registered or still fenced)"
            return None
        except (KafkaError, OSError, TimeoutError) as e:
            return f"metadata: {e!r}"
        finally:
            await client.close()


class KafkaCluster:
    """One Kafka cluster of 1 or 3 nodes, each broker and KRaft controller.

    Use ``async with KafkaCluster("k1", path) as cluster:`` or :meth:`start` and :meth:`stop`.
    A one-node cluster has replication factor 1; a three-node cluster replication factor 3
    and ``min.insync.replicas=2``. ``extra_properties`` are added to (or override) every
    node's ``server.properties``. ``jvm`` (see :func:`resolve_jvm`) is found on start if not
    given.
    """

    def __init__(
        self,
        name: str,
        base_dir: Path,
        *,
        brokers: int = 1,
        extra_properties: Mapping[str, str] | None = None,
        jvm: JvmSettings | None = None,
    ) -> None:
        if brokers not in (1, 3):
            raise ValueError(f"a test bed cluster has 1 or 3 nodes, not {brokers}")
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"unusable cluster name {name!r} (it names a directory)")
        self.name = name
        self.dir = Path(base_dir).absolute() / name
        self.replication_factor = 3 if brokers == 3 else 1
        self.min_insync_replicas = 2 if brokers == 3 else 1
        self.extra_properties = dict(extra_properties or {})
        self.cluster_id = _kafka_uuid()
        self.brokers = [KafkaBroker(name, i, self.dir / f"node{i}") for i in range(1, brokers + 1)]
        self._jvm = jvm
        self._started = False

    def __repr__(self) -> str:
        return f"KafkaCluster({self.name!r}, {len(self.brokers)} node(s), {self.bootstrap})"

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma-separated (for ``bootstrap_servers``)."""
        return ",".join(self.bootstrap_servers)

    @property
    def bootstrap_servers(self) -> list[str]:
        """Every node's ``host:port``."""
        return [broker.bootstrap for broker in self.brokers]

    def broker(self, node_id: int) -> KafkaBroker:
        """The node with ``node_id`` (1, 2, 3)."""
        for broker in self.brokers:
            if broker.node_id == node_id:
                return broker
        raise KeyError(f"{self.name} has no node {node_id}")

    # -------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> KafkaCluster:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Format fresh storage on every node, start them all, and :meth:`wait_ready`.

        Raises :class:`KafkaUnavailableError` if Java or the jars are missing,
        :class:`KafkaStartError` if a node fails or the cluster is not ready in time.
        """
        if self._started:
            raise RuntimeError(f"{self!r} is already started")
        if self._jvm is None:
            self._jvm = await asyncio.to_thread(resolve_jvm)
        self._started = True
        try:
            for attempt in range(_PORT_RETRIES):
                try:
                    await self._start_fresh(timeout)
                    return
                except KafkaStartError as e:
                    await self._kill_all()
                    clash = any(marker in str(e) for marker in _BIND_FAILURE_MARKERS)
                    if attempt + 1 == _PORT_RETRIES or not clash:
                        raise
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """SIGKILL every node and wait until they are gone (the data is throwaway)."""
        await self._kill_all()
        self._started = False

    async def wait_ready(self, timeout: float = _START_TIMEOUT) -> None:
        """Wait until every node is ready and the cluster can create (and delete) a topic.

        Every node must answer metadata listing itself; then, through aiokafka's admin
        client, the cluster must list all nodes and create a topic with the cluster's
        replication factor whose partition gets a leader and a full ISR, which the test bed
        then deletes again. Raises :class:`KafkaStartError` naming the last problem, with the
        nodes' log tails, if a node exits or after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        for broker in self.brokers:
            remaining = max(0.0, deadline - time.monotonic())
            await broker.wait_ready(remaining)
        probe = _ReadyProbe(self.name, [b.node_id for b in self.brokers])
        while True:
            for broker in self.brokers:
                broker._check_alive(0)
            if await probe.step(self.bootstrap_servers):
                return
            if time.monotonic() > deadline:
                tails = "\n".join(broker.log_tail() for broker in self.brokers)
                raise KafkaStartError(
                    f"Kafka cluster {self.name} not ready after {timeout:.0f}s "
                    f"(last: {probe.last})\n{tails}"
                )
            await asyncio.sleep(_POLL_INTERVAL)

    def describe(self) -> dict[str, Any]:
        """The cluster's bootstrap servers, settings and nodes, as JSON data."""
        return {
            "bootstrap": self.bootstrap,
            "cluster_id": self.cluster_id,
            "replication_factor": self.replication_factor,
            "min_insync_replicas": self.min_insync_replicas,
            "nodes": [
                {
                    "node_id": b.node_id,
                    "bootstrap": b.bootstrap,
                    "controller": b.controller_endpoint,
                    "pid": b.pid,
                    "log": str(b.log_file),
                    "dir": str(b.dir),
                }
                for b in self.brokers
            ],
        }

    # -------------------------------------------------------------- internals

    async def _kill_all(self) -> None:
        await asyncio.gather(*(broker.kill() for broker in self.brokers))  # kill() never fails

    async def _start_fresh(self, timeout: float) -> None:
        assert self._jvm is not None
        ports = free_ports(2 * len(self.brokers))
        for index, broker in enumerate(self.brokers):
            broker.broker_port, broker.controller_port = ports[2 * index : 2 * index + 2]
        for broker in self.brokers:
            broker._configure(self._jvm, self._properties(broker))
        initial = None
        if len(self.brokers) > 1:
            initial = ",".join(
                f"{b.node_id}@{b.controller_endpoint}:{b.directory_id}" for b in self.brokers
            )
        await _all([b._format(self.cluster_id, initial) for b in self.brokers])
        deadline = time.monotonic() + timeout
        offsets = [file_size(b.log_file) for b in self.brokers]
        for broker in self.brokers:
            await broker._launch()
        await _all(
            [
                broker.wait_ready(timeout, log_offset=offset)
                for broker, offset in zip(self.brokers, offsets, strict=True)
            ]
        )
        await self.wait_ready(max(0.0, deadline - time.monotonic()))

    def _properties(self, broker: KafkaBroker) -> dict[str, str]:
        rf = str(self.replication_factor)
        min_isr = str(self.min_insync_replicas)
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(broker.node_id),
            "listeners": (
                f"PLAINTEXT://{broker.bootstrap},CONTROLLER://{broker.controller_endpoint}"
            ),
            "advertised.listeners": (
                f"PLAINTEXT://{broker.bootstrap},CONTROLLER://{broker.controller_endpoint}"
            ),
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "controller.quorum.bootstrap.servers": ",".join(
                b.controller_endpoint for b in self.brokers
            ),
            "log.dirs": str(broker.data_dir),
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "share.coordinator.state.topic.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.replica.fetchers": "1",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(4 * 1024 * 1024),
            "log.segment.bytes": str(16 * 1024 * 1024),
        }
        properties.update(self.extra_properties)
        return properties


class _ReadyProbe:
    """The steps of :meth:`KafkaCluster.wait_ready` after every node answers on its own.

    Each :meth:`step` opens an admin client and goes as far as it can: all nodes listed, the
    probe topic created, its partition led with a full ISR, deleted, gone from the metadata.
    """

    def __init__(self, cluster: str, node_ids: list[int]) -> None:
        self.cluster = cluster
        self.node_ids = sorted(node_ids)
        self.created = False
        self.deleted = False
        self.last = "no answer yet"

    async def step(self, bootstrap_servers: list[str]) -> bool:
        """Advance; ``True`` once the probe topic was created and is gone again."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            request_timeout_ms=int(_PROBE_TIMEOUT * 1000),
            client_id="hacoord-testbed-ready",
        )
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT * 4):
                await admin.start()
                problem = await self._advance(admin)
        except (KafkaError, OSError, TimeoutError) as e:
            problem = f"admin client: {e!r}"
        finally:
            await admin.close()
        if problem is not None:
            self.last = problem
        return problem is None

    async def _advance(self, admin: Any) -> str | None:
        if not self.deleted:
            cluster = await admin.describe_cluster()
            listed = sorted(int(b["node_id"]) for b in cluster["brokers"])
            if listed != self.node_ids:
                return f"metadata lists nodes {listed}, not {self.node_ids}"
        if not self.created:
            created = await admin.create_topics(
                [NewTopic(_READY_TOPIC, num_partitions=1, replication_factor=len(self.node_ids))]
            )
            for error in created.to_object()["topic_errors"]:
                if error["error_code"] not in (0, _TOPIC_ALREADY_EXISTS):
                    return f"create_topics: error {error['error_code']} {error['error_message']}"
            self.created = True
        if not self.deleted:
            [topic] = await admin.describe_topics([_READY_TOPIC])
            partitions = topic["partitions"]
            if topic["error_code"] != 0 or not partitions:
                return f"topic {_READY_TOPIC} not in the metadata yet (error {topic['error_code']})"
            if any(p["leader"] < 0 or len(p["isr"]) < len(self.node_ids) for p in partitions):
                return f"topic {_READY_TOPIC} has no leader or no full ISR yet: {partitions}"
            deleted = await admin.delete_topics([_READY_TOPIC])
            for error in deleted.to_object()["topic_error_codes"]:
                if error["error_code"] not in (0, _UNKNOWN_TOPIC_OR_PARTITION):
                    return f"delete_topics: error {error['error_code']}"
            self.deleted = True
        if _READY_TOPIC in await admin.list_topics():
            return f"topic {_READY_TOPIC} still listed after its deletion"
        return None


class KafkaTestBed:
    """Independent local Kafka clusters: ``clusters`` one-node ones, or one of three nodes.

    ``async with KafkaTestBed(path, clusters=3) as bed:`` starts one-node clusters ``k1``,
    ``k2``, ``k3`` in parallel (``names`` picks other names); :meth:`three_node` makes a bed
    with one three-node cluster. ``bed.clusters`` maps names to :class:`KafkaCluster`.
    Leaving the ``async with`` block (also by an exception) kills every process; use one
    event loop, running in a thread that outlives the bed, for the bed's whole life.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        base_dir: Path,
        clusters: int = 3,
        *,
        names: Sequence[str] | None = None,
        brokers_per_cluster: int = 1,
        extra_properties: Mapping[str, str] | None = None,
    ) -> None:
        chosen = list(names) if names is not None else [f"k{i}" for i in range(1, clusters + 1)]
        if not chosen:
            raise ValueError("a test bed needs at least one cluster")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"cluster names must be distinct: {chosen}")
        self.base_dir = Path(base_dir).absolute()
        self.extra_properties = dict(extra_properties or {})
        self.clusters: dict[str, KafkaCluster] = {
            name: KafkaCluster(
                name,
                self.base_dir,
                brokers=brokers_per_cluster,
                extra_properties=self.extra_properties,
            )
            for name in chosen
        }
        self.startup_seconds: float | None = None
        """How long :meth:`start` took (jars and Java lookup included), once started."""
        self._started = False

    @classmethod
    def three_node(
        cls,
        base_dir: Path,
        name: str = "k1",
        *,
        extra_properties: Mapping[str, str] | None = None,
    ) -> KafkaTestBed:
        """A bed with one cluster of three nodes (replication factor 3, min ISR 2)."""
        return cls(base_dir, names=[name], brokers_per_cluster=3, extra_properties=extra_properties)

    def __getitem__(self, name: str) -> KafkaCluster:
        try:
            return self.clusters[name]
        except KeyError:
            raise KeyError(f"no cluster {name!r} (clusters: {', '.join(self.clusters)})") from None

    async def __aenter__(self) -> KafkaTestBed:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Fetch the jars if needed and start every cluster in parallel until all are ready.

        Raises :class:`KafkaUnavailableError` if Java or the jars are missing,
        :class:`KafkaStartError` if a cluster does not come up (then nothing is left running).
        """
        if self._started:
            raise RuntimeError("the test bed is already started")
        began = time.monotonic()
        jvm = await asyncio.to_thread(resolve_jvm)
        for cluster in self.clusters.values():
            cluster._jvm = jvm
        self._started = True
        self.base_dir.mkdir(parents=True, exist_ok=True)
        try:
            await _all([cluster.start() for cluster in self.clusters.values()])
        except BaseException:
            await self.close()
            raise
        self.startup_seconds = time.monotonic() - began

    async def close(self) -> None:
        """Kill every process of every cluster (SIGKILL); the directories stay for inspection."""
        await asyncio.gather(*(cluster.stop() for cluster in self.clusters.values()))
        self._started = False

    def describe(self) -> dict[str, Any]:
        """Every cluster's bootstrap servers and nodes, as JSON data."""
        return {"clusters": {name: c.describe() for name, c in self.clusters.items()}}


# ---------------------------------------------------------------------- CLI


async def _serve(bed: KafkaTestBed) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with bed:
        print(json.dumps(bed.describe()), flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run clusters until SIGINT/SIGTERM, after printing their description as one JSON line."""
    parser = argparse.ArgumentParser(
        prog="python -m hacoord.adapters.kafka.testbed",
        description="Run local Apache Kafka clusters (KRaft mode, from Maven jars).",
    )
    parser.add_argument("--dir", required=True, type=Path, help="working directory")
    parser.add_argument(
        "--clusters", type=int, default=3, help="number of one-node clusters (default 3)"
    )
    parser.add_argument(
        "--three-node", action="store_true", help="one cluster of three nodes instead"
    )
    args = parser.parse_args(argv)
    if args.three_node:
        bed = KafkaTestBed.three_node(args.dir)
    else:
        bed = KafkaTestBed(args.dir, clusters=args.clusters)
    try:
        asyncio.run(_serve(bed))
    except (KafkaUnavailableError, KafkaStartError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
