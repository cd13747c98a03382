"""Exactly-once application of client requests, with bounded memory.

Each client numbers its requests; the table remembers, per client, the last sequence
number applied and its outcome. A retry of that number gets the remembered outcome
instead of being applied again. The least recently active clients are forgotten
first, in an order every replica agrees on (it depends only on the log).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_CLIENTS = 10_000


@dataclass(slots=True)
class ClientRecord:
    """The last request of one client and its outcome, in wire form."""

    seq: int
    outcome: list[Any]
    """``["ok", result]`` or ``["error", error]`` (see :mod:`hacoord.coord.results`)."""


class ClientTable:
    """Last sequence number and outcome per client, evicting the least recently active."""

    def __init__(self, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.max_clients = max_clients
        self.clients: OrderedDict[int, ClientRecord] = OrderedDict()

    def lookup(self, client_id: int) -> ClientRecord | None:
        """The client's last record, if still remembered."""
        return self.clients.get(client_id)

    def record(self, client_id: int, seq: int, outcome: list[Any]) -> None:
        """Remember the outcome of ``seq``, forgetting the least recent client if full."""
        self.clients[client_id] = ClientRecord(seq, outcome)
        self.clients.move_to_end(client_id)
        while len(self.clients) > self.max_clients:
            self.clients.popitem(last=False)
