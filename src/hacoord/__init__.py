"""hacoord: an embeddable asyncio Raft library with leader election and fencing tokens."""

__version__ = "0.1.0"
