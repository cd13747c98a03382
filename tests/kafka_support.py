"""Starting a Kafka test bed from a test: a skip on a laptop without Java, a failure in CI."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import NoReturn

import pytest

from hacoord.adapters.kafka.testbed import KafkaTestBed, KafkaUnavailableError


def unavailable(e: Exception) -> NoReturn:
    """Skip the test, or fail it under ``CI=true``, because Kafka cannot run here."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"Kafka (Java 17 and the Maven jars) is required when CI=true: {e}")
    pytest.skip(f"Kafka unavailable: {e}")


@contextlib.asynccontextmanager
async def running(bed: KafkaTestBed) -> AsyncIterator[KafkaTestBed]:
    """Start ``bed`` (see :func:`unavailable` when it cannot) and close it afterwards."""
    try:
        await bed.start()
    except KafkaUnavailableError as e:
        unavailable(e)
    try:
        yield bed
    finally:
        await bed.close()
