"""What the producer and consumer share about their aiokafka clients."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop_quietly(client: Any, timeout: float) -> None:
    """Stop an aiokafka producer or consumer within ``timeout``; a failure is only logged.

    A hung or dead cluster can make ``stop()`` wait forever or fail; its connections are
    then given up.
    """
    try:
        async with asyncio.timeout(timeout):
            await client.stop()
    except Exception as e:
        log.debug("%s stop: %r", type(client).__name__, e)
