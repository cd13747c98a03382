"""DNS publication fenced by a token, against a real BIND9 on a loopback port.

Needs BIND9 (installed on demand when running as root); skips without it except under
CI=true, where a missing BIND9 is a failure.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from dataclasses import replace

import dns.message
import dns.update
import pytest
import pytest_asyncio

from hacoord.adapters.dns import (
    DnsError,
    DnsPublisher,
    DnsSettings,
    StaleTokenError,
)
from hacoord.adapters.dns_testbed import Bind9TestServer, Bind9UnavailableError
from hacoord.server.local_cluster import free_ports

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bind(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bind9TestServer]:
    server = Bind9TestServer(tmp_path_factory.mktemp("bind"))
    try:
        await server.start()
    except Bind9UnavailableError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"BIND9 is required when CI=true: {e}")
        pytest.skip(f"BIND9 unavailable: {e}")
    try:
        yield server
    finally:
        await server.stop()


async def test_publish_replace_and_switch_to_a_cname(bind: Bind9TestServer) -> None:
    publisher = DnsPublisher(bind.settings("a1", ttl=7))
    first = await publisher.publish("127.0.0.10", 5)
    assert first.previous_address is None and first.previous_token is None
    assert await bind.resolve("a1.db.test.") == ["127.0.0.10"]
    assert await bind.ttl_of("a1.db.test.", "A") == 7
    assert await publisher.current() == ("127.0.0.10", 5)
    second = await publisher.publish("127.0.0.11", 7)
    assert (second.previous_address, second.previous_token) == ("127.0.0.10", 5)
    assert await bind.resolve("a1.db.test.") == ["127.0.0.11"], "only one A record remains"
    await publisher.publish("db2.db.test", 7)  # the same token again: idempotent
    assert await bind.resolve("a1.db.test.") == ["db2.db.test."]
    assert await publisher.current() == ("db2.db.test.", 7)


async def test_a_late_publisher_with_an_older_token_is_refused(bind: Bind9TestServer) -> None:
    publisher = DnsPublisher(bind.settings("a2"))
    await publisher.publish("127.0.0.7", 7)
    with pytest.raises(StaleTokenError, match=r"published with token 7; refusing .* token 6"):
        await publisher.publish("127.0.0.6", 6)
    assert await bind.resolve("a2.db.test.") == ["127.0.0.7"]


async def test_an_update_based_on_a_stale_read_is_refused_by_the_server(
    bind: Bind9TestServer,
) -> None:
    """The older publisher reads, then stalls; the newer one publishes; the older one's
    update (built on its stale read) must fail its prerequisite, not overwrite."""
    older = DnsPublisher(bind.settings("race"))
    newer = DnsPublisher(bind.settings("race"))
    await older.publish("127.0.0.7", 7)
    stalled, go = asyncio.Event(), asyncio.Event()
    send = older._ask

    async def stall_updates(message: dns.message.Message) -> dns.message.Message:
        if isinstance(message, dns.update.UpdateMessage) and not go.is_set():
            stalled.set()
            await go.wait()
        return await send(message)

    older._ask = stall_updates  # type: ignore[method-assign]
    late = asyncio.create_task(older.publish("127.0.0.8", 8))
    await stalled.wait()  # it has read token 7 and built its update
    await newer.publish("127.0.0.9", 9)
    go.set()
    with pytest.raises(StaleTokenError, match="token 9"):
        await late
    assert await bind.resolve("race.db.test.") == ["127.0.0.9"]
    assert (await newer.current())[1] == 9


async def test_a_wrong_key_changes_nothing(bind: Bind9TestServer) -> None:
    good = DnsPublisher(bind.settings("a3"))
    await good.publish("127.0.0.3", 3)
    wrong = DnsPublisher(replace(bind.settings("a3"), tsig_secret="d3Jvbmcgc2VjcmV0IGtleSE="))
    with pytest.raises(DnsError, match=r"NOTAUTH|REFUSED|BadSig|PeerBadSignature|BADSIG"):
        await wrong.publish("127.0.0.4", 4)
    assert await bind.resolve("a3.db.test.") == ["127.0.0.3"]
    assert "d3Jvbmcg" not in repr(wrong.settings), "the secret stays out of repr"


async def test_bad_settings_are_named() -> None:
    base = {"server": "127.0.0.1", "zone": "db.test.", "record": "x"}
    with pytest.raises(ValueError, match=r"ttl must be 0\.\.86400"):
        DnsSettings(**base, ttl=-1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="given together"):
        DnsSettings(**base, tsig_name="k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="record ''"):
        DnsSettings(server="127.0.0.1", zone="db.test.", record="")
    with pytest.raises(ValueError, match="port"):
        DnsSettings(**base, port=0)  # type: ignore[arg-type]


async def test_a_server_that_is_not_there_is_named() -> None:
    port = free_ports(1)[0]
    publisher = DnsPublisher(
        DnsSettings(server="127.0.0.1", port=port, zone="db.test.", record="x", timeout_s=1)
    )
    with pytest.raises(DnsError, match=re.escape(f"127.0.0.1:{port}")):
        await publisher.publish("127.0.0.1", 1)
