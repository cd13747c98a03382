"""The SQL that differs between MariaDB and MySQL 8, behind one interface.

MariaDB statements run against real servers in the test suite. No MySQL 8 server
runs on our CI machine, so :class:`MySQL8Dialect` is checked by unit tests of the
statements it produces and of the status rows it parses, not against a server.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from hacoord.adapters.mysql.gtid import MariaPosition, MySQLGtidSet, Position

Statement = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """A replica's view of its replication stream (one row of SHOW SLAVE STATUS)."""

    source_host: str
    source_port: int
    io_running: bool
    sql_running: bool
    io_errno: int
    io_error: str
    sql_errno: int
    sql_error: str
    seconds_behind: int | None
    received: str
    """GTIDs received from the source, applied or still in the relay log."""
    uses_gtid: bool

    @property
    def broken(self) -> bool:
        """The SQL thread stopped on an error: this replica's data is suspect."""
        return self.sql_errno != 0

    @property
    def io_connecting(self) -> bool:
        """The IO thread is trying to (re)connect to its source."""
        return not self.io_running and self.io_errno != 0


class Dialect(ABC):
    """Statements and parsers for one server flavour."""

    name: str

    variables_sql = ""
    """One row: server_id, version, read_only, executed GTIDs, log_bin."""

    @abstractmethod
    def parse_position(self, text: str) -> Position:
        """Parse this flavour's GTID text."""

    @property
    @abstractmethod
    def replica_status_sql(self) -> str:
        """The statement listing the replica's replication state."""

    @abstractmethod
    def parse_replica_status(self, row: dict[str, Any]) -> ReplicaStatus:
        """One row of :attr:`replica_status_sql` as a :class:`ReplicaStatus`."""

    @property
    @abstractmethod
    def semi_sync_status_sql(self) -> str:
        """One row ``(name, 'ON'|'OFF')``: is semi-sync active on this primary."""

    @property
    @abstractmethod
    def semi_sync_clients_sql(self) -> str:
        """One row ``(name, count)``: replicas connected as semi-sync replicas."""

    @abstractmethod
    def stop_replication(self) -> list[str]:
        """Stop both replication threads."""

    @abstractmethod
    def start_replication(self) -> list[str]:
        """Start both replication threads."""

    @abstractmethod
    def forget_replication(self) -> list[str]:
        """Stop replicating and forget the source (for a promoted server)."""

    @abstractmethod
    def replicate_from(
        self, host: str, port: int, user: str, password: str, demote: bool
    ) -> list[Statement]:
        """Point this server at a new source by GTID and start replicating.

        ``demote``: this server was a primary; carry its own binlog position into
        its replication position so it asks the new source only for what it lacks.
        """

    @abstractmethod
    def wait_for_position(self, position: str, timeout_s: float) -> Statement:
        """A query returning one value: whether ``position`` was applied in time."""

    @abstractmethod
    def waited(self, value: Any) -> bool:
        """Whether the value of :meth:`wait_for_position` means success."""

    @abstractmethod
    def set_read_only(self, on: bool) -> list[str]:
        """Close (or open) the server for writes of ordinary users."""

    @abstractmethod
    def set_semi_sync(self, primary: bool) -> list[str]:
        """Turn the semi-sync primary side on for a primary, off for a replica."""

    def admin_writes(self) -> list[str]:
        """Let the administrator write while ordinary users stay read-only."""
        return []

    client_connections_sql = (
        "SELECT id, user, host FROM information_schema.processlist"
        " WHERE id <> CONNECTION_ID()"
        " AND user NOT IN ('system user', 'event_scheduler')"
        " AND command NOT IN ('Binlog Dump', 'Binlog Dump GTID', 'Daemon')"
    )
    """Connections of clients (not replication, not this one) to kill when fencing."""


def _int(value: Any, default: int = 0) -> int:
    return default if value in (None, "") else int(value)


class MariaDBDialect(Dialect):
    """MariaDB 10.5+ (GTID strict mode, ``MASTER_USE_GTID=slave_pos``)."""

    name = "mariadb"
    variables_sql = "SELECT @@server_id, @@version, @@read_only, @@gtid_binlog_pos, @@log_bin"
    replica_status_sql = "SHOW SLAVE STATUS"
    semi_sync_status_sql = "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'"
    semi_sync_clients_sql = "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'"

    def parse_position(self, text: str) -> Position:
        return MariaPosition.parse(text)

    def parse_replica_status(self, row: dict[str, Any]) -> ReplicaStatus:
        return ReplicaStatus(
            source_host=str(row["Master_Host"]),
            source_port=_int(row["Master_Port"]),
            io_running=row["Slave_IO_Running"] == "Yes",
            sql_running=row["Slave_SQL_Running"] == "Yes",
            io_errno=_int(row.get("Last_IO_Errno")),
            io_error=str(row.get("Last_IO_Error") or ""),
            sql_errno=_int(row.get("Last_SQL_Errno")),
            sql_error=str(row.get("Last_SQL_Error") or ""),
            seconds_behind=None
            if row.get("Seconds_Behind_Master") is None
            else int(row["Seconds_Behind_Master"]),
            received=str(row.get("Gtid_IO_Pos") or ""),
            uses_gtid=str(row.get("Using_Gtid", "No")) != "No",
        )

    def stop_replication(self) -> list[str]:
        return ["STOP SLAVE"]

    def start_replication(self) -> list[str]:
        return ["START SLAVE"]

    def forget_replication(self) -> list[str]:
        return ["STOP SLAVE", "RESET SLAVE ALL"]

    def replicate_from(
        self, host: str, port: int, user: str, password: str, demote: bool
    ) -> list[Statement]:
        change = (
            "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s,"
            " MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1"
        )
        if demote:
            change += ", MASTER_DEMOTE_TO_SLAVE=1"
        return [
            ("STOP SLAVE", ()),
            (change, (host, port, user, password)),
            ("START SLAVE", ()),
        ]

    def wait_for_position(self, position: str, timeout_s: float) -> Statement:
        return "SELECT MASTER_GTID_WAIT(%s, %s)", (position, timeout_s)

    def waited(self, value: Any) -> bool:
        return value is not None and int(value) == 0

    def set_read_only(self, on: bool) -> list[str]:
        return [f"SET GLOBAL read_only = {'ON' if on else 'OFF'}"]

    def set_semi_sync(self, primary: bool) -> list[str]:
        return [
            f"SET GLOBAL rpl_semi_sync_master_enabled = {'ON' if primary else 'OFF'}",
            f"SET GLOBAL rpl_semi_sync_slave_enabled = {'OFF' if primary else 'ON'}",
        ]


class MySQL8Dialect(Dialect):
    """MySQL 8.0.23+ (``SOURCE_AUTO_POSITION``, ``super_read_only``).

    Not run against a server here: unit-tested statements only.
    """

    name = "mysql8"
    variables_sql = "SELECT @@server_id, @@version, @@read_only, @@gtid_executed, @@log_bin"
    replica_status_sql = "SHOW REPLICA STATUS"
    semi_sync_status_sql = "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_source_status'"
    semi_sync_clients_sql = "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_source_clients'"

    def parse_position(self, text: str) -> Position:
        return MySQLGtidSet.parse(text)

    def parse_replica_status(self, row: dict[str, Any]) -> ReplicaStatus:
        received = MySQLGtidSet.parse(str(row.get("Retrieved_Gtid_Set") or ""))
        executed = MySQLGtidSet.parse(str(row.get("Executed_Gtid_Set") or ""))
        union = MySQLGtidSet.parse(",".join(filter(None, (str(received), str(executed)))))
        return ReplicaStatus(
            source_host=str(row["Source_Host"]),
            source_port=_int(row["Source_Port"]),
            io_running=row["Replica_IO_Running"] == "Yes",
            sql_running=row["Replica_SQL_Running"] == "Yes",
            io_errno=_int(row.get("Last_IO_Errno")),
            io_error=str(row.get("Last_IO_Error") or ""),
            sql_errno=_int(row.get("Last_SQL_Errno")),
            sql_error=str(row.get("Last_SQL_Error") or ""),
            seconds_behind=None
            if row.get("Seconds_Behind_Source") is None
            else int(row["Seconds_Behind_Source"]),
            received=str(union),
            uses_gtid=_int(row.get("Auto_Position")) == 1,
        )

    def stop_replication(self) -> list[str]:
        return ["STOP REPLICA"]

    def start_replication(self) -> list[str]:
        return ["START REPLICA"]

    def forget_replication(self) -> list[str]:
        return ["STOP REPLICA", "RESET REPLICA ALL"]

    def replicate_from(
        self, host: str, port: int, user: str, password: str, demote: bool
    ) -> list[Statement]:
        # MySQL's auto-positioning sends @@gtid_executed, which already includes a
        # demoted primary's own transactions: nothing extra to do for ``demote``.
        return [
            ("STOP REPLICA", ()),
            (
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST=%s, SOURCE_PORT=%s, SOURCE_USER=%s,"
                " SOURCE_PASSWORD=%s, SOURCE_AUTO_POSITION=1, SOURCE_CONNECT_RETRY=1",
                (host, port, user, password),
            ),
            ("START REPLICA", ()),
        ]

    def wait_for_position(self, position: str, timeout_s: float) -> Statement:
        return "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)", (position, timeout_s)

    def waited(self, value: Any) -> bool:
        return value is not None and int(value) == 0

    def set_read_only(self, on: bool) -> list[str]:
        if on:
            return ["SET GLOBAL super_read_only = ON"]  # implies read_only
        return ["SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = OFF"]

    def admin_writes(self) -> list[str]:
        return ["SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = ON"]

    def set_semi_sync(self, primary: bool) -> list[str]:
        return [
            f"SET GLOBAL rpl_semi_sync_source_enabled = {'ON' if primary else 'OFF'}",
            f"SET GLOBAL rpl_semi_sync_replica_enabled = {'OFF' if primary else 'ON'}",
        ]


DIALECTS: dict[str, Dialect] = {d.name: d for d in (MariaDBDialect(), MySQL8Dialect())}


def dialect_named(name: str) -> Dialect:
    """The dialect called ``name`` (``mariadb`` or ``mysql8``)."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown SQL dialect {name!r} (known: {', '.join(DIALECTS)})") from None
