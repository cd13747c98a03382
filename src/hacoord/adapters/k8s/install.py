"""What a zone needs before the adapter runs there with API-server fencing and the webhook.

- RBAC: a ClusterRole with what the adapter does (pods, claims, nodes) bound to
  :data:`~hacoord.adapters.k8s.webhook.ADAPTER_GROUP`, the group the adapter impersonates.
  The adapter's own credentials need only ``impersonate`` on that user, group and extra.
- A ValidatingWebhookConfiguration with the eviction and fence webhooks.
  ``failurePolicy: Fail`` for both, deliberately: a webhook that is down or slow must not let
  a drain take a member, nor a stale adapter write; a refused eviction only makes the drain
  wait, and the webhook answers evictions without needing the coordination quorum.
- A PodDisruptionBudget with ``maxUnavailable: 0`` over the group's pods in the zone: the
  second line of defence if the webhook configuration is removed or set to ignore failures.
  Members are moved only by the adapter, which deletes (never evicts) them.

:func:`install` creates or replaces all of them in one zone.
"""

from __future__ import annotations

import base64
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from hacoord.adapters.k8s.config import GroupConfig
from hacoord.adapters.k8s.kube import ZoneClient
from hacoord.adapters.k8s.pods import GROUP_LABEL
from hacoord.adapters.k8s.webhook import ADAPTER_GROUP, ADAPTER_USER, TOKEN_EXTRA

WEBHOOK_TIMEOUT_S = 5


def adapter_role(config: GroupConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ClusterRole and ClusterRoleBinding of the impersonated adapter identity."""
    name = f"hacoord-k8s-{config.name}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "verbs": ["get", "list", "watch", "create", "patch", "delete"],
            },
            {
                "apiGroups": [""],
                "resources": ["persistentvolumeclaims"],
                "verbs": ["get", "create"],
            },
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": ADAPTER_GROUP}
        ],
    }
    return role, binding


def impersonator_role(config: GroupConfig) -> dict[str, Any]:
    """What the adapter's real credentials need: to impersonate its fenced identity."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": f"hacoord-k8s-{config.name}-impersonator"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["users"],
                "verbs": ["impersonate"],
                "resourceNames": [ADAPTER_USER],
            },
            {
                "apiGroups": [""],
                "resources": ["groups"],
                "verbs": ["impersonate"],
                "resourceNames": [ADAPTER_GROUP],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": [f"userextras/{TOKEN_EXTRA}"],
                "verbs": ["impersonate"],
            },
        ],
    }


def webhook_configuration(
    config: GroupConfig, zone: str, base_url: str, ca_pem: bytes
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration of ``zone``, calling ``base_url`` (https)."""
    namespace = config.zone(zone).namespace
    ca_bundle = base64.b64encode(ca_pem).decode()
    root = f"{base_url.rstrip('/')}/v1/k8s/{config.name}/zones/{zone}"
    common = {
        "admissionReviewVersions": ["v1"],
        "failurePolicy": "Fail",
        "timeoutSeconds": WEBHOOK_TIMEOUT_S,
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": f"hacoord-{config.name}"},
        "webhooks": [
            {
                **common,
                "name": f"eviction.{config.name}.hacoord.io",
                "clientConfig": {"url": f"{root}/eviction", "caBundle": ca_bundle},
                # It annotates the pod, which it skips for a dry run.
                "sideEffects": "NoneOnDryRun",
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods/eviction"],
                        "scope": "Namespaced",
                    }
                ],
            },
            {
                **common,
                "name": f"fence.{config.name}.hacoord.io",
                "clientConfig": {"url": f"{root}/fence", "caBundle": ca_bundle},
                "sideEffects": "None",
                "objectSelector": {"matchLabels": {GROUP_LABEL: config.name}},
                "rules": [
                    {
                        "operations": ["CREATE", "UPDATE", "DELETE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
            },
        ],
    }


def disruption_budget(config: GroupConfig) -> dict[str, Any]:
    """A PodDisruptionBudget refusing every voluntary eviction of the group's pods."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"hacoord-{config.name}"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {GROUP_LABEL: config.name}}},
    }


async def install(zone: ZoneClient, config: GroupConfig, base_url: str, ca_pem: bytes) -> None:
    """Create or replace the RBAC, the webhook configuration and the PDB in ``zone``.

    ``zone`` must use credentials allowed to manage those (an administrator's).
    """
    rbac = k8s.RbacAuthorizationV1Api(zone.api)
    admission = k8s.AdmissionregistrationV1Api(zone.api)
    policy = k8s.PolicyV1Api(zone.api)
    role, binding = adapter_role(config)
    ns = zone.namespace
    await _apply(
        zone, rbac.create_cluster_role, rbac.replace_cluster_role, rbac.read_cluster_role, role
    )
    await _apply(
        zone,
        rbac.create_cluster_role,
        rbac.replace_cluster_role,
        rbac.read_cluster_role,
        impersonator_role(config),
    )
    await _apply(
        zone,
        rbac.create_cluster_role_binding,
        rbac.replace_cluster_role_binding,
        rbac.read_cluster_role_binding,
        binding,
    )
    await _apply(
        zone,
        admission.create_validating_webhook_configuration,
        admission.replace_validating_webhook_configuration,
        admission.read_validating_webhook_configuration,
        webhook_configuration(config, zone.zone.name, base_url, ca_pem),
    )
    pdb: Any = disruption_budget(config)
    try:
        await policy.create_namespaced_pod_disruption_budget(ns, pdb)
    except ApiException as e:
        if e.status != 409:
            raise
        current = await policy.read_namespaced_pod_disruption_budget(pdb["metadata"]["name"], ns)
        pdb["metadata"]["resourceVersion"] = current.metadata.resource_version
        await policy.replace_namespaced_pod_disruption_budget(pdb["metadata"]["name"], ns, pdb)


async def _apply(
    zone: ZoneClient, create: Any, replace: Any, read: Any, body: dict[str, Any]
) -> None:
    name = body["metadata"]["name"]
    try:
        await create(body)
    except ApiException as e:
        if e.status != 409:
            raise
        current = await read(name)
        body = {
            **body,
            "metadata": {**body["metadata"], "resourceVersion": current.metadata.resource_version},
        }
        await replace(name, body)


async def uninstall(zone: ZoneClient, config: GroupConfig) -> None:
    """Remove what :func:`install` created in ``zone`` (missing objects are fine)."""
    rbac = k8s.RbacAuthorizationV1Api(zone.api)
    admission = k8s.AdmissionregistrationV1Api(zone.api)
    policy = k8s.PolicyV1Api(zone.api)
    name = f"hacoord-k8s-{config.name}"
    calls = [
        admission.delete_validating_webhook_configuration(f"hacoord-{config.name}"),
        policy.delete_namespaced_pod_disruption_budget(f"hacoord-{config.name}", zone.namespace),
        rbac.delete_cluster_role_binding(name),
        rbac.delete_cluster_role(name),
        rbac.delete_cluster_role(f"{name}-impersonator"),
    ]
    for call in calls:
        try:
            await call
        except ApiException as e:
            if e.status != 404:
                raise
