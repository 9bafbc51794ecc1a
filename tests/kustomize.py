"""The part of kustomize that deploy/kubernetes uses, for machines without kubectl: resources
(files and folders with a kustomization.yaml), ``labels`` (without selectors) and JSON 6902
patches with a target. Where kubectl is installed, tests check this renders what
``kubectl kustomize`` renders."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

Resource = dict[str, Any]


def render(folder: Path) -> list[Resource]:
    """Every resource FOLDER's kustomization.yaml makes."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "labels", "patches"}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"{folder}: this renderer does not do {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        if path.is_dir():
            resources += render(path)
        else:
            resources += [r for r in yaml.safe_load_all(path.read_text()) if r]
    for label in spec.get("labels", []):
        if label.get("includeSelectors"):
            raise ValueError(f"{folder}: labels with selectors are not done here")
        for resource in resources:
            resource.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for patch in spec.get("patches", []):
        operations = yaml.safe_load((folder / patch["path"]).read_text())
        if not isinstance(operations, list):
            raise ValueError(f"{folder}: only JSON 6902 patches are done here")
        kind, name = patch["target"]["kind"], patch["target"]["name"]
        for index, resource in enumerate(resources):
            if resource["kind"] == kind and resource["metadata"]["name"] == name:
                resources[index] = jsonpatch.apply_patch(copy.deepcopy(resource), operations)
    return resources


def kubectl_render(folder: Path) -> list[Resource] | None:
    """``kubectl kustomize FOLDER``, where kubectl is installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True
    ).stdout
    return [r for r in yaml.safe_load_all(out) if r]
