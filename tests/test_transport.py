"""TcpTransport over real sockets on 127.0.0.1: delivery, refusal, bad frames, TLS, faults."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from certs import OPENSSL_MISSING, make_certs
from hacoord.raft.codec import encode_batch
from hacoord.raft.types import Entry, Message, MessageType
from hacoord.testing.faultproxy import FaultProxy
from hacoord.transport.tcp import TcpTransport, encode_handshake, make_ssl_contexts

CLUSTER = "prod"
LOCAL = "127.0.0.1"
TIMEOUT = 10.0


def hb(frm: int, to: int, tag: str = "", term: int = 1) -> Message:
    """A small message whose context identifies it."""
    return Message(MessageType.HEARTBEAT, to=to, frm=frm, term=term, context=tag.encode())


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


class Inbox:
    """``on_messages`` callback recording everything delivered, awaitable."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.calls = 0
        self._changed = asyncio.Event()

    def __call__(self, msgs: list[Message]) -> None:
        self.calls += 1
        self.messages.extend(msgs)
        self._changed.set()

    def tags(self) -> list[str]:
        return [m.context.decode() for m in self.messages]

    async def wait_for(
        self, predicate: Callable[[list[Message]], bool], timeout: float = TIMEOUT
    ) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.messages):
                self._changed.clear()
                await self._changed.wait()

    async def wait_tag(self, tag: str, timeout: float = TIMEOUT) -> None:
        await self.wait_for(lambda ms: any(m.context == tag.encode() for m in ms), timeout)


class Unreachable:
    """``on_unreachable`` callback recording peers, awaitable."""

    def __init__(self) -> None:
        self.peers: list[int] = []
        self._changed = asyncio.Event()

    def __call__(self, peer: int) -> None:
        self.peers.append(peer)
        self._changed.set()

    async def wait_count(self, peer: int, n: int, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while self.peers.count(peer) < n:
                self._changed.clear()
                await self._changed.wait()


class LogWatch(logging.Handler):
    """Collects ``hacoord.transport`` records and lets a test await a specific one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == logging.WARNING]

    async def wait_warning(self, pattern: str, timeout: float = TIMEOUT) -> str:
        rx = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while True:
                for text in self.warnings():
                    if rx.search(text):
                        return text
                self._changed.clear()
                await self._changed.wait()


class Node:
    """A started transport with its callbacks."""

    def __init__(self, transport: TcpTransport, inbox: Inbox, unreachable: Unreachable) -> None:
        self.t = transport
        self.inbox = inbox
        self.unreachable = unreachable

    @property
    def addr(self) -> tuple[str, int]:
        return (LOCAL, self.t.port)


class Env:
    """Creates transports and proxies and closes them all at the end of a test."""

    def __init__(self) -> None:
        self.transports: list[TcpTransport] = []
        self.proxies: list[FaultProxy] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def node(
        self,
        node_id: int,
        peers: dict[int, tuple[str, int]] | None = None,
        *,
        cluster: str = CLUSTER,
        port: int = 0,
        **kwargs: Any,
    ) -> Node:
        inbox, unreachable = Inbox(), Unreachable()
        t = TcpTransport(
            node_id,
            cluster,
            (LOCAL, port),
            peers or {},
            inbox,
            on_unreachable=unreachable,
            **kwargs,
        )
        self.transports.append(t)
        await t.start()
        return Node(t, inbox, unreachable)

    async def cluster(self, n: int, **kwargs: Any) -> list[Node]:
        nodes = [await self.node(i, **kwargs) for i in range(1, n + 1)]
        addrs = {i + 1: nd.addr for i, nd in enumerate(nodes)}
        for nd in nodes:
            nd.t.update_peers(addrs)
        return nodes

    async def proxy(self, target: tuple[str, int]) -> FaultProxy:
        p = FaultProxy(target)
        self.proxies.append(p)
        await p.start()
        return p

    async def raw(
        self, port: int, ssl_ctx: ssl.SSLContext | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(LOCAL, port, ssl=ssl_ctx)
        self.writers.append(writer)
        return reader, writer

    async def aclose(self) -> None:
        for w in self.writers:
            w.close()
        for t in self.transports:
            await t.close()
        for p in self.proxies:
            await p.close()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    try:
        yield e
    finally:
        await e.aclose()


@pytest.fixture
def logwatch() -> Any:
    handler = LogWatch()
    logger = logging.getLogger("hacoord.transport")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def expect_closed(reader: asyncio.StreamReader) -> None:
    """The other side closed the connection (EOF, or a reset if data was unread)."""
    try:
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
    except (ConnectionResetError, ssl.SSLError):
        return
    assert data == b""


# -- delivery ---------------------------------------------------------------------


async def test_three_members_exchange_messages_both_ways(env: Env) -> None:
    nodes = await env.cluster(3)
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.t.send(hb(a.t.node_id, b.t.node_id, f"{a.t.node_id}->{b.t.node_id}"))
    for b in nodes:
        me = b.t.node_id
        expected = {f"{o}->{me}" for o in (1, 2, 3) if o != me}

        def got_all(ms: list[Message], expected: set[str] = expected) -> bool:
            return {m.context.decode() for m in ms} >= expected

        await b.inbox.wait_for(got_all)
        assert sorted(b.inbox.tags()) == sorted(expected)
        assert all(m.to == me for m in b.inbox.messages)
    assert all(nd.t.frames_sent >= 2 and nd.t.frames_received >= 2 for nd in nodes)
    assert all(nd.t.bytes_sent > 0 and nd.t.bytes_received > 0 for nd in nodes)
    assert all(nd.t.decode_errors == 0 and nd.t.connections_refused == 0 for nd in nodes)


async def test_messages_with_entries_arrive_intact_and_in_order(env: Env) -> None:
    a, b = await env.cluster(2)
    sent = [
        Message(
            MessageType.APPEND,
            to=2,
            frm=1,
            term=3,
            index=i,
            entries=[Entry(3, i + 1, data=bytes([i % 256]) * 100)],
            context=str(i).encode(),
        )
        for i in range(50)
    ]
    for m in sent:
        a.t.send(m)
    await b.inbox.wait_for(lambda ms: len(ms) >= 50)
    assert b.inbox.messages == sent


async def test_many_sends_are_coalesced_into_few_frames(env: Env) -> None:
    a, b = await env.cluster(2)
    a.t.send(hb(1, 2, "warm-up"))
    await b.inbox.wait_tag("warm-up")
    frames_sent, frames_received = a.t.frames_sent, b.t.frames_received

    for i in range(200):
        a.t.send(hb(1, 2, f"m{i}"))
    await b.inbox.wait_for(lambda ms: len(ms) >= 201)

    assert b.inbox.tags()[1:] == [f"m{i}" for i in range(200)]
    sent = a.t.frames_sent - frames_sent
    received = b.t.frames_received - frames_received
    assert sent == received
    assert 1 <= sent < 10, f"200 messages took {sent} frames"


async def test_a_lone_message_is_written_at_once_and_a_burst_still_coalesces(
    env: Env,
) -> None:
    a, b = await env.cluster(2)
    a.t.send(hb(1, 2, "warm-up"))
    await b.inbox.wait_tag("warm-up")
    await asyncio.sleep(0)  # a new pass of the event loop
    frames_sent = a.t.frames_sent
    a.t.send(hb(1, 2, "now"))
    assert a.t.frames_sent == frames_sent + 1, "written without waking the writer task"
    for i in range(50):
        a.t.send(hb(1, 2, f"m{i}"))
    assert a.t.frames_sent == frames_sent + 1, "the rest of the burst is queued"
    await b.inbox.wait_for(lambda ms: len(ms) >= 52)
    assert b.inbox.tags()[1:] == ["now", *(f"m{i}" for i in range(50))]
    assert a.t.frames_sent == frames_sent + 2


async def test_batches_are_split_to_respect_max_frame_bytes(env: Env, logwatch: LogWatch) -> None:
    limit = 2000
    a, b = await env.cluster(2, max_frame_bytes=limit)
    a.t.send(hb(1, 2, "warm-up"))
    await b.inbox.wait_tag("warm-up")
    frames_before, bytes_before = a.t.frames_sent, a.t.bytes_sent

    big = Message(MessageType.APPEND, 2, 1, 1, entries=[Entry(1, 1, data=b"x" * 5000)])
    a.t.send(big)  # can never fit: dropped with a warning
    for i in range(40):
        a.t.send(Message(MessageType.APPEND, 2, 1, 1, context=f"m{i}".encode() + b"." * 200))
    await b.inbox.wait_for(lambda ms: len(ms) >= 41)

    frames = a.t.frames_sent - frames_before
    assert frames >= (a.t.bytes_sent - bytes_before) // (limit + 4)
    assert frames >= 5  # 40 x ~220 bytes cannot fit in fewer frames of 2000 bytes
    assert [m.context.rstrip(b".") for m in b.inbox.messages[1:]] == [
        f"m{i}".encode() for i in range(40)
    ]
    assert a.t.messages_dropped == 1
    assert any("more than max_frame_bytes 2000" in w for w in logwatch.warnings())


# -- refusal and bad input ----------------------------------------------------------


async def test_wrong_cluster_id_is_refused_and_others_keep_working(
    env: Env, logwatch: LogWatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hacoord.transport")
    n1, n2, n3 = await env.cluster(3)
    intruder = await env.node(9, {1: n1.addr}, cluster="other")
    intruder.t.send(hb(9, 1, "intruder"))

    line = await logwatch.wait_warning(r"^refused connection from ")
    assert re.fullmatch(
        r"refused connection from 127\.0\.0\.1:\d+: cluster id 'other' does not match 'prod'", line
    )
    assert line in caplog.messages
    assert n1.t.connections_refused >= 1
    # The intruder sees its connection closed and reports the peer unreachable.
    await intruder.unreachable.wait_count(1, 1)

    n2.t.send(hb(2, 1, "from-2"))
    n3.t.send(hb(3, 1, "from-3"))
    await n1.inbox.wait_tag("from-2")
    await n1.inbox.wait_tag("from-3")
    assert all(m.frm in (2, 3) for m in n1.inbox.messages)


@pytest.mark.parametrize(
    ("handshake", "problem"),
    [
        ([b"HACO", 1, CLUSTER, 2, 7], r"connection is meant for node 7 but this is node 1"),
        ([b"HACO", 1, CLUSTER, 8, 1], r"node 8 is not a known peer \(known peers: 2\)"),
        ([b"HTTP", 1, CLUSTER, 2, 1], r"bad magic b'HTTP'"),
        ([b"HACO", 2, CLUSTER, 2, 1], r"protocol version 2 is not supported"),
        ([b"HACO", 1], r"handshake must be \[magic, version, cluster_id, from_node, to_node\]"),
    ],
    ids=["wrong-to", "unknown-from", "bad-magic", "bad-version", "short"],
)
async def test_bad_handshakes_are_refused(
    env: Env, logwatch: LogWatch, handshake: list[Any], problem: str
) -> None:
    n1, _n2 = await env.cluster(2)
    reader, writer = await env.raw(n1.t.port)
    writer.write(frame(msgpack.packb(handshake)))
    line = await logwatch.wait_warning(r"^refused connection from ")
    assert re.fullmatch(rf"refused connection from 127\.0\.0\.1:\d+: {problem}.*", line), line
    await expect_closed(reader)
    assert n1.t.connections_refused == 1
    assert len(logwatch.warnings()) == 1


GOOD_HANDSHAKE = encode_handshake(CLUSTER, 2, 1)


@pytest.mark.parametrize(
    ("data", "pattern", "counter"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            r"refused connection from 127\.0\.0\.1:\d+: bad handshake: frame of \d+ bytes "
            r"exceeds the limit of 4096 bytes",
            "connections_refused",
        ),
        (
            GOOD_HANDSHAKE + frame(b"\xc1 garbage"),
            r"closing connection from node 2 \(127\.0\.0\.1:\d+\): undecodable frame: "
            r"invalid msgpack",
            "decode_errors",
        ),
        (
            GOOD_HANDSHAKE + frame(msgpack.packb([[1, 2, 3]])),
            r"undecodable frame: batch item 0: message must be an array of 12 fields",
            "decode_errors",
        ),
        (
            GOOD_HANDSHAKE + struct.pack(">I", 100) + b"0123456789",
            r"closing connection from node 2 \(127\.0\.0\.1:\d+\): truncated frame: "
            r"connection closed after 10 of 100 payload bytes",
            None,
        ),
        (
            GOOD_HANDSHAKE + struct.pack(">I", 64 * 1024 + 1),
            r"closing connection from node 2 \(127\.0\.0\.1:\d+\): frame of 65537 bytes "
            r"exceeds the limit of 65536 bytes",
            None,
        ),
    ],
    ids=["garbage-instead-of-handshake", "garbage-frame", "wrong-arity", "truncated", "oversized"],
)
async def test_bad_frames_close_only_that_connection(
    env: Env, logwatch: LogWatch, data: bytes, pattern: str, counter: str | None
) -> None:
    n1, n2 = await env.cluster(2, max_frame_bytes=64 * 1024)
    n2.t.send(hb(2, 1, "before"))
    await n1.inbox.wait_tag("before")

    reader, writer = await env.raw(n1.t.port)
    writer.write(data)
    if "truncated" in pattern:
        writer.write_eof()
    await logwatch.wait_warning(pattern)
    await expect_closed(reader)
    if counter is not None:
        assert getattr(n1.t, counter) == 1

    n2.t.send(hb(2, 1, "after"))
    await n1.inbox.wait_tag("after")
    assert n1.inbox.tags() == ["before", "after"]


async def test_messages_not_matching_the_handshake_are_dropped(
    env: Env, logwatch: LogWatch
) -> None:
    n1, _n2 = await env.cluster(2)
    _reader, writer = await env.raw(n1.t.port)
    batch = [hb(2, 1, "genuine"), hb(3, 1, "spoofed"), hb(2, 5, "misrouted")]
    writer.write(GOOD_HANDSHAKE + frame(encode_batch(batch)))
    await n1.inbox.wait_tag("genuine")
    line = await logwatch.wait_warning(r"^dropped 2 message\(s\) on the connection from node 2")
    assert "first: HEARTBEAT from 3 to 1" in line
    assert n1.inbox.tags() == ["genuine"]
    assert n1.t.messages_dropped == 2
    writer.write(frame(encode_batch([hb(2, 1, "still-open")])))
    await n1.inbox.wait_tag("still-open")


# -- peers going away -------------------------------------------------------------


async def test_unreachable_reported_and_queue_dropped_when_peer_is_down(env: Env) -> None:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))  # bound but not listening: connections are refused
        a = await env.node(1, {2: sock.getsockname()}, max_queue=3)
        for i in range(3):
            a.t.send(hb(1, 2, f"q{i}"))
        assert a.t.messages_dropped == 0
        for i in range(3, 10):
            a.t.send(hb(1, 2, f"q{i}"))
        # The queue is full: each extra message is dropped and reported at once.
        assert a.t.messages_dropped == 7
        assert a.unreachable.peers == [2] * 7
        # The failed connection attempt drops what was queued and reports again.
        await a.unreachable.wait_count(2, 8)
        assert a.t.messages_dropped == 10
        # Back-off keeps retrying, reporting once per failed attempt.
        await a.unreachable.wait_count(2, 10)
        assert not a.t.is_connected(2)


async def test_reconnects_after_peer_restarts_on_the_same_port(env: Env) -> None:
    a, b = await env.cluster(2)
    a.t.send(hb(1, 2, "first"))
    await b.inbox.wait_tag("first")
    port = b.t.port

    await b.t.close()
    await a.unreachable.wait_count(2, 1)

    b2 = await env.node(2, {1: a.addr}, port=port)
    assert b2.t.port == port
    # Like Raft, retransmit until the message gets through the new connection.
    async with asyncio.timeout(TIMEOUT):
        while True:
            a.t.send(hb(1, 2, "second"))
            try:
                await b2.inbox.wait_tag("second", timeout=0.2)
                break
            except TimeoutError:
                continue
    assert a.t.is_connected(2)
    b2.t.send(hb(2, 1, "back"))
    await a.inbox.wait_tag("back")


async def resend_until(sender: Node, receiver: Node, msg: Message) -> None:
    """Like Raft, retransmit ``msg`` until it gets through (e.g. after a reconnect)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            sender.t.send(msg)
            try:
                await receiver.inbox.wait_tag(msg.context.decode(), timeout=0.2)
                return
            except TimeoutError:
                continue


async def test_update_peers_adds_and_removes_members(env: Env, logwatch: LogWatch) -> None:
    a, b = await env.cluster(2)
    c = await env.node(3, {1: a.addr})
    c.t.send(hb(3, 1, "too-early"))
    await logwatch.wait_warning(r"node 3 is not a known peer \(known peers: 2\)")

    a.t.update_peers({1: a.addr, 2: b.addr, 3: c.addr})
    assert a.t.peers == {2: b.addr, 3: c.addr}
    a.t.send(hb(1, 3, "hello-3"))
    await c.inbox.wait_tag("hello-3")
    await resend_until(c, a, hb(3, 1, "hello-1"))
    assert "too-early" not in a.inbox.tags()

    a.t.update_peers({2: b.addr})
    dropped = a.t.messages_dropped
    a.t.send(hb(1, 3, "gone"))
    assert a.t.messages_dropped == dropped + 1
    a.t.send(hb(1, 2, "still-here"))
    await b.inbox.wait_tag("still-here")


# -- TLS ----------------------------------------------------------------------------


@pytest.mark.skipif(OPENSSL_MISSING, reason="needs the openssl CLI")
async def test_tls_with_client_certificates(env: Env, logwatch: LogWatch, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    s1, c1 = make_ssl_contexts(*certs["node1"])
    s2, c2 = make_ssl_contexts(*certs["node2"])
    assert s1.verify_mode == ssl.CERT_REQUIRED and c1.verify_mode == ssl.CERT_REQUIRED
    assert not c1.check_hostname

    a = await env.node(1, server_ssl=s1, client_ssl=c1)
    b = await env.node(2, {1: a.addr}, server_ssl=s2, client_ssl=c2)
    a.t.update_peers({2: b.addr})
    a.t.send(hb(1, 2, "secret-1"))
    b.t.send(hb(2, 1, "secret-2"))
    await b.inbox.wait_tag("secret-1")
    await a.inbox.wait_tag("secret-2")

    # A client that trusts the CA but has no certificate of its own is refused.
    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.check_hostname = False
    no_cert.load_verify_locations(certs["node1"][0])
    reader, writer = await env.raw(a.t.port, no_cert)
    writer.write(GOOD_HANDSHAKE + frame(encode_batch([hb(2, 1, "sneaky")])))
    line = await logwatch.wait_warning(r"^refused connection from 127\.0\.0\.1:\d+: TLS handshake")
    assert "certificate" in line.lower()
    await expect_closed(reader)
    assert a.t.connections_refused == 1

    # So is a member speaking plain TCP.
    plain = await env.node(2, {1: a.addr})
    plain.t.send(hb(2, 1, "plain"))
    await plain.unreachable.wait_count(1, 1)
    assert a.t.connections_refused >= 2

    b.t.send(hb(2, 1, "still-works"))
    await a.inbox.wait_tag("still-works")
    assert "sneaky" not in a.inbox.tags() and "plain" not in a.inbox.tags()


# -- fault injection ------------------------------------------------------------------


async def test_fault_proxy_pass_hold_drop(env: Env) -> None:
    b = await env.node(2)
    proxy = await env.proxy(b.addr)
    a = await env.node(1, {2: (LOCAL, proxy.port)})
    b.t.update_peers({1: a.addr})

    a.t.send(hb(1, 2, "pass-1"))
    await b.inbox.wait_tag("pass-1")
    assert proxy.bytes_forwarded > 0 and proxy.connections == 1

    # hold: the proxy stops reading; the message is held, then delivered on "pass".
    proxy.mode = "hold"
    a.t.send(hb(1, 2, "held"))
    await proxy.wait_until(lambda: proxy.bytes_held > 0)
    assert "held" not in b.inbox.tags()
    proxy.mode = "pass"
    await b.inbox.wait_tag("held")
    assert proxy.bytes_held == 0

    # drop: the bytes vanish although the TCP connection stays up.
    proxy.mode = "drop"
    a.t.send(hb(1, 2, "dropped"))
    await proxy.wait_until(lambda: proxy.bytes_dropped > 0)
    assert a.t.is_connected(2)
    proxy.mode = "pass"
    # Heal: cut the connections so the members reconnect with a clean byte stream.
    await proxy.reset()
    await a.unreachable.wait_count(2, 1)
    await resend_until(a, b, hb(1, 2, "after-heal"))
    assert proxy.connections >= 2
    assert b.inbox.tags()[:2] == ["pass-1", "held"]
    assert "dropped" not in b.inbox.tags()

    # The other direction does not go through the proxy and was never affected.
    b.t.send(hb(2, 1, "direct"))
    await a.inbox.wait_tag("direct")
