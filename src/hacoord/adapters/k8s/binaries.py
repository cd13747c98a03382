"""Build kube-apiserver and etcd from the Go module proxy, once, into a cache.

No kind, k3s or envtest download is reachable from our CI machines, but the Go module proxy
is, and a real ``kube-apiserver`` builds from it. ``go install
k8s.io/kubernetes/cmd/kube-apiserver@v1.37.2`` is refused because ``k8s.io/kubernetes``
replaces its staging modules (``k8s.io/api`` and friends) with directories of its own
repository; so :func:`ensure_binaries` writes a throwaway module that requires
``k8s.io/kubernetes`` and replaces every staging module with its published ``v0.37.2``, and
builds the command from there. etcd is a three-line ``main`` around
``go.etcd.io/etcd/server/v3/etcdmain`` (Debian's etcd 3.4 is too old for this apiserver).

The first build takes about five minutes of wall clock on two cores (2.4 GB peak RSS); the
binaries land in ``~/.cache/hacoord/k8s-v1.37.2/bin`` (or ``$HACOORD_K8S_CACHE``) and are
rebuilt only when missing. ``python -m hacoord.adapters.k8s.binaries`` builds them and prints
their paths.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.37.2"
STAGING_VERSION = "v0.37.2"
ETCD_VERSION = "v3.7.3"
GO_LANGUAGE_VERSION = "1.26.0"

# Every module k8s.io/kubernetes v1.37.2 replaces with ./staging/src/k8s.io/<name>, except the
# samples, which are not published and which kube-apiserver does not import.
STAGING_MODULES = (
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "cri-streaming",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "streaming",
)

_ETCD_MAIN = """package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


class BuildError(RuntimeError):
    """A Go build of kube-apiserver or etcd failed; the message carries the tail of its output."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the built ``kube-apiserver`` and ``etcd`` binaries."""

    kube_apiserver: Path
    etcd: Path


def cache_dir() -> Path:
    """The directory the binaries are built into (``$HACOORD_K8S_CACHE`` overrides it)."""
    override = os.environ.get("HACOORD_K8S_CACHE")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "hacoord" / f"k8s-{KUBERNETES_VERSION}"


def cached_binaries(root: Path | None = None) -> Binaries | None:
    """The binaries if both are already built, else ``None``; never builds."""
    base = (root or cache_dir()) / "bin"
    found = Binaries(kube_apiserver=base / "kube-apiserver", etcd=base / "etcd")
    if os.access(found.kube_apiserver, os.X_OK) and os.access(found.etcd, os.X_OK):
        return found
    return None


def ensure_binaries(root: Path | None = None, *, verbose: bool = False) -> Binaries:
    """Build whatever binary is missing from the cache and return both paths.

    Raises :class:`BuildError` naming the failed build (and the ``go`` command that is missing,
    if it is).
    """
    base = root or cache_dir()
    go = shutil.which("go")
    bin_dir = base / "bin"
    apiserver = bin_dir / "kube-apiserver"
    etcd = bin_dir / "etcd"
    wanted = [path for path in (etcd, apiserver) if not os.access(path, os.X_OK)]
    if wanted and go is None:
        raise BuildError(
            "the Go toolchain ('go') is not on PATH; it is needed once to build "
            f"kube-apiserver {KUBERNETES_VERSION} and etcd {ETCD_VERSION} into {bin_dir}"
        )
    bin_dir.mkdir(parents=True, exist_ok=True)
    if etcd in wanted:
        assert go is not None
        module = base / "src" / "etcd"
        _write_etcd_module(module)
        _go_build(go, module, ".", etcd, verbose=verbose)
    if apiserver in wanted:
        assert go is not None
        module = base / "src" / "kube-apiserver"
        _write_apiserver_module(module)
        _go_build(
            go,
            module,
            "k8s.io/kubernetes/cmd/kube-apiserver",
            apiserver,
            verbose=verbose,
            # Without it the server reports v0.0.0-master to clients.
            ldflags=f"-s -w -X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
        )
    return Binaries(kube_apiserver=apiserver, etcd=etcd)


def _write_etcd_module(module: Path) -> None:
    module.mkdir(parents=True, exist_ok=True)
    (module / "go.mod").write_text(
        f"module hacoord.local/etcd\n\ngo {GO_LANGUAGE_VERSION}\n\n"
        f"require go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
    )
    (module / "main.go").write_text(_ETCD_MAIN)


def _write_apiserver_module(module: Path) -> None:
    module.mkdir(parents=True, exist_ok=True)
    replaces = "\n".join(
        f"\tk8s.io/{name} => k8s.io/{name} {STAGING_VERSION}" for name in STAGING_MODULES
    )
    (module / "go.mod").write_text(
        f"module hacoord.local/kube-apiserver\n\ngo {GO_LANGUAGE_VERSION}\n\n"
        f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n\nreplace (\n{replaces}\n)\n"
    )
    # A package of our own that imports the command makes `go mod tidy` record every module
    # it needs; the build tag keeps it out of any build.
    (module / "tools.go").write_text(
        '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n'
    )


def _go_build(
    go: str, module: Path, package: str, output: Path, *, verbose: bool, ldflags: str = "-s -w"
) -> None:
    env = dict(os.environ, GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-mod=mod")
    partial = output.with_suffix(".partial")
    commands = [
        [go, "mod", "tidy"],
        [go, "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(partial), package],
    ]
    for command in commands:
        if verbose:
            print(f"[{module.name}] {' '.join(command)}", file=sys.stderr, flush=True)
        done = subprocess.run(command, cwd=module, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise BuildError(
                f"building {output.name} failed: {' '.join(command)} (in {module}) "
                f"exited with {done.returncode}:\n{tail}"
            )
    partial.replace(output)


def main() -> int:
    """Build the binaries if missing and print their paths as JSON."""
    try:
        built = ensure_binaries(verbose=True)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"kube_apiserver": str(built.kube_apiserver), "etcd": str(built.etcd)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
