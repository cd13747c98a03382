"""Configuration of the pure Raft core (in ticks; drivers convert from milliseconds)."""

from __future__ import annotations

from dataclasses import dataclass

from hacoord.raft.errors import ConfigError


@dataclass(slots=True, frozen=True)
class CoreConfig:
    """Tunables of :class:`hacoord.raft.core.RaftCore`.

    Time is counted in ticks: the driver calls ``tick()`` at a fixed interval.
    """

    node_id: int
    election_ticks: int = 10
    """Base election timeout T; each node draws its timeout from [T, 2T)."""
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_bytes: int = 1 << 20
    """Upper bound on the entry payload carried by one append message."""
    max_inflight: int = 64
    """Append messages in flight per follower before the leader waits for acks."""

    def __post_init__(self) -> None:
        if self.node_id <= 0:
            raise ConfigError(f"node_id must be a positive integer, got {self.node_id}")
        if self.heartbeat_ticks <= 0:
            raise ConfigError(f"heartbeat_ticks must be >= 1, got {self.heartbeat_ticks}")
        if self.election_ticks <= self.heartbeat_ticks * 2:
            raise ConfigError(
                f"election_ticks ({self.election_ticks}) must be more than twice "
                f"heartbeat_ticks ({self.heartbeat_ticks}), "
                "or followers time out between heartbeats"
            )
        if self.max_msg_bytes < 1024:
            raise ConfigError(f"max_msg_bytes must be >= 1024, got {self.max_msg_bytes}")
        if self.max_inflight < 1:
            raise ConfigError(f"max_inflight must be >= 1, got {self.max_inflight}")
