"""Errors of the Kafka adapter; each names the cluster, topic or setting concerned."""

from __future__ import annotations

from collections.abc import Mapping


class KafkaAdapterError(Exception):
    """Base class of the adapter's errors."""


class ConfigError(KafkaAdapterError, ValueError):
    """The HA group's configuration is invalid; the message names the setting."""


class UnknownClusterError(KafkaAdapterError, KeyError):
    """A cluster name that the group's configuration does not list."""

    def __init__(self, cluster: str, known: list[str]) -> None:
        super().__init__(cluster)
        self.cluster = cluster
        self.known = known

    def __str__(self) -> str:
        return f"no cluster {self.cluster!r} in the group (clusters: {', '.join(self.known)})"


class UnknownTopicError(KafkaAdapterError, KeyError):
    """A logical topic that the group's configuration does not list."""

    def __init__(self, topic: str, known: list[str]) -> None:
        super().__init__(topic)
        self.topic = topic
        self.known = known

    def __str__(self) -> str:
        return f"no logical topic {self.topic!r} in the group (topics: {', '.join(self.known)})"


class TopicMissingError(KafkaAdapterError):
    """A logical topic's physical topic does not exist in some clusters."""

    def __init__(self, topic: str, missing: list[str]) -> None:
        super().__init__(
            f"topic {topic!r}: no physical topic in cluster(s) {', '.join(missing)} "
            "(create them with ensure_topics)"
        )
        self.topic = topic
        self.missing = missing


class ClusterError(KafkaAdapterError):
    """A call to one cluster failed."""

    def __init__(self, cluster: str, message: str) -> None:
        super().__init__(f"cluster {cluster}: {message}")
        self.cluster = cluster


class ClusterUnreachableError(ClusterError):
    """One cluster did not answer (down, hung, wrong address) within the timeout."""


class NoClusterAvailableError(KafkaAdapterError):
    """No cluster of the group could take a message; ``errors`` says why, per cluster."""

    def __init__(self, topic: str, errors: Mapping[str, str]) -> None:
        why = "; ".join(f"{c}: {e}" for c, e in errors.items()) or "the topology lists none"
        super().__init__(f"topic {topic!r}: no cluster could take the message ({why})")
        self.topic = topic
        self.errors = dict(errors)


class PromotePendingError(KafkaAdapterError):
    """A promotion of another cluster is already waiting for the control plane."""


class MessageTooLargeError(KafkaAdapterError, ValueError):
    """A message larger than the producer may send; no cluster was tried."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"topic {topic!r}: message refused before sending: {reason}")
        self.topic = topic


class BufferFullError(KafkaAdapterError):
    """The producer's bounded buffer stayed full for the whole wait."""


class StaleTopologyError(KafkaAdapterError):
    """A topology record older than one already adopted or published was offered."""


class ProducerClosedError(KafkaAdapterError):
    """A send on a producer that was closed (or never started)."""
