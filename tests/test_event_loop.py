"""The event loop a member process runs on: asyncio's, or uvloop when installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hacoord.raft.errors import ConfigError
from hacoord.server.config_file import load_config
from hacoord.server.event_loop import loop_factory, run, running_loop_name
from hacoord.server.local_cluster import LocalCluster

# uvloop is in the dev extras, so "auto" means uvloop wherever the tests run.


async def _loop_name() -> str:
    return running_loop_name()


def test_each_choice_runs_on_its_loop() -> None:
    assert run(_loop_name(), "asyncio") == "asyncio"
    assert run(_loop_name(), "uvloop") == "uvloop"
    assert run(_loop_name(), "auto") == "uvloop"  # installed here


def test_unknown_choice_and_missing_uvloop_are_config_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match="event_loop must be one of auto, asyncio, uvloop"):
        run(_loop_name(), "trio")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now fails
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        loop_factory("uvloop")
    assert loop_factory("auto") is None  # auto falls back to asyncio's loop
    assert run(_loop_name(), "auto") == "asyncio"


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
async def test_a_member_process_runs_on_the_loop_its_file_names(
    tmp_path: Path, choice: str
) -> None:
    cluster = LocalCluster(tmp_path, n=3, event_loop=choice)
    cluster.start()
    try:
        await cluster.wait_for_leader()
        assert load_config(cluster.config_path(1)).event_loop == choice
        written = await cluster.put("loop", choice)
        assert written.index > 0
        for nid in cluster.members:
            assert f"event loop {choice}" in cluster.log_path(nid).read_text()
    finally:
        await cluster.close()
