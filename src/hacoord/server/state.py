"""The state machine a member serves: coordination state plus the member address book."""

from __future__ import annotations

from collections.abc import Callable

import msgpack

from hacoord.coord.results import Result
from hacoord.coord.state_machine import CoordStateMachine, pack_view
from hacoord.coord.store import DEFAULT_HISTORY
from hacoord.raft.types import Entry

AppliedHook = Callable[[Entry, Result | None], None]


class ServerStateMachine(CoordStateMachine):
    """:class:`CoordStateMachine` that also carries member addresses in its snapshots.

    ``on_applied`` hooks run after every entry (with ``None`` as the result of a
    refused one); ``on_restored`` hooks run after a snapshot replaced the state.
    """

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        super().__init__(history=history)
        self.addresses: dict[int, tuple[str, int, str, int]] = {}
        """Member id -> (raft host, raft port, http host, http port), as last configured.

        Kept here so that snapshots carry the address book along with the data."""
        self.on_applied: list[AppliedHook] = []
        self.on_restored: list[Callable[[], None]] = []

    def apply(self, entry: Entry) -> Result:
        """Apply like :class:`CoordStateMachine`, then tell the hooks."""
        try:
            result = super().apply(entry)
        except Exception:
            for hook in self.on_applied:
                hook(entry, None)
            raise
        for hook in self.on_applied:
            hook(entry, result)
        return result

    def capture(self) -> Callable[[], bytes | memoryview]:
        """The coordination snapshot's view, serialized with the address book.

        The member snapshot is the array ``[coordination, book]``; the coordination
        part is packed in place (older snapshots hold it as bytes, and still load),
        which saves copying a large snapshot while holding the GIL.
        """
        view = self._view()
        book = [[m, *a] for m, a in sorted(self.addresses.items())]

        def serialize() -> memoryview:
            packer = msgpack.Packer(autoreset=False)
            packer.pack_array_header(2)
            pack_view(packer, view)
            packer.pack(book)
            out: memoryview = packer.getbuffer()  # no copy: see SnapshotsInBackground
            return out

        return serialize

    def restore(self, data: bytes) -> None:
        """Replace everything with a snapshot's content (empty: the initial state)."""
        if not data:
            super().restore(b"")
            self.addresses = {}
        else:
            try:
                coord, book = msgpack.unpackb(data, use_list=False)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"member snapshot is malformed: {exc}") from None
            if isinstance(coord, bytes):
                super().restore(coord)  # written before the coordination part was inline
            else:
                self.restore_items(coord)
            self.addresses = {m: (rh, rp, hh, hp) for m, rh, rp, hh, hp in book}
        for hook in self.on_restored:
            hook()
