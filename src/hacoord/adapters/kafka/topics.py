"""Physical topics: every logical topic of an HA group exists in every cluster.

:func:`ensure_topics` creates what is missing (with the configured partition count and each
cluster's replication factor) and :func:`check_topics` says which clusters lack which
topic, through aiokafka's admin client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from hacoord.adapters.kafka.config import ClusterConfig, GroupConfig
from hacoord.adapters.kafka.errors import (
    ClusterError,
    ClusterUnreachableError,
    TopicMissingError,
)

TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC_OR_PARTITION = 3


@asynccontextmanager
async def admin_client(
    cluster: ClusterConfig, timeout: float
) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client of ``cluster``, started; :class:`ClusterUnreachableError` if it is not up."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=cluster.bootstrap_servers,
        request_timeout_ms=int(timeout * 1000),
        client_id=f"hacoord-admin-{cluster.name}",
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
    except Exception as e:
        await admin.close()
        raise ClusterUnreachableError(cluster.name, f"admin client did not start: {e!r}") from e
    try:
        yield admin
    finally:
        await admin.close()


async def physical_topics(cluster: ClusterConfig, timeout: float = 10.0) -> dict[str, int]:
    """The topics of ``cluster`` and their partition counts."""
    try:
        async with admin_client(cluster, timeout) as admin, asyncio.timeout(timeout):
            return await _listed(admin)
    except TimeoutError as e:
        raise ClusterUnreachableError(cluster.name, "metadata request timed out") from e


async def _listed(admin: AIOKafkaAdminClient) -> dict[str, int]:
    """The topics a broker's metadata lists, and their partition counts."""
    described = await admin.describe_topics()
    return {
        str(t["topic"]): len(t["partitions"])
        for t in described
        if t["error_code"] == 0 and not t["is_internal"]
    }


async def check_topics(
    config: GroupConfig,
    clusters: Iterable[str] | None = None,
    timeout: float = 10.0,
    skip_unreachable: bool = False,
) -> list[str]:
    """Raise :class:`TopicMissingError` for the first logical topic some cluster lacks.

    With ``skip_unreachable`` a cluster that does not answer is left out (and returned)
    instead of raising :class:`ClusterUnreachableError`.
    """
    names = list(clusters) if clusters is not None else config.cluster_names
    found = await asyncio.gather(
        *(physical_topics(config.cluster(n), timeout) for n in names),
        return_exceptions=skip_unreachable,
    )
    unreachable: list[str] = []
    answered: dict[str, dict[str, int]] = {}
    for name, result in zip(names, found, strict=True):
        if isinstance(result, ClusterUnreachableError):
            unreachable.append(name)
        elif isinstance(result, BaseException):
            raise result
        else:
            answered[name] = result
    for topic in config.topics:
        missing = [n for n, topics in answered.items() if topic.physical not in topics]
        if missing:
            raise TopicMissingError(topic.name, missing)
    return unreachable


async def ensure_topics(
    config: GroupConfig, clusters: Iterable[str] | None = None, timeout: float = 10.0
) -> dict[str, list[str]]:
    """Create every missing physical topic; returns what was created, per cluster."""
    names = list(clusters) if clusters is not None else config.cluster_names
    created = await asyncio.gather(*(_ensure_in(config, config.cluster(n), timeout) for n in names))
    return dict(zip(names, created, strict=True))


async def _ensure_in(config: GroupConfig, cluster: ClusterConfig, timeout: float) -> list[str]:
    existing = await physical_topics(cluster, timeout)
    wanted = [t for t in config.topics if t.physical not in existing]
    if not wanted:
        return []
    new = [NewTopic(t.physical, t.partitions, cluster.replication_factor) for t in wanted]
    names = [t.physical for t in wanted]
    created: list[str] | None = None
    listed: dict[str, int] = {}
    try:
        async with admin_client(cluster, timeout) as admin, asyncio.timeout(timeout):
            response = await admin.create_topics(new, timeout_ms=int(timeout * 1000))
            created = _created(cluster, response.topic_errors)
            # Kafka answers CreateTopics before every broker's metadata has the new
            # topics, so a check right after could miss them; it offers no notification
            # of that, hence the polling.
            while True:
                listed = await _listed(admin)
                if all(name in listed for name in names):
                    break
                await asyncio.sleep(0.05)
    except TimeoutError as e:
        if created is None:
            raise ClusterUnreachableError(cluster.name, "create topics timed out") from e
        missing = [n for n in names if n not in listed]
        raise ClusterError(
            cluster.name, f"created topics {missing} are still not listed after {timeout:g} s"
        ) from e
    return created


def _created(cluster: ClusterConfig, topic_errors: list[Any]) -> list[str]:
    """The topics a CreateTopics answer says were made (one that exists already is not
    an error); :class:`ClusterError` for any other refusal."""
    created = []
    for name, code, *rest in topic_errors:
        if code == 0:
            created.append(str(name))
        elif code != TOPIC_ALREADY_EXISTS:
            detail = rest[0] if rest and rest[0] else f"error code {code}"
            raise ClusterError(cluster.name, f"cannot create topic {name!r}: {detail}")
    return created
