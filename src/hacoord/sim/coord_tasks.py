"""Generator tasks on the simulator's virtual clock: the clients' "asyncio".

A simulated client is written like the real async client, as generators that
``yield`` a :class:`SimFuture` and get its value back (``value = yield from
wait(future)``); ``yield from`` composes them like ``await``. A task resumes in a
later event of the schedule, never inside the code that completed its future, and
not before its owner's pause (a hung process) is over.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Generic, Protocol, TypeVar, cast

T = TypeVar("T")
Gen = Generator["SimFuture[Any]", Any, T]
"""A task body (or a part of one) returning ``T``."""


class Scheduler(Protocol):
    """The simulation's clock and event queue."""

    now: float

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` after ``delay`` virtual milliseconds."""
        ...


class Owner(Protocol):
    """Whoever runs tasks; while paused, none of its tasks resumes."""

    paused_until: float


class SimFuture(Generic[T]):
    """A value that becomes available later; completes at most once."""

    __slots__ = ("_callbacks", "done", "value")

    def __init__(self) -> None:
        self.done = False
        self.value: T | None = None
        self._callbacks: list[Callable[[], None]] = []

    def set(self, value: T) -> None:
        """Complete with ``value`` (ignored when already complete)."""
        if self.done:
            return
        self.done = True
        self.value = value
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once complete (at once if it already is)."""
        if self.done:
            callback()
        else:
            self._callbacks.append(callback)

    def result(self) -> T:
        """The value of a completed future."""
        assert self.done, "future not complete"
        return cast(T, self.value)


def wait(fut: SimFuture[T]) -> Gen[T]:
    """``value = yield from wait(fut)``: suspend until ``fut`` completes."""
    yield fut
    return fut.result()


class Task:
    """One running generator; :meth:`cancel` closes it (its ``finally`` blocks run)."""

    def __init__(self, kernel: Kernel, owner: Owner, body: Gen[Any]) -> None:
        self.kernel = kernel
        self.owner = owner
        self.body = body
        self.finished = False
        self.cancelled = False
        self.done: SimFuture[None] = SimFuture()

    def cancel(self) -> None:
        """Stop the task now (a no-op once it finished)."""
        if self.finished:
            return
        self.cancelled = True
        self.finished = True
        self.body.close()
        self.done.set(None)

    def _step(self) -> None:
        if self.finished:
            return
        if self.owner.paused_until > self.kernel.clock.now:
            self.kernel.clock.schedule(self.owner.paused_until - self.kernel.clock.now, self._step)
            return
        try:
            fut = next(self.body)
        except StopIteration:
            self.finished = True
            self.done.set(None)
            return
        fut.on_done(self._wake)

    def _wake(self) -> None:
        if not self.finished:
            self.kernel.clock.schedule(0.0, self._step)


class Kernel:
    """Creates tasks, timers and races on one :class:`Scheduler`."""

    def __init__(self, clock: Scheduler) -> None:
        self.clock = clock

    def spawn(self, owner: Owner, body: Gen[Any]) -> Task:
        """Start ``body`` as a task of ``owner`` (its first step runs in a later event)."""
        task = Task(self, owner, body)
        self.clock.schedule(0.0, task._step)
        return task

    def sleep(self, ms: float) -> SimFuture[None]:
        """A future that completes after ``ms`` virtual milliseconds."""
        fut: SimFuture[None] = SimFuture()
        self.clock.schedule(max(0.0, ms), lambda: fut.set(None))
        return fut

    def first_of(self, *futures: SimFuture[Any]) -> SimFuture[int]:
        """A future completing with the position of the first of ``futures`` to complete."""
        out: SimFuture[int] = SimFuture()
        for i, fut in enumerate(futures):
            fut.on_done(lambda i=i: out.set(i))  # type: ignore[misc]
        return out
