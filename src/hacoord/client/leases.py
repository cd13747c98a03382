"""A lease kept alive by the client, and the moment it must be considered lost.

The client renews the lease every third of its TTL. It counts the lease as valid
until ``send time of the last successful keep-alive + TTL``: the leader timed that
keep-alive from when it *received* it (later), and a new leader restarts every
lease's full TTL, so the cluster cannot expire the lease before the client's own
deadline. :meth:`Lease.lost` therefore fires before anyone else can take over what
the lease protected, as long as clocks run at the same rate (``safety_margin``
absorbs drift).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from hacoord.client.errors import UnavailableError
from hacoord.coord.errors import LeaseNotFoundError

if TYPE_CHECKING:
    from hacoord.client.client import Client

log = logging.getLogger(__name__)

DEADLINE_REASON = "no keep-alive succeeded within the TTL"


class Lease:
    """A granted lease; see :meth:`hacoord.client.Client.grant`."""

    def __init__(
        self,
        client: Client,
        lease_id: int,
        ttl_s: float,
        started: float,
        safety_margin: float = 0.02,
    ) -> None:
        self.client = client
        self.id = lease_id
        self.ttl_s = ttl_s
        self.safety_margin = safety_margin
        self.deadline = started + ttl_s * (1 - safety_margin)
        """Monotonic time until which this lease is certainly still alive."""
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.lost_reason = ""
        self._last_failure = ""
        """Why the latest keep-alive attempt failed (empty after a success)."""

    def start(self) -> None:
        """Keep the lease alive in the background until :meth:`stop` or loss."""
        self._task = asyncio.create_task(self._keep_alive(), name=f"hacoord-lease-{self.id}")

    async def stop(self) -> None:
        """Stop renewing (the lease then expires on its own unless revoked)."""
        self._stopping = True  # in case a library call swallows the cancellation
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def is_lost(self) -> bool:
        """Whether the lease may have ended."""
        return self._lost.is_set() or time.monotonic() >= self.deadline

    async def lost(self) -> None:
        """Return once the lease may have ended (expired, revoked, or unreachable).

        Fires at the client's deadline even when keep-alives were stopped.
        """
        while not self._lost.is_set():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self._mark_lost(self._deadline_reason())
                return
            # asyncio.timeout, not wait_for: wait_for can swallow a cancellation (3.11).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._lost.wait()

    def _deadline_reason(self) -> str:
        if not self._last_failure:
            return DEADLINE_REASON
        return f"{DEADLINE_REASON} (last failure: {self._last_failure})"

    def _failed(self, why: str) -> None:
        self._last_failure = why
        if self.lost_reason == DEADLINE_REASON:
            # lost() saw the deadline pass while this attempt was still giving up.
            self.lost_reason = self._deadline_reason()

    def _mark_lost(self, reason: str) -> None:
        if not self._lost.is_set():
            self.lost_reason = reason
            log.info("lease %d lost: %s", self.id, reason)
            self._lost.set()

    async def _keep_alive(self) -> None:
        interval = self.ttl_s / 3
        try:
            while not self._stopping:
                now = time.monotonic()
                if now >= self.deadline:
                    self._mark_lost(self._deadline_reason())
                    return
                sent = now
                try:
                    ttl_s = await self.client.keep_alive_once(
                        self.id, timeout=max(0.001, self.deadline - now)
                    )
                except LeaseNotFoundError:
                    self._mark_lost("the cluster says the lease no longer exists")
                    return
                except UnavailableError as e:
                    self._failed(str(e))
                    continue  # the loop re-checks the deadline
                except Exception as e:
                    self._failed(repr(e))
                    # Whatever went wrong with this attempt, the lease is only lost at its
                    # deadline: keep trying until then instead of dying silently.
                    log.warning("lease %d: keep-alive failed: %r", self.id, e)
                    await asyncio.sleep(
                        min(interval, max(0.0, self.deadline - time.monotonic())) / 4
                    )
                    continue
                if time.monotonic() >= self.deadline:
                    # Renewed, but only after the deadline passed: the holder may already
                    # have seen is_lost and stopped acting, so the lease must not come
                    # back to life under it.
                    self._mark_lost("the keep-alive was answered only after the deadline")
                    return
                self.deadline = sent + ttl_s * (1 - self.safety_margin)
                self._last_failure = ""
                wait = min(interval, max(0.0, self.deadline - time.monotonic()))
                await asyncio.sleep(wait)
        finally:
            if not self._lost.is_set() and time.monotonic() >= self.deadline:
                self._mark_lost("keep-alives stopped")
