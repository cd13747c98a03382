"""Which event loop a member process runs on: asyncio's own, or uvloop when installed.

uvloop (``pip install 'hacoord[uvloop]'``) cuts the time every request spends in the
loop's own machinery; on the benchmark machine a 3-member cluster answered serial writes
about 10% sooner and 64 concurrent writers about 10% faster (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from hacoord.raft.errors import ConfigError

T = TypeVar("T")

EVENT_LOOPS = ("auto", "asyncio", "uvloop")
"""``auto``: uvloop if it is installed, asyncio's otherwise."""


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop ``choice`` names (``None``: asyncio's default).

    :class:`ConfigError` for an unknown choice, or for ``uvloop`` when it is not installed.
    """
    if choice not in EVENT_LOOPS:
        raise ConfigError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}, got {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "event_loop = 'uvloop' but uvloop is not installed "
                "(pip install 'hacoord[uvloop]', or choose 'auto' or 'asyncio')"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """Run ``main`` to completion on a new loop of the kind ``choice`` names."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()  # never started: no "never awaited" warning on top of the error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: what the running loop is (for status and logs)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
