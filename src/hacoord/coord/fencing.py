"""Fencing at the resource: accept an action only with the highest token seen so far."""

from __future__ import annotations

from hacoord.coord.errors import FencingTokenError


class FencedResource:
    """Remembers the highest fencing token accepted and refuses lower ones.

    Use one per resource an elected holder acts on (a database, a record, a file).
    Equal tokens are accepted: the same holder may act many times. Persist
    :attr:`highest` with the resource when the resource outlives the process.
    """

    def __init__(self, name: str, highest: int = 0) -> None:
        if highest < 0:
            raise ValueError(f"{name}: highest token must be >= 0, got {highest}")
        self.name = name
        self._highest = highest

    @property
    def highest(self) -> int:
        """The highest token accepted so far (0: none yet)."""
        return self._highest

    def check(self, token: int) -> None:
        """Raise :class:`FencingTokenError` when ``token`` is older than one accepted."""
        if token < 1:
            raise ValueError(f"{self.name}: fencing tokens are >= 1, got {token}")
        if token < self._highest:
            raise FencingTokenError(self.name, token, self._highest)

    def accept(self, token: int) -> None:
        """Check ``token`` and record it as the highest when it is."""
        self.check(token)
        self._highest = token
