"""The adapter's calls to one zone's API server (kubernetes_asyncio), with errors that say why.

Every write carries a precondition: annotations are patched with the ``resourceVersion`` the
adapter read (the API server refuses the patch if the pod changed since), deletes name the
pod's ``uid`` (a pod of the same name created by someone else is never deleted), and creates
fail if the name is taken. Failures become :class:`ZoneUnreachableError`,
:class:`AccessDeniedError` or :class:`ConflictError`, each naming the zone and the call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from hacoord.adapters.k8s.config import Zone
from hacoord.adapters.k8s.errors import (
    FENCE_MARKER,
    AccessDeniedError,
    ConflictError,
    FencedError,
    ZoneError,
    ZoneUnreachableError,
)

T = TypeVar("T")


class ZoneClient:
    """Reads and fenced writes of member pods, nodes and claims in one zone."""

    def __init__(self, zone: Zone, timeout_s: float = 5.0) -> None:
        self.zone = zone
        self.timeout_s = timeout_s
        self._api: k8s.ApiClient | None = None
        self._core: k8s.CoreV1Api | None = None

    async def open(self) -> None:
        """Load the zone's kubeconfig; a missing or malformed file raises :class:`ZoneError`."""
        if self._api is not None:
            return
        if not self.zone.kubeconfig.is_file():
            raise ZoneError(self.zone.name, f"kubeconfig {self.zone.kubeconfig} does not exist")
        try:
            self._api = await k8s_config.new_client_from_config(
                config_file=str(self.zone.kubeconfig),
                context=self.zone.context,
                persist_config=False,
            )
        except Exception as e:  # the loader raises YAML, config and key errors alike
            raise ZoneError(
                self.zone.name, f"kubeconfig {self.zone.kubeconfig} is not usable: {e}"
            ) from None
        self._core = k8s.CoreV1Api(self._api)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._api is not None:
            await self._api.close()
        self._api = self._core = None

    def fence_with(self, user: str, group: str, extra: str, token: int) -> None:
        """Make every later call as ``user`` (impersonated) carrying ``token`` as user extra.

        The fence webhook checks that token against the current holder's, so the API server
        itself refuses this client's writes once its holder has been superseded.
        """
        api = self.api
        api.set_default_header("Impersonate-User", user)
        api.set_default_header("Impersonate-Group", group)
        api.set_default_header(f"Impersonate-Extra-{quote(extra, safe='')}", str(token))

    @property
    def api(self) -> k8s.ApiClient:
        """The underlying API client (after :meth:`open`)."""
        if self._api is None:
            raise ZoneError(self.zone.name, "client used before open()")
        return self._api

    @property
    def core(self) -> k8s.CoreV1Api:
        if self._core is None:
            raise ZoneError(self.zone.name, "client used before open()")
        return self._core

    @property
    def namespace(self) -> str:
        return self.zone.namespace

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(self.timeout_s):
                return await call
        except ApiException as e:
            raise _api_error(self.zone.name, what, e) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            detail = str(e) or type(e).__name__
            raise ZoneUnreachableError(
                self.zone.name, f"{what}: API server unreachable ({detail})"
            ) from None

    async def check(self) -> None:
        """Prove the API server answers and lets the adapter read pods in its namespace."""
        await self._call(
            f"list pods in {self.namespace}",
            self.core.list_namespaced_pod(self.namespace, limit=1),
        )

    async def get_pod(self, name: str) -> k8s.V1Pod | None:
        """The pod ``name`` of the zone's namespace, or ``None``."""
        try:
            return await self._call(
                f"read pod {name}", self.core.read_namespaced_pod(name, self.namespace)
            )
        except ZoneError as e:
            if _is_not_found(e):
                return None
            raise

    async def get_node(self, name: str) -> k8s.V1Node | None:
        """The node ``name``, or ``None``."""
        try:
            return await self._call(f"read node {name}", self.core.read_node(name))
        except ZoneError as e:
            if _is_not_found(e):
                return None
            raise

    async def annotate_pod(
        self, name: str, resource_version: str, annotations: Mapping[str, str]
    ) -> k8s.V1Pod:
        """Add ``annotations`` to pod ``name`` if it is still at ``resource_version``."""
        body = {"metadata": {"resourceVersion": resource_version, "annotations": dict(annotations)}}
        return await self._call(
            f"annotate pod {name}", self.core.patch_namespaced_pod(name, self.namespace, body)
        )

    async def delete_pod(self, name: str, uid: str, *, force: bool = False) -> bool:
        """Delete pod ``name`` if it is still the one with ``uid``; ``False`` if it is gone.

        ``force`` deletes with grace period 0, as needed for a pod on a dead node (its kubelet
        will never confirm the termination).
        """
        options = k8s.V1DeleteOptions(
            preconditions=k8s.V1Preconditions(uid=uid),
            grace_period_seconds=0 if force else None,
        )
        try:
            await self._call(
                f"delete pod {name}",
                self.core.delete_namespaced_pod(name, self.namespace, body=options),
            )
        except ZoneError as e:
            if _is_not_found(e) or isinstance(e, ConflictError):
                return False  # gone, or replaced by a pod with another uid
            raise
        return True

    async def create_pod(self, body: Mapping[str, Any]) -> k8s.V1Pod:
        """Create a pod; :class:`ConflictError` if the name is taken."""
        name = body["metadata"]["name"]
        manifest: Any = dict(body)  # the client sends a plain manifest as it is
        return await self._call(
            f"create pod {name}", self.core.create_namespaced_pod(self.namespace, manifest)
        )

    async def ensure_claim(self, name: str, labels: Mapping[str, str]) -> None:
        """Create the persistent volume claim ``name`` unless it exists."""
        body: Any = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": dict(labels)},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
        try:
            await self._call(
                f"create claim {name}",
                self.core.create_namespaced_persistent_volume_claim(self.namespace, body),
            )
        except ConflictError:
            return  # it exists: the member's data lives on


def _is_not_found(e: ZoneError) -> bool:
    return e.status == 404


def _api_error(zone: str, what: str, e: ApiException) -> ZoneError:
    status = int(e.status or 0)
    reason = _message(e)
    if status == 403 and FENCE_MARKER in reason:
        return FencedError(zone, f"{what}: {reason}", status)
    if status in (401, 403):
        return AccessDeniedError(zone, f"{what}: refused ({status}): {reason}", status)
    if status == 409:
        return ConflictError(zone, f"{what}: conflict: {reason}", status)
    if status >= 500 or status == 0:
        return ZoneUnreachableError(zone, f"{what}: API server error ({status}): {reason}", status)
    return ZoneError(zone, f"{what}: {status}: {reason}", status)


def _message(e: ApiException) -> str:
    try:
        body = json.loads(e.body or "{}")
    except (TypeError, ValueError):
        body = {}
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(e.reason or "no reason given")
