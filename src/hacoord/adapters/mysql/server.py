"""One database server as the adapter sees it: probe, fence, promote, repoint."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiomysql
import pymysql

from hacoord.adapters.mysql.config import Credentials, Host
from hacoord.adapters.mysql.dialect import Dialect, ReplicaStatus
from hacoord.adapters.mysql.errors import AccessDeniedError, ServerError, UnreachableError
from hacoord.adapters.mysql.gtid import Position

_CANNOT_CONNECT = {2002, 2003, 2006, 2013}
_ACCESS_DENIED = {1045, 1044, 1698}


@dataclass(frozen=True, slots=True)
class ServerState:
    """What a server reports about itself."""

    host: Host
    server_id: int
    version: str
    read_only: bool
    executed: str
    """GTIDs this server has applied (and logged)."""
    log_bin: bool
    replica: ReplicaStatus | None
    """``None`` when the server replicates from nobody."""
    semi_sync_primary: bool


@dataclass(frozen=True, slots=True)
class Probe:
    """The outcome of asking one server for its state: the state or the error."""

    host: Host
    state: ServerState | None = None
    error: str | None = None

    @property
    def reachable(self) -> bool:
        """Whether the server answered."""
        return self.state is not None


class MySQLServer:
    """Administrative access to one server through the cluster's dialect."""

    def __init__(
        self, host: Host, admin: Credentials, dialect: Dialect, connect_timeout_s: float = 3.0
    ) -> None:
        self.host = host
        self.admin = admin
        self.dialect = dialect
        self.connect_timeout_s = connect_timeout_s

    @property
    def name(self) -> str:
        """``host:port``."""
        return self.host.name

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[aiomysql.Connection]:
        """An admin connection (autocommit), closed on leaving."""
        try:
            conn = await aiomysql.connect(
                host=self.host.host,
                port=self.host.port,
                user=self.admin.user,
                password=self.admin.password,
                autocommit=True,
                connect_timeout=self.connect_timeout_s,
            )
        except pymysql.err.OperationalError as e:
            raise _classify(self.name, e) from e
        except OSError as e:
            raise UnreachableError(self.name, f"cannot connect: {e}") from e
        try:
            yield conn
        finally:
            conn.close()

    async def run(self, statements: Sequence[str | tuple[str, tuple[Any, ...]]]) -> None:
        """Execute ``statements`` in order on one connection."""
        async with self.session() as conn:
            await run_statements(self.name, conn, statements)

    async def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query."""
        async with self.session() as conn:
            return await fetch_rows(self.name, conn, sql, args)

    async def state(self) -> ServerState:
        """Ask the server for its state; raises :class:`ServerError` on failure."""
        async with self.session() as conn:
            [(server_id, version, read_only, executed, log_bin)] = await fetch_rows(
                self.name, conn, self.dialect.variables_sql
            )
            async with conn.cursor(aiomysql.DictCursor) as cur:
                await _execute(self.name, cur, self.dialect.replica_status_sql)
                row = await cur.fetchone()
            replica = self.dialect.parse_replica_status(row) if row else None
            semi = await fetch_rows(self.name, conn, self.dialect.semi_sync_status_sql)
        return ServerState(
            host=self.host,
            server_id=int(server_id),
            version=str(version),
            read_only=bool(int(read_only)),
            executed=str(executed or ""),
            log_bin=bool(int(log_bin)),
            replica=replica,
            semi_sync_primary=bool(semi) and str(semi[0][1]).upper() == "ON",
        )

    async def probe(self) -> Probe:
        """Like :meth:`state` but never raises: unreachable servers carry the error."""
        try:
            return Probe(self.host, state=await self.state())
        except ServerError as e:
            return Probe(self.host, error=str(e))

    async def position(self) -> Position:
        """The GTIDs this server has applied."""
        return self.dialect.parse_position((await self.state()).executed)

    async def set_read_only(self, on: bool) -> None:
        """Close (or open) the server for ordinary users' writes."""
        await self.run(self.dialect.set_read_only(on))

    async def kill_client_connections(self) -> list[str]:
        """Kill every client connection (not replication, not ours); returns who."""
        killed = []
        async with self.session() as conn:
            rows = await fetch_rows(self.name, conn, self.dialect.client_connections_sql)
            for conn_id, user, host in rows:
                try:
                    await _execute(
                        self.name, await conn.cursor(), f"KILL CONNECTION {int(conn_id)}"
                    )
                    killed.append(f"{user}@{host}#{conn_id}")
                except ServerError as e:
                    if "Unknown thread id" not in str(e):
                        raise
        return killed

    async def wait_for_position(self, position: str, timeout_s: float) -> bool:
        """Whether the server applied ``position`` within ``timeout_s``."""
        sql, args = self.dialect.wait_for_position(position, timeout_s)
        async with self.session() as conn:
            [(value,)] = await fetch_rows(self.name, conn, sql, args)
        return self.dialect.waited(value)

    async def replicate_from(self, source: Host, credentials: Credentials, demote: bool) -> None:
        """Replicate from ``source`` by GTID (``demote``: this was a primary)."""
        statements = self.dialect.replicate_from(
            source.host, source.port, credentials.user, credentials.password, demote
        )
        await self.run(statements)


async def run_statements(
    name: str, conn: aiomysql.Connection, statements: Sequence[str | tuple[str, tuple[Any, ...]]]
) -> None:
    """Execute ``statements`` in order on ``conn`` (errors name the server ``name``)."""
    async with conn.cursor() as cur:
        for statement in statements:
            sql, args = (statement, ()) if isinstance(statement, str) else statement
            await _execute(name, cur, sql, args)


async def fetch_rows(
    name: str, conn: aiomysql.Connection, sql: str, args: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    """The rows of one query on ``conn`` (errors name the server ``name``)."""
    async with conn.cursor() as cur:
        await _execute(name, cur, sql, args)
        return list(await cur.fetchall())


async def _execute(name: str, cur: Any, sql: str, args: tuple[Any, ...] = ()) -> None:
    try:
        with warnings.catch_warnings():
            # Server notes such as "Slave already has been stopped" are expected.
            warnings.simplefilter("ignore", pymysql.Warning)
            await cur.execute(sql, args or None)
    except pymysql.err.MySQLError as e:
        raise _classify(name, e, sql) from e


def _classify(name: str, e: pymysql.err.MySQLError, sql: str | None = None) -> ServerError:
    code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
    text = e.args[1] if len(e.args) > 1 else str(e)
    if code in _CANNOT_CONNECT:
        return UnreachableError(name, f"cannot connect ({code}: {text})")
    if code in _ACCESS_DENIED:
        return AccessDeniedError(name, f"access denied ({code}: {text})")
    where = f" in {sql.split()[0]} {sql.split()[1] if len(sql.split()) > 1 else ''}" if sql else ""
    return ServerError(name, f"error {code}{where.rstrip()}: {text}")
