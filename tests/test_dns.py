"""DNS publication fenced by a token, against a real BIND9 on a loopback port.

One named serves the whole module; each test publishes its own record name. Needs
BIND9 (installed on demand when running as root); skips without it, except under
CI=true, where a missing BIND9 is a failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import dns.message
import dns.rcode
import dns.update
import pytest
import pytest_asyncio

from hacoord.adapters.dns import (
    DnsError,
    DnsPublisher,
    DnsSettings,
    PublishResult,
    StaleTokenError,
)
from hacoord.adapters.dns_testbed import Bind9TestServer, Bind9UnavailableError
from hacoord.server.local_cluster import free_ports

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

ZONE = "db.test."
WRONG_SECRET = "d3Jvbmcgc2VjcmV0IGtleSE="


async def _start(server: Bind9TestServer) -> None:
    try:
        await server.start()
    except Bind9UnavailableError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"BIND9 is required when CI=true but is unavailable: {e}")
        pytest.skip(f"BIND9 unavailable: {e}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bind(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bind9TestServer]:
    server = Bind9TestServer(tmp_path_factory.mktemp("bind"), zone=ZONE)
    await _start(server)
    try:
        yield server
    finally:
        await server.stop()


async def test_publish_an_address_with_its_token(bind: Bind9TestServer) -> None:
    publisher = DnsPublisher(bind.settings("first", ttl=7))
    result = await publisher.publish("127.0.0.10", 5)
    assert (result.address, result.token) == ("127.0.0.10", 5)
    assert (result.previous_address, result.previous_token) == (None, None)
    assert await bind.resolve("first.db.test.") == ["127.0.0.10"]
    assert await bind.ttl_of("first.db.test.", "A") == 7
    assert await bind.txt("_hacoord-token.first.db.test.") == ["5"]
    assert await publisher.current() == ("127.0.0.10", 5)


async def test_a_newer_token_replaces_the_address_and_the_record_type(
    bind: Bind9TestServer,
) -> None:
    publisher = DnsPublisher(bind.settings("replace"))
    await publisher.publish("127.0.0.10", 5)
    second = await publisher.publish("127.0.0.11", 7)
    assert (second.previous_address, second.previous_token) == ("127.0.0.10", 5)
    assert await bind.resolve("replace.db.test.") == ["127.0.0.11"], "only one A remains"
    # The same token again (the same orchestrator re-publishing): allowed.
    third = await publisher.publish("db2.db.test", 7)
    assert third.address == "db2.db.test."
    assert await bind.resolve("replace.db.test.") == ["db2.db.test."], "the CNAME replaced the A"
    assert await publisher.current() == ("db2.db.test.", 7)
    # Back from a CNAME to an address (IPv6 this time, canonicalised).
    fourth = await publisher.publish("fd00:0:0::0001", 8)
    assert (fourth.address, fourth.previous_address) == ("fd00::1", "db2.db.test.")
    assert await bind.resolve("replace.db.test.") == ["fd00::1"], "the AAAA replaced the CNAME"
    assert await bind.txt("_hacoord-token.replace.db.test.") == ["8"], "one token TXT"


async def test_a_late_publisher_with_an_older_token_is_refused(bind: Bind9TestServer) -> None:
    publisher = DnsPublisher(bind.settings("late"))
    await publisher.publish("127.0.0.7", 7)
    with pytest.raises(StaleTokenError, match=r"published with token 7; refusing .* token 6") as e:
        await publisher.publish("127.0.0.6", 6)
    assert (e.value.token, e.value.current) == (6, 7)
    assert await bind.resolve("late.db.test.") == ["127.0.0.7"]
    assert await publisher.current() == ("127.0.0.7", 7)


async def test_concurrent_publishers_always_leave_the_higher_token(bind: Bind9TestServer) -> None:
    """Tokens 8 and 9 publish at the same time, again and again (a fresh record each
    round, so that both start from the same state), each round with another interleaving:
    the record always ends with 9's address, and 8 either went first or was refused."""

    async def publish_late(
        publisher: DnsPublisher, address: str, token: int, turns: int
    ) -> PublishResult:
        for _ in range(turns):  # let the other publisher get this far ahead (no timing)
            await asyncio.sleep(0)
        return await publisher.publish(address, token)

    conflicts = stale = 0
    for round_ in range(30):
        settings = bind.settings(f"race{round_}")
        older, newer = DnsPublisher(settings), DnsPublisher(settings)
        turns = round_ % 5
        if round_ % 2:
            lost, won = await asyncio.gather(
                publish_late(older, "127.0.0.8", 8, turns),
                newer.publish("127.0.0.9", 9),
                return_exceptions=True,
            )
        else:
            won, lost = await asyncio.gather(
                publish_late(newer, "127.0.0.9", 9, turns),
                older.publish("127.0.0.8", 8),
                return_exceptions=True,
            )
        assert not isinstance(won, BaseException), f"round {round_}: 9 failed: {won!r}"
        if isinstance(lost, BaseException):
            assert isinstance(lost, StaleTokenError), f"round {round_}: {lost!r}"
            stale += 1
        else:
            assert lost.previous_token is None, f"round {round_}: 8 overwrote 9"
            conflicts += lost.attempts - 1
        conflicts += won.attempts - 1
        assert await bind.resolve(settings.fqdn) == ["127.0.0.9"], f"round {round_}"
        assert await newer.current() == ("127.0.0.9", 9), f"round {round_}"
    # The rounds did race: both read "no token yet" and one update's prerequisite
    # failed (a retry), and 8 sometimes came second and was refused.
    assert conflicts > 0 and stale > 0, f"no race: {conflicts} retries, {stale} refusals"


async def test_an_update_based_on_a_stale_read_fails_its_prerequisite(
    bind: Bind9TestServer,
) -> None:
    """The older publisher reads, then stalls; the newer one publishes; the older one's
    UPDATE (built on its stale read) must fail at the server, not overwrite."""
    older = DnsPublisher(bind.settings("stalled"))
    newer = DnsPublisher(bind.settings("stalled"))
    await older.publish("127.0.0.7", 7)
    stalled, go = asyncio.Event(), asyncio.Event()
    send = older._ask
    rcodes: list[dns.rcode.Rcode] = []

    async def stall_updates(message: dns.message.Message) -> dns.message.Message:
        is_update = isinstance(message, dns.update.UpdateMessage)
        if is_update and not go.is_set():
            stalled.set()
            await go.wait()
        response = await send(message)
        if is_update:
            rcodes.append(response.rcode())
        return response

    older._ask = stall_updates  # type: ignore[method-assign]
    late = asyncio.create_task(older.publish("127.0.0.8", 8))
    await stalled.wait()  # it has read token 7 and built its update
    await newer.publish("127.0.0.9", 9)
    go.set()
    with pytest.raises(StaleTokenError, match="token 9"):
        await late
    assert [dns.rcode.to_text(r) for r in rcodes] == ["NXRRSET"], "the server refused it"
    assert await bind.resolve("stalled.db.test.") == ["127.0.0.9"]
    assert await newer.current() == ("127.0.0.9", 9)


async def test_a_wrong_key_changes_nothing(
    bind: Bind9TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = DnsPublisher(bind.settings("guarded"))
    await good.publish("127.0.0.3", 3)
    wrong = DnsPublisher(replace(bind.settings("guarded"), tsig_secret=WRONG_SECRET))
    with pytest.raises(DnsError, match=r"NOTAUTH for zone db\.test\..*BADSIG"):
        await wrong.publish("127.0.0.4", 4)
    unknown = DnsPublisher(replace(bind.settings("guarded"), tsig_name="nobody"))
    with pytest.raises(DnsError, match=r"NOTAUTH for zone db\.test\..*BADKEY"):
        await unknown.publish("127.0.0.4", 4)
    unsigned = DnsPublisher(replace(bind.settings("guarded"), tsig_name=None, tsig_secret=None))
    with pytest.raises(DnsError, match=r"REFUSED to the update of guarded\.db\.test\. in zone"):
        await unsigned.publish("127.0.0.4", 4)
    assert await good.current() == ("127.0.0.3", 3)
    for secret in (bind.tsig_secret, WRONG_SECRET):
        assert secret not in repr(wrong) and secret not in repr(good.settings)
        assert secret not in caplog.text


async def test_a_zone_the_server_does_not_serve_is_named(bind: Bind9TestServer) -> None:
    publisher = DnsPublisher(replace(bind.settings("x"), zone="other.test"))
    with pytest.raises(DnsError, match=r"REFUSED .*zone other\.test\."):
        await publisher.publish("127.0.0.1", 1)


async def test_another_tsig_algorithm_is_used_as_configured(tmp_path: Path) -> None:
    server = Bind9TestServer(tmp_path / "bind512", tsig_algorithm="hmac-sha512")
    await _start(server)
    try:
        publisher = DnsPublisher(server.settings("sha512"))
        await publisher.publish("127.0.0.5", 1)
        assert await server.resolve("sha512.db.test.") == ["127.0.0.5"]
        # The same secret with the wrong algorithm is a different key to named.
        wrong = DnsPublisher(replace(server.settings("sha512"), tsig_algorithm="hmac-sha256"))
        with pytest.raises(DnsError, match="NOTAUTH"):
            await wrong.publish("127.0.0.6", 2)
        assert await server.resolve("sha512.db.test.") == ["127.0.0.5"]
    finally:
        await server.stop()


async def test_bad_settings_are_named() -> None:
    base = {"server": "127.0.0.1", "zone": "db.test.", "record": "x"}
    with pytest.raises(ValueError, match=r"ttl must be 0\.\.86400 seconds, got -1"):
        DnsSettings(**base, ttl=-1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tsig_name and tsig_secret must be given together"):
        DnsSettings(**base, tsig_name="k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="record '' must be a non-empty name"):
        DnsSettings(server="127.0.0.1", zone="db.test.", record="")
    with pytest.raises(ValueError, match=r"port must be 1\.\.65535, got 0"):
        DnsSettings(**base, port=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="server must be an IP address"):
        DnsSettings(server="ns1.example", zone="db.test.", record="x")
    with pytest.raises(ValueError, match=r"not inside zone db\.test\."):
        DnsSettings(server="127.0.0.1", zone="db.test", record="primary.other.test.")
    with pytest.raises(ValueError, match="tsig_secret of key 'k' is not base64") as e:
        DnsSettings(**base, tsig_name="k", tsig_secret="not base64!")  # type: ignore[arg-type]
    assert "not base64!" not in str(e.value), "the secret stays out of the message"
    with pytest.raises(ValueError, match="tsig_algorithm 'hmac-sha3'"):
        DnsSettings(**base, tsig_name="k", tsig_secret="AAAA", tsig_algorithm="hmac-sha3")  # type: ignore[arg-type]
    ok = DnsSettings(server="127.0.0.1", zone="db.test", record="primary.db.test.")
    assert (ok.zone, ok.record, ok.fqdn) == ("db.test.", "primary", "primary.db.test.")
    with pytest.raises(ValueError, match="not an IP address or a host name"):
        await DnsPublisher(ok).publish("", 1)


async def test_a_server_that_is_not_there_is_named() -> None:
    port = free_ports(1)[0]
    publisher = DnsPublisher(
        DnsSettings(server="127.0.0.1", port=port, zone="db.test.", record="x", timeout_s=1)
    )
    began = time.monotonic()
    with pytest.raises(DnsError, match=re.escape(f"127.0.0.1:{port}")):
        await publisher.publish("127.0.0.1", 1)
    assert time.monotonic() - began < 1.5


async def test_a_server_that_does_not_answer_times_out_naming_it() -> None:
    """A listener that accepts and never answers: the timeout, not a hang."""

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    listener = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        publisher = DnsPublisher(
            DnsSettings(server="127.0.0.1", port=port, zone="db.test.", record="x", timeout_s=0.5)
        )
        began = time.monotonic()
        with pytest.raises(DnsError, match=rf"127\.0\.0\.1:{port} did not answer within 0\.5 s"):
            await publisher.current()
        assert 0.4 < time.monotonic() - began < 2.0
    finally:
        listener.close()
        await listener.wait_closed()
