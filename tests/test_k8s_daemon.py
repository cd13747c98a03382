"""``hacoord k8s serve`` as a real process, driven through its CLI and HTTP API.

A three-member coordination cluster of real processes, a daemon process with the webhook and
the HTTP API, and a three-zone test bed of its own (the daemon installs a webhook
configuration with ``failurePolicy: Fail`` that must not reach other modules' pods).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from certs import make_certs
from hacoord.adapters.k8s import GroupConfig
from hacoord.adapters.k8s.daemon_config import load_k8s_config
from hacoord.adapters.k8s.group_bed import EtcdGroupBed
from hacoord.adapters.k8s.install import uninstall
from hacoord.adapters.k8s.kube import ZoneClient
from hacoord.adapters.k8s.testbed import K8sUnavailableError
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster
from hacoord.testing.processes import free_ports, parent_death_prefix
from k8s_support import until

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXAMPLE = Path(__file__).parent.parent / "examples" / "k8s.toml"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def k8s(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdGroupBed]:
    bed = EtcdGroupBed(tmp_path_factory.mktemp("k8s-daemon"))
    try:
        await bed.start()
    except K8sUnavailableError as e:
        await bed.close()
        if os.environ.get("CI") == "true":
            pytest.fail(f"kube-apiserver is required when CI=true but is unavailable: {e}")
        pytest.skip(f"kube-apiserver unavailable: {e}")
    try:
        yield bed
    finally:
        await bed.close()


def toml_of(config: GroupConfig, http: int, hook: int, certs: tuple[str, str, str]) -> str:
    """The daemon's k8s.toml for ``config``."""
    ca, cert, key = certs
    members = ",\n".join(
        "  { "
        + f'name = "{m.name}", zone = "{m.zone}", endpoint = "{m.endpoint}", env = '
        + json.dumps(dict(m.env)).replace('": "', '" = "')
        + " }"
        for m in config.members
    )
    zones = ",\n".join(
        f'  {{ name = "{z.name}", kubeconfig = "{z.kubeconfig}", namespace = "{z.namespace}" }}'
        for z in config.zones
    )
    template_env = json.dumps(dict(config.template.env)).replace('": "', '" = "')
    return f"""
[daemon]
instance = "daemon-1"
http = "127.0.0.1:{http}"
ttl_s = 3

[webhook]
listen = "127.0.0.1:{hook}"
url = "https://127.0.0.1:{hook}"
cert_file = "{cert}"
key_file = "{key}"
ca_file = "{ca}"

[group]
name = "{config.name}"
timings = {{ interval_s = 0.2, api_timeout_s = 3.0, ready_timeout_s = 60 }}
template = {{ image = "{config.template.image}", env = {template_env} }}
zones = [
{zones}
]
members = [
{members}
]
"""


def hacoord(*args: str, endpoints: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``hacoord ARGS --endpoints ...`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "hacoord", *args, "--endpoints", ",".join(endpoints)],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def get_json(url: str) -> Any:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as r:
        return await r.json() if r.content_type == "application/json" else await r.text()


async def test_the_daemon_bootstraps_rolls_out_and_answers_its_cli_and_api(
    k8s: EtcdGroupBed, tmp_path: Path
) -> None:
    coord = LocalCluster(
        tmp_path / "coord", n=3, timing=Timing(heartbeat_ms=50, election_timeout_ms=500)
    )
    coord.start()
    config = k8s.group("served")
    http_port, hook_port = free_ports(2)
    certs = make_certs(tmp_path, ("webhook",))["webhook"]
    path = tmp_path / "k8s.toml"
    path.write_text(toml_of(config, http_port, hook_port, certs))
    loaded = load_k8s_config(path)  # what the daemon will read, checked here first
    assert loaded.api_fencing and loaded.webhook is not None
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [
            *parent_death_prefix(),
            sys.executable,
            "-m",
            "hacoord",
            "k8s",
            "serve",
            "--k8s-config",
            str(path),
            "--endpoints",
            ",".join(coord.endpoints()),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{http_port}"
    endpoints = coord.endpoints()
    try:
        await coord.wait_for_leader()

        async def idle_on(revision: str | None) -> bool:
            try:
                status = await get_json(f"{api}/v1/k8s/status")
            except aiohttp.ClientError:
                return False
            members = status["members"]
            return status["decision"]["kind"] == "idle" and all(
                m["pod"] is not None
                and m["database_healthy"]
                and (revision is None or m["pod"]["revision"] == revision)
                for m in members
            )

        await until(lambda: idle_on(None), 120, "the daemon to bootstrap the group")
        shown = hacoord("k8s", "status", "--k8s-config", str(path), endpoints=endpoints)
        assert shown.returncode == 0, shown.stderr
        assert "active daemon-1" in shown.stdout and "idle" in shown.stdout
        assert shown.stdout.count("Running Ready") == 3, shown.stdout

        rolled = hacoord(
            "k8s", "rollout", "--k8s-config", str(path), "--set", "ETCD_SNAPSHOT_COUNT=4000",
            endpoints=endpoints,
        )  # fmt: skip
        assert rolled.returncode == 0, rolled.stderr
        revision = rolled.stdout.split("revision ")[1].split()[0]
        await until(lambda: idle_on(revision), 180, "the rollout to finish")

        history = hacoord("k8s", "history", "--k8s-config", str(path), endpoints=endpoints)
        assert history.stdout.count("(rollout)  succeeded") == 3, history.stdout
        metrics = await get_json(f"{api}/metrics")
        assert 'why="rollout",status="succeeded"} 3' in metrics
        assert 'hacoord_k8s_active{group="served"} 1' in metrics

        unknown = hacoord(
            "k8s", "replace", "nobody", "--k8s-config", str(path), endpoints=endpoints
        )
        assert unknown.returncode != 0 and "no member 'nobody'" in unknown.stderr
        paused = hacoord("k8s", "pause", "--k8s-config", str(path), endpoints=endpoints)
        assert paused.returncode == 0
        asked = hacoord(
            "k8s", "replace", "served-zone-a", "--k8s-config", str(path), endpoints=endpoints
        )
        assert asked.returncode == 0
        status = await get_json(f"{api}/v1/k8s/status")
        assert status["decision"] == {
            "kind": "blocked",
            "reason": "planned replacements are paused",
        }

        bad = tmp_path / "bad.toml"
        bad.write_text(path.read_text().replace("ttl_s = 3", "ttl = 3"))
        refused = hacoord("k8s", "status", "--k8s-config", str(bad), endpoints=endpoints)
        assert refused.returncode != 0
        assert "unknown setting 'ttl' (did you mean 'ttl_s'?)" in refused.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
        await k8s.remove_group(config)
        for zone in config.zones:
            admin = ZoneClient(zone)
            await admin.open()
            await uninstall(admin, config)
            await admin.close()
        await coord.close()
    assert daemon.returncode == 0, (tmp_path / "daemon.log").read_text()[-3000:]


async def test_the_example_config_is_valid(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    for name in ("webhook.crt", "webhook.key", "webhook-ca.crt"):
        (tmp_path / name).write_text("placeholder")
    for name in ("zone-a", "zone-b", "zone-c"):
        (tmp_path / f"{name}.kubeconfig").write_text("placeholder")
    (tmp_path / "k8s.toml").write_text(text)
    config = load_k8s_config(tmp_path / "k8s.toml")
    assert [m.zone for m in config.group.members] == ["zone-a", "zone-b", "zone-c"]
    assert config.webhook is not None and config.api_fencing
    assert config.group.zones[0].kubeconfig == tmp_path / "zone-a.kubeconfig"
