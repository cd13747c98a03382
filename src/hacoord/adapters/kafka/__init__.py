"""Kafka adapter: several independent Kafka clusters acting as one HA group.

Producers (:class:`HAProducer`) move to another cluster when one fails; consumers
(:class:`HAConsumer`) read every cluster and are never stalled by a dead one; the group's
topology record, written under a fencing token, says which clusters are writable and which
is the primary. See ``docs/kafka.md``.
"""

from hacoord.adapters.kafka.config import ClusterConfig, GroupConfig, Mode, TopicConfig
from hacoord.adapters.kafka.consumer import ConsumerOptions, HAConsumer, HARecord
from hacoord.adapters.kafka.control import TopologyControl
from hacoord.adapters.kafka.errors import (
    BufferFullError,
    ClusterError,
    ClusterUnreachableError,
    ConfigError,
    KafkaAdapterError,
    NoClusterAvailableError,
    ProducerClosedError,
    StaleTopologyError,
    TopicMissingError,
    UnknownClusterError,
    UnknownTopicError,
)
from hacoord.adapters.kafka.producer import (
    MESSAGE_ID_HEADER,
    HAProducer,
    ProducerOptions,
    SendResult,
)
from hacoord.adapters.kafka.topics import check_topics, ensure_topics
from hacoord.adapters.kafka.topology import (
    ClusterState,
    StaticTopology,
    Topology,
    TopologySource,
    TopologyWatcher,
    publish_topology,
    read_topology,
    topology_key,
)

__all__ = [
    "MESSAGE_ID_HEADER",
    "BufferFullError",
    "ClusterConfig",
    "ClusterError",
    "ClusterState",
    "ClusterUnreachableError",
    "ConfigError",
    "ConsumerOptions",
    "GroupConfig",
    "HAConsumer",
    "HAProducer",
    "HARecord",
    "KafkaAdapterError",
    "Mode",
    "NoClusterAvailableError",
    "ProducerClosedError",
    "ProducerOptions",
    "SendResult",
    "StaleTopologyError",
    "StaticTopology",
    "TopicConfig",
    "TopicMissingError",
    "Topology",
    "TopologyControl",
    "TopologySource",
    "TopologyWatcher",
    "UnknownClusterError",
    "UnknownTopicError",
    "check_topics",
    "ensure_topics",
    "publish_topology",
    "read_topology",
    "topology_key",
]
