"""GTID positions of MariaDB and GTID sets of MySQL 8, compared without a server.

Both answer the questions a failover asks: does server A have everything server B
has (:meth:`covers`), which transactions does A have that B lacks
(:meth:`missing_from`), and which of several replicas is the most advanced
(:meth:`rank`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol


class GtidParseError(ValueError):
    """A GTID position or set could not be parsed; the message quotes it."""


class Position(Protocol):
    """What a failover needs from a GTID position, whatever the dialect."""

    def covers(self, other: Position) -> bool:
        """Whether this position includes every transaction of ``other``."""
        ...

    def missing_from(self, other: Position) -> list[str]:
        """The transactions here that ``other`` lacks, as GTID (range) strings."""
        ...

    def rank(self) -> int:
        """A number that grows with every transaction (to order replicas)."""
        ...


@dataclass(frozen=True, slots=True)
class MariaGtid:
    """One MariaDB GTID: ``domain-server-seq``."""

    domain: int
    server: int
    seq: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.server}-{self.seq}"


_MARIA_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


@dataclass(frozen=True, slots=True)
class MariaPosition:
    """A MariaDB GTID position: the last GTID applied in each replication domain.

    In GTID strict mode every server applies a domain's transactions in the same
    order, so ``seq`` numbers of one domain compare across servers.
    """

    last: tuple[MariaGtid, ...] = ()

    @staticmethod
    def parse(text: str) -> MariaPosition:
        """Parse ``@@gtid_binlog_pos``-style text such as ``0-1-100,1-2-7``."""
        gtids: dict[int, MariaGtid] = {}
        for part in filter(None, (p.strip() for p in (text or "").split(","))):
            match = _MARIA_GTID.match(part)
            if match is None:
                raise GtidParseError(f"not a MariaDB GTID: {part!r} (in {text!r})")
            gtid = MariaGtid(*(int(g) for g in match.groups()))
            if gtid.domain in gtids:
                raise GtidParseError(f"domain {gtid.domain} appears twice in {text!r}")
            gtids[gtid.domain] = gtid
        return MariaPosition(tuple(sorted(gtids.values(), key=lambda g: g.domain)))

    def __str__(self) -> str:
        return ",".join(str(g) for g in self.last)

    def get(self, domain: int) -> MariaGtid | None:
        """The last GTID of ``domain``, or ``None``."""
        return next((g for g in self.last if g.domain == domain), None)

    def covers(self, other: Position) -> bool:
        """Whether this position is at or past ``other`` in every domain."""
        return not _as_maria(other).missing_from(self)

    def missing_from(self, other: Position) -> list[str]:
        """GTID ranges here past ``other``'s position, domain by domain.

        A domain whose last GTID has the same ``seq`` but another server id has
        diverged: it is reported too, because the transaction differs.
        """
        them = _as_maria(other)
        out = []
        for mine in self.last:
            theirs = them.get(mine.domain)
            their_seq = theirs.seq if theirs else 0
            if mine.seq > their_seq:
                first = f"{mine.domain}-{mine.server}-{their_seq + 1}"
                out.append(str(mine) if their_seq + 1 == mine.seq else f"{first}..{mine.seq}")
            elif theirs and mine.seq == theirs.seq and mine.server != theirs.server:
                out.append(str(mine))
        return out

    def rank(self) -> int:
        """The sum of the last ``seq`` of each domain."""
        return sum(g.seq for g in self.last)


def _as_maria(other: Position) -> MariaPosition:
    if not isinstance(other, MariaPosition):
        raise TypeError(f"cannot compare a MariaDB position with {type(other).__name__}")
    return other


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True, slots=True)
class MySQLGtidSet:
    """A MySQL 8 GTID set: for each source UUID, the intervals of transactions."""

    intervals: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = ()

    @staticmethod
    def parse(text: str) -> MySQLGtidSet:
        """Parse ``@@gtid_executed`` text such as ``3E11FA47-...:1-5:7-9,<uuid>:1``."""
        sets: dict[str, list[tuple[int, int]]] = {}
        for part in filter(None, (p.strip() for p in (text or "").replace("\n", "").split(","))):
            uuid, *ranges = part.split(":")
            if not _UUID.match(uuid) or not ranges:
                raise GtidParseError(f"not a MySQL GTID set member: {part!r} (in {text!r})")
            for r in ranges:
                low, _, high = r.partition("-")
                try:
                    start, end = int(low), int(high or low)
                except ValueError:
                    raise GtidParseError(f"bad interval {r!r} in {text!r}") from None
                if start < 1 or end < start:
                    raise GtidParseError(f"bad interval {r!r} in {text!r}")
                sets.setdefault(uuid.lower(), []).append((start, end))
        return MySQLGtidSet(tuple((u, _merge(iv)) for u, iv in sorted(sets.items())))

    def __str__(self) -> str:
        return ",".join(
            u + "".join(f":{a}" if a == b else f":{a}-{b}" for a, b in iv)
            for u, iv in self.intervals
        )

    def _map(self) -> dict[str, tuple[tuple[int, int], ...]]:
        return dict(self.intervals)

    def covers(self, other: Position) -> bool:
        """Whether ``other`` is a subset of this set."""
        return not _as_mysql(other).missing_from(self)

    def missing_from(self, other: Position) -> list[str]:
        """The intervals of this set that ``other`` does not contain."""
        theirs = _as_mysql(other)._map()
        out = []
        for uuid, mine in self.intervals:
            for a, b in _subtract(mine, theirs.get(uuid, ())):
                out.append(f"{uuid}:{a}" if a == b else f"{uuid}:{a}-{b}")
        return out

    def rank(self) -> int:
        """The number of transactions in the set."""
        return sum(b - a + 1 for _, iv in self.intervals for a, b in iv)


def _as_mysql(other: Position) -> MySQLGtidSet:
    if not isinstance(other, MySQLGtidSet):
        raise TypeError(f"cannot compare a MySQL GTID set with {type(other).__name__}")
    return other


def _merge(intervals: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return tuple(merged)


def _subtract(
    mine: tuple[tuple[int, int], ...], theirs: tuple[tuple[int, int], ...]
) -> list[tuple[int, int]]:
    out = []
    for a, b in mine:
        start = a
        for c, d in theirs:
            if d < start or c > b:
                continue
            if c > start:
                out.append((start, c - 1))
            start = max(start, d + 1)
            if start > b:
                break
        if start <= b:
            out.append((start, b))
    return out
