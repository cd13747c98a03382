"""The member pod the adapter creates, and the labels and annotations it records on pods.

Every pod the adapter writes carries the fencing token of the adapter instance that wrote it
and the id of the replacement (a :mod:`hacoord.workflow` run) that did, so an operator (and
the adapter after a crash) can tell which replacement produced which pod.
"""

from __future__ import annotations

from typing import Any

from hacoord.adapters.k8s.config import GroupConfig, Member, PodTemplate

GROUP_LABEL = "hacoord.io/group"
MEMBER_LABEL = "hacoord.io/member"
REVISION = "hacoord.io/revision"
"""Annotation: the :attr:`PodTemplate.revision` the pod was built from."""
TOKEN = "hacoord.io/fencing-token"
"""Annotation: the fencing token of the adapter that created the pod."""
REPLACEMENT = "hacoord.io/replacement"
"""Annotation: the replacement (workflow id) that created the pod."""
REPLACED_BY = "hacoord.io/replaced-by"
"""Annotation on a pod being replaced: the replacement that deletes it."""
REPLACED_TOKEN = "hacoord.io/replaced-by-token"
REPLACE_REASON = "hacoord.io/replace-reason"
EVICTION_REQUESTED_BY = "hacoord.io/eviction-requested-by"
"""Annotation the eviction webhook puts on a member pod whose eviction it denied: who asked."""
EVICTION_REQUESTED_AT = "hacoord.io/eviction-requested-at"
EVICTION_REASON = "hacoord.io/eviction-reason"
CONTAINER = "member"
DATA_VOLUME = "data"


def member_pod(
    config: GroupConfig,
    member: Member,
    template: PodTemplate,
    *,
    token: int,
    replacement: str,
) -> dict[str, Any]:
    """The pod manifest of ``member`` built from ``template``, stamped with the writer."""
    env = {**template.env, **member.env}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": member.name,
            "labels": {GROUP_LABEL: config.name, MEMBER_LABEL: member.name},
            "annotations": {
                REVISION: template.revision,
                TOKEN: str(token),
                REPLACEMENT: replacement,
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {
                    "name": CONTAINER,
                    "image": template.image,
                    "args": list(template.args),
                    "env": [{"name": k, "value": v} for k, v in env.items()],
                    "volumeMounts": [{"name": DATA_VOLUME, "mountPath": template.data_path}],
                    "readinessProbe": {
                        "httpGet": {"path": template.readiness_path, "port": member.port},
                        "periodSeconds": 1,
                    },
                }
            ],
            "volumes": [
                {
                    "name": DATA_VOLUME,
                    "persistentVolumeClaim": {"claimName": member.volume_claim},
                }
            ],
        },
    }
