"""Failure detection without servers: the quorum verdict, agent alerts, config, status tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from hacoord.adapters.mysql.config import ClusterConfig, Credentials, Host
from hacoord.adapters.mysql.daemon_config import load_daemon_config, parse_daemon_config
from hacoord.adapters.mysql.detect import HostView, Observation, ReplicaView, Verdict, classify
from hacoord.adapters.mysql.dialect import ReplicaStatus
from hacoord.adapters.mysql.monitor import agent_alerts
from hacoord.adapters.mysql.primary import PrimaryRecord
from hacoord.adapters.mysql.server import Probe, ServerState
from hacoord.adapters.mysql.status_view import render_status
from hacoord.adapters.mysql.topology import Topology

P = "db1:3306"


def obs(member: str, up: bool, failures: int = 3) -> Observation:
    return Observation(member, {P: HostView(up, 0 if up else failures, "" if up else "refused")})


def replica(host: str, connected: bool, reachable: bool = True) -> ReplicaView:
    return ReplicaView(host, reachable, connected)


def test_dead_only_when_a_majority_cannot_reach_and_replicas_confirm() -> None:
    members = [obs("m1", False), obs("m2", False), obs("m3", False)]
    dead = classify(P, members, 3, [replica("r1", False), replica("r2", False)])
    assert dead.verdict is Verdict.DEAD and dead.failover
    assert "3 of 3 members cannot reach db1:3306 and replicas r1, r2 confirm" in dead.reason
    two = classify(P, members[:2], 3, [replica("r1", False, reachable=False)])
    assert two.verdict is Verdict.DEAD and "no replica can be asked" in two.reason


def test_one_member_cut_off_is_a_false_positive() -> None:
    decision = classify(P, [obs("m1", False), obs("m2", True), obs("m3", True)], 3, [])
    assert decision.verdict is Verdict.FALSE_POSITIVE and not decision.failover
    assert "m1 cannot reach" in decision.reason and "m2, m3 can" in decision.reason


def test_a_minority_of_members_is_not_enough_even_if_others_are_silent() -> None:
    decision = classify(P, [obs("m1", False)], 3, [replica("r1", False)])
    assert decision.verdict is Verdict.FALSE_POSITIVE and "need 2" in decision.reason


def test_any_member_or_replica_reaching_the_primary_keeps_it_alive() -> None:
    five = [obs(f"m{i}", False) for i in range(1, 4)] + [obs("m4", True), obs("m5", True)]
    assert classify(P, five, 5, []).verdict is Verdict.FALSE_POSITIVE
    members = [obs("m1", False), obs("m2", False), obs("m3", False)]
    decision = classify(P, members, 3, [replica("r1", True), replica("r2", False)])
    assert decision.verdict is Verdict.REPLICAS_SEE_PRIMARY and "r1" in decision.reason


def test_replicas_cut_off_from_a_reachable_primary_is_not_a_failure() -> None:
    members = [obs("m1", True), obs("m2", True), obs("m3", True)]
    decision = classify(P, members, 3, [replica("r1", False), replica("r2", False)])
    assert decision.verdict is Verdict.REPLICAS_CUT_OFF and not decision.failover


def test_too_few_failures_in_a_row_do_not_count_and_silence_is_unknown() -> None:
    blips = [obs("m1", False, 2), obs("m2", False, 2), obs("m3", False, 2)]
    assert classify(P, blips, 3, [], failures_needed=3).verdict is Verdict.UNKNOWN
    assert classify(P, [], 3, []).verdict is Verdict.UNKNOWN
    assert classify(P, [obs("m1", True), obs("m2", True)], 3, []).verdict is Verdict.ALIVE
    with pytest.raises(ValueError, match="members must be >= 1"):
        classify(P, [], 0, [])


def cfg() -> ClusterConfig:
    hosts = (Host("db1", 3306), Host("db2", 3306))
    return ClusterConfig("c", hosts, Credentials("a", "pw"), Credentials("r", "pw"), max_lag_s=10)


def test_agent_alerts_flag_breaches_and_missing_agents() -> None:
    ok = {"up": True, "read_only": True, "replication": {"io_running": True, "lag_s": 1}}
    assert agent_alerts(cfg(), None, ok) == []
    bad = {
        "up": True,
        "read_only": False,
        "disk_used_pct": 97.0,
        "replication": {"io_running": True, "sql_error": "1062: Duplicate", "lag_s": 30},
    }
    alerts = agent_alerts(cfg(), ok, bad)
    assert "replication broken: 1062: Duplicate" in alerts
    assert any("lag 30 s above 10" in a for a in alerts)
    assert any("disk 97.0% used" in a for a in alerts)
    assert "read_only changed True -> False" in alerts
    assert agent_alerts(cfg(), ok, None) == ["agent report missing (agent down or cut off)"]
    assert agent_alerts(cfg(), None, {"up": False, "error": "refused"}) == ["mysqld down: refused"]


def test_daemon_config_loads_and_names_mistakes(tmp_path: Path) -> None:
    (tmp_path / "repl.pw").write_text("r-secret\n")
    path = tmp_path / "mysql.toml"
    path.write_text(
        """
[daemon]
http = "127.0.0.1:8480"
probe_interval_s = 0.25
failures_to_confirm = 4

[[clusters]]
name = "orders"
hosts = [{ host = "10.0.0.1", promotion = "prefer" }, { host = "10.0.0.2", port = 3307 }]
admin_user = "hacoord"
admin_password_env = "ADMIN_PW"
replication_user = "repl"
replication_password_file = "REPL"

[clusters.hooks]
pre_failover = ["/bin/true"]
""".replace("REPL", str(tmp_path / "repl.pw"))
    )
    loaded = load_daemon_config(path, {"ADMIN_PW": "a-secret"})
    orders = loaded.cluster("orders")
    assert orders.replication.password == "r-secret" and orders.admin.password == "a-secret"
    assert orders.hosts[1].name == "10.0.0.2:3307" and orders.pre_failover_hook == ("/bin/true",)
    assert loaded.timings.failures_to_confirm == 4 and loaded.http == ("127.0.0.1", 8480)
    assert "a-secret" not in repr(loaded) and "r-secret" not in repr(loaded)
    with pytest.raises(ValueError, match="ADMIN_PW is not set"):
        load_daemon_config(path, {})
    with pytest.raises(ValueError, match="did you mean 'probe_interval_s'"):
        parse_daemon_config({"daemon": {"probe_intervl_s": 1}, "clusters": [{}]}, "x.toml")
    with pytest.raises(ValueError, match="no \\[\\[clusters\\]\\]"):
        parse_daemon_config({}, "x.toml")
    with pytest.raises(ValueError, match="not valid TOML"):
        (tmp_path / "bad.toml").write_text("[daemon\n")
        load_daemon_config(tmp_path / "bad.toml", {})
    with pytest.raises(KeyError, match="no cluster 'x'"):
        loaded.cluster("x")


def test_status_tree_shows_the_primary_its_replicas_and_problems() -> None:
    c = ClusterConfig(
        "orders",
        (Host("h", 1), Host("h", 2), Host("h", 3)),
        Credentials("a", "p"),
        Credentials("r", "p"),
    )

    def state(i: int, replica_of: str | None, sql_error: str = "") -> Probe:
        status = None
        if replica_of:
            host, port = replica_of.split(":")
            status = ReplicaStatus(
                host,
                int(port),
                True,
                not sql_error,
                0,
                "",
                1062 if sql_error else 0,
                sql_error,
                0,
                "0-1-5",
                True,
            )
        return Probe(
            c.hosts[i],
            ServerState(c.hosts[i], i + 1, "10.11", bool(replica_of), "0-1-5", True, status, False),
        )

    topology = Topology(
        "orders",
        {"h:1": state(0, None), "h:2": state(1, "h:1"), "h:3": Probe(c.hosts[2], error="down")},
        "h:1",
        ("h:3 unreachable: down",),
    )
    text = render_status(
        topology,
        PrimaryRecord("orders", "h:1", 9, "0-1-5", "wf", 0.0),
        {"verdict": "alive", "reason": "h:1 reachable"},
        {"member-1": {"hosts": {"h:1": {"up": True}}}},
        maintenance={"h:2"},
        quarantined=set(),
    )
    lines = text.splitlines()
    assert lines[0].startswith("orders  primary h:1  token 9  verdict alive")
    assert lines[1].startswith("`-- h:1  writable") and "[published primary]" in lines[1]
    assert (
        lines[2].startswith("    `-- h:2  read-only  io ok, sql ok") and "[maintenance]" in lines[2]
    )
    assert "h:3  UNREACHABLE (down)" in text and "problem: h:3 unreachable" in text
    assert "member-1 sees it" in text


def test_the_shipped_example_config_loads(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "mysql.toml"
    pw = tmp_path / "repl.pw"
    pw.write_text("x")
    text = example.read_text().replace("/etc/hacoord/repl.password", str(pw))
    (tmp_path / "mysql.toml").write_text(text)
    env = {"HACOORD_MYSQL_ADMIN_PASSWORD": "a", "HACOORD_TSIG_SECRET": "c2VjcmV0"}
    loaded = load_daemon_config(tmp_path / "mysql.toml", env)
    orders = loaded.cluster("orders")
    assert orders.dns is not None and orders.dns_target("10.0.0.2:3306") == "10.0.0.2"
    assert orders.fence_hook == ("/usr/local/bin/ipmi-power-off",)
    assert loaded.timings.block_period_s == 3600
