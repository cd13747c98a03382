"""Member configuration files: every mistake names the file, the field and the rule."""

from pathlib import Path

import pytest

from hacoord.cli import main
from hacoord.raft.errors import ConfigError
from hacoord.raft.timing import Timing
from hacoord.server.config_file import load_config

GOOD = """
[cluster]
id = "c1"
heartbeat_ms = 50
election_timeout_ms = 500

[node]
id = 1
data_dir = "data1"

[[members]]
id = 1
raft = "127.0.0.1:7001"
http = "127.0.0.1:8001"

[[members]]
id = 2
raft = "127.0.0.1:7002"
http = "127.0.0.1:8002"

[[members]]
id = 3
raft = "127.0.0.1:7003"
http = "127.0.0.1:8003"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "member.toml"
    p.write_text(text)
    return p


def test_a_valid_file_loads(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.cluster_id == "c1" and cfg.node_id == 1
    assert cfg.data_dir == tmp_path / "data1"
    assert sorted(cfg.members) == [1, 2, 3]
    assert cfg.me.raft == ("127.0.0.1", 7001)
    assert cfg.timing.election_ticks >= 10
    assert cfg.event_loop == "auto"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("heartbeat_ms = 50", "heartbeat = 50"),
            "unknown key 'heartbeat' in \\[cluster\\]; did you mean 'heartbeat_ms'",
        ),
        (("election_timeout_ms = 500", "election_timeout_ms = 100"), "at least 3 x heartbeat_ms"),
        (("id = 1\ndata_dir", "id = 9\ndata_dir"), "id 9 is not one of the members"),
        (('raft = "127.0.0.1:7002"', 'raft = "127.0.0.1:7001"'), "already used by member 1"),
        (('raft = "127.0.0.1:7003"', 'raft = "127.0.0.1:99999"'), "outside 1-65535"),
        (('raft = "127.0.0.1:7003"', 'raft = "nohost"'), "'host:port'"),
        (('id = "c1"', "id = 5"), "'id' must be str"),
        (("[node]", "[nodes]"), "unknown section \\[nodes\\]"),
        (
            ('data_dir = "data1"', 'data_dir = "data1"\nevent_loop = "trio"'),
            "'event_loop' must be auto, asyncio, uvloop, got 'trio'",
        ),
    ],
)
def test_mistakes_are_named(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, GOOD.replace(*change, 1)))


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[cluster\nid="))


def test_cli_reports_configuration_errors_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, GOOD.replace("heartbeat_ms = 50", "heartbeat_ms = true"))
    assert main(["serve", "--config", str(path)]) == 2
    assert "configuration error" in capsys.readouterr().err


def test_timing_converts_to_ticks() -> None:
    t = Timing(heartbeat_ms=50, election_timeout_ms=500)
    assert t.tick_ms == 50 and t.heartbeat_ticks == 1 and t.election_ticks == 10
    fast = Timing(heartbeat_ms=30, election_timeout_ms=150)
    assert fast.tick_ms == 15 and fast.heartbeat_ticks == 2 and fast.election_ticks == 10


@pytest.mark.parametrize(
    ("argv", "adapter"),
    [
        (["mysql", "daemon", "--member", "member.toml", "--mysql-config"], "mysql"),
        (["kafka", "status", "--endpoints", "127.0.0.1:1", "--kafka-config"], "kafka"),
        (["k8s", "status", "--endpoints", "127.0.0.1:1", "--k8s-config"], "k8s"),
    ],
)
def test_adapter_clis_name_a_broken_config_file_without_a_traceback(
    tmp_path: Path, argv: list[str], adapter: str
) -> None:
    broken = _write(tmp_path, "[cluster\nid=")
    with pytest.raises(SystemExit) as exited:
        main([*argv, str(broken)])
    message = str(exited.value.code)
    assert message.startswith(f"hacoord {adapter}: configuration error: {broken}: not valid TOML")
