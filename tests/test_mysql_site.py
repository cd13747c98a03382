"""A whole site in real processes: three `hacoord mysql daemon`, MariaDB and BIND9.

The primary is SIGKILLed while a client writes through the DNS name; the daemons fail
over, DNS answers the new primary, and writes through the name resume with nothing
acknowledged lost. Skips without MariaDB or BIND9 except under CI=true.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import hacoord
from hacoord.adapters.dns_testbed import Bind9UnavailableError, ensure_bind9_installed
from hacoord.adapters.mysql.adapter import NAMESPACE
from hacoord.adapters.mysql.local_site import RECORD, ZONE, LocalSite
from hacoord.adapters.mysql.primary import read_primary
from hacoord.adapters.mysql.testbed import MariaDBUnavailableError, ensure_mariadb_installed
from hacoord.workflow import Status, WorkflowStore

pytestmark = pytest.mark.timeout(240)
NAME = f"{RECORD}.{ZONE}"


def _need_services() -> None:
    try:
        ensure_mariadb_installed()
        ensure_bind9_installed()
    except (MariaDBUnavailableError, Bind9UnavailableError) as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"MariaDB and BIND9 are required when CI=true: {e}")
        pytest.skip(str(e))


async def _write_through_dns(site: LocalSite, row: int) -> bool:
    """Resolve the published name, connect to what it names, insert ``row``."""
    answer = await site.bind.resolve(NAME)
    if not answer:
        return False
    index = next(i for i in range(3) if site.bed.servers[i].port == site.port_of_name(answer[0]))
    try:
        conn = await site.bed.connect(index, user="app", db="app")
    except Exception:
        return False
    try:
        async with conn.cursor() as cur:
            await cur.execute("INSERT INTO writes VALUES (%s, 'via dns')", (row,))
        return True
    except Exception:
        return False
    finally:
        conn.close()


async def test_primary_sigkill_dns_follows_and_writes_resume(tmp_path: Path) -> None:
    _need_services()
    async with LocalSite(tmp_path) as site, hacoord.connect(site.endpoints()) as client:
        while (primary := await read_primary(client, "orders")) is None:
            await asyncio.sleep(0.05)
        old = next(i for i in range(3) if site.name(i) == primary.host)
        while await site.bind.resolve(NAME) != [site.dns_name(old)]:
            await asyncio.sleep(0.05)  # the adoption also publishes the name
        acked = [row for row in range(1, 21) if await _write_through_dns(site, row)]
        assert acked == list(range(1, 21))

        site.bed.kill(old)
        store = WorkflowStore(client, NAMESPACE)
        while not (history := await store.history("orders")) or history[0].finished_at is None:
            await asyncio.sleep(0.05)
        [failover] = history
        assert failover.status is Status.SUCCEEDED and failover.params["automatic"]
        new = next(i for i in range(3) if site.name(i) == failover.output("promote")["primary"])
        assert new != old
        assert await site.bind.resolve(NAME) == [site.dns_name(new)]
        assert failover.output("publish_dns")["token"] == failover.token

        row = 100
        while not await _write_through_dns(site, row):
            await asyncio.sleep(0.05)  # semi-sync: the first write waits for a replica
        rows = {int(str(r[0])) for r in await site.bed.execute(new, "SELECT id FROM app.writes")}
        assert set(acked) | {row} <= rows, "every write acknowledged through DNS survived"
