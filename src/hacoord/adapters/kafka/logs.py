"""Keeping aiokafka's logging readable while a broker is down.

aiokafka logs an ERROR ("Unable connect to node with id 1: ...") every ~100 ms for as long
as a broker does not answer. The watchdog already reports that once, as a state change; the
:class:`RepeatFilter` that :func:`quiet_aiokafka` installs lets each distinct warning or
error through once per window, as a WARNING (a cluster being down is what the adapter is
for, not an error of this process), and counts the repeats it dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

AIOKAFKA_LOGGER = "aiokafka"
REPEAT_WINDOW_S = 30.0
_MAX_REMEMBERED = 1024
CHATTY = ("aiokafka.consumer.subscription_state",)
"""Loggers with an INFO line per call that the watchdog makes every round (``assign``)."""


class RepeatFilter(logging.Filter):
    """Drops repeats of a WARNING-or-worse message within ``window_s``; demotes the rest.

    A message is "the same" when its logger and its formatted text are. The first record
    let through after some were dropped says how many. Records below WARNING pass untouched.
    """

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self.dropped = 0
        """Records dropped in all."""
        self._last: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is logged (demoted to WARNING if it is worse)."""
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        key = (record.name, message)
        now = self.clock()
        with self._lock:
            shown_at, repeats = self._last.get(key, (float("-inf"), 0))
            if now - shown_at < self.window_s:
                self._last[key] = (shown_at, repeats + 1)
                self.dropped += 1
                return False
            if len(self._last) >= _MAX_REMEMBERED:
                self._forget(now)
            self._last[key] = (now, 0)
        if repeats:
            record.msg = f"{message} (and {repeats} times more in {self.window_s:.0f} s)"
            record.args = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True

    def _forget(self, now: float) -> None:
        for key, (shown_at, _) in list(self._last.items()):
            if now - shown_at >= self.window_s:
                del self._last[key]


def quiet_aiokafka(window_s: float = REPEAT_WINDOW_S) -> RepeatFilter:
    """Install a :class:`RepeatFilter` on the ``aiokafka`` logger (once); returns it.

    A logger's filters see only the records logged on it, not those of its children; the
    connection errors that repeat are logged on ``aiokafka`` itself.
    """
    for name in CHATTY:
        chatty = logging.getLogger(name)
        if chatty.level == logging.NOTSET:
            chatty.setLevel(logging.WARNING)
    logger = logging.getLogger(AIOKAFKA_LOGGER)
    for existing in logger.filters:
        if isinstance(existing, RepeatFilter):
            return existing
    installed = RepeatFilter(window_s)
    logger.addFilter(installed)
    return installed
