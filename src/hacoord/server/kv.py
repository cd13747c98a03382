"""A small replicated key-value state machine served by ``hacoord serve``.

Commands are msgpack arrays: ``[PUT, key, value]`` or ``[DELETE, key]``. Every
write returns the log index that applied it, which is strictly increasing and so
usable as a version or fencing token.
"""

from __future__ import annotations

from typing import Any

import msgpack

from hacoord.raft.errors import RaftError
from hacoord.raft.types import Entry

PUT = 1
DELETE = 2


def encode_put(key: str, value: bytes) -> bytes:
    """Command that sets ``key`` to ``value``."""
    out: bytes = msgpack.packb([PUT, key, value])
    return out


def encode_delete(key: str) -> bytes:
    """Command that removes ``key``."""
    out: bytes = msgpack.packb([DELETE, key])
    return out


class KVStateMachine:
    """Keys map to ``(value, mod_index)``; ``apply`` returns the entry index."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int]] = {}
        self.applied = 0
        self.addresses: dict[int, tuple[str, int, str, int]] = {}
        """Member id -> (raft host, raft port, http host, http port), as last configured.

        Kept here so that snapshots carry the address book along with the data."""

    def apply(self, entry: Entry) -> Any:
        """Apply one command; unknown commands raise (and are reported to the proposer)."""
        self.applied = entry.index
        try:
            cmd = msgpack.unpackb(entry.data)
            op = cmd[0]
        except Exception as exc:
            raise RaftError(f"entry {entry.index}: undecodable KV command: {exc}") from exc
        if op == PUT:
            self.data[cmd[1]] = (cmd[2], entry.index)
        elif op == DELETE:
            self.data.pop(cmd[1], None)
        else:
            raise RaftError(f"entry {entry.index}: unknown KV command {op!r}")
        return entry.index

    def get(self, key: str) -> tuple[bytes, int] | None:
        """Current value and the index that last modified it."""
        return self.data.get(key)

    def snapshot(self) -> bytes:
        """Serialize every key."""
        out: bytes = msgpack.packb(
            [
                self.applied,
                [[k, v, i] for k, (v, i) in sorted(self.data.items())],
                [[m, *a] for m, a in sorted(self.addresses.items())],
            ]
        )
        return out

    def restore(self, data: bytes) -> None:
        """Replace all keys with a snapshot's."""
        if not data:
            self.data, self.applied, self.addresses = {}, 0, {}
            return
        applied, items, addresses = msgpack.unpackb(data)
        self.applied = applied
        self.data = {k: (v, i) for k, v, i in items}
        self.addresses = {m: (rh, rp, hh, hp) for m, rh, rp, hh, hp in addresses}
