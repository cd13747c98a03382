"""What the producer and consumer share about their aiokafka clients."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop_quietly(client: Any, timeout: float) -> None:
    """Stop an aiokafka producer or consumer within ``timeout``; a failure is only logged.

    A hung or dead cluster can make ``stop()`` wait forever or fail; its connections are
    then given up. aiokafka 0.14's consumer ``stop()`` can also raise the ``CancelledError``
    of a fetch task it cancelled (one sleeping in its back-off after a failed fetch from a
    dead broker); that one is swallowed too, unless the task calling this is itself being
    cancelled.
    """
    try:
        async with asyncio.timeout(timeout):
            await client.stop()
    except Exception as e:
        log.debug("%s stop: %r", type(client).__name__, e)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("%s stop: a stray CancelledError from its own tasks", type(client).__name__)
