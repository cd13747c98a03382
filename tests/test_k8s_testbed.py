"""The Kubernetes test bed: three real kube-apiservers, and the simulated kubelet's contract.

One :class:`K8sTestBed` (three clusters) serves the module; each kubelet test gets its own
namespace and nodes. Needs the kube-apiserver and etcd binaries (built once from the Go module
proxy); without them the tests skip, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from hacoord.adapters.k8s.binaries import cached_binaries
from hacoord.adapters.k8s.kubelet import ZONE_LABEL, SimKubelet
from hacoord.adapters.k8s.testbed import K8sStartError, K8sTestBed, K8sUnavailableError
from hacoord.testing.processes import free_ports

pytestmark = pytest.mark.asyncio(loop_scope="module")

ZONES = ("zone-a", "zone-b", "zone-c")
ETCD_IMAGE = "test.local/etcd:3.7"
SLEEP_IMAGE = "test.local/sleep"
_names = itertools.count(1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[K8sTestBed]:
    testbed = K8sTestBed(tmp_path_factory.mktemp("k8s"), ZONES)
    try:
        await testbed.start()
    except K8sUnavailableError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"kube-apiserver is required when CI=true but is unavailable: {e}")
        pytest.skip(f"kube-apiserver unavailable: {e}")
    try:
        yield testbed
    finally:
        await testbed.close()


@asynccontextmanager
async def core_api(kubeconfig: Path) -> AsyncIterator[k8s.CoreV1Api]:
    api = await k8s_config.new_client_from_config(config_file=str(kubeconfig), persist_config=False)
    try:
        yield k8s.CoreV1Api(api)
    finally:
        await api.close()


KubeletFactory = Callable[[str], Awaitable[tuple[SimKubelet, k8s.CoreV1Api]]]


@pytest_asyncio.fixture(loop_scope="module")
async def make_kubelet(bed: K8sTestBed, tmp_path: Path) -> AsyncIterator[KubeletFactory]:
    """Start a kubelet with a fresh namespace and two fresh nodes in a zone."""
    kubelets: list[SimKubelet] = []
    apis: list[Any] = []
    binaries = cached_binaries()
    assert binaries is not None  # the bed started, so they are built
    sleep = shutil.which("sleep")
    assert sleep is not None

    async def make(zone: str) -> tuple[SimKubelet, k8s.CoreV1Api]:
        name = f"t{next(_names)}"
        kubelet = SimKubelet(
            bed.kubeconfig(zone),
            name,
            [f"{name}-node-1", f"{name}-node-2"],
            images={ETCD_IMAGE: binaries.etcd, SLEEP_IMAGE: Path(sleep)},
            volume_root=tmp_path / "volumes",
            log_dir=tmp_path / "logs" / name,
            zone=zone,
        )
        await kubelet.start()
        kubelets.append(kubelet)
        api = await k8s_config.new_client_from_config(
            config_file=str(bed.kubeconfig(zone)), persist_config=False
        )
        apis.append(api)
        return kubelet, k8s.CoreV1Api(api)

    try:
        yield make
    finally:
        for kubelet in kubelets:
            await kubelet.close()
        for api in apis:
            await api.close()


async def eventually(
    check: Callable[[], Awaitable[Any]],
    what: str,
    timeout: float = 20,
    detail: Callable[[], str] = lambda: "",
) -> Any:
    """Poll ``check`` (it returns a truthy result when done) until it does, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{detail()}")
        await asyncio.sleep(0.1)  # polling the API server: there is no event to await


async def read_pod(core: k8s.CoreV1Api, namespace: str, name: str) -> k8s.V1Pod | None:
    try:
        return await core.read_namespaced_pod(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def condition(pod: k8s.V1Pod, kind: str) -> str | None:
    for c in pod.status.conditions or []:
        if c.type == kind:
            return str(c.status)
    return None


async def wait_pod(
    core: k8s.CoreV1Api,
    namespace: str,
    name: str,
    predicate: Callable[[k8s.V1Pod], bool],
    what: str,
    timeout: float = 20,
) -> k8s.V1Pod:
    last: list[k8s.V1Pod | None] = [None]

    async def check() -> k8s.V1Pod | None:
        pod = last[0] = await read_pod(core, namespace, name)
        return pod if pod is not None and predicate(pod) else None

    seen = lambda: f"; last seen: {last[0].status if last[0] else None}"  # noqa: E731
    result: k8s.V1Pod = await eventually(check, f"pod {name} {what}", timeout, seen)
    return result


async def wait_gone(core: k8s.CoreV1Api, namespace: str, name: str, uid: str) -> None:
    async def check() -> bool:
        pod = await read_pod(core, namespace, name)
        return pod is None or pod.metadata.uid != uid

    await eventually(check, f"pod {name} to disappear")


def running_and_ready(pod: k8s.V1Pod) -> bool:
    return pod.status.phase == "Running" and condition(pod, "Ready") == "True"


async def node_condition(core: k8s.CoreV1Api, node: str) -> str | None:
    obj = await core.read_node(node)
    for c in obj.status.conditions or []:
        if c.type == "Ready":
            return str(c.status)
    return None


def sleep_pod(name: str, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": SLEEP_IMAGE, "args": ["600"]}],
    }
    if node is not None:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def etcd_pod(name: str, client_port: int, peer_port: int) -> dict[str, Any]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {
                    "name": "etcd",
                    "image": ETCD_IMAGE,
                    "command": ["ignored"],
                    # a bare argument under the mount path, and an env value under it
                    "args": [
                        "--name=m",
                        f"--listen-client-urls={client}",
                        f"--advertise-client-urls={client}",
                        f"--listen-peer-urls={peer}",
                        f"--initial-advertise-peer-urls={peer}",
                        f"--initial-cluster=m={peer}",
                        "--wal-dir",
                        "/data/wal",
                    ],
                    "env": [
                        {"name": "ETCD_DATA_DIR", "value": "/data/etcd"},
                        {"name": "ETCD_LOG_LEVEL", "value": "warn"},
                    ],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": client_port}},
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-m"}}],
        },
    }


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def etcd_post(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.post(f"http://127.0.0.1:{port}{path}", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        data: dict[str, Any] = await response.json(content_type=None)
        return data


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------ the bed


async def test_three_independent_api_servers(bed: K8sTestBed) -> None:
    description = bed.describe()["clusters"]
    assert sorted(description) == sorted(ZONES)
    assert len({c["server"] for c in description.values()}) == 3
    headers = {"Authorization": f"Bearer {bed.admin_token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for zone in ZONES:
            url = f"{bed.cluster(zone).server}/readyz"
            async with session.get(url, headers=headers, ssl=False) as response:
                assert response.status == 200, zone
                assert (await response.text()).startswith("ok"), zone

    body = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="only-in-zone-a"))
    async with core_api(bed.kubeconfig("zone-a")) as a, core_api(bed.kubeconfig("zone-b")) as b:
        await a.create_namespace(body)
        assert (await a.read_namespace("only-in-zone-a")).metadata.name == "only-in-zone-a"
        with pytest.raises(ApiException) as missing:
            await b.read_namespace("only-in-zone-a")
        assert missing.value.status == 404


async def test_limited_user_is_refused_by_rbac(bed: K8sTestBed) -> None:
    async with core_api(bed.kubeconfig("zone-b")) as admin:
        listed = await admin.list_namespaced_pod("default")
        assert listed.items == []
    async with core_api(bed.limited_kubeconfig("zone-b")) as limited:
        with pytest.raises(ApiException) as refused:
            await limited.list_namespaced_pod("default")
    assert refused.value.status == 403
    assert "limited" in (refused.value.body or "")


async def test_an_api_server_that_cannot_start_says_why(bed: K8sTestBed) -> None:
    tokens = bed.cluster("zone-b").dir / "tokens.csv"
    good = tokens.read_text()
    bed.kill_apiserver("zone-b")
    try:
        tokens.write_text("only-a-token\n")  # a token file needs token,user,uid
        with pytest.raises(K8sStartError) as failed:
            await bed.restart_apiserver("zone-b")
        assert "kube-apiserver of zone-b exited" in str(failed.value)
        assert "tokens.csv" in str(failed.value), "the log tail is missing"
        assert not bed.is_apiserver_running("zone-b")
    finally:
        tokens.write_text(good)
        await bed.restart_apiserver("zone-b")
    async with core_api(bed.kubeconfig("zone-b")) as admin:
        await admin.list_namespaced_pod("default")


# -------------------------------------------------------------- the kubelet


async def test_etcd_pod_runs_and_its_claim_outlives_it(
    make_kubelet: KubeletFactory, tmp_path: Path
) -> None:
    kubelet, core = await make_kubelet("zone-a")
    ns = kubelet.namespace
    node = await core.read_node(kubelet.nodes[0])
    assert node.metadata.labels[ZONE_LABEL] == "zone-a"
    assert await node_condition(core, kubelet.nodes[0]) == "True"

    client_port, peer_port = free_ports(2)
    await core.create_namespaced_pod(ns, etcd_pod("m", client_port, peer_port))
    pod = await wait_pod(core, ns, "m", running_and_ready, "Running and Ready")
    assert pod.spec.node_name in kubelet.nodes
    assert pod.status.pod_ip == "127.0.0.1"
    [status] = pod.status.container_statuses
    assert status.ready and status.state.running is not None and status.restart_count == 0
    assert condition(pod, "PodScheduled") == condition(pod, "ContainersReady") == "True"
    pid = kubelet.process_of("m")
    assert pid is not None and pid_alive(pid)

    volume = tmp_path / "volumes" / ns / "data-m"
    assert (volume / "etcd" / "member").is_dir(), "the env value was not mapped to the claim"
    assert any((volume / "wal").iterdir()), "the bare argument was not mapped to the claim"
    await etcd_post(client_port, "/v3/kv/put", {"key": b64("k"), "value": b64("survives")})

    await core.delete_namespaced_pod("m", ns)
    await wait_gone(core, ns, "m", pod.metadata.uid)
    assert kubelet.process_of("m") is None
    assert not pid_alive(pid)

    await core.create_namespaced_pod(ns, etcd_pod("m", client_port, peer_port))
    again = await wait_pod(core, ns, "m", running_and_ready, "Running and Ready again")
    assert again.metadata.uid != pod.metadata.uid
    data = await etcd_post(client_port, "/v3/kv/range", {"key": b64("k")})
    assert [base64.b64decode(kv["value"]).decode() for kv in data["kvs"]] == ["survives"]


async def test_process_death_fails_the_pod_and_scheduling_spreads(
    make_kubelet: KubeletFactory,
) -> None:
    kubelet, core = await make_kubelet("zone-b")
    ns = kubelet.namespace
    for name in ("p1", "p2"):
        await core.create_namespaced_pod(ns, sleep_pod(name))
    pods = [await wait_pod(core, ns, n, running_and_ready, "Running") for n in ("p1", "p2")]
    assert {p.spec.node_name for p in pods} == set(kubelet.nodes), "not spread over the nodes"

    pid = kubelet.process_of("p1")
    assert pid is not None
    assert kubelet.kill_process("p1")
    failed = await wait_pod(core, ns, "p1", lambda p: p.status.phase == "Failed", "Failed")
    assert condition(failed, "Ready") == "False"
    terminated = failed.status.container_statuses[0].state.terminated
    assert terminated is not None and terminated.exit_code == 137
    assert kubelet.process_of("p1") is None
    assert kubelet.process_of("p2") is not None, "the other pod's process must live on"

    await core.create_namespaced_pod(
        ns, {**sleep_pod("bad"), "spec": {"containers": [{"name": "c", "image": "no/such"}]}}
    )
    bad = await wait_pod(core, ns, "bad", lambda p: p.status.phase == "Failed", "Failed")
    assert "no/such" in bad.status.message


async def test_cordoned_nodes_leave_a_pod_pending(make_kubelet: KubeletFactory) -> None:
    kubelet, core = await make_kubelet("zone-a")
    ns = kubelet.namespace
    for node in kubelet.nodes:
        await core.patch_node(node, {"spec": {"unschedulable": True}})
    await core.create_namespaced_pod(ns, sleep_pod("waits"))
    pending = await wait_pod(
        core, ns, "waits", lambda p: condition(p, "PodScheduled") == "False", "Unschedulable"
    )
    assert pending.status.phase == "Pending" and not pending.spec.node_name
    await core.patch_node(kubelet.nodes[1], {"spec": {"unschedulable": False}})
    pod = await wait_pod(core, ns, "waits", running_and_ready, "Running once uncordoned")
    assert pod.spec.node_name == kubelet.nodes[1]


async def test_failed_node_leaves_its_pod_terminating_until_forced(
    make_kubelet: KubeletFactory,
) -> None:
    kubelet, core = await make_kubelet("zone-b")
    ns = kubelet.namespace
    victim_node = kubelet.nodes[0]
    await core.create_namespaced_pod(ns, sleep_pod("v", node=victim_node))
    pod = await wait_pod(core, ns, "v", running_and_ready, "Running")
    pid = kubelet.process_of("v")
    assert pid is not None

    await kubelet.fail_node(victim_node)
    assert not pid_alive(pid)
    assert await node_condition(core, victim_node) == "Unknown"
    stale = await wait_pod(core, ns, "v", lambda p: condition(p, "Ready") == "False", "not Ready")
    assert stale.status.phase == "Running"

    await core.delete_namespaced_pod("v", ns)
    passes = kubelet.passes
    await eventually(lambda: _true(kubelet.passes >= passes + 2), "two kubelet passes")
    terminating = await read_pod(core, ns, "v")
    assert terminating is not None and terminating.metadata.deletion_timestamp is not None
    assert kubelet.process_of("v") is None

    # a new pod avoids the failed node
    await core.create_namespaced_pod(ns, sleep_pod("w"))
    moved = await wait_pod(core, ns, "w", running_and_ready, "Running elsewhere")
    assert moved.spec.node_name == kubelet.nodes[1]

    await core.delete_namespaced_pod("v", ns, grace_period_seconds=0)
    await wait_gone(core, ns, "v", pod.metadata.uid)

    await kubelet.recover_node(victim_node)
    assert await node_condition(core, victim_node) == "True"


async def test_kubelet_survives_an_api_server_restart(
    bed: K8sTestBed, make_kubelet: KubeletFactory
) -> None:
    kubelet, core = await make_kubelet("zone-c")
    ns = kubelet.namespace
    await core.create_namespaced_pod(ns, sleep_pod("before"))
    await wait_pod(core, ns, "before", running_and_ready, "Running")
    await core.create_namespaced_pod(ns, sleep_pod("dies"))
    await wait_pod(core, ns, "dies", running_and_ready, "Running")

    kubelet.last_error = None
    bed.kill_apiserver("zone-c")
    try:
        await eventually(lambda: _true(kubelet.last_error is not None), "a failed kubelet pass")
        assert kubelet.kill_process("dies")  # its exit can only be reported after the restart
        assert kubelet.process_of("before") is not None, "processes keep running"
    finally:
        await bed.restart_apiserver("zone-c")

    await wait_pod(core, ns, "dies", lambda p: p.status.phase == "Failed", "Failed", timeout=30)
    await core.create_namespaced_pod(ns, sleep_pod("after"))
    await wait_pod(core, ns, "after", running_and_ready, "Running after the restart")
    before = await read_pod(core, ns, "before")
    assert before is not None and running_and_ready(before)


async def _true(value: bool) -> bool:
    return value
