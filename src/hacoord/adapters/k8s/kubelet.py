"""A simulated kubelet and scheduler for one test cluster: pods run as local processes.

:class:`SimKubelet` plays, for one namespace of one API server, the kubelet of every node it
is given, the scheduler and the node-lifecycle controller. It watches pods and nodes (a watch
only wakes it; every pass lists the namespace's pods and the nodes again, and a pass runs at
least every 2 s), so an API server that goes away only delays it: it retries, and the
processes it runs keep running. The contract the Kubernetes adapter's tests rely on:

Nodes
    :meth:`SimKubelet.start` creates the namespace and each node object if missing (labels
    ``kubernetes.io/hostname`` and, with ``zone``, ``topology.kubernetes.io/zone``) and sets
    its ``Ready`` condition to ``True``. :meth:`~SimKubelet.set_node_ready` only flips that
    condition (processes keep running, deletions are still finalized, no new pod starts
    there while it is not ``True``). :meth:`~SimKubelet.fail_node` plays a dead machine:
    SIGKILLs the node's processes, sets its ``Ready`` condition to ``Unknown`` and, as the
    node-lifecycle controller would, the ``Ready`` condition of its pods to ``False``. A pod
    that was on a failed node is never started again, and while the node is failed its
    pods' deletions are not finalized: they stay Terminating until someone deletes them with
    grace period 0. :meth:`~SimKubelet.recover_node` makes the node ``Ready`` again; its
    surviving pods (their processes are gone) are then reported ``Failed``.

Scheduling
    A pod without ``spec.nodeName`` is bound (Binding subresource) to the node with the
    fewest non-terminated pods of the namespace among the nodes that are ``Ready``, not
    failed and not ``spec.unschedulable`` (ties: the order of ``nodes``). While none
    qualifies it stays Pending with condition ``PodScheduled=False``, reason
    ``Unschedulable``, and is retried.

Running
    A Pending pod bound to one of the nodes (``Ready``, not failed), not being deleted, is
    started as a process: ``argv = [images[image]] + args`` of its first container
    (``command`` is ignored; an image missing from ``images`` makes the pod ``Failed`` with
    a message naming it). The environment is ``PATH`` and ``HOME`` of this process plus the
    container's plain ``value`` variables. For every volume mount whose pod volume is a
    ``persistentVolumeClaim`` ``C`` the host directory is ``volume_root/<namespace>/<C>``
    (created if missing); every env value and argument that equals the ``mountPath`` or
    starts with ``mountPath + "/"`` (also after a leading ``--flag=``) has that prefix
    replaced by the host directory, so a member's data outlives its pod, like a re-attached
    disk. A claim is attached to one process at a time: a pod whose claim is still held by a
    process of an older pod waits (Pending) until that process has exited. Output goes to
    ``log_dir/<pod>-<uid[:8]>.log``. The pod's status then says ``Running``, ``podIP``
    127.0.0.1, ``startTime``, one container status (running, not ready, restart count 0)
    and conditions ``PodScheduled``, ``Initialized``, ``ContainersReady`` and ``Ready``.

Readiness
    ``readinessProbe.httpGet`` (``path``, integer ``port``) is probed at
    ``http://127.0.0.1:<port><path>`` every 0.25 s with a 1 s timeout (2xx and 3xx pass);
    ``Ready``, ``ContainersReady`` and the container status' ``ready`` follow it, patched
    only on a change. Without a probe the pod is Ready as soon as it runs.

Exit
    A process that exits by itself (not stopped by the kubelet) makes the pod ``Failed``:
    the container status says terminated with its exit code (128 + signal if killed),
    ``Ready=False``. It is never restarted (``restartPolicy: Never`` semantics for all
    pods).

Deletion
    A pod with a ``deletionTimestamp`` on a node that is not failed: SIGTERM to its process,
    SIGKILL after ``min(deletionGracePeriodSeconds, 5)`` s, then a delete with grace period 0
    and a ``uid`` precondition, so the object disappears. A deleted pod without a process
    (Pending, Failed) is deleted with grace 0 at once. A running pod whose object vanished
    (deleted with grace 0 by someone) has its process stopped the same way.

Every status patch and delete names the pod's ``uid``, so it never touches a newer pod of
the same name. Test hooks: :meth:`~SimKubelet.kill_process` (SIGKILL, the database process
dying) and :meth:`~SimKubelet.process_of`. :meth:`~SimKubelet.close` cancels every task and
kills every process; start and close it from a thread that outlives its processes (they get
a parent-death signal, see :func:`hacoord.testing.processes.parent_death_prefix`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from hacoord.testing.processes import parent_death_prefix

__all__ = ["HOSTNAME_LABEL", "ZONE_LABEL", "SimKubelet"]

T = TypeVar("T")

_log = logging.getLogger(__name__)

ZONE_LABEL = "topology.kubernetes.io/zone"
"""The node label that carries the ``zone`` given to :class:`SimKubelet`."""
HOSTNAME_LABEL = "kubernetes.io/hostname"
_POD_IP = "127.0.0.1"
_PROBE_PERIOD = 0.25
_PROBE_TIMEOUT = 1.0
_RESYNC = 2.0
_RETRY = 0.25
_WATCH_RETRY = 0.5
_WATCH_SECONDS = 50
_API_TIMEOUT = 5.0
_MAX_GRACE = 5.0
_TERMINAL = ("Failed", "Succeeded")
_API_ERRORS = (ApiException, aiohttp.ClientError, OSError, TimeoutError, ValueError)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_ready(node: k8s.V1Node) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _gone(e: BaseException) -> bool:
    """The pod is gone or is another pod now (uid precondition failed)."""
    return isinstance(e, ApiException) and e.status in (404, 409)


@dataclass(eq=False)
class _Container:
    """The process of one pod and what the kubelet last reported about it."""

    pod: str
    uid: str
    node: str
    container: str
    image: str
    claims: frozenset[str]
    process: asyncio.subprocess.Process
    probe: tuple[int, str] | None
    started_at: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    grace: float = _MAX_GRACE
    finalize: bool = True
    """After stopping it, delete the pod object (False: it is gone already)."""
    task: asyncio.Task[None] | None = None
    reported_ready: bool | None = None
    """``None``: Running not reported yet."""


class SimKubelet:
    """Kubelet, scheduler and node-lifecycle controller of ``nodes`` in one namespace.

    ``images`` maps image names to executables; claims map to directories under
    ``volume_root/<namespace>/``; pod output goes to files in ``log_dir``. ``zone`` becomes
    the ``topology.kubernetes.io/zone`` label of the nodes.
    """

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        nodes: Sequence[str],
        images: Mapping[str, Path],
        volume_root: Path,
        log_dir: Path,
        zone: str | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("a kubelet needs at least one node")
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"node names must be distinct: {list(nodes)}")
        self.kubeconfig = Path(kubeconfig)
        self.namespace = namespace
        self.nodes = tuple(nodes)
        self.images = {name: Path(path) for name, path in images.items()}
        self.volume_root = Path(volume_root).absolute()
        self.log_dir = Path(log_dir).absolute()
        self.zone = zone
        self._api: k8s.ApiClient | None = None
        self._core: k8s.CoreV1Api | None = None
        self._http: aiohttp.ClientSession | None = None
        self._containers: dict[str, _Container] = {}  # by pod uid
        self._done: set[str] = set()  # uids whose fate is reported: never start or report again
        self._lost: set[str] = set()  # uids that were on a node when it failed
        self._failed: set[str] = set()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.last_error: str | None = None
        """The last failure of a pass, a report or a delete (for tests and debugging)."""
        self.passes = 0
        """How many passes over the namespace completed without a failure."""

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect, create the namespace and nodes (raises if the API server refuses), run."""
        if self._api is not None:
            raise RuntimeError("the kubelet is already started")
        self.volume_root.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._api = await k8s_config.new_client_from_config(
            config_file=str(self.kubeconfig), persist_config=False
        )
        self._core = k8s.CoreV1Api(self._api)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_PROBE_TIMEOUT))
        try:
            await self._register()
        except BaseException:
            await self.close()
            raise
        self._tasks = [
            asyncio.create_task(self._run(), name=f"kubelet {self.namespace} sync"),
            asyncio.create_task(
                self._watch(
                    lambda: self.core.list_namespaced_pod(
                        self.namespace,
                        watch=True,
                        timeout_seconds=_WATCH_SECONDS,
                        _preload_content=False,
                    )
                ),
                name=f"kubelet {self.namespace} pod watch",
            ),
            asyncio.create_task(
                self._watch(
                    lambda: self.core.list_node(
                        watch=True, timeout_seconds=_WATCH_SECONDS, _preload_content=False
                    )
                ),
                name=f"kubelet {self.namespace} node watch",
            ),
        ]
        self._wake.set()

    async def close(self) -> None:
        """Cancel every task, SIGKILL every process and close the connections."""
        await _cancel([*self._tasks, *(c.task for c in self._containers.values() if c.task)])
        self._tasks = []
        for c in list(self._containers.values()):
            await _kill(c.process)
        self._containers.clear()
        if self._http is not None:
            await self._http.close()
        if self._api is not None:
            await self._api.close()
        self._api = self._core = self._http = None

    async def __aenter__(self) -> SimKubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def core(self) -> k8s.CoreV1Api:
        """The CoreV1 API of the cluster (after :meth:`start`)."""
        if self._core is None:
            raise RuntimeError("the kubelet is not started")
        return self._core

    # ------------------------------------------------------------ test hooks

    def kill_process(self, pod_name: str) -> bool:
        """SIGKILL the process of pod ``pod_name`` (the database dying); ``False`` if none.

        With two pods of that name (one still stopping), the newest one's process is killed.
        """
        for c in reversed(self._containers.values()):
            if c.pod == pod_name and c.process.returncode is None:
                c.process.kill()
                return True
        return False

    def process_of(self, pod_name: str) -> int | None:
        """The pid of pod ``pod_name``'s running process (the newest pod's), else ``None``."""
        for c in reversed(self._containers.values()):
            if c.pod == pod_name and c.process.returncode is None:
                return c.process.pid
        return None

    @property
    def failed_nodes(self) -> frozenset[str]:
        """Nodes that :meth:`fail_node` failed and :meth:`recover_node` did not recover."""
        return frozenset(self._failed)

    async def set_node_ready(self, node: str, ready: bool) -> None:
        """Set the ``Ready`` condition of ``node`` to ``True`` or ``False`` (nothing else)."""
        self._check_node(node)
        reason = "KubeletReady" if ready else "KubeletNotReady"
        await self._patch_node_ready(node, "True" if ready else "False", reason)

    async def fail_node(self, node: str) -> None:
        """The machine ``node`` dies: processes killed, node ``Unknown``, its pods not Ready."""
        self._check_node(node)
        async with self._lock:
            self._failed.add(node)
            victims = [c for c in self._containers.values() if c.node == node]
            await _cancel([c.task for c in victims if c.task is not None])
            for c in victims:
                await _kill(c.process)
                self._containers.pop(c.uid, None)
                self._lost.add(c.uid)
            await self._patch_node_ready(
                node, "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."
            )
            pods = await self._call(
                self.core.list_namespaced_pod(
                    self.namespace, field_selector=f"spec.nodeName={node}"
                )
            )
            for pod in pods.items:
                self._lost.add(pod.metadata.uid)
                body = {
                    "metadata": {"uid": pod.metadata.uid},
                    "status": {"conditions": [_condition("Ready", False, "NodeNotReady")]},
                }
                with contextlib.suppress(ApiException):
                    await self._call(
                        self.core.patch_namespaced_pod_status(
                            pod.metadata.name, self.namespace, body
                        )
                    )
        self._wake.set()

    async def recover_node(self, node: str) -> None:
        """The machine ``node`` is back: ``Ready`` again, schedulable, deletions finalized."""
        self._check_node(node)
        async with self._lock:
            self._failed.discard(node)
            await self._patch_node_ready(node, "True", "KubeletReady")
        self._wake.set()

    def _check_node(self, node: str) -> None:
        if node not in self.nodes:
            raise KeyError(f"no node {node!r} (nodes: {', '.join(self.nodes)})")

    # ------------------------------------------------------------------ API

    async def _call(self, call: Awaitable[T]) -> T:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
        # that coincides with the awaited call finishing, and close() would wait forever.
        async with asyncio.timeout(_API_TIMEOUT):
            return await call

    async def _register(self) -> None:
        namespace = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=self.namespace))
        with contextlib.suppress(_Conflict):
            await self._created(self.core.create_namespace(namespace))
        for node in self.nodes:
            labels = {HOSTNAME_LABEL: node}
            if self.zone is not None:
                labels[ZONE_LABEL] = self.zone
            body = k8s.V1Node(metadata=k8s.V1ObjectMeta(name=node, labels=labels))
            try:
                await self._created(self.core.create_node(body))
            except _Conflict:
                await self._call(self.core.patch_node(node, {"metadata": {"labels": labels}}))
            await self._patch_node_ready(node, "True", "KubeletReady")

    async def _created(self, call: Awaitable[object]) -> None:
        try:
            await self._call(call)
        except ApiException as e:
            if e.status == 409:
                raise _Conflict from None
            raise

    async def _patch_node_ready(
        self, node: str, status: str, reason: str, message: str = ""
    ) -> None:
        now = _now()
        condition = {
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message or f"simulated kubelet: {reason}",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        body = {
            "status": {
                "conditions": [condition],
                "addresses": [
                    {"type": "InternalIP", "address": _POD_IP},
                    {"type": "Hostname", "address": node},
                ],
            }
        }
        await self._call(self.core.patch_node_status(node, body))

    async def _patch_pod_status(self, name: str, uid: str, status: dict[str, Any]) -> None:
        body = {"metadata": {"uid": uid}, "status": status}
        await self._call(self.core.patch_namespaced_pod_status(name, self.namespace, body))

    async def _delete_now(self, name: str, uid: str) -> None:
        """Delete pod ``name`` with grace 0 if it still has ``uid``; quiet if it is gone."""
        options = k8s.V1DeleteOptions(
            grace_period_seconds=0, preconditions=k8s.V1Preconditions(uid=uid)
        )
        try:
            await self._call(self.core.delete_namespaced_pod(name, self.namespace, body=options))
        except ApiException as e:
            if not _gone(e):
                raise

    async def _bind(self, name: str, uid: str, node: str) -> None:
        body = k8s.V1Binding(
            metadata=k8s.V1ObjectMeta(name=name, uid=uid),
            target=k8s.V1ObjectReference(api_version="v1", kind="Node", name=node),
        )
        # The API server answers with a Status, which the client cannot read as the V1Binding
        # it expects: take the raw response.
        response: Any = await self._call(
            self.core.create_namespaced_pod_binding(
                name, self.namespace, body, _preload_content=False
            )
        )
        async with response:
            if response.status >= 300 and response.status != 409:
                text = await response.text()
                raise ApiException(status=response.status, reason=f"bind {name}: {text[:300]}")

    # ----------------------------------------------------------------- loops

    async def _watch(self, open_watch: Callable[[], Awaitable[Any]]) -> None:
        """Wake the sync loop on every event of a watch; reconnect forever."""
        while True:
            try:
                response: Any = await self._call(open_watch())
                async with response:
                    self._wake.set()
                    async for _ in response.content:
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any failure: the API server is away, try again
                _log.debug("watch of %s failed: %s", self.namespace, e)
            self._wake.set()
            await asyncio.sleep(_WATCH_RETRY)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RESYNC):
                    await self._wake.wait()
            self._wake.clear()
            try:
                async with self._lock:
                    ok = await self._sync()
            except _API_ERRORS as e:
                self.last_error = f"{type(e).__name__}: {e}"
                _log.debug("kubelet of %s: pass failed: %s", self.namespace, self.last_error)
                ok = False
            except Exception as e:  # a bug must not stop the kubelet: say so and go on
                self.last_error = f"{type(e).__name__}: {e}"
                _log.warning("kubelet of %s: pass failed", self.namespace, exc_info=True)
                ok = False
            if ok:
                self.passes += 1
            else:
                await asyncio.sleep(_RETRY)
                self._wake.set()

    async def _sync(self) -> bool:
        """One pass over every pod of the namespace; ``False`` if something must be retried."""
        # Pods first: a node change made before a pod was created is then always seen with it.
        pod_list = await self._call(self.core.list_namespaced_pod(self.namespace))
        node_list = await self._call(self.core.list_node())
        objects = {n.metadata.name: n for n in node_list.items if n.metadata.name in self.nodes}
        ready = {name for name, n in objects.items() if _node_ready(n) and name not in self._failed}
        schedulable = [
            name
            for name in self.nodes
            if name in ready and not (objects[name].spec and objects[name].spec.unschedulable)
        ]
        load = dict.fromkeys(self.nodes, 0)
        for pod in pod_list.items:
            bound = pod.spec.node_name
            phase = pod.status.phase if pod.status else None
            if bound in load and phase not in _TERMINAL:
                load[bound] += 1
        ok = True
        seen: set[str] = set()
        for pod in pod_list.items:
            seen.add(pod.metadata.uid)
            try:
                await self._sync_pod(pod, ready, schedulable, load)
            except _API_ERRORS as e:
                self.last_error = f"pod {pod.metadata.name}: {type(e).__name__}: {e}"
                ok = False
        for c in list(self._containers.values()):
            if c.uid not in seen and not c.stop.is_set():
                c.finalize = False  # deleted by someone else (grace 0): just stop it
                c.stop.set()
        self._done &= seen
        self._lost &= seen
        return ok

    async def _sync_pod(
        self, pod: k8s.V1Pod, ready: set[str], schedulable: list[str], load: dict[str, int]
    ) -> None:
        meta, spec = pod.metadata, pod.spec
        name, uid = meta.name, meta.uid
        deleting = meta.deletion_timestamp is not None
        phase = (pod.status.phase if pod.status else None) or "Pending"
        node = spec.node_name
        if not node:
            if deleting:
                await self._delete_now(name, uid)
            elif schedulable:
                target = min(schedulable, key=lambda n: load[n])
                await self._bind(name, uid, target)
                load[target] += 1
            else:
                await self._mark_unschedulable(pod)
            return
        if node not in self.nodes or node in self._failed:
            return
        running = self._containers.get(uid)
        if running is not None:
            if deleting and not running.stop.is_set():
                grace = meta.deletion_grace_period_seconds
                running.grace = min(float(grace if grace is not None else _MAX_GRACE), _MAX_GRACE)
                running.finalize = True
                running.stop.set()
            return
        if deleting:
            await self._delete_now(name, uid)
        elif uid in self._done:
            return
        elif uid in self._lost or phase == "Running":
            await self._report_failed(
                name,
                uid,
                _first_container(pod),
                None,
                "the pod's process is gone (its node failed)",
            )
            self._done.add(uid)
        elif phase == "Pending" and node in ready:
            await self._launch(pod, node)

    async def _mark_unschedulable(self, pod: k8s.V1Pod) -> None:
        message = f"0/{len(self.nodes)} nodes are available: no node is Ready and schedulable"
        for c in (pod.status.conditions if pod.status else None) or []:
            if c.type == "PodScheduled" and c.status == "False" and c.message == message:
                return
        condition = _condition("PodScheduled", False, "Unschedulable", message)
        await self._patch_pod_status(
            pod.metadata.name, pod.metadata.uid, {"conditions": [condition]}
        )

    # ------------------------------------------------------------ processes

    async def _launch(self, pod: k8s.V1Pod, node: str) -> None:
        name, uid = pod.metadata.name, pod.metadata.uid
        container = pod.spec.containers[0]
        binary = self.images.get(container.image)
        if binary is None:
            known = ", ".join(sorted(self.images)) or "none"
            await self._report_failed(
                name, uid, container, None, f"unknown image {container.image!r} (known: {known})"
            )
            self._done.add(uid)
            return
        mounts = self._mounts(pod, container)
        claims = frozenset(claim for claim, _, _ in mounts)
        if any(c.claims & claims for c in self._containers.values()):
            return  # the volume is still attached to an older pod's process: wait for it
        replacements = sorted(((path, host) for _, path, host in mounts), key=lambda m: -len(m[0]))
        for _, _, host in mounts:
            host.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = _substitute(var.value or "", replacements)
        argv = [str(binary), *(_substitute(a, replacements) for a in container.args or [])]
        log = self.log_dir / f"{name}-{uid[:8]}.log"
        try:
            with log.open("ab") as out:
                process = await asyncio.create_subprocess_exec(
                    *parent_death_prefix(),
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=self.log_dir,
                    start_new_session=True,
                )
        except OSError as e:
            await self._report_failed(name, uid, container, None, f"cannot start {argv[0]}: {e}")
            self._done.add(uid)
            return
        c = _Container(
            pod=name,
            uid=uid,
            node=node,
            container=container.name,
            image=container.image,
            claims=claims,
            process=process,
            probe=_probe_of(container),
            started_at=_now(),
            grace=min(float(pod.spec.termination_grace_period_seconds or 30), _MAX_GRACE),
        )
        self._containers[uid] = c
        c.task = asyncio.create_task(self._supervise(c), name=f"pod {name}")

    def _mounts(self, pod: k8s.V1Pod, container: k8s.V1Container) -> list[tuple[str, str, Path]]:
        """(claim, mountPath, host directory) of each claim volume the container mounts."""
        claims = {
            v.name: v.persistent_volume_claim.claim_name
            for v in pod.spec.volumes or []
            if v.persistent_volume_claim is not None
        }
        found = []
        for mount in container.volume_mounts or []:
            claim = claims.get(mount.name)
            if claim is not None:
                path = mount.mount_path.rstrip("/") or "/"
                found.append((claim, path, self.volume_root / self.namespace / claim))
        return found

    async def _supervise(self, c: _Container) -> None:
        """Report Running and readiness until the process exits or the pod is deleted."""
        exited = asyncio.create_task(c.process.wait())
        stopping = asyncio.create_task(c.stop.wait())
        try:
            while not exited.done() and not stopping.done():
                await self._report_running(c)
                await asyncio.wait(
                    {exited, stopping}, timeout=_PROBE_PERIOD, return_when=asyncio.FIRST_COMPLETED
                )
            if c.stop.is_set():
                await self._stop(c)
            else:
                await self._report_exit(c)
        finally:
            for task in (exited, stopping):
                task.cancel()
        self._done.add(c.uid)
        self._containers.pop(c.uid, None)
        self._wake.set()

    async def _report_running(self, c: _Container) -> None:
        ready = True if c.probe is None else await self._probe(*c.probe)
        if ready == c.reported_ready:
            return
        status = {
            "phase": "Running",
            "hostIP": _POD_IP,
            "hostIPs": [{"ip": _POD_IP}],
            "podIP": _POD_IP,
            "podIPs": [{"ip": _POD_IP}],
            "startTime": c.started_at,
            "conditions": [
                _condition("PodScheduled", True),
                _condition("Initialized", True),
                _condition("ContainersReady", ready),
                _condition("Ready", ready),
            ],
            "containerStatuses": [
                {
                    **self._container_status(c.container, c.image, c.process.pid),
                    "ready": ready,
                    "started": True,
                    "state": {"waiting": None, "running": {"startedAt": c.started_at}},
                }
            ],
        }
        try:
            await self._patch_pod_status(c.pod, c.uid, status)
        except _API_ERRORS as e:
            if _gone(e) and not c.stop.is_set():
                c.finalize = False  # replaced or deleted by someone: stop the process
                c.stop.set()
            return  # otherwise the API server is away: report again on the next tick
        c.reported_ready = ready

    async def _probe(self, port: int, path: str) -> bool:
        assert self._http is not None
        try:
            async with self._http.get(f"http://{_POD_IP}:{port}{path}") as response:
                return 200 <= response.status < 400
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def _report_exit(self, c: _Container) -> None:
        code = c.process.returncode
        assert code is not None
        exit_code = code if code >= 0 else 128 - code
        while True:
            try:
                await self._report_failed(c.pod, c.uid, None, exit_code, "", c)
                return
            except _API_ERRORS as e:
                if _gone(e):
                    return
            await asyncio.sleep(_RETRY)

    async def _stop(self, c: _Container) -> None:
        """SIGTERM, SIGKILL after the grace period, then delete the pod (if asked to)."""
        if c.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                c.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(c.grace):
                    await c.process.wait()
            except TimeoutError:
                await _kill(c.process)
        while c.finalize:
            try:
                await self._delete_now(c.pod, c.uid)
                return
            except _API_ERRORS as e:
                self.last_error = f"delete {c.pod}: {type(e).__name__}: {e}"
            await asyncio.sleep(_RETRY)

    async def _report_failed(
        self,
        name: str,
        uid: str,
        container: k8s.V1Container | None,
        exit_code: int | None,
        message: str,
        c: _Container | None = None,
    ) -> None:
        """Patch the pod to phase Failed (terminated with ``exit_code`` if it ran)."""
        now = _now()
        if c is not None:
            cname, image, pid, started = c.container, c.image, c.process.pid, c.started_at
        else:
            assert container is not None
            cname, image, pid, started = container.name, container.image, None, now
        terminated: dict[str, Any] = {
            "exitCode": exit_code if exit_code is not None else 128 + signal.SIGKILL,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now,
        }
        if message:
            terminated["message"] = message
        status: dict[str, Any] = {
            "phase": "Failed",
            "conditions": [
                _condition("ContainersReady", False, "PodFailed"),
                _condition("Ready", False, "PodFailed"),
            ],
            "containerStatuses": [
                {
                    **self._container_status(cname, image, pid),
                    "ready": False,
                    "started": False,
                    "state": {"waiting": None, "running": None, "terminated": terminated},
                }
            ],
        }
        if message:
            status["message"] = message
        await self._patch_pod_status(name, uid, status)

    @staticmethod
    def _container_status(name: str, image: str, pid: int | None) -> dict[str, Any]:
        return {
            "name": name,
            "image": image,
            "imageID": "",
            "containerID": f"sim://{pid}" if pid is not None else "",
            "restartCount": 0,
        }


class _Conflict(Exception):
    """The object to create exists already."""


def _condition(kind: str, status: bool, reason: str = "", message: str = "") -> dict[str, str]:
    condition = {
        "type": kind,
        "status": "True" if status else "False",
        "lastTransitionTime": _now(),
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _first_container(pod: k8s.V1Pod) -> k8s.V1Container:
    return pod.spec.containers[0]


def _probe_of(container: k8s.V1Container) -> tuple[int, str] | None:
    probe = container.readiness_probe
    if probe is None or probe.http_get is None:
        return None
    try:
        port = int(probe.http_get.port)
    except (TypeError, ValueError):
        port = 0  # a named port: never ready, as no container declares it here
    return port, probe.http_get.path or "/"


def _substitute(value: str, mounts: Iterable[tuple[str, str | Path]]) -> str:
    """``value`` with a leading mount path (or one after ``--flag=``) replaced by its host dir."""
    prefix, rest = "", value
    if value.startswith("-") and "=" in value:
        head, _, rest = value.partition("=")
        prefix = head + "="
    for path, host in mounts:
        base = path.rstrip("/")
        if rest == path or rest.startswith(base + "/"):
            return prefix + str(host) + rest[len(base) :]
    return value


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them; cancel again any that went on (it should not)."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(10):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    else:
        _log.warning("tasks did not stop when cancelled: %s", [t.get_name() for t in pending])
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            _log.warning("task %s had failed", task.get_name(), exc_info=task.exception())


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await process.wait()
