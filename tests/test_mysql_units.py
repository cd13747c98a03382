"""MySQL adapter pieces that need no server: GTIDs, both dialects, config, candidate choice.

No MySQL 8 server runs on this machine, so the MySQL 8 dialect is checked here only.
"""

from __future__ import annotations

from typing import Any

import pytest

from hacoord.adapters.mysql.config import ClusterConfig, Credentials, Host, Promotion
from hacoord.adapters.mysql.dialect import (
    MariaDBDialect,
    MySQL8Dialect,
    ReplicaStatus,
    dialect_named,
)
from hacoord.adapters.mysql.errors import NoSafeCandidateError
from hacoord.adapters.mysql.gtid import GtidParseError, MariaPosition, MySQLGtidSet
from hacoord.adapters.mysql.server import Probe, ServerState
from hacoord.adapters.mysql.topology import Topology, choose_candidate

U1 = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
U2 = "4e11fa47-71ca-11e1-9e33-c80aa9429562"


def test_maria_positions_compare_by_domain() -> None:
    a = MariaPosition.parse("0-1-100,1-2-7")
    b = MariaPosition.parse("0-1-98")
    assert str(a) == "0-1-100,1-2-7"
    assert a.covers(b) and not b.covers(a)
    assert a.missing_from(b) == ["0-1-99..100", "1-2-1..7"]
    assert MariaPosition.parse("0-1-101").missing_from(b) == ["0-1-99..101"]
    assert MariaPosition.parse("0-1-99").missing_from(b) == ["0-1-99"]
    assert MariaPosition.parse("").covers(MariaPosition.parse("")) and a.rank() == 107


def test_a_diverged_maria_domain_counts_as_missing() -> None:
    old = MariaPosition.parse("0-1-50")
    new = MariaPosition.parse("0-2-50")
    assert old.missing_from(new) == ["0-1-50"] and not new.covers(old)


@pytest.mark.parametrize("text", ["0-1", "a-b-c", "0-1-2,0-1-3", "0-1-2;1-1-1"])
def test_bad_maria_positions_are_named(text: str) -> None:
    with pytest.raises(GtidParseError, match=r"GTID|domain"):
        MariaPosition.parse(text)


def test_mysql_gtid_sets_subtract_intervals() -> None:
    executed = MySQLGtidSet.parse(f"{U1.upper()}:1-10:12-20,\n{U2}:5")
    other = MySQLGtidSet.parse(f"{U1}:1-5:8-10:12-15")
    assert str(executed) == f"{U1}:1-10:12-20,{U2}:5"
    assert executed.missing_from(other) == [f"{U1}:6-7", f"{U1}:16-20", f"{U2}:5"]
    assert executed.covers(other) and not other.covers(executed)
    assert MySQLGtidSet.parse(f"{U1}:1-3:4-6") == MySQLGtidSet.parse(f"{U1}:1-6")
    assert executed.rank() == 10 + 9 + 1
    for bad in ("nouuid:1-2", f"{U1}:5-2", f"{U1}:x", f"{U1}"):
        with pytest.raises(GtidParseError):
            MySQLGtidSet.parse(bad)
    with pytest.raises(TypeError):
        executed.covers(MariaPosition.parse("0-1-1"))


def test_mariadb_statements() -> None:
    d = MariaDBDialect()
    assert d.replicate_from("10.0.0.2", 3306, "repl", "pw", demote=True) == [
        ("STOP SLAVE", ()),
        (
            "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s,"
            " MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1,"
            " MASTER_DEMOTE_TO_SLAVE=1",
            ("10.0.0.2", 3306, "repl", "pw"),
        ),
        ("START SLAVE", ()),
    ]
    assert d.wait_for_position("0-1-5", 3.0) == ("SELECT MASTER_GTID_WAIT(%s, %s)", ("0-1-5", 3.0))
    assert d.waited(0) and not d.waited(-1) and not d.waited(None)
    assert d.forget_replication() == ["STOP SLAVE", "RESET SLAVE ALL"]
    assert d.set_read_only(True) == ["SET GLOBAL read_only = ON"] and d.admin_writes() == []


def test_mysql8_statements_and_status() -> None:
    d = MySQL8Dialect()
    [stop, (change, args), start] = d.replicate_from("db2", 3307, "repl", "pw", demote=True)
    assert stop == ("STOP REPLICA", ()) and start == ("START REPLICA", ())
    assert change.startswith("CHANGE REPLICATION SOURCE TO SOURCE_HOST=%s, SOURCE_PORT=%s")
    assert "SOURCE_AUTO_POSITION=1" in change and args == ("db2", 3307, "repl", "pw")
    assert d.wait_for_position(f"{U1}:1-5", 2) == (
        "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)",
        (f"{U1}:1-5", 2),
    )
    assert d.waited(0) and not d.waited(1)
    assert d.set_read_only(True) == ["SET GLOBAL super_read_only = ON"]
    assert d.set_read_only(False)[0] == "SET GLOBAL super_read_only = OFF"
    assert d.replica_status_sql == "SHOW REPLICA STATUS" and "@@gtid_executed" in d.variables_sql
    assert d.forget_replication() == ["STOP REPLICA", "RESET REPLICA ALL"]
    assert "rpl_semi_sync_source_enabled = ON" in d.set_semi_sync(primary=True)[0]
    status = d.parse_replica_status(
        {
            "Source_Host": "db1",
            "Source_Port": 3306,
            "Replica_IO_Running": "Connecting",
            "Replica_SQL_Running": "Yes",
            "Last_IO_Errno": 2003,
            "Last_IO_Error": "can't connect",
            "Last_SQL_Errno": 0,
            "Last_SQL_Error": "",
            "Seconds_Behind_Source": None,
            "Retrieved_Gtid_Set": f"{U1}:1-12",
            "Executed_Gtid_Set": f"{U1}:1-10,{U2}:1-3",
            "Auto_Position": 1,
        }
    )
    assert status.source_port == 3306 and not status.io_running and status.io_connecting
    assert status.received == f"{U1}:1-12,{U2}:1-3" and status.uses_gtid and not status.broken
    with pytest.raises(ValueError, match="unknown SQL dialect 'pg'"):
        dialect_named("pg")


def test_mariadb_status_row() -> None:
    row: dict[str, Any] = {
        "Master_Host": "127.0.0.1",
        "Master_Port": 3306,
        "Slave_IO_Running": "Yes",
        "Slave_SQL_Running": "No",
        "Last_IO_Errno": 0,
        "Last_IO_Error": "",
        "Last_SQL_Errno": 1062,
        "Last_SQL_Error": "Duplicate entry",
        "Seconds_Behind_Master": None,
        "Gtid_IO_Pos": "0-1-9",
        "Using_Gtid": "Slave_Pos",
    }
    status = MariaDBDialect().parse_replica_status(row)
    assert status.broken and status.uses_gtid and status.received == "0-1-9"


def cluster(*promotions: Promotion) -> ClusterConfig:
    hosts = tuple(Host("127.0.0.1", 3306 + i, p) for i, p in enumerate(promotions))
    return ClusterConfig("db1", hosts, Credentials("admin", "s3cret"), Credentials("repl", "r"))


def replica(cfg: ClusterConfig, i: int, received: str, **kw: Any) -> Probe:
    status = ReplicaStatus(
        source_host="127.0.0.1",
        source_port=kw.pop("source_port", 3306),
        io_running=False,
        sql_running=True,
        io_errno=2003,
        io_error="cannot connect",
        sql_errno=kw.pop("sql_errno", 0),
        sql_error=kw.pop("sql_error", ""),
        seconds_behind=None,
        received=received,
        uses_gtid=True,
    )
    state = ServerState(cfg.hosts[i], i + 1, "10.11", True, received, True, status, False)
    return Probe(cfg.hosts[i], state=state)


def topology(cfg: ClusterConfig, *probes: Probe) -> Topology:
    dead = Probe(cfg.hosts[0], error="cannot connect")
    return Topology("db1", {p.host.name: p for p in (dead, *probes)}, "127.0.0.1:3306")


def test_the_most_advanced_replica_wins_then_prefer_then_order() -> None:
    cfg = cluster(Promotion.NEUTRAL, Promotion.NEUTRAL, Promotion.PREFER, Promotion.NEUTRAL)
    topo = topology(
        cfg, replica(cfg, 1, "0-1-10"), replica(cfg, 2, "0-1-9"), replica(cfg, 3, "0-1-10")
    )
    chosen = choose_candidate(cfg, topo, "127.0.0.1:3306")
    assert chosen.host == "127.0.0.1:3307" and chosen.received == "0-1-10"
    assert set(chosen.rejected) == {"127.0.0.1:3308", "127.0.0.1:3309"}
    tie = topology(cfg, replica(cfg, 1, "0-1-10"), replica(cfg, 2, "0-1-10"))
    assert choose_candidate(cfg, tie, "127.0.0.1:3306").host == "127.0.0.1:3308", "prefer"


def test_hosts_in_maintenance_are_never_chosen() -> None:
    cfg = cluster(Promotion.NEUTRAL, Promotion.PREFER, Promotion.NEUTRAL)
    topo = topology(cfg, replica(cfg, 1, "0-1-10"), replica(cfg, 2, "0-1-9"))
    chosen = choose_candidate(cfg, topo, "127.0.0.1:3306", exclude={"127.0.0.1:3307"})
    assert chosen.host == "127.0.0.1:3308"
    assert chosen.rejected["127.0.0.1:3307"] == "in maintenance"


def test_unsafe_replicas_are_never_chosen_and_say_why() -> None:
    cfg = cluster(Promotion.NEUTRAL, Promotion.MUST_NOT, Promotion.NEUTRAL, Promotion.NEUTRAL)
    topo = topology(
        cfg,
        replica(cfg, 1, "0-1-20"),
        replica(cfg, 2, "0-1-20", sql_errno=1062, sql_error="Duplicate entry '7'"),
        replica(cfg, 3, "0-1-20", source_port=4000),
    )
    with pytest.raises(NoSafeCandidateError) as info:
        choose_candidate(cfg, topo, "127.0.0.1:3306")
    reasons = info.value.reasons
    assert reasons["127.0.0.1:3307"] == "promotion rule is must_not"
    assert "broken by error 1062" in reasons["127.0.0.1:3308"]
    assert "replicates from 127.0.0.1:4000" in reasons["127.0.0.1:3309"]
    unreachable = topology(cfg, Probe(cfg.hosts[2], error="timed out"))
    with pytest.raises(NoSafeCandidateError, match="unreachable"):
        choose_candidate(cfg, unreachable, "127.0.0.1:3306")


def test_config_is_checked_and_hides_passwords() -> None:
    cfg = cluster(Promotion.NEUTRAL, Promotion.NEUTRAL)
    assert "s3cret" not in repr(cfg)
    with pytest.raises(ValueError, match="at least 2 hosts"):
        ClusterConfig("db1", cfg.hosts[:1], cfg.admin, cfg.replication)
    with pytest.raises(ValueError, match="cluster name"):
        ClusterConfig("db 1", cfg.hosts, cfg.admin, cfg.replication)
    with pytest.raises(ValueError, match="listed twice"):
        ClusterConfig("db1", (cfg.hosts[0], cfg.hosts[0]), cfg.admin, cfg.replication)
    with pytest.raises(KeyError, match="no host 'x:1'"):
        cfg.host("x:1")
    raw = {
        "name": "db1",
        "hosts": [{"host": "a", "port": 3306}, {"host": "b", "promotion": "must_not"}],
        "admin_user": "admin",
        "admin_password_env": "ADMIN_PW",
        "replication_user": "repl",
        "replication_password_env": "REPL_PW",
    }
    loaded = ClusterConfig.from_mapping(raw, {"ADMIN_PW": "x", "REPL_PW": "y"})
    assert loaded.hosts[1].promotion is Promotion.MUST_NOT and loaded.admin.password == "x"
    with pytest.raises(ValueError, match="REPL_PW is not set"):
        ClusterConfig.from_mapping(raw, {"ADMIN_PW": "x"})
    with pytest.raises(ValueError, match="missing setting 'hosts'"):
        ClusterConfig.from_mapping({"name": "db1"}, {})
