"""N independent local Kubernetes control planes (etcd + kube-apiserver each), for tests.

:class:`K8sTestBed` runs, for every cluster name, one etcd 3.7 process (its own data directory,
client and peer port on 127.0.0.1) and one kube-apiserver 1.37 serving HTTPS on a free port of
127.0.0.1, built once from the Go module proxy by :mod:`hacoord.adapters.k8s.binaries`. There
are no controllers, no scheduler and no kubelet: :class:`~hacoord.adapters.k8s.kubelet.SimKubelet`
plays kubelet and scheduler. Because nothing creates service accounts or removes node taints,
the admission plugins ``ServiceAccount``, ``TaintNodesByCondition`` and
``StorageObjectInUseProtection`` (its finalizer would keep a deleted claim forever) are off.

Each API server authorizes with RBAC and authenticates static tokens: an admin (group
``system:masters``) and a user ``limited`` who has no role at all (only what
``system:authenticated`` gets: discovery), for tests of refused calls. It generates its own
self-signed serving certificate in its cert directory; the kubeconfigs written for each cluster
(:meth:`K8sTestBed.kubeconfig`, :meth:`K8sTestBed.limited_kubeconfig`) trust that certificate.
The service-account signing key pair is made with the ``openssl`` command.

Processes are started with a parent-death signal (see
:func:`hacoord.testing.processes.parent_death_prefix`), so they die with the Python process;
their logs are files under ``base_dir/<name>/``. :meth:`K8sTestBed.kill_apiserver` and
:meth:`K8sTestBed.restart_apiserver` simulate an API server outage (etcd keeps the data).

Measured on a 2-core machine (3 runs): three clusters start, in parallel, in 4.0-4.5 s
(service-account keys included); one API server restarts in about 2 s. Each kube-apiserver
has an RSS of 260-280 MB once ready, each etcd about 40 MB: a three-cluster bed needs about
1 GB of memory.

Run ``python -m hacoord.adapters.k8s.testbed --dir DIR`` to keep clusters running from the
command line; it prints one JSON line describing them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from hacoord.adapters.k8s.binaries import Binaries, BuildError, ensure_binaries
from hacoord.testing.processes import (
    file_size,
    free_ports,
    parent_death_prefix,
    read_tail,
)

__all__ = [
    "ClusterInfo",
    "K8sStartError",
    "K8sTestBed",
    "K8sUnavailableError",
]

_HOST = "127.0.0.1"
_START_TIMEOUT = 60.0
_ETCD_TIMEOUT = 20.0
_POLL_INTERVAL = 0.1
_PORT_RETRIES = 3
_BIND_FAILURE_MARKERS = ("address already in use", "bind: address")
_DISABLED_ADMISSION = ("ServiceAccount", "TaintNodesByCondition", "StorageObjectInUseProtection")
_SERVICE_CIDR = "10.0.0.0/24"
_LIMITED_USER = "limited"


class K8sUnavailableError(RuntimeError):
    """kube-apiserver or etcd cannot be built (no Go toolchain, failed build) or ``openssl``
    is missing."""


class K8sStartError(RuntimeError):
    """An etcd or kube-apiserver process failed to start; the message carries its log tail."""


@dataclass(frozen=True)
class ClusterInfo:
    """Where one cluster of a :class:`K8sTestBed` lives (ports are 0 until started)."""

    name: str
    dir: Path
    apiserver_port: int = 0
    etcd_client_port: int = 0
    etcd_peer_port: int = 0

    @property
    def server(self) -> str:
        """The API server's URL."""
        return f"https://{_HOST}:{self.apiserver_port}"

    @property
    def etcd_endpoint(self) -> str:
        """The client URL of the cluster's own etcd (the API server's storage)."""
        return f"http://{_HOST}:{self.etcd_client_port}"


class _Cluster:
    """The processes and files of one cluster."""

    def __init__(self, name: str, directory: Path) -> None:
        self.info = ClusterInfo(name=name, dir=directory)
        self.etcd: subprocess.Popen[bytes] | None = None
        self.apiserver: subprocess.Popen[bytes] | None = None

    @property
    def etcd_log(self) -> Path:
        return self.info.dir / "etcd.log"

    @property
    def apiserver_log(self) -> Path:
        return self.info.dir / "kube-apiserver.log"

    @property
    def cert_dir(self) -> Path:
        return self.info.dir / "certs"

    @property
    def sa_key(self) -> Path:
        return self.info.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.info.dir / "sa.pub"

    @property
    def tokens(self) -> Path:
        return self.info.dir / "tokens.csv"

    @property
    def kubeconfig(self) -> Path:
        return self.info.dir / "admin.kubeconfig"

    @property
    def limited_kubeconfig(self) -> Path:
        return self.info.dir / "limited.kubeconfig"


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def _alive(proc: subprocess.Popen[bytes] | None) -> bool:
    return proc is not None and proc.poll() is None


class K8sTestBed:
    """Independent local Kubernetes control planes, one per name.

    Use ``async with K8sTestBed(path) as bed:`` or call :meth:`start` and :meth:`close`. Call
    them from a thread that lives as long as the test bed (the parent-death signal fires when
    the starting thread exits); an event loop thread does.
    """

    def __init__(
        self, base_dir: Path, names: Sequence[str] = ("zone-a", "zone-b", "zone-c")
    ) -> None:
        if not names:
            raise ValueError("a test bed needs at least one cluster name")
        if len(set(names)) != len(names):
            raise ValueError(f"cluster names must be distinct: {list(names)}")
        for name in names:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"unusable cluster name {name!r} (it names a directory)")
        self.base_dir = Path(base_dir).absolute()
        self.names = tuple(names)
        self.admin_token = secrets.token_hex(16)
        self.limited_token = secrets.token_hex(16)
        self._clusters = {name: _Cluster(name, self.base_dir / name) for name in self.names}
        self._binaries: Binaries | None = None
        self._started = False

    # ------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> K8sTestBed:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Build the binaries if needed, start every cluster in parallel, wait until ready.

        Raises :class:`K8sUnavailableError` if the binaries cannot be built or ``openssl`` is
        missing, :class:`K8sStartError` if a process fails or is not ready within 60 s.
        """
        if self._started:
            raise RuntimeError("the test bed is already started")
        if shutil.which("openssl") is None:
            raise K8sUnavailableError("the 'openssl' command is needed for service-account keys")
        try:
            self._binaries = await asyncio.to_thread(ensure_binaries)
        except BuildError as e:
            raise K8sUnavailableError(str(e)) from e
        self._started = True
        try:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            await asyncio.gather(*(self._start_cluster(c) for c in self._clusters.values()))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Kill every API server and etcd (SIGKILL; the data is throwaway)."""
        for cluster in self._clusters.values():
            _kill(cluster.apiserver)
            _kill(cluster.etcd)
            cluster.apiserver = cluster.etcd = None
        self._started = False

    def kill_apiserver(self, name: str) -> None:
        """SIGKILL the API server of cluster ``name`` and reap it; its etcd keeps running."""
        cluster = self._cluster(name)
        if not _alive(cluster.apiserver):
            raise RuntimeError(f"the API server of {name} is not running")
        _kill(cluster.apiserver)

    async def restart_apiserver(self, name: str) -> None:
        """Start the API server of ``name`` again (same port, certificate and etcd data).

        Waits until it is ready; raises :class:`K8sStartError` if it is not.
        """
        cluster = self._cluster(name)
        if not self._started:
            raise RuntimeError("the test bed is not started")
        if _alive(cluster.apiserver):
            raise RuntimeError(f"the API server of {name} is already running")
        offset = file_size(cluster.apiserver_log)
        cluster.apiserver = self._launch_apiserver(cluster)
        try:
            await self._wait_apiserver(cluster, offset)
        except BaseException:
            _kill(cluster.apiserver)
            raise

    def is_apiserver_running(self, name: str) -> bool:
        """Whether the API server process of cluster ``name`` is alive."""
        return _alive(self._cluster(name).apiserver)

    # --------------------------------------------------------------- queries

    def cluster(self, name: str) -> ClusterInfo:
        """Ports and directory of cluster ``name``."""
        return self._cluster(name).info

    def kubeconfig(self, name: str) -> Path:
        """A kubeconfig of cluster ``name`` for the admin (group ``system:masters``)."""
        return self._cluster(name).kubeconfig

    def limited_kubeconfig(self, name: str) -> Path:
        """A kubeconfig of cluster ``name`` for user ``limited``, whom RBAC allows nothing."""
        return self._cluster(name).limited_kubeconfig

    def apiserver_log(self, name: str) -> Path:
        """The log file of the API server of ``name`` (appended to across restarts)."""
        return self._cluster(name).apiserver_log

    def apiserver_pid(self, name: str) -> int | None:
        """The pid of the API server of ``name``, ``None`` while it is not running."""
        proc = self._cluster(name).apiserver
        return proc.pid if _alive(proc) and proc is not None else None

    def describe(self) -> dict[str, Any]:
        """Every cluster's server URL, kubeconfigs, etcd endpoint, pids and logs, as JSON data."""
        clusters: dict[str, Any] = {}
        for name, cluster in self._clusters.items():
            info = cluster.info
            clusters[name] = {
                "server": info.server,
                "kubeconfig": str(cluster.kubeconfig),
                "limited_kubeconfig": str(cluster.limited_kubeconfig),
                "etcd": info.etcd_endpoint,
                "apiserver_pid": self.apiserver_pid(name),
                "etcd_pid": cluster.etcd.pid if cluster.etcd is not None else None,
                "apiserver_log": str(cluster.apiserver_log),
                "etcd_log": str(cluster.etcd_log),
                "dir": str(info.dir),
            }
        return {"clusters": clusters}

    def _cluster(self, name: str) -> _Cluster:
        try:
            return self._clusters[name]
        except KeyError:
            raise KeyError(f"no cluster {name!r} (clusters: {', '.join(self.names)})") from None

    # -------------------------------------------------------------- starting

    async def _start_cluster(self, cluster: _Cluster) -> None:
        cluster.info.dir.mkdir(parents=True, exist_ok=True)
        await self._make_credentials(cluster)
        for attempt in range(_PORT_RETRIES):
            etcd_client, etcd_peer, apiserver = free_ports(3)
            cluster.info = ClusterInfo(
                name=cluster.info.name,
                dir=cluster.info.dir,
                apiserver_port=apiserver,
                etcd_client_port=etcd_client,
                etcd_peer_port=etcd_peer,
            )
            try:
                await self._start_processes(cluster)
                break
            except K8sStartError as e:
                _kill(cluster.apiserver)
                _kill(cluster.etcd)
                clash = any(m in str(e).lower() for m in _BIND_FAILURE_MARKERS)
                if attempt + 1 == _PORT_RETRIES or not clash:
                    raise
        self._write_kubeconfigs(cluster)

    async def _start_processes(self, cluster: _Cluster) -> None:
        data = cluster.info.dir / "etcd-data"
        if data.exists():  # a fresh cluster (the member URLs, with their ports, are in the data)
            await asyncio.to_thread(shutil.rmtree, data)
        etcd_offset = file_size(cluster.etcd_log)
        cluster.etcd = self._launch_etcd(cluster, data)
        await self._wait_etcd(cluster, etcd_offset)
        offset = file_size(cluster.apiserver_log)
        cluster.apiserver = self._launch_apiserver(cluster)
        await self._wait_apiserver(cluster, offset)

    async def _make_credentials(self, cluster: _Cluster) -> None:
        cluster.tokens.write_text(
            f'{self.admin_token},admin,admin,"system:masters"\n'
            f"{self.limited_token},{_LIMITED_USER},{_LIMITED_USER}\n"
        )
        if cluster.sa_key.is_file() and cluster.sa_pub.is_file():
            return
        await _run("openssl", "genrsa", "-out", str(cluster.sa_key), "2048")
        await _run(
            "openssl", "rsa", "-in", str(cluster.sa_key), "-pubout", "-out", str(cluster.sa_pub)
        )

    def _launch(self, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [*parent_death_prefix(), *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _launch_etcd(self, cluster: _Cluster, data: Path) -> subprocess.Popen[bytes]:
        assert self._binaries is not None
        info = cluster.info
        peer = f"http://{_HOST}:{info.etcd_peer_port}"
        command = [
            str(self._binaries.etcd),
            f"--name={info.name}",
            f"--data-dir={data}",
            f"--listen-client-urls={info.etcd_endpoint}",
            f"--advertise-client-urls={info.etcd_endpoint}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={info.name}={peer}",
            "--log-level=warn",
            # throwaway data: skipping fsync makes the API server's writes fast
            "--unsafe-no-fsync",
        ]
        return self._launch(command, cluster.etcd_log)

    def _launch_apiserver(self, cluster: _Cluster) -> subprocess.Popen[bytes]:
        assert self._binaries is not None
        info = cluster.info
        command = [
            str(self._binaries.kube_apiserver),
            f"--bind-address={_HOST}",
            f"--advertise-address={_HOST}",
            f"--secure-port={info.apiserver_port}",
            f"--etcd-servers={info.etcd_endpoint}",
            "--authorization-mode=RBAC",
            f"--token-auth-file={cluster.tokens}",
            f"--cert-dir={cluster.cert_dir}",
            f"--service-account-key-file={cluster.sa_pub}",
            f"--service-account-signing-key-file={cluster.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={_SERVICE_CIDR}",
            "--enable-priority-and-fairness=false",
            f"--disable-admission-plugins={','.join(_DISABLED_ADMISSION)}",
            "--profiling=false",
        ]
        return self._launch(command, cluster.apiserver_log)

    async def _wait_etcd(self, cluster: _Cluster, offset: int) -> None:
        url = f"{cluster.info.etcd_endpoint}/health"
        await self._poll(
            f"etcd of {cluster.info.name}",
            cluster.etcd,
            cluster.etcd_log,
            offset,
            url,
            timeout=_ETCD_TIMEOUT,
        )

    async def _wait_apiserver(self, cluster: _Cluster, offset: int) -> None:
        url = f"{cluster.info.server}/readyz"
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        # The serving certificate is made by the API server as it starts: not verified here.
        await self._poll(
            f"kube-apiserver of {cluster.info.name}",
            cluster.apiserver,
            cluster.apiserver_log,
            offset,
            url,
            headers=headers,
            verify=False,
            timeout=_START_TIMEOUT,
        )

    async def _poll(
        self,
        what: str,
        proc: subprocess.Popen[bytes] | None,
        log: Path,
        offset: int,
        url: str,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
        verify: bool = True,
    ) -> None:
        """Poll ``url`` until it answers 200, the process exits or ``timeout`` passes."""
        assert proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        client_timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            while True:
                if proc.poll() is not None:
                    raise K8sStartError(
                        f"{what} exited with code {proc.returncode}; log tail:\n"
                        + read_tail(log, offset)
                    )
                try:
                    async with session.get(url, headers=headers, ssl=verify) as response:
                        if response.status == 200:
                            return
                        last = f"HTTP {response.status}: {(await response.text())[-300:]}"
                except (aiohttp.ClientError, OSError, TimeoutError) as e:
                    last = str(e) or type(e).__name__
                if time.monotonic() > deadline:
                    raise K8sStartError(
                        f"{what} not ready after {timeout:.0f}s at {url} (last: {last}); "
                        "log tail:\n" + read_tail(log, offset)
                    )
                await asyncio.sleep(_POLL_INTERVAL)

    def _write_kubeconfigs(self, cluster: _Cluster) -> None:
        ca = cluster.cert_dir / "apiserver.crt"
        for path, user, token in (
            (cluster.kubeconfig, "admin", self.admin_token),
            (cluster.limited_kubeconfig, _LIMITED_USER, self.limited_token),
        ):
            path.write_text(json.dumps(_kubeconfig(cluster.info, ca, user, token), indent=2))


def _kubeconfig(info: ClusterInfo, ca: Path, user: str, token: str) -> dict[str, Any]:
    """A kubeconfig (JSON is YAML) trusting the API server's self-signed certificate."""
    cluster: dict[str, Any] = {"server": info.server}
    if ca.is_file():
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    else:
        cluster["insecure-skip-tls-verify"] = True
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": info.name, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": info.name, "context": {"cluster": info.name, "user": user}}],
        "current-context": info.name,
    }


async def _run(*command: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        raise K8sStartError(
            f"{' '.join(command)} exited with code {proc.returncode}: "
            + output.decode(errors="replace")[-500:]
        )


# ---------------------------------------------------------------------- CLI


async def _serve(base_dir: Path, names: Sequence[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with K8sTestBed(base_dir, names) as bed:
        print(json.dumps(bed.describe()), flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run clusters until SIGINT/SIGTERM, after printing their description as one JSON line."""
    parser = argparse.ArgumentParser(
        prog="python -m hacoord.adapters.k8s.testbed",
        description="Run local Kubernetes control planes (etcd + kube-apiserver each).",
    )
    parser.add_argument("--dir", required=True, type=Path, help="working directory")
    parser.add_argument(
        "--names",
        default="zone-a,zone-b,zone-c",
        help="comma-separated cluster names (default zone-a,zone-b,zone-c)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.names.split(",") if n.strip()]
    try:
        asyncio.run(_serve(args.dir, names))
    except (K8sUnavailableError, K8sStartError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
