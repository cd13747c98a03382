"""The MariaDB replication test bed: topology, semi-sync, read-only replicas, crash, reset.

Needs the MariaDB server binaries (installed on demand when running as root). Without them the
tests skip, except under CI=true, where a missing MariaDB is a failure.
"""

from __future__ import annotations

import asyncio
import time

import aiomysql
import pytest

from hacoord.adapters.mysql.testbed import (
    MariaDBTestBed,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

ER_OPTION_PREVENTS_STATEMENT = 1290  # "...is running with the --read-only option..."


async def _app_execute(bed: MariaDBTestBed, index: int, sql: str, args: object = None) -> None:
    conn = await bed.connect(index, user=bed.app_user, password=bed.app_password, db="app")
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, args)
    finally:
        await conn.ensure_closed()


async def _rows(bed: MariaDBTestBed, index: int) -> list[tuple[object, ...]]:
    return await bed.execute(index, "SELECT id, payload FROM app.writes ORDER BY id")


async def _replicating(bed: MariaDBTestBed, index: int, timeout: float = 30.0) -> dict[str, object]:
    """Poll until both replication threads of ``index`` run; return the final status."""
    deadline = time.monotonic() + timeout
    while True:
        status = await bed.replica_status(index)
        assert status is not None, f"server {index} has no primary configured"
        if status["Slave_IO_Running"] == "Yes" and status["Slave_SQL_Running"] == "Yes":
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"server {index} not replicating: {status}")
        await asyncio.sleep(0.05)


async def _semi_sync_status(bed: MariaDBTestBed, index: int) -> dict[str, str]:
    rows = await bed.execute(index, "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'")
    return {str(name): str(value) for name, value in rows}


async def test_app_write_on_primary_reaches_both_replicas(bed: MariaDBTestBed) -> None:
    await _app_execute(bed, 0, "INSERT INTO writes (id, payload) VALUES (%s, %s)", (1, "hello"))
    await bed.wait_replicas_caught_up(0)
    for index in (1, 2):
        assert await _rows(bed, index) == [(1, "hello")], f"server {index}"


async def test_topology_variables(bed: MariaDBTestBed) -> None:
    assert [s.server_id for s in bed.servers] == [1, 2, 3]
    assert len({s.port for s in bed.servers}) == 3
    for server in bed.servers:
        [(server_id, read_only, strict, port)] = await bed.execute(
            server.index, "SELECT @@server_id, @@read_only, @@gtid_strict_mode, @@port"
        )
        assert server_id == server.server_id
        assert port == server.port
        assert strict == 1, f"gtid_strict_mode off on server {server.index}"
        assert read_only == (0 if server.index == 0 else 1), f"server {server.index}"
    assert await bed.replica_status(0) is None
    for index in (1, 2):
        status = await _replicating(bed, index)
        assert status["Master_Port"] == bed.servers[0].port
        assert status["Using_Gtid"] == "Slave_Pos"


async def test_semi_sync_is_on_and_acknowledges_writes(bed: MariaDBTestBed) -> None:
    before = await _semi_sync_status(bed, 0)
    assert before["Rpl_semi_sync_master_status"] == "ON"
    assert before["Rpl_semi_sync_master_clients"] == "2"
    await _app_execute(bed, 0, "INSERT INTO writes VALUES (%s, %s)", (10, "acked"))
    after = await _semi_sync_status(bed, 0)
    acked = int(after["Rpl_semi_sync_master_yes_tx"]) - int(before["Rpl_semi_sync_master_yes_tx"])
    assert acked == 1
    assert after["Rpl_semi_sync_master_no_tx"] == before["Rpl_semi_sync_master_no_tx"]


async def test_app_user_cannot_write_to_read_only_replica(bed: MariaDBTestBed) -> None:
    with pytest.raises(aiomysql.Error) as excinfo:
        await _app_execute(bed, 1, "INSERT INTO writes VALUES (%s, %s)", (20, "rejected"))
    assert excinfo.value.args[0] == ER_OPTION_PREVENTS_STATEMENT, excinfo.value
    assert await _rows(bed, 1) == []


async def test_killed_replica_rejoins_and_catches_up(bed: MariaDBTestBed) -> None:
    await _app_execute(bed, 0, "INSERT INTO writes VALUES (%s, %s)", (1, "before"))
    await bed.wait_replicas_caught_up(0)
    bed.kill(2)
    assert not bed.is_running(2)
    for i in range(2, 12):
        await _app_execute(bed, 0, "INSERT INTO writes VALUES (%s, %s)", (i, f"down-{i}"))
    await bed.restart(2)
    assert bed.is_running(2)
    await bed.wait_replicas_caught_up(0)
    expected = await _rows(bed, 0)
    assert len(expected) == 11
    assert await _rows(bed, 2) == expected
    await _replicating(bed, 2)
    [(read_only,)] = await bed.execute(2, "SELECT @@read_only")
    assert read_only == 1


async def test_stopped_primary_comes_back_read_only(bed: MariaDBTestBed) -> None:
    await bed.stop(0)
    assert not bed.is_running(0)
    await bed.restart(0)
    [(read_only, semi_sync_master)] = await bed.execute(
        0, "SELECT @@read_only, @@rpl_semi_sync_master_enabled"
    )
    assert read_only == 1
    assert semi_sync_master == 0
    assert await bed.replica_status(0) is None


async def test_reset_restores_initial_state(bed: MariaDBTestBed) -> None:
    await _app_execute(bed, 0, "INSERT INTO writes VALUES (%s, %s)", (1, "old"))
    await bed.wait_replicas_caught_up(0)
    bed.kill(1)
    await bed.execute(0, "SET GLOBAL read_only = ON")
    ports = [s.port for s in bed.servers]

    started = time.monotonic()
    await bed.reset()
    print(f"reset took {time.monotonic() - started:.2f}s")

    assert [s.port for s in bed.servers] == ports
    for server in bed.servers:
        assert bed.is_running(server.index)
        assert await _rows(bed, server.index) == []
        [(binlog_pos, read_only)] = await bed.execute(
            server.index, "SELECT @@gtid_binlog_pos, @@read_only"
        )
        assert binlog_pos == ""
        assert read_only == (0 if server.index == 0 else 1)
    for index in (1, 2):
        await _replicating(bed, index)
    await _app_execute(bed, 0, "INSERT INTO writes VALUES (%s, %s)", (2, "new"))
    await bed.wait_replicas_caught_up(0)
    for index in (1, 2):
        assert await _rows(bed, index) == [(2, "new")]


async def test_wait_replicas_caught_up_names_a_stalled_replica(bed: MariaDBTestBed) -> None:
    await bed.execute(2, "STOP SLAVE SQL_THREAD")
    await _app_execute(bed, 0, "INSERT INTO writes VALUES (%s, %s)", (1, "stalled"))
    with pytest.raises(TimeoutError, match="server 2") as excinfo:
        await bed.wait_replicas_caught_up(0, timeout=0.5)
    assert "server 1" not in str(excinfo.value)
