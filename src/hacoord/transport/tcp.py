"""Framed msgpack over TCP (optionally TLS) between the members of one cluster.

Wire format
-----------

Every frame is a 4-byte big-endian unsigned payload length followed by the payload.
The first frame a dialler sends is a handshake, the msgpack array
``[b"HACO", PROTOCOL_VERSION, cluster_id, from_node, to_node]``; every later frame
is a batch of messages encoded by :func:`hacoord.raft.codec.encode_batch`.

Connections
-----------

Each member dials each peer once and uses that connection only for sending to the
peer; connections accepted from peers are only read. The acceptor checks the
handshake (magic, version, cluster id, that it is the addressee, that the sender is
a known peer) and on any failure logs one WARNING and closes the connection without
replying. After the handshake a frame that is too large, truncated or undecodable
closes that one connection; everyone else is unaffected.

Sending never blocks: :meth:`TcpTransport.send` writes the first message of an
event-loop pass straight into the peer's connection when nothing is queued and the
socket takes data; otherwise it appends to the peer's queue and a writer task per
peer drains everything queued into as few frames as ``max_frame_bytes`` allows.
Raft retransmits, so the transport drops rather than waits: when the queue is full,
and, while a peer is unreachable, everything queued before each failed connection
attempt. Reconnection uses jittered exponential
back-off; the driver is told through ``on_unreachable`` once per failed attempt or
lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import struct
from collections import deque
from collections.abc import Callable

import msgpack

from hacoord.raft.codec import CodecError, decode_batch, encode_batch
from hacoord.raft.errors import ConfigError
from hacoord.raft.types import Message, NodeId

log = logging.getLogger("hacoord.transport")

MAGIC = b"HACO"
"""First field of the handshake."""
PROTOCOL_VERSION = 1
"""Version of the framing and handshake spoken by this module."""
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Largest accepted frame payload, in bytes."""
HANDSHAKE_MAX_BYTES = 4096
"""Largest accepted handshake payload; larger means the dialler is not a member."""
HANDSHAKE_TIMEOUT = 5.0
"""Seconds an accepted connection has to complete TLS and send its handshake."""
CONNECT_TIMEOUT = 5.0
"""Seconds allowed for dialling a peer (TCP connect plus TLS handshake)."""
BACKOFF_INITIAL = 0.05
"""First reconnect delay in seconds; doubles per failure up to :data:`BACKOFF_MAX`."""
BACKOFF_MAX = 2.0
"""Largest reconnect delay in seconds (before jitter)."""
STABLE_CONNECTION = 1.0
"""A connection that lived at least this many seconds resets the back-off."""

_HEADER = struct.Struct(">I")
Address = tuple[str, int]


def make_ssl_contexts(
    ca_file: str, cert_file: str, key_file: str
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Build ``(server_ctx, client_ctx)`` for mutually authenticated TLS between members.

    Both sides present ``cert_file``/``key_file`` and require the other side's
    certificate to chain to ``ca_file`` (``CERT_REQUIRED`` in both directions).

    Host names are not checked (``check_hostname = False``): members are addressed
    by IP address and may be re-addressed, so the identity that matters is "holds a
    certificate issued by the cluster's CA", not a DNS name. Use a CA dedicated to
    the cluster: any certificate it signed is accepted as a member.
    """
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_file, key_file)
        ctx.load_verify_locations(cafile=ca_file)
    server.verify_mode = ssl.CERT_REQUIRED
    client.check_hostname = False
    client.verify_mode = ssl.CERT_REQUIRED
    return server, client


def encode_handshake(cluster_id: str, from_node: NodeId, to_node: NodeId) -> bytes:
    """The handshake frame (header included) a dialler sends first."""
    payload: bytes = msgpack.packb([MAGIC, PROTOCOL_VERSION, cluster_id, from_node, to_node])
    return _HEADER.pack(len(payload)) + payload


class _FrameError(Exception):
    """A frame could not be read: too large or cut short."""


class _Refused(Exception):
    """A handshake was rejected; the text says why."""


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """Read one frame's payload; None on a clean EOF between frames."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise _FrameError(
            f"truncated frame: connection closed after {len(exc.partial)} of "
            f"{_HEADER.size} header bytes"
        ) from None
    (size,) = _HEADER.unpack(header)
    if size > limit:
        raise _FrameError(f"frame of {size} bytes exceeds the limit of {limit} bytes")
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise _FrameError(
            f"truncated frame: connection closed after {len(exc.partial)} of {size} payload bytes"
        ) from None


def _format_addr(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)


def _jitter(delay: float) -> float:
    return delay * random.uniform(0.5, 1.5)


class _PeerLink:
    """Outbound state for one peer: its queue and the writer task draining it."""

    __slots__ = (
        "addr",
        "connected",
        "dial_now",
        "peer",
        "queue",
        "task",
        "wakeup",
        "writer",
        "wrote_this_pass",
    )

    def __init__(self, peer: NodeId, addr: Address) -> None:
        self.peer = peer
        self.addr = addr
        self.queue: deque[Message] = deque()
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.connected = False
        self.writer: asyncio.StreamWriter | None = None
        """The live connection, while the writer task pumps it."""
        self.wrote_this_pass = False
        """A message went straight out in this pass of the event loop: queue the next
        ones, so that a burst still leaves in one frame."""
        self.dial_now = asyncio.Event()
        """Set when the peer just connected to us: it is up, so stop backing off."""

    def next_pass(self) -> None:
        """Called at the next pass of the event loop after a message went straight out."""
        self.wrote_this_pass = False

    async def back_off(self, delay: float) -> bool:
        """Sleep ``delay`` (jittered) unless told to dial now; True if woken early."""
        self.dial_now.clear()
        try:
            await asyncio.wait_for(self.dial_now.wait(), _jitter(delay))
        except TimeoutError:
            return False
        return True


class TcpTransport:
    """Delivers Raft messages to peers over TCP, optionally with mutual TLS.

    ``on_messages`` is called (on the event loop) with the messages of each received
    frame, already checked to come from the authenticated peer and to be addressed
    to this node. ``on_unreachable(peer)`` is called when a connection attempt to
    ``peer`` fails, an established connection is lost, or its queue overflows.

    Counters (plain ints, for metrics): ``frames_sent``, ``frames_received``,
    ``bytes_sent`` and ``bytes_received`` (message frames, headers included; the
    handshake is not counted), ``messages_dropped``, ``connections_refused`` and
    ``decode_errors``.
    """

    def __init__(
        self,
        node_id: NodeId,
        cluster_id: str,
        listen: Address,
        peers: dict[NodeId, Address],
        on_messages: Callable[[list[Message]], None],
        *,
        on_unreachable: Callable[[NodeId], None] | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        max_queue: int = 4096,
    ) -> None:
        if max_frame_bytes < 1 or max_frame_bytes > 0xFFFFFFFF:
            raise ConfigError(
                f"max_frame_bytes must be between 1 and 4294967295, got {max_frame_bytes}"
            )
        if max_queue < 1:
            raise ConfigError(f"max_queue must be at least 1, got {max_queue}")
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.listen = listen
        self.max_frame_bytes = max_frame_bytes
        self.max_queue = max_queue
        self.port = listen[1]
        """The bound port; meaningful after :meth:`start` (``listen`` may ask for port 0)."""
        self._on_messages = on_messages
        self._on_unreachable = on_unreachable
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._handshake_cache: dict[NodeId, bytes] = {}
        self._peers: dict[NodeId, Address] = {}
        self._links: dict[NodeId, _PeerLink] = {}
        self._inbound: dict[asyncio.Task[None], NodeId] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._started = False
        self._closed = False

        self.frames_sent = 0
        self.frames_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_dropped = 0
        self.connections_refused = 0
        self.decode_errors = 0

        self.update_peers(peers)

    # -- public API -----------------------------------------------------------

    @property
    def peers(self) -> dict[NodeId, Address]:
        """A copy of the current peer table (this node excluded)."""
        return dict(self._peers)

    def is_connected(self, peer: NodeId) -> bool:
        """Whether the outbound connection to ``peer`` is currently established."""
        link = self._links.get(peer)
        return link is not None and link.connected

    async def start(self) -> None:
        """Bind the listener and start dialling every peer."""
        if self._closed:
            raise RuntimeError("TcpTransport cannot be restarted after close(); make a new one")
        if self._started:
            return
        host, port = self.listen
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = True
        for link in self._links.values():
            self._spawn_writer(link)

    def send(self, m: Message) -> None:
        """Queue ``m`` for ``m.to`` without waiting; drops it if the queue is full."""
        link = self._links.get(m.to)
        if link is None or self._closed:
            self.messages_dropped += 1
            if link is None:
                log.debug("dropping %s for unknown peer %d", m.type.name, m.to)
            return
        writer = link.writer
        if (
            writer is not None
            and not link.queue
            and not link.wrote_this_pass
            and not writer.transport.is_closing()
            and not writer.transport.get_write_buffer_size()
        ):
            # Nothing is waiting and the socket takes data: write now rather than wake
            # the writer task, a pass of the event loop later.
            self._write(link.peer, writer, [m])
            link.wrote_this_pass = True
            asyncio.get_running_loop().call_soon(link.next_pass)
            return
        if len(link.queue) >= self.max_queue:
            self.messages_dropped += 1
            self._report_unreachable(m.to)
            return
        link.queue.append(m)
        link.wakeup.set()

    def update_peers(self, peers: dict[NodeId, Address]) -> None:
        """Replace the peer table: dial new peers, forget removed ones, follow moves.

        An entry for this node itself is ignored. Connections from removed peers are
        closed; queued messages for them are dropped.
        """
        new = {n: (str(a[0]), int(a[1])) for n, a in peers.items() if n != self.node_id}
        self._peers = new
        for peer, link in list(self._links.items()):
            addr = new.get(peer)
            if addr is None:
                del self._links[peer]
                self.messages_dropped += len(link.queue)
                link.queue.clear()
                if link.task is not None:
                    link.task.cancel()
            elif addr != link.addr:
                link.addr = addr
                if link.task is not None:
                    link.task.cancel()
                    self._spawn_writer(link)
        for peer, addr in new.items():
            if peer not in self._links:
                link = _PeerLink(peer, addr)
                self._links[peer] = link
                if self._started and not self._closed:
                    self._spawn_writer(link)
        for task, peer in self._inbound.items():
            if peer and peer not in new:
                task.cancel()

    async def close(self) -> None:
        """Stop listening, close every connection and stop the writer tasks."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        tasks = [*self._tasks, *self._inbound]
        for task in tasks:
            task.cancel()
        for link in self._links.values():
            self.messages_dropped += len(link.queue)
            link.queue.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- outbound -------------------------------------------------------------

    def _spawn_writer(self, link: _PeerLink) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run_link(link), name=f"hacoord-transport-{self.node_id}->{link.peer}"
        )
        link.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _report_unreachable(self, peer: NodeId) -> None:
        if self._on_unreachable is None:
            return
        try:
            self._on_unreachable(peer)
        except Exception:
            log.exception("on_unreachable callback failed for peer %d", peer)

    def _handshake(self, peer: NodeId) -> bytes:
        frame = self._handshake_cache.get(peer)
        if frame is None:
            frame = encode_handshake(self.cluster_id, self.node_id, peer)
            self._handshake_cache[peer] = frame
        return frame

    async def _dial(self, link: _PeerLink) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = link.addr
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=self._client_ssl), CONNECT_TIMEOUT
        )
        try:
            writer.write(self._handshake(link.peer))
            await writer.drain()
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def _run_link(self, link: _PeerLink) -> None:
        """Run :meth:`_link_loop`, restarting it should a bug ever make it raise."""
        while True:
            try:
                await self._link_loop(link)
            except Exception:
                log.exception("writer for peer %d failed; restarting it", link.peer)
                self.messages_dropped += len(link.queue)
                link.queue.clear()
                link.connected = False
                await asyncio.sleep(BACKOFF_MAX)

    async def _link_loop(self, link: _PeerLink) -> None:
        """Keep a connection to ``link.peer`` and drain its queue into it, forever."""
        loop = asyncio.get_running_loop()
        delay = BACKOFF_INITIAL
        failures = 0
        while True:
            addr = _format_addr(link.addr)
            try:
                reader, writer = await self._dial(link)
            except (OSError, TimeoutError) as exc:
                failures += 1
                dropped = len(link.queue)
                self.messages_dropped += dropped
                link.queue.clear()
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "cannot connect to peer %d at %s: %s (retrying; %d queued message(s) dropped)",
                    link.peer,
                    addr,
                    exc or type(exc).__name__,
                    dropped,
                )
                self._report_unreachable(link.peer)
                if await link.back_off(delay):
                    delay = BACKOFF_INITIAL
                else:
                    delay = min(delay * 2, BACKOFF_MAX)
                continue
            if failures:
                log.info(
                    "connected to peer %d at %s after %d failed attempt(s)",
                    link.peer,
                    addr,
                    failures,
                )
            since = loop.time()
            try:
                reason = await self._pump(link, reader, writer)
            except OSError as exc:
                reason = f"write failed: {exc or type(exc).__name__}"
            finally:
                writer.close()
            lived = loop.time() - since
            if lived >= STABLE_CONNECTION:
                failures, delay = 0, BACKOFF_INITIAL
                log.warning("connection to peer %d at %s lost: %s", link.peer, addr, reason)
            else:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "connection to peer %d at %s lost after %.2f s: %s (if this repeats, "
                    "the peer is refusing us: check its log for cluster id, node id or TLS)",
                    link.peer,
                    addr,
                    lived,
                    reason,
                )
            self._report_unreachable(link.peer)
            if await link.back_off(delay):
                delay = BACKOFF_INITIAL
            elif lived < STABLE_CONNECTION:
                delay = min(delay * 2, BACKOFF_MAX)

    async def _pump(
        self, link: _PeerLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> str:
        """Write queued messages until the connection ends; returns why it ended."""
        closed_by_peer = asyncio.get_running_loop().create_future()

        async def watch() -> None:
            # Peers never write on this connection: any read completing means EOF,
            # unexpected data or an error, and the connection is done.
            try:
                data = await reader.read(1)
                why = "unexpected data from the peer" if data else "closed by the peer"
            except OSError as exc:
                why = f"read failed: {exc or type(exc).__name__}"
            if not closed_by_peer.done():
                closed_by_peer.set_result(why)
            link.wakeup.set()

        watcher = asyncio.get_running_loop().create_task(watch())
        link.connected = True
        link.writer = writer
        try:
            while True:
                if closed_by_peer.done():
                    result: str = closed_by_peer.result()
                    return result
                if not link.queue:
                    link.wakeup.clear()
                    await link.wakeup.wait()
                    continue
                batch = list(link.queue)
                link.queue.clear()
                self._write(link.peer, writer, batch)
                await writer.drain()
        finally:
            link.connected = False
            link.writer = None
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def _write(self, peer: NodeId, writer: asyncio.StreamWriter, msgs: list[Message]) -> None:
        frames = self._frames(peer, msgs)
        data = b"".join(frames)
        writer.write(data)  # one send() for the whole batch
        self.frames_sent += len(frames)
        self.bytes_sent += len(data)

    def _frames(self, peer: NodeId, msgs: list[Message]) -> list[bytes]:
        """Encode ``msgs`` into frames of at most ``max_frame_bytes`` payload each."""
        try:
            payload = encode_batch(msgs)
        except CodecError as exc:
            if len(msgs) == 1:
                self.messages_dropped += 1
                log.error("dropping %s for peer %d: %s", msgs[0].type.name, peer, exc)
                return []
            payload = b""
            too_big = True
        else:
            too_big = len(payload) > self.max_frame_bytes
        if not too_big:
            return [_HEADER.pack(len(payload)) + payload]
        if len(msgs) == 1:
            self.messages_dropped += 1
            log.warning(
                "dropping %s for peer %d: it encodes to %d bytes, more than max_frame_bytes %d",
                msgs[0].type.name,
                peer,
                len(payload),
                self.max_frame_bytes,
            )
            return []
        mid = len(msgs) // 2
        return self._frames(peer, msgs[:mid]) + self._frames(peer, msgs[mid:])

    # -- inbound --------------------------------------------------------------

    def _refuse(self, remote: str, reason: str) -> None:
        self.connections_refused += 1
        log.warning("refused connection from %s: %s", remote, reason)

    def _check_handshake(self, payload: bytes) -> NodeId:
        """The sender's node id if the handshake is acceptable, else raise _Refused."""
        try:
            hs = msgpack.unpackb(payload, raw=False)
        except Exception:
            raise _Refused("handshake is not valid msgpack (not a hacoord member?)") from None
        if type(hs) is not list or len(hs) != 5:
            shape = f"{len(hs)} fields" if type(hs) is list else type(hs).__name__
            raise _Refused(
                "handshake must be [magic, version, cluster_id, from_node, to_node], "
                f"got {shape} (not a hacoord member?)"
            )
        magic, version, cluster, frm, to = hs
        if magic != MAGIC:
            raise _Refused(f"bad magic {magic!r}, expected {MAGIC!r} (not a hacoord member?)")
        if type(version) is not int or version != PROTOCOL_VERSION:
            raise _Refused(
                f"protocol version {version!r} is not supported (this member speaks "
                f"{PROTOCOL_VERSION})"
            )
        if cluster != self.cluster_id:
            raise _Refused(f"cluster id {cluster!r} does not match {self.cluster_id!r}")
        if type(to) is not int or to != self.node_id:
            raise _Refused(f"connection is meant for node {to!r} but this is node {self.node_id}")
        if type(frm) is not int or frm not in self._peers:
            known = ", ".join(map(str, sorted(self._peers))) or "none"
            raise _Refused(f"node {frm!r} is not a known peer (known peers: {known})")
        return frm

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closed:
            writer.close()
            return
        self._inbound[task] = 0
        remote = _format_addr(writer.get_extra_info("peername"))
        try:
            peer = await self._accept_handshake(remote, reader, writer)
            if peer is not None:
                self._inbound[task] = peer
                link = self._links.get(peer)
                if link is not None and not link.connected:
                    # The peer just reached us, so it is up: our dial to it need not
                    # wait out its back-off (this makes failover after a restart fast).
                    link.dial_now.set()
                await self._receive(peer, remote, reader)
        except OSError as exc:
            log.info("connection from %s lost: %s", remote, exc or type(exc).__name__)
        except asyncio.CancelledError:
            # Cancelled by close() or update_peers(). asyncio's start_server logs an
            # error for a handler task that ends cancelled, so end it normally.
            pass
        finally:
            self._inbound.pop(task, None)
            writer.close()

    async def _accept_handshake(
        self, remote: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> NodeId | None:
        """TLS (if configured) and handshake; the peer's id, or None if refused."""
        if self._server_ssl is not None:
            try:
                await writer.start_tls(self._server_ssl, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                self._refuse(remote, f"TLS handshake failed: {exc or type(exc).__name__}")
                return None
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                payload = await _read_frame(reader, HANDSHAKE_MAX_BYTES)
        except TimeoutError:
            self._refuse(remote, f"no handshake within {HANDSHAKE_TIMEOUT:g} s")
            return None
        except _FrameError as exc:
            self._refuse(remote, f"bad handshake: {exc} (not a hacoord member?)")
            return None
        if payload is None:
            log.debug("connection from %s closed before its handshake", remote)
            return None
        try:
            return self._check_handshake(payload)
        except _Refused as exc:
            self._refuse(remote, str(exc))
            return None

    async def _receive(self, peer: NodeId, remote: str, reader: asyncio.StreamReader) -> None:
        """Deliver frames from an authenticated peer until EOF or a bad frame."""
        node = self.node_id
        while True:
            try:
                payload = await _read_frame(reader, self.max_frame_bytes)
            except _FrameError as exc:
                log.warning("closing connection from node %d (%s): %s", peer, remote, exc)
                return
            if payload is None:
                log.debug("connection from node %d (%s) closed", peer, remote)
                return
            self.frames_received += 1
            self.bytes_received += _HEADER.size + len(payload)
            try:
                msgs = decode_batch(payload)
            except CodecError as exc:
                self.decode_errors += 1
                log.warning(
                    "closing connection from node %d (%s): undecodable frame: %s",
                    peer,
                    remote,
                    exc,
                )
                return
            for m in msgs:
                if m.frm != peer or m.to != node:
                    msgs = self._drop_misaddressed(peer, remote, msgs)
                    break
            if msgs:
                try:
                    self._on_messages(msgs)
                except Exception:
                    log.exception("on_messages callback failed for a frame from node %d", peer)

    def _drop_misaddressed(self, peer: NodeId, remote: str, msgs: list[Message]) -> list[Message]:
        good = [m for m in msgs if m.frm == peer and m.to == self.node_id]
        bad = [m for m in msgs if m.frm != peer or m.to != self.node_id]
        self.messages_dropped += len(bad)
        log.warning(
            "dropped %d message(s) on the connection from node %d (%s) not sent by node %d "
            "to node %d (first: %s from %d to %d)",
            len(bad),
            peer,
            remote,
            peer,
            self.node_id,
            bad[0].type.name,
            bad[0].frm,
            bad[0].to,
        )
        return good


__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "DEFAULT_MAX_FRAME_BYTES",
    "MAGIC",
    "PROTOCOL_VERSION",
    "TcpTransport",
    "encode_handshake",
    "make_ssl_contexts",
]
