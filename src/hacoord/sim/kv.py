"""The replicated register the simulator's clients run against.

Commands are msgpack arrays ``[client, op_id, kind, key, value, expected]``; the
state is a plain dict. Snapshots are the msgpack encoding of the dict.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

PUT = 0
CAS = 1


@dataclass(slots=True, frozen=True)
class Command:
    """A write command carried in a log entry."""

    client: int
    op_id: int
    kind: int
    key: str
    value: str
    expected: str | None = None

    def encode(self) -> bytes:
        """Encode as entry data."""
        packed: bytes = msgpack.packb(
            [self.client, self.op_id, self.kind, self.key, self.value, self.expected]
        )
        return packed

    @staticmethod
    def decode(data: bytes) -> Command:
        """Decode entry data produced by :meth:`encode`."""
        client, op_id, kind, key, value, expected = msgpack.unpackb(data)
        return Command(client, op_id, kind, key, value, expected)


class KVStateMachine:
    """A dict of registers; ``apply`` returns whether a CAS succeeded (True for PUT)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, cmd: Command) -> bool:
        """Apply one command."""
        if cmd.kind == PUT:
            self.data[cmd.key] = cmd.value
            return True
        if self.data.get(cmd.key) == cmd.expected:
            self.data[cmd.key] = cmd.value
            return True
        return False

    def snapshot(self) -> bytes:
        """Serialize the whole state."""
        packed: bytes = msgpack.packb(self.data)
        return packed

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot produced by :meth:`snapshot`."""
        self.data = dict(msgpack.unpackb(data)) if data else {}
