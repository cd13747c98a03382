"""A disposable MariaDB GTID replication cluster on loopback, for tests, examples and benchmarks.

:class:`MariaDBTestBed` runs ``count`` local ``mariadbd`` processes, each with its own data
directory, unix socket, pid file and error log under ``base_dir``, listening on a free port of
127.0.0.1. Server 0 starts as the writable primary; every other server replicates from it with
GTID (``MASTER_USE_GTID=slave_pos``) and, by default, semi-synchronous acknowledgement
(``AFTER_SYNC``, a timeout so long that the primary never falls back to asynchronous
replication). Every server starts with ``read_only=ON`` and ``rpl_semi_sync_master_enabled=OFF``
(``rpl_semi_sync_slave_enabled=ON``); the test bed switches both on server 0 at runtime, so an
instance restarted on its existing data directory (an old primary, say) comes back read-only
and without the semi-sync master role until somebody promotes it.

A pristine data directory (the *template*) is built once per ``base_dir`` and copied for every
instance, which makes :meth:`MariaDBTestBed.start` and :meth:`MariaDBTestBed.reset` take a few
seconds. One ``base_dir`` must not be used by two test beds at the same time.

Servers are started with a parent-death signal (Linux, util-linux ``setpriv``), so they do not
outlive the Python process even if it is killed. The signal fires when the *thread* that started
them exits: call the methods that start servers from a thread that lives as long as the test
bed (an event loop thread normally does).

Run ``python -m hacoord.adapters.mysql.testbed --dir DIR`` to keep a cluster running from the
command line; it prints one JSON line describing the servers and credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomysql

from hacoord.adapters.debian import apt_install
from hacoord.testing.processes import (
    file_size,
    find_binary,
    free_ports,
    parent_death_prefix,
    read_tail,
)

__all__ = [
    "MariaDBStartError",
    "MariaDBTestBed",
    "MariaDBUnavailableError",
    "TestBedServer",
    "ensure_mariadb_installed",
]

_HOST = "127.0.0.1"
_SERVER_BINARY = "mariadbd"
_INSTALL_BINARY = "mariadb-install-db"
_TEMPLATE_FORMAT = 1
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 60.0
_REPLICATION_TIMEOUT = 30.0
_POLL_INTERVAL = 0.05
_CONNECT_TIMEOUT = 5.0
_PROBE_TIMEOUT = 2.0
_CR_SERVER_LOST = 2013
_MAX_SOCKET_PATH = 107
_PORT_RETRIES = 3
_BIND_FAILURE_MARKERS = ("Address already in use", "Can't start server: Bind on TCP/IP port")

# Options shared by the template server and the instances: small memory, durable commits.
_COMMON_OPTIONS = (
    "skip-name-resolve",
    "performance_schema=OFF",
    "innodb_buffer_pool_size=32M",
    "innodb_log_file_size=8M",
    "innodb_log_buffer_size=2M",
    "innodb_buffer_pool_dump_at_shutdown=OFF",
    "innodb_buffer_pool_load_at_startup=OFF",
    "innodb_flush_log_at_trx_commit=1",
    "key_buffer_size=1M",
    "aria_pagecache_buffer_size=8M",
    "max_connections=200",
    "table_open_cache=1000",
    "character_set_server=utf8mb4",
    "collation_server=utf8mb4_general_ci",
)


class MariaDBUnavailableError(RuntimeError):
    """The MariaDB server binaries are missing and could not be installed."""


class MariaDBStartError(RuntimeError):
    """A ``mariadbd`` process (or the template build) failed; the message has the log tail."""


@dataclass(frozen=True)
class TestBedServer:
    """One MariaDB instance of a :class:`MariaDBTestBed` (``port`` is 0 until started)."""

    __test__ = False  # not a pytest test class despite the name

    index: int
    host: str
    port: int
    server_id: int
    datadir: Path
    socket: Path


def _missing_binaries() -> list[str]:
    return [name for name in (_SERVER_BINARY, _INSTALL_BINARY) if find_binary(name) is None]


def ensure_mariadb_installed() -> None:
    """Make sure ``mariadbd`` and ``mariadb-install-db`` are available.

    When one is missing and the process runs as root, installs the Debian package
    ``mariadb-server`` with ``apt-get`` (non-interactively). Otherwise, or when the installation
    fails, raises :class:`MariaDBUnavailableError` naming what is missing.
    """
    missing = _missing_binaries()
    if not missing:
        return
    what = ", ".join(missing)
    problem = apt_install(["mariadb-server"])
    if problem is not None:
        raise MariaDBUnavailableError(f"MariaDB binaries not found: {what}; {problem}")
    still_missing = _missing_binaries()
    if still_missing:
        raise MariaDBUnavailableError(
            "installed mariadb-server but still cannot find: " + ", ".join(still_missing)
        )


async def _open(params: dict[str, object], timeout: float) -> aiomysql.Connection:
    """``aiomysql.connect`` with a deadline that also covers the handshake.

    aiomysql's ``connect_timeout`` only bounds the TCP connect; a peer that accepts but never
    greets would hang forever. A timeout is reported as ``OperationalError`` 2013 (lost
    connection) like other connection failures.
    """
    try:
        return await asyncio.wait_for(
            aiomysql.connect(**params, connect_timeout=timeout), timeout=timeout
        )
    except TimeoutError:
        where = params.get("unix_socket") or f"{params.get('host')}:{params.get('port')}"
        raise aiomysql.OperationalError(
            _CR_SERVER_LOST, f"no MariaDB handshake from {where} within {timeout:g}s"
        ) from None


async def _close_quietly(conn: Any) -> None:
    """Close a connection politely (COM_QUIT), falling back to dropping it."""
    try:
        await conn.ensure_closed()
    except Exception:
        conn.close()


async def _fetch(conn: Any, sql: str, args: object = None) -> list[tuple[object, ...]]:
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        rows = await cur.fetchall()
    return [tuple(row) for row in rows]


async def _fetch_dicts(conn: Any, sql: str) -> list[dict[str, object]]:
    async with conn.cursor(aiomysql.DictCursor) as cur:
        await cur.execute(sql)
        rows = await cur.fetchall()
    return [dict(row) for row in rows]


class MariaDBTestBed:
    """``count`` local MariaDB servers in a GTID replication topology, server 0 the primary.

    Use ``async with MariaDBTestBed(path) as bed:`` or call :meth:`start` and :meth:`close`.
    The admin user has all privileges (also over TCP from 127.0.0.1 and through the unix
    socket); the app user may only read and write the ``app`` database (and read
    ``hacoord``), so ``read_only`` stops it; the replication user has REPLICATION SLAVE only.
    The ``app`` database holds ``writes (id BIGINT PRIMARY KEY, payload VARCHAR(64))``.

    With ``semi_sync`` (and more than one server) a commit on the primary waits for a replica's
    acknowledgement practically forever: writes block while no replica is connected.
    """

    def __init__(
        self,
        base_dir: Path,
        count: int = 3,
        semi_sync: bool = True,
        admin_user: str = "hacoord",
        admin_password: str = "hacoord-admin",
        app_user: str = "app",
        app_password: str = "app-pw",
        repl_user: str = "repl",
        repl_password: str = "repl-pw",
    ) -> None:
        if count < 1:
            raise ValueError("a test bed needs at least one server")
        self.base_dir = Path(base_dir).absolute()
        self.count = count
        self.semi_sync = semi_sync
        self.admin_user = admin_user
        self.admin_password = admin_password
        self.app_user = app_user
        self.app_password = app_password
        self.repl_user = repl_user
        self.repl_password = repl_password
        self.servers: list[TestBedServer] = [
            TestBedServer(
                index=i,
                host=_HOST,
                port=0,
                server_id=i + 1,
                datadir=self._node_dir(i) / "data",
                socket=self._node_dir(i) / "mariadbd.sock",
            )
            for i in range(count)
        ]
        longest = max([*(str(s.socket) for s in self.servers), str(self._template_socket)], key=len)
        if len(longest.encode()) > _MAX_SOCKET_PATH:
            raise ValueError(f"base_dir is too deep for a unix socket path: {longest}")
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self._passwords = {
            admin_user: admin_password,
            app_user: app_password,
            repl_user: repl_password,
        }
        self._started = False

    # ----------------------------------------------------------------- paths

    def _node_dir(self, index: int) -> Path:
        return self.base_dir / f"node{index}"

    def _cnf_path(self, index: int) -> Path:
        return self._node_dir(index) / "my.cnf"

    def _pid_path(self, index: int) -> Path:
        return self._node_dir(index) / "mariadbd.pid"

    @property
    def _template_dir(self) -> Path:
        return self.base_dir / "template"

    @property
    def _template_socket(self) -> Path:
        return self.base_dir / "template.sock"

    def log_path(self, index: int) -> Path:
        """The error log of server ``index`` (appended to across restarts and resets)."""
        return self._node_dir(index) / "error.log"

    # ------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> MariaDBTestBed:
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
        """Build the template if needed, start every server and set up replication."""
        if self._started:
            raise RuntimeError("the test bed is already started")
        missing = _missing_binaries()
        if missing:
            raise MariaDBUnavailableError(
                "MariaDB binaries not found: "
                + ", ".join(missing)
                + " (ensure_mariadb_installed() can install them)"
            )
        self._started = True
        try:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            await self._ensure_template()
            ports = free_ports(self.count)
            self.servers = [replace(s, port=p) for s, p in zip(self.servers, ports, strict=True)]
            await self._bring_up_fresh()
        except BaseException:
            await self.close()
            raise

    async def reset(self) -> None:
        """Kill every server, restore fresh data directories and set up replication again.

        Afterwards the bed is in the state :meth:`start` leaves it in: server 0 the writable
        primary, the others read-only replicas of it, ``app.writes`` empty, empty binlogs.
        """
        if not self._started:
            raise RuntimeError("the test bed is not started")
        for index in range(self.count):
            self._kill_quietly(index)
        await self._bring_up_fresh()

    def kill(self, index: int) -> None:
        """SIGKILL server ``index`` and reap it (a crash: no clean shutdown)."""
        proc = self._running_proc(index)
        proc.kill()
        proc.wait()

    async def stop(self, index: int) -> None:
        """Shut server ``index`` down cleanly (SIGTERM) and wait until it has exited."""
        proc = self._running_proc(index)
        proc.terminate()
        try:
            await self._wait_exit(proc, _STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            proc.wait()
            raise TimeoutError(
                f"server {index} did not shut down within {_STOP_TIMEOUT:.0f}s; killed it\n"
                + read_tail(self.log_path(index))
            ) from None

    async def restart(self, index: int) -> None:
        """Start server ``index`` again on its existing data directory and port.

        Waits until it accepts connections. Replication is not reconfigured: a replica resumes
        replicating from its configured primary by itself, a former primary comes back
        read-only with no primary configured.
        """
        if not self._started:
            raise RuntimeError("the test bed is not started")
        if self.is_running(index):
            raise RuntimeError(f"server {index} is already running")
        proc = self._launch(index)
        try:
            await self._wait_ready(index, proc, file_size(self.log_path(index)))
        except BaseException:
            self._kill_quietly(index)
            raise

    def is_running(self, index: int) -> bool:
        """Whether the ``mariadbd`` process of server ``index`` is alive."""
        proc = self._procs[index]
        return proc is not None and proc.poll() is None

    async def close(self) -> None:
        """Kill every server (SIGKILL) and reap it; the data directories stay for inspection."""
        for index in range(self.count):
            self._kill_quietly(index)
        self._started = False

    # ---------------------------------------------------------------- access

    async def connect(
        self,
        index: int,
        user: str | None = None,
        password: str | None = None,
        db: str | None = None,
    ) -> aiomysql.Connection:
        """An autocommit ``aiomysql.Connection`` to server ``index`` over TCP.

        ``user`` defaults to the admin user. ``password`` defaults to the password of that
        user if it is one of the test bed's users (admin, app, replication).
        """
        server = self.servers[index]
        if user is None:
            user = self.admin_user
        if password is None:
            password = self._passwords.get(user, "")
        return await _open(
            {
                "host": server.host,
                "port": server.port,
                "user": user,
                "password": password,
                "db": db,
                "autocommit": True,
            },
            _CONNECT_TIMEOUT,
        )

    async def execute(self, index: int, sql: str, args: object = None) -> list[tuple[object, ...]]:
        """Run one statement on server ``index`` as the admin user and return all rows."""
        conn = await self.connect(index)
        try:
            return await _fetch(conn, sql, args)
        finally:
            await _close_quietly(conn)

    async def replica_status(self, index: int) -> dict[str, object] | None:
        """``SHOW SLAVE STATUS`` of server ``index`` as a dict, None if it has no primary."""
        conn = await self.connect(index)
        try:
            rows = await _fetch_dicts(conn, "SHOW SLAVE STATUS")
        finally:
            await _close_quietly(conn)
        return rows[0] if rows else None

    async def wait_replicas_caught_up(self, primary: int, timeout: float = 30.0) -> None:
        """Wait until every running replica of ``primary`` has applied all of its binlog.

        Reads the primary's ``@@gtid_binlog_pos`` and waits with ``MASTER_GTID_WAIT`` on each
        running server whose configured primary is that server. Raises :class:`TimeoutError`
        naming the lagging servers when the deadline passes.
        """
        deadline = time.monotonic() + timeout
        rows = await self.execute(primary, "SELECT @@GLOBAL.gtid_binlog_pos")
        position = str(rows[0][0] or "")
        primary_port = self.servers[primary].port
        replicas: list[int] = []
        for index in range(self.count):
            if index == primary or not self.is_running(index):
                continue
            status = await self.replica_status(index)
            if status is not None and int(str(status["Master_Port"])) == primary_port:
                replicas.append(index)
        if not position or not replicas:
            return

        async def caught_up(index: int) -> bool:
            remaining = max(0.0, deadline - time.monotonic())
            result = await self.execute(
                index, "SELECT MASTER_GTID_WAIT(%s, %s)", (position, remaining)
            )
            return result[0][0] == 0

        done = await asyncio.gather(*(caught_up(i) for i in replicas))
        lagging = [i for i, ok in zip(replicas, done, strict=True) if not ok]
        if lagging:
            details = [await self._lag_report(i) for i in lagging]
            raise TimeoutError(
                f"replicas of server {primary} did not apply gtid {position} within "
                f"{timeout:g}s: " + "; ".join(details)
            )

    def describe(self) -> dict[str, object]:
        """The servers and credentials as a JSON-serialisable dict (what the CLI prints)."""
        return {
            "primary": 0,
            "semi_sync": self.semi_sync,
            "servers": [
                {"index": s.index, "host": s.host, "port": s.port, "server_id": s.server_id}
                for s in self.servers
            ],
            "admin": {"user": self.admin_user, "password": self.admin_password},
            "app": {"user": self.app_user, "password": self.app_password, "db": "app"},
            "repl": {"user": self.repl_user, "password": self.repl_password},
        }

    # -------------------------------------------------------------- internals

    async def _lag_report(self, index: int) -> str:
        try:
            pos = await self.execute(index, "SELECT @@GLOBAL.gtid_slave_pos")
            status = await self.replica_status(index) or {}
        except Exception as exc:
            return f"server {index} (unreachable: {exc})"
        return (
            f"server {index} (port {self.servers[index].port}, gtid_slave_pos={pos[0][0]!r}, "
            f"io={status.get('Slave_IO_Running')}, sql={status.get('Slave_SQL_Running')}, "
            f"io_error={status.get('Last_IO_Error')!r}, sql_error={status.get('Last_SQL_Error')!r})"
        )

    def _running_proc(self, index: int) -> subprocess.Popen[bytes]:
        proc = self._procs[index]
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"server {index} is not running")
        return proc

    def _kill_quietly(self, index: int) -> None:
        proc = self._procs[index]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    @staticmethod
    async def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("process did not exit")
            await asyncio.sleep(_POLL_INTERVAL)

    def _spawn(self, cnf: Path, log: Path) -> subprocess.Popen[bytes]:
        """Start ``mariadbd`` reading only ``cnf``, its output appended to ``log``."""
        server = find_binary(_SERVER_BINARY)
        if server is None:
            raise MariaDBUnavailableError(f"{_SERVER_BINARY} not found")
        with log.open("ab") as out:
            return subprocess.Popen(
                [*parent_death_prefix(), server, f"--defaults-file={cnf}", "--user=root"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _launch(self, index: int) -> subprocess.Popen[bytes]:
        proc = self._spawn(self._cnf_path(index), self.log_path(index))
        self._procs[index] = proc
        return proc

    async def _wait_ready(self, index: int, proc: subprocess.Popen[bytes], log_offset: int) -> None:
        server = self.servers[index]
        await self._poll_connect(
            f"server {index} (port {server.port})",
            proc,
            self.log_path(index),
            log_offset,
            {
                "host": server.host,
                "port": server.port,
                "user": self.admin_user,
                "password": self.admin_password,
            },
        )

    @staticmethod
    async def _poll_connect(
        name: str,
        proc: subprocess.Popen[bytes],
        log: Path,
        log_offset: int,
        params: dict[str, object],
    ) -> None:
        """Wait until a connection with ``params`` succeeds, failing fast if ``proc`` exits."""
        deadline = time.monotonic() + _START_TIMEOUT
        last_error: object = None
        while True:
            code = proc.poll()
            if code is not None:
                raise MariaDBStartError(
                    f"{name}: mariadbd exited with code {code} during startup; log tail:\n"
                    + read_tail(log, log_offset)
                )
            try:
                conn = await _open(params, _PROBE_TIMEOUT)
            except (aiomysql.Error, OSError) as exc:
                last_error = exc
            else:
                await _close_quietly(conn)
                return
            if time.monotonic() > deadline:
                raise MariaDBStartError(
                    f"{name}: not accepting connections after {_START_TIMEOUT:.0f}s "
                    f"(last error: {last_error}); log tail:\n" + read_tail(log, log_offset)
                )
            await asyncio.sleep(_POLL_INTERVAL)

    def _instance_cnf(self, index: int) -> str:
        server = self.servers[index]
        node = self._node_dir(index)
        options = [
            f"datadir={server.datadir}",
            f"socket={server.socket}",
            f"pid-file={self._pid_path(index)}",
            f"log-error={self.log_path(index)}",
            f"port={server.port}",
            f"bind-address={_HOST}",
            f"tmpdir={node}",
            *_COMMON_OPTIONS,
            f"server_id={server.server_id}",
            "log_bin=mariadb-bin",
            "log_bin_index=mariadb-bin.index",
            "relay_log=relay-bin",
            "relay_log_index=relay-bin.index",
            "log_slave_updates=ON",
            "binlog_format=ROW",
            "sync_binlog=1",
            "gtid_strict_mode=ON",
            "gtid_domain_id=0",
            "read_only=ON",
            f"report_host={_HOST}",
            f"report_port={server.port}",
            "slave_net_timeout=5",
            "master_retry_count=1000000",
        ]
        if self.semi_sync:
            # The master side is switched on at runtime on the primary only (see
            # _setup_replication): enabled on a replica, MariaDB makes the replica's SQL thread
            # wait for semi-sync acks of its own (log_slave_updates) binlog writes, which with
            # no replicas below it and this timeout stalls replication.
            options += [
                "rpl_semi_sync_master_enabled=OFF",
                "rpl_semi_sync_slave_enabled=ON",
                "rpl_semi_sync_master_wait_point=AFTER_SYNC",
                "rpl_semi_sync_master_timeout=10000000",
            ]
        return "[mariadbd]\n" + "\n".join(options) + "\n"

    def _prepare_node(self, index: int) -> None:
        """Fresh copy of the template as the data directory of server ``index``, new cnf."""
        node = self._node_dir(index)
        node.mkdir(parents=True, exist_ok=True)
        datadir = self.servers[index].datadir
        if datadir.exists():
            shutil.rmtree(datadir)
        for stale in (self.servers[index].socket, self._pid_path(index)):
            stale.unlink(missing_ok=True)
        shutil.copytree(self._template_dir, datadir)
        self._cnf_path(index).write_text(self._instance_cnf(index))

    async def _start_fresh(self, index: int) -> None:
        """Start server ``index`` on a fresh data directory; on a port clash pick another."""
        await asyncio.to_thread(self._prepare_node, index)
        for attempt in range(_PORT_RETRIES):
            offset = file_size(self.log_path(index))
            proc = self._launch(index)
            try:
                await self._wait_ready(index, proc, offset)
                return
            except MariaDBStartError:
                self._kill_quietly(index)
                log = read_tail(self.log_path(index), offset, lines=200)
                if attempt + 1 == _PORT_RETRIES or not any(m in log for m in _BIND_FAILURE_MARKERS):
                    raise
            taken = [s.port for s in self.servers]
            [port] = free_ports(1, exclude=taken)
            self.servers[index] = replace(self.servers[index], port=port)
            await asyncio.to_thread(self._prepare_node, index)

    async def _bring_up_fresh(self) -> None:
        await asyncio.gather(*(self._start_fresh(i) for i in range(self.count)))
        await self._setup_replication()

    async def _setup_replication(self) -> None:
        """Server 0 writable primary, the others (semi-sync) GTID replicas of it."""
        primary = self.servers[0]
        await self.execute(0, "SET GLOBAL read_only = OFF")
        if self.count == 1:
            return  # nobody could acknowledge: no semi-sync for a lone server
        if self.semi_sync:
            await self.execute(0, "SET GLOBAL rpl_semi_sync_master_enabled = ON")
        for index in range(1, self.count):
            await self.execute(
                index,
                "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, "
                "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                (primary.host, primary.port, self.repl_user, self.repl_password),
            )
            await self.execute(index, "START SLAVE")
        await asyncio.gather(*(self._wait_replicating(i) for i in range(1, self.count)))
        if self.semi_sync:
            await self._wait_semi_sync(0, self.count - 1)

    async def _wait_replicating(self, index: int) -> None:
        deadline = time.monotonic() + _REPLICATION_TIMEOUT
        conn = await self.connect(index)
        try:
            while True:
                rows = await _fetch_dicts(conn, "SHOW SLAVE STATUS")
                status = rows[0] if rows else {}
                io, sql = status.get("Slave_IO_Running"), status.get("Slave_SQL_Running")
                if io == "Yes" and sql == "Yes":
                    return
                if time.monotonic() > deadline:
                    raise MariaDBStartError(
                        f"server {index}: replication not running after "
                        f"{_REPLICATION_TIMEOUT:.0f}s (io={io}, sql={sql}, "
                        f"io_error={status.get('Last_IO_Error')!r}, "
                        f"sql_error={status.get('Last_SQL_Error')!r}); log tail:\n"
                        + read_tail(self.log_path(index))
                    )
                await asyncio.sleep(_POLL_INTERVAL)
        finally:
            await _close_quietly(conn)

    async def _wait_semi_sync(self, index: int, clients: int) -> None:
        """Wait until the primary runs semi-sync with ``clients`` replicas connected."""
        deadline = time.monotonic() + _REPLICATION_TIMEOUT
        conn = await self.connect(index)
        try:
            while True:
                rows = await _fetch(
                    conn,
                    "SHOW GLOBAL STATUS WHERE Variable_name IN "
                    "('Rpl_semi_sync_master_status', 'Rpl_semi_sync_master_clients')",
                )
                status = {str(name): str(value) for name, value in rows}
                on = status.get("Rpl_semi_sync_master_status") == "ON"
                connected = int(status.get("Rpl_semi_sync_master_clients", "0"))
                if on and connected >= clients:
                    return
                if time.monotonic() > deadline:
                    raise MariaDBStartError(
                        f"server {index}: semi-sync not active with {clients} replicas after "
                        f"{_REPLICATION_TIMEOUT:.0f}s (status {status})"
                    )
                await asyncio.sleep(_POLL_INTERVAL)
        finally:
            await _close_quietly(conn)

    # --------------------------------------------------------------- template

    def _template_marker(self) -> str:
        return json.dumps(
            {
                "format": _TEMPLATE_FORMAT,
                "users": [
                    [self.admin_user, self.admin_password],
                    [self.app_user, self.app_password],
                    [self.repl_user, self.repl_password],
                ],
            },
            sort_keys=True,
        )

    async def _ensure_template(self) -> None:
        """Build the pristine data directory every instance is copied from, once per base_dir."""
        marker = self.base_dir / "template.json"
        wanted = self._template_marker()
        if self._template_dir.is_dir() and marker.is_file() and marker.read_text() == wanted:
            return
        marker.unlink(missing_ok=True)
        staging = self.base_dir / "template.building"
        for old in (staging, self._template_dir):
            if old.exists():
                await asyncio.to_thread(shutil.rmtree, old)
        await self._install_system_tables(staging)
        await self._provision_template(staging)
        for leftover in staging.glob("*.pid"):
            leftover.unlink()
        staging.rename(self._template_dir)
        marker.write_text(wanted)

    async def _install_system_tables(self, datadir: Path) -> None:
        install = find_binary(_INSTALL_BINARY)
        if install is None:
            raise MariaDBUnavailableError(f"{_INSTALL_BINARY} not found")
        log = self.base_dir / "template-install.log"
        command = [
            install,
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root",
            "--skip-name-resolve",
            # passed through to the bootstrap server: a small redo log from the start
            "--innodb-log-file-size=8M",
            "--innodb-buffer-pool-size=32M",
        ]
        with log.open("wb") as out:
            proc = await asyncio.to_thread(
                subprocess.run,
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if proc.returncode != 0:
            raise MariaDBStartError(
                f"{_INSTALL_BINARY} failed with exit code {proc.returncode}; log tail:\n"
                + read_tail(log)
            )

    async def _provision_template(self, datadir: Path) -> None:
        """Start a socket-only server on ``datadir``, create users and schema, shut it down.

        The template server runs without a binary log, so the template carries no binlog
        files and no GTID state: every instance starts from the same data with empty binlogs.
        """
        cnf = self.base_dir / "template.cnf"
        log = self.base_dir / "template.log"
        cnf.write_text(
            "[mariadbd]\n"
            + "\n".join(
                [
                    f"datadir={datadir}",
                    f"socket={self._template_socket}",
                    f"pid-file={self.base_dir / 'template.pid'}",
                    f"log-error={log}",
                    f"tmpdir={self.base_dir}",
                    "skip-networking",
                    "skip-log-bin",
                    *_COMMON_OPTIONS,
                ]
            )
            + "\n"
        )
        offset = file_size(log)
        proc = self._spawn(cnf, log)
        try:
            await self._poll_connect(
                "template server",
                proc,
                log,
                offset,
                {"unix_socket": str(self._template_socket), "user": "root", "password": ""},
            )
            conn = await _open(
                {
                    "unix_socket": str(self._template_socket),
                    "user": "root",
                    "password": "",
                    "autocommit": True,
                },
                _CONNECT_TIMEOUT,
            )
            try:
                for sql, args in self._template_statements():
                    await _fetch(conn, sql, args)
                # only root through the socket stays: no passwordless TCP or anonymous logins
                extra_users = await _fetch(
                    conn,
                    "SELECT User, Host FROM mysql.user "
                    "WHERE User = '' OR (User = 'root' AND Host <> 'localhost')",
                )
                for user, host in extra_users:
                    await _fetch(conn, "DROP USER %s@%s", (user, host))
            finally:
                await _close_quietly(conn)
            proc.terminate()
            try:
                await self._wait_exit(proc, _STOP_TIMEOUT)
            except TimeoutError:
                raise MariaDBStartError(
                    "template server did not shut down; log tail:\n" + read_tail(log, offset)
                ) from None
            if proc.returncode != 0:
                raise MariaDBStartError(
                    f"template server exited with code {proc.returncode}; log tail:\n"
                    + read_tail(log, offset)
                )
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def _template_statements(self) -> list[tuple[str, object]]:
        admin, app, repl = self.admin_user, self.app_user, self.repl_user
        return [
            ("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (admin, self.admin_password)),
            ("CREATE USER %s@'localhost' IDENTIFIED BY %s", (admin, self.admin_password)),
            ("GRANT ALL PRIVILEGES ON *.* TO %s@'127.0.0.1' WITH GRANT OPTION", (admin,)),
            ("GRANT ALL PRIVILEGES ON *.* TO %s@'localhost' WITH GRANT OPTION", (admin,)),
            ("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (app, self.app_password)),
            (
                "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER "
                "ON `app`.* TO %s@'127.0.0.1'",
                (app,),
            ),
            ("GRANT SELECT ON `hacoord`.* TO %s@'127.0.0.1'", (app,)),
            ("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (repl, self.repl_password)),
            ("GRANT REPLICATION SLAVE ON *.* TO %s@'127.0.0.1'", (repl,)),
            ("CREATE DATABASE app", None),
            (
                "CREATE TABLE app.writes (id BIGINT PRIMARY KEY, "
                "payload VARCHAR(64) NOT NULL) ENGINE=InnoDB",
                None,
            ),
        ]


# ---------------------------------------------------------------------- CLI


async def _serve(base_dir: Path, count: int, semi_sync: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with MariaDBTestBed(base_dir, count=count, semi_sync=semi_sync) as bed:
        print(json.dumps(bed.describe()), flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a test bed until SIGINT/SIGTERM, after printing its description as one JSON line."""
    parser = argparse.ArgumentParser(
        prog="python -m hacoord.adapters.mysql.testbed",
        description="Run a local MariaDB GTID replication test bed (server 0 primary).",
    )
    parser.add_argument("--dir", required=True, type=Path, help="working directory")
    parser.add_argument("--count", type=int, default=3, help="number of servers (default 3)")
    parser.add_argument(
        "--no-semi-sync", action="store_true", help="plain asynchronous replication"
    )
    args = parser.parse_args(argv)
    try:
        ensure_mariadb_installed()
        asyncio.run(_serve(args.dir, args.count, not args.no_semi_sync))
    except (MariaDBUnavailableError, MariaDBStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
