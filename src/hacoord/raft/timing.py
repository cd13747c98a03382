"""Wall-clock timing settings, validated and converted into core ticks."""

from __future__ import annotations

from dataclasses import dataclass

from hacoord.raft.errors import ConfigError


@dataclass(slots=True, frozen=True)
class Timing:
    """Heartbeat interval and election timeout in milliseconds.

    The defaults suit a LAN: a leader that dies is replaced after roughly
    one to two election timeouts.
    """

    heartbeat_ms: float = 50.0
    election_timeout_ms: float = 500.0

    def __post_init__(self) -> None:
        if self.heartbeat_ms < 1:
            raise ConfigError(f"heartbeat_ms must be >= 1 ms, got {self.heartbeat_ms}")
        if self.election_timeout_ms < 3 * self.heartbeat_ms:
            raise ConfigError(
                f"election_timeout_ms ({self.election_timeout_ms:g}) must be at least 3 x "
                f"heartbeat_ms ({self.heartbeat_ms:g}); a follower would otherwise start "
                "elections between two heartbeats of a healthy leader"
            )

    @property
    def tick_ms(self) -> float:
        """Length of one core tick: fine enough that the election timeout spans >= 10 ticks."""
        return min(self.heartbeat_ms, self.election_timeout_ms / 10)

    @property
    def heartbeat_ticks(self) -> int:
        """Heartbeat interval in ticks."""
        return max(1, round(self.heartbeat_ms / self.tick_ms))

    @property
    def election_ticks(self) -> int:
        """Election timeout in ticks (always more than twice the heartbeat)."""
        return max(round(self.election_timeout_ms / self.tick_ms), 2 * self.heartbeat_ticks + 1)
