"""A small kustomize renderer for the subset k8s/ uses, so the tests run without kubectl.

Supported kustomization fields: ``resources`` (files and folders with a kustomization.yaml),
``namespace``, ``patches`` (``path:`` strategic-merge patches, target = the patch's kind and
name) and ``images`` (``newName`` / ``newTag`` / ``digest``). Anything else raises, so a new feature in k8s/
cannot be silently ignored. Strategic merge follows the Kubernetes patch keys for the lists we
patch (containers, env, volumes, volumeMounts, ports); other lists are replaced, as Kubernetes
does for lists without a merge key (tolerations, HPA metrics, args).

When kubectl is installed the tests also render with ``kubectl kustomize`` and require the same
objects, field for field (list order aside).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "resources", "patches", "images"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "APIService",
    "CustomResourceDefinition",
}
# Strategic-merge keys of the lists we patch (Kubernetes' patchMergeKey for each).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}


class KustomizeError(Exception):
    """A kustomization uses something this renderer does not support, or a patch misses."""


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports" and items and isinstance(items[0], dict):
        return "containerPort" if "containerPort" in items[0] else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """Merge ``patch`` into ``base`` (copies; neither argument is changed)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = _merge_key(field, base or patch)
        if key is None:
            return copy.deepcopy(patch)
        by_key = {item[key]: item for item in base}
        merged = [
            strategic_merge(by_key[p[key]], p, field) if p[key] in by_key else copy.deepcopy(p)
            for p in patch
        ]
        patched = {p[key] for p in patch}
        return merged + [copy.deepcopy(item) for item in base if item[key] not in patched]
    return copy.deepcopy(patch)


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        return [spec["template"]["spec"]]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def _set_images(docs: list[dict[str, Any]], images: list[dict[str, str]]) -> None:
    for doc in docs:
        for pod in _pod_specs(doc):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name, _, tag = container["image"].partition(":")
                for image in images:
                    if image["name"] == name:
                        unknown = set(image) - {"name", "newName", "newTag", "digest"}
                        if unknown:
                            raise KustomizeError(f"images: unsupported {sorted(unknown)}")
                        if "digest" in image:  # kustomize: name@digest, the tag dropped
                            container["image"] = f"{image.get('newName', name)}@{image['digest']}"
                        else:
                            container["image"] = (
                                f"{image.get('newName', name)}:{image.get('newTag', tag)}"
                            )


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def build(folder: Path) -> list[dict[str, Any]]:
    """Render the kustomization in ``folder``."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    if unsupported:
        raise KustomizeError(f"{folder}: unsupported kustomization fields {sorted(unsupported)}")
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = (folder / resource).resolve()
        docs += build(path) if path.is_dir() else _load(path)
    for patch_ref in kustomization.get("patches", []):
        if set(patch_ref) != {"path"}:
            raise KustomizeError(f"{folder}: only `path:` patches are supported, got {patch_ref}")
        for patch in _load(folder / patch_ref["path"]):
            hits = [
                i
                for i, d in enumerate(docs)
                if d["kind"] == patch["kind"] and d["metadata"]["name"] == patch["metadata"]["name"]
            ]
            if len(hits) != 1:
                raise KustomizeError(
                    f"{patch_ref['path']}: {len(hits)} targets for "
                    f"{patch['kind']}/{patch['metadata']['name']}"
                )
            docs[hits[0]] = strategic_merge(docs[hits[0]], patch)
    _set_images(docs, kustomization.get("images", []))
    namespace = kustomization.get("namespace")
    if namespace:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
    return docs


def normalized(doc: Any, field: str = "") -> Any:
    """``doc`` with keyed lists sorted by their merge key (kustomize puts patched items first)."""
    if isinstance(doc, dict):
        return {k: normalized(v, k) for k, v in doc.items()}
    if isinstance(doc, list):
        items = [normalized(v, field) for v in doc]
        key = _merge_key(field, items)
        if key and all(isinstance(i, dict) and key in i for i in items):
            items.sort(key=lambda i: str(i[key]))
        return items
    return doc


def index(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``{(kind, namespace, name): normalized doc}``."""
    return {
        (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): normalized(d)
        for d in docs
    }
