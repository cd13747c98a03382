"""Network transports that carry Raft messages between members.

:class:`~hacoord.transport.tcp.TcpTransport` is the production transport: framed
msgpack over TCP (optionally TLS with client certificates), one outbound connection
per peer with coalescing and reconnect back-off.
"""

from __future__ import annotations

from hacoord.transport.tcp import TcpTransport, make_ssl_contexts

__all__ = ["TcpTransport", "make_ssl_contexts"]
