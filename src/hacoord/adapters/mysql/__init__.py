"""MySQL / MariaDB primary failover adapter: fenced switchover, failover and rejoin.

See ``docs/mysql.md``. MariaDB runs for real in the test suite; the MySQL 8 dialect is
covered by unit tests only (no MySQL 8 server runs on our CI machine).
"""

from hacoord.adapters.mysql.adapter import FAILOVER, REJOIN, SWITCHOVER, MySQLAdapter
from hacoord.adapters.mysql.config import ClusterConfig, Credentials, Host, Promotion
from hacoord.adapters.mysql.dialect import MariaDBDialect, MySQL8Dialect, dialect_named
from hacoord.adapters.mysql.errors import (
    AccessDeniedError,
    FenceMismatchError,
    MySQLAdapterError,
    NoSafeCandidateError,
    ServerError,
    TopologyError,
    UnreachableError,
)
from hacoord.adapters.mysql.fence import check_fence, fenced_transaction
from hacoord.adapters.mysql.primary import PrimaryRecord, read_primary, watch_primary
from hacoord.adapters.mysql.topology import Topology

__all__ = [
    "FAILOVER",
    "REJOIN",
    "SWITCHOVER",
    "AccessDeniedError",
    "ClusterConfig",
    "Credentials",
    "FenceMismatchError",
    "Host",
    "MariaDBDialect",
    "MySQL8Dialect",
    "MySQLAdapter",
    "MySQLAdapterError",
    "NoSafeCandidateError",
    "PrimaryRecord",
    "Promotion",
    "ServerError",
    "Topology",
    "TopologyError",
    "UnreachableError",
    "check_fence",
    "dialect_named",
    "fenced_transaction",
    "read_primary",
    "watch_primary",
]
