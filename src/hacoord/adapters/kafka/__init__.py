"""Kafka adapter: several independent Kafka clusters acting as one HA group.

Producers (:class:`HAProducer`) move to another cluster when one fails; consumers
(:class:`HAConsumer`) read every cluster and are never stalled by a dead one; the group's
topology record, written under a fencing token, says which clusters are writable and which
is the primary. A :class:`Watchdog` in every coordinator member probes every cluster, and
the active :class:`ControlPlane` drains, promotes and readmits clusters on a majority's
verdict. See ``docs/kafka.md``.
"""

from hacoord.adapters.kafka.config import ClusterConfig, GroupConfig, Mode, TopicConfig
from hacoord.adapters.kafka.consumer import ConsumerOptions, HAConsumer, HARecord
from hacoord.adapters.kafka.control import TopologyControl
from hacoord.adapters.kafka.detect import Health, Verdict
from hacoord.adapters.kafka.errors import (
    BufferFullError,
    ClusterError,
    ClusterUnreachableError,
    ConfigError,
    KafkaAdapterError,
    MessageTooLargeError,
    NoClusterAvailableError,
    ProducerClosedError,
    PromotePendingError,
    StaleTopologyError,
    TopicMissingError,
    UnknownClusterError,
    UnknownTopicError,
)
from hacoord.adapters.kafka.plane import (
    ControlPlane,
    ControlTimings,
    drain,
    request_promote,
    undrain,
)
from hacoord.adapters.kafka.producer import (
    MESSAGE_ID_HEADER,
    HAProducer,
    ProducerOptions,
    SendResult,
)
from hacoord.adapters.kafka.proxy import ProduceProxy, ProxyLimits
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
from hacoord.adapters.kafka.watchdog import Watchdog

__all__ = [
    "MESSAGE_ID_HEADER",
    "BufferFullError",
    "ClusterConfig",
    "ClusterError",
    "ClusterState",
    "ClusterUnreachableError",
    "ConfigError",
    "ConsumerOptions",
    "ControlPlane",
    "ControlTimings",
    "GroupConfig",
    "HAConsumer",
    "HAProducer",
    "HARecord",
    "Health",
    "KafkaAdapterError",
    "MessageTooLargeError",
    "Mode",
    "NoClusterAvailableError",
    "ProduceProxy",
    "ProducerClosedError",
    "ProducerOptions",
    "PromotePendingError",
    "ProxyLimits",
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
    "Verdict",
    "Watchdog",
    "check_topics",
    "drain",
    "ensure_topics",
    "publish_topology",
    "read_topology",
    "request_promote",
    "topology_key",
    "undrain",
]
