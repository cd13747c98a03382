"""The fence table: the coordinator's fencing token kept on the database itself.

Promotion writes the orchestrator's token into ``hacoord.fence`` on the new primary
in the same step that opens it for writes; the row replicates to every replica. A
step run with an older token finds a newer one there and fails. Applications that
learned the primary and its token from the published record can put
:func:`check_fence` inside their own transactions, so a write that reaches a server
which is not the primary published with that token is refused by the database.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiomysql

from hacoord.adapters.mysql.errors import FenceMismatchError
from hacoord.coord.errors import FencingTokenError

FENCE_DDL = (
    "CREATE DATABASE IF NOT EXISTS hacoord",
    "CREATE TABLE IF NOT EXISTS hacoord.fence ("
    " cluster VARCHAR(64) NOT NULL PRIMARY KEY,"
    " token BIGINT NOT NULL,"
    " primary_host VARCHAR(255) NOT NULL,"
    " updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
    ") ENGINE=InnoDB",
)


async def read_token(conn: aiomysql.Connection, cluster: str) -> int | None:
    """The token recorded for ``cluster`` on this server (``None``: none yet)."""
    async with conn.cursor() as cur:
        try:
            await cur.execute("SELECT token FROM hacoord.fence WHERE cluster = %s", (cluster,))
        except aiomysql.ProgrammingError as e:
            if e.args and e.args[0] in (1049, 1146):  # no database / no table yet
                return None
            raise
        row = await cur.fetchone()
    return None if row is None else int(row[0])


async def refuse_older(conn: aiomysql.Connection, cluster: str, token: int) -> None:
    """Raise :class:`FencingTokenError` when the server carries a newer token."""
    found = await read_token(conn, cluster)
    if found is not None and found > token:
        raise FencingTokenError(f"{cluster} fence table", token, found)


async def write_token(conn: aiomysql.Connection, cluster: str, token: int, primary: str) -> None:
    """Record ``token`` as the newest, atomically refusing to go backwards.

    Runs as the administrator (who may write while the server is still read-only).
    """
    async with conn.cursor() as cur:
        for ddl in FENCE_DDL:
            await cur.execute(ddl)
        await cur.execute("BEGIN")
        try:
            await cur.execute(
                "SELECT token FROM hacoord.fence WHERE cluster = %s FOR UPDATE", (cluster,)
            )
            row = await cur.fetchone()
            if row is not None and int(row[0]) > token:
                raise FencingTokenError(f"{cluster} fence table", token, int(row[0]))
            await cur.execute(
                "INSERT INTO hacoord.fence (cluster, token, primary_host) VALUES (%s, %s, %s)"
                " ON DUPLICATE KEY UPDATE token = VALUES(token),"
                " primary_host = VALUES(primary_host), updated_at = CURRENT_TIMESTAMP(6)",
                (cluster, token, primary),
            )
            await cur.execute("COMMIT")
        except BaseException:
            await cur.execute("ROLLBACK")
            raise


async def check_fence(cursor: Any, cluster: str, token: int) -> None:
    """Inside an application transaction: go on only on the primary with ``token``.

    Takes a shared lock on the fence row, so a promotion cannot change it until the
    transaction ends. Raises :class:`FenceMismatchError` otherwise.
    """
    await cursor.execute(
        "SELECT token FROM hacoord.fence WHERE cluster = %s LOCK IN SHARE MODE", (cluster,)
    )
    row = await cursor.fetchone()
    found = None if row is None else int(row[0])
    if found != token:
        raise FenceMismatchError(cluster, token, found)


@contextlib.asynccontextmanager
async def fenced_transaction(
    conn: aiomysql.Connection, cluster: str, token: int
) -> AsyncIterator[Any]:
    """``async with fenced_transaction(conn, "db1", token) as cur:`` then write.

    Commits on leaving the block, rolls back on an exception (including a fence
    mismatch, raised before any of your statements run).
    """
    await conn.begin()
    try:
        async with conn.cursor() as cur:
            await check_fence(cur, cluster, token)
            yield cur
        await conn.commit()
    except BaseException:
        await conn.rollback()
        raise
