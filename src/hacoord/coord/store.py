"""Keys with revisions, prefix ranges, and a bounded history of changes for watches."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from sortedcontainers import SortedList

from hacoord.coord.errors import CompactedError
from hacoord.coord.results import Event, EventType, KeyValue

DEFAULT_HISTORY = 10_000


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    ``None`` when there is none (an empty prefix, or one made only of the highest
    code point): the range then runs to the end of the key space.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            chars[-1] = chr(last + 1)
            return "".join(chars)
        chars.pop()
    return None


class KeyStore:
    """The current keys, kept in key order, plus the last ``history`` changes.

    The store does not pick revisions: the state machine passes the revision of the
    entry being applied, so revisions are log indexes and grow strictly.
    """

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.history_limit = history
        self.keys: dict[str, KeyValue] = {}
        self._order: SortedList = SortedList()
        """The keys in order, for prefix ranges (inserts and deletes in O(log n))."""
        self.revision = 0
        """Revision of the last change (0 before the first)."""
        self.events: deque[Event] = deque()
        self.compacted = 0
        """Every event at or below this revision has been dropped from the history."""

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> KeyValue | None:
        """The key, or ``None``."""
        return self.keys.get(key)

    def range(self, key: str, prefix: bool = False, limit: int = 0) -> tuple[list[KeyValue], bool]:
        """Keys equal to ``key`` (or starting with it), in key order; and whether cut."""
        if not prefix:
            kv = self.keys.get(key)
            return ([kv] if kv else []), False
        out: list[KeyValue] = []
        for k in self._keys_with_prefix(key):
            if limit and len(out) == limit:
                return out, True
            out.append(self.keys[k])
        return out, False

    def _keys_with_prefix(self, prefix: str) -> Iterator[str]:
        keys: Iterator[str] = self._order.irange(
            prefix, prefix_end(prefix), inclusive=(True, False)
        )
        return keys

    def events_since(self, revision: int, key: str = "", prefix: bool = True) -> list[Event]:
        """Changes at ``revision`` or later to ``key`` (or under it when ``prefix``).

        Raises :class:`CompactedError` when some of those changes are no longer kept.
        """
        if revision <= self.compacted:
            raise CompactedError(revision, self.compacted)
        out = []
        # Events are in revision order: skip from the right end back to the start point.
        for event in reversed(self.events):
            if event.revision < revision:
                break
            k = event.kv.key
            if k == key or (prefix and k.startswith(key)):
                out.append(event)
        out.reverse()
        return out

    # ----------------------------------------------------------------- writes

    def put(self, key: str, value: bytes, lease: int, revision: int) -> KeyValue | None:
        """Write ``key`` at ``revision``; returns the previous key."""
        prev = self.keys.get(key)
        if prev is None:
            kv = KeyValue(key, value, revision, revision, 1, lease)
            self._order.add(key)
        else:
            kv = KeyValue(key, value, prev.create_revision, revision, prev.version + 1, lease)
        self.keys[key] = kv
        self._record(Event(EventType.PUT, kv, prev), revision)
        return prev

    def delete(self, key: str, prefix: bool, revision: int) -> list[KeyValue]:
        """Delete ``key`` (or every key under it) at ``revision``; returns what went."""
        doomed = list(self._keys_with_prefix(key)) if prefix else [key] if key in self.keys else []
        gone = []
        for k in doomed:
            prev = self.keys.pop(k)
            self._order.remove(k)
            tomb = KeyValue(k, b"", 0, revision, 0, 0)
            self._record(Event(EventType.DELETE, tomb, prev), revision)
            gone.append(prev)
        return gone

    def _record(self, event: Event, revision: int) -> None:
        self.revision = revision
        self.events.append(event)
        while len(self.events) > self.history_limit:
            dropped = self.events.popleft()
            self.compacted = dropped.revision
        # Never keep part of one revision: a watcher resuming there would miss the rest.
        while self.events and self.events[0].revision == self.compacted:
            self.events.popleft()

    def restore(
        self, keys: list[KeyValue], events: list[Event], revision: int, compacted: int
    ) -> None:
        """Replace everything with a snapshot's content."""
        self.keys = {kv.key: kv for kv in keys}
        self._order = SortedList(self.keys)
        self.events = deque(events)
        self.revision = revision
        self.compacted = compacted
