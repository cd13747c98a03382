"""The client's lease: when it counts as lost, and that lost stays lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hacoord.client.errors import UnavailableError
from hacoord.client.leases import Lease
from hacoord.coord.errors import LeaseNotFoundError


class SlowCluster:
    """Answers the first keep-alive only after the lease's deadline, then never again."""

    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.answered = asyncio.Event()
        self.calls = 0

    async def keep_alive_once(self, lease_id: int, timeout: float | None = None) -> float:
        self.calls += 1
        assert self.lease is not None
        if self.calls > 1:
            await asyncio.Event().wait()
        # A slow cluster, not a synchronisation: the answer must arrive late.
        await asyncio.sleep(self.lease.deadline - time.monotonic() + 0.05)
        self.answered.set()
        return self.lease.ttl_s


async def test_a_keep_alive_answered_after_the_deadline_does_not_revive_the_lease() -> None:
    cluster = SlowCluster()
    lease = Lease(cluster, 7, ttl_s=0.3, started=time.monotonic())  # type: ignore[arg-type]
    cluster.lease = lease
    lease.start()
    try:
        await cluster.answered.wait()  # the lease task took the answer in the same step
        assert lease.is_lost
        assert lease.lost_reason == "the keep-alive was answered only after the deadline"
        await asyncio.wait_for(lease.lost(), 1)
    finally:
        await lease.stop()


class GoneCluster:
    """Says the lease no longer exists (as only a confirmed leader may)."""

    async def keep_alive_once(self, lease_id: int, timeout: float | None = None) -> Any:
        raise LeaseNotFoundError(lease_id)


async def test_lease_not_found_from_the_cluster_ends_the_lease_for_good() -> None:
    lease = Lease(GoneCluster(), 9, ttl_s=30, started=time.monotonic())  # type: ignore[arg-type]
    lease.start()
    try:
        await asyncio.wait_for(lease.lost(), 5)
        assert lease.is_lost and "no longer exists" in lease.lost_reason
        assert lease.deadline > time.monotonic(), "lost on the cluster's word, not the clock"
    finally:
        await lease.stop()


class UnreachableCluster:
    """No member answers: every keep-alive fails with the transport's reason."""

    def __init__(self) -> None:
        self.calls = 0

    async def keep_alive_once(self, lease_id: int, timeout: float | None = None) -> Any:
        self.calls += 1
        assert timeout is not None
        await asyncio.sleep(timeout)  # the transport uses the whole budget it was given
        raise UnavailableError(
            f"keepalive: no member answered before the deadline (try {self.calls})"
        )


async def test_a_lease_lost_at_its_deadline_says_why_the_keep_alives_failed() -> None:
    cluster = UnreachableCluster()
    lease = Lease(cluster, 11, ttl_s=0.3, started=time.monotonic())  # type: ignore[arg-type]
    lease.start()
    try:
        await asyncio.wait_for(lease.lost(), 5)
        assert lease.lost_reason.startswith("no keep-alive succeeded within the TTL")
        assert "last failure: keepalive: no member answered before the deadline" in (
            lease.lost_reason
        )
        assert cluster.calls >= 1
    finally:
        await lease.stop()
