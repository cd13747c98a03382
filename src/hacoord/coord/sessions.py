"""Exactly-once application of client requests, with bounded memory.

Each client numbers its requests and may have several in flight. The table keeps
the outcome of each of a client's recent requests; a retry of one of them gets the
remembered outcome instead of being applied again. A client tells, with every
request, the lowest number it still waits for: outcomes below it are dropped. Memory
is bounded twice over: per client (the oldest outcomes go first) and in the number
of clients (the least recently active go first), in an order every replica agrees
on because it depends only on the log.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from hacoord.coord.errors import StaleSequenceError

DEFAULT_MAX_CLIENTS = 10_000
DEFAULT_MAX_OUTCOMES_PER_CLIENT = 256


@dataclass(slots=True)
class ClientRecord:
    """The remembered outcomes of one client, in wire form, by sequence number."""

    floor: int = 0
    """Every sequence number below this is forgotten: such a request is refused."""
    outcomes: dict[int, list[Any]] = field(default_factory=dict)
    """``seq -> ["ok", result]`` or ``["error", error]`` (see :mod:`hacoord.coord.results`)."""


class ClientTable:
    """Outcomes per client, evicting the least recently active client when full."""

    def __init__(
        self,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_outcomes: int = DEFAULT_MAX_OUTCOMES_PER_CLIENT,
    ) -> None:
        if max_clients < 1 or max_outcomes < 1:
            raise ValueError(
                f"max_clients and max_outcomes must be >= 1, got {max_clients}, {max_outcomes}"
            )
        self.max_clients = max_clients
        self.max_outcomes = max_outcomes
        self.clients: OrderedDict[int, ClientRecord] = OrderedDict()

    def lookup(self, client_id: int, seq: int) -> list[Any] | None:
        """The remembered outcome of ``seq``; raises when it was already forgotten."""
        record = self.clients.get(client_id)
        if record is None:
            return None
        if seq < record.floor:
            raise StaleSequenceError(client_id, seq, record.floor)
        return record.outcomes.get(seq)

    def record(self, client_id: int, seq: int, first_outstanding: int, outcome: list[Any]) -> None:
        """Remember the outcome of ``seq`` and forget what the client no longer needs."""
        record = self.clients.get(client_id)
        if record is None:
            record = self.clients[client_id] = ClientRecord()
        self.clients.move_to_end(client_id)
        record.outcomes[seq] = outcome
        if first_outstanding > record.floor:
            outcomes = record.outcomes
            if first_outstanding - record.floor <= len(outcomes):
                # Every kept outcome is at or above the old floor: drop the few newly
                # below it without scanning the whole table on every request.
                for s in range(record.floor, first_outstanding):
                    outcomes.pop(s, None)
            else:
                record.outcomes = {s: o for s, o in outcomes.items() if s >= first_outstanding}
            record.floor = first_outstanding
        while len(record.outcomes) > self.max_outcomes:
            oldest = min(record.outcomes)
            del record.outcomes[oldest]
            record.floor = oldest + 1
        while len(self.clients) > self.max_clients:
            self.clients.popitem(last=False)
