"""hacoord: an embeddable asyncio Raft library with leader election and fencing tokens."""

__version__ = "0.1.0"

from typing import Any


def __getattr__(name: str) -> Any:
    # ``hacoord.connect`` without importing asyncio and aiohttp for users of the pure core.
    if name == "connect":
        from hacoord.client import connect

        return connect
    raise AttributeError(f"module 'hacoord' has no attribute {name!r}")
