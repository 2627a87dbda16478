"""Every Kubernetes object the stacks create validates against the Kubernetes OpenAPI schema of
the cluster's version (kubernetes-validate, strict mode: unknown fields are rejected).

Covers every component's objects, not only storage's. Each `kubernetes:<group>/<version>:<Kind>`
resource in a plan is rebuilt as a manifest (apiVersion and kind from the type token, the rest
from the inputs as the engine sees them, the name from the mock output when Pulumi auto-names
it; secret values, masked in the plan, are left out). Skipped, and listed: Helm releases (the chart's own templates are not in the plan) and
custom resources of CRDs that are not part of Kubernetes (no schema ships for them).

Schema version: the cluster's `kubernetesVersion`. The config allows 1.31-1.34 and
kubernetes-validate 1.37 ships schemas up to 1.37, so today the exact minor is used; should a
stack ask for a minor newer than the package ships, the newest shipped schema is used and the
test warns which one.
"""

from __future__ import annotations

import copy
import warnings

import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv

from tests.conftest import STACKS, storage_unit_plan
from trainyard.synth import SECRET, load_config

# API groups built into Kubernetes (a kind in any other group comes from a CRD).
BUILTIN_GROUPS = {
    "core", "apps", "batch", "autoscaling", "policy", "rbac.authorization.k8s.io",
    "storage.k8s.io", "networking.k8s.io", "scheduling.k8s.io", "node.k8s.io",
    "coordination.k8s.io", "discovery.k8s.io", "certificates.k8s.io", "events.k8s.io",
    "admissionregistration.k8s.io", "apiextensions.k8s.io", "apiregistration.k8s.io",
    "flowcontrol.apiserver.k8s.io", "resource.k8s.io", "storagemigration.k8s.io",
}
NOT_OBJECTS = {"kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart",
               "kubernetes:yaml/v2:ConfigGroup", "kubernetes:yaml/v2:ConfigFile",
               "kubernetes:kustomize/v2:Directory"}


def schema_version(kubernetes_version: str) -> str:
    """The newest schema kubernetes-validate ships that is not newer than the cluster."""
    want = tuple(int(x) for x in kubernetes_version.split(".")[:2])
    shipped = sorted({tuple(int(x) for x in v.split(".")[:2]) for v in kv.all_versions()})
    usable = [v for v in shipped if v <= want] or shipped[:1]
    return ".".join(map(str, usable[-1]))


def split_type(type_: str) -> tuple[str, str, str]:
    """`kubernetes:storage.k8s.io/v1:StorageClass` -> (storage.k8s.io, v1, StorageClass)."""
    _, group_version, kind = type_.split(":")
    group, version = group_version.split("/")
    return group, version, kind


def without_secrets(value):
    """The plan masks secret values as "[secret]" whatever their shape; those fields can't be
    judged offline, so they are left out of the manifest (everything around them still is)."""
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items() if v != SECRET}
    if isinstance(value, list):
        return [without_secrets(v) for v in value if v != SECRET]
    return value


def manifest(resource: dict) -> dict:
    group, version, kind = split_type(resource["type"])
    api_version = version if group == "core" else f"{group}/{version}"
    body = without_secrets(copy.deepcopy(resource["inputs"]))
    # the typed SDK sets these too; they must agree with the type token
    assert body.pop("apiVersion", api_version) == api_version, resource["urn"]
    assert body.pop("kind", kind) == kind, resource["urn"]
    metadata = dict(body.pop("metadata", None) or {})
    out_name = (resource["outputs"].get("metadata") or {}).get("name")
    if "name" not in metadata and out_name:  # auto-named by Pulumi
        metadata["name"] = out_name
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **body}


def objects(plan: dict) -> tuple[list[dict], list[str]]:
    """(resources to validate, descriptions of those skipped)."""
    checked, skipped = [], []
    for r in plan["resources"]:
        if not r["type"].startswith("kubernetes:") or not r["custom"]:
            continue
        if r["type"] in NOT_OBJECTS:
            skipped.append(f"{r['type']} {r['name']} (Helm/YAML wrapper)")
            continue
        group, _, _ = split_type(r["type"])
        if group not in BUILTIN_GROUPS:
            skipped.append(f"{r['type']} {r['name']} (custom resource)")
            continue
        checked.append(r)
    return checked, skipped


def validate(resource: dict, version: str) -> None:
    doc = manifest(resource)
    try:
        used = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path)
        pytest.fail(f"{resource['type']} {resource['name']}: {path}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:
        pytest.fail(f"{resource['type']} {resource['name']}: {e.message}")
    assert used == version


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_validates(plan_for, stack):
    plan = plan_for(stack)
    wanted = load_config(stack).cluster.kubernetes_version
    version = schema_version(wanted)
    if version != wanted:
        warnings.warn(f"kubernetes-validate ships no {wanted} schema; validating {stack} "
                      f"against {version}, the closest it has", stacklevel=1)
    checked, skipped = objects(plan)
    # Storage alone puts a StorageClass, volumes and claims in every stack.
    kinds = {split_type(r["type"])[2] for r in checked}
    assert {"StorageClass", "PersistentVolume", "PersistentVolumeClaim", "Namespace"} <= kinds
    for r in checked:
        validate(r, version)
    print(f"{stack}: {len(checked)} objects valid against Kubernetes {version} (strict); "
          f"skipped {len(skipped)}: {skipped}")


def test_storage_objects_validate_standalone():
    """The storage component's objects with FSx on and several teams (prod config)."""
    plan = storage_unit_plan("prod", teams=("research", "applied", "eval"))
    checked, skipped = objects(plan)
    assert not skipped and len(checked) >= 3 + 2 + 4 * 3  # namespaces, classes, PV+PVC per team
    for r in checked:
        validate(r, schema_version("1.33"))


def test_strict_mode_rejects_unknown_and_missing_fields():
    """Proves the check has teeth: a typo'd field and a wrong type both fail."""
    good = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "x"}, "provisioner": "efs.csi.aws.com"}
    kubernetes_validate.validate(good, "1.33", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**good, "provisoner": "typo"}, "1.33", strict=True)
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
           "spec": {"accessModes": "ReadWriteMany"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pvc, "1.33", strict=True)


def test_schema_version_choice():
    assert schema_version("1.33") == "1.33"
    newest = sorted(kv.all_versions(), key=lambda v: tuple(map(int, v.split("."))))[-1]
    assert schema_version("9.99") == ".".join(newest.split(".")[:2])
    assert split_type("kubernetes:core/v1:Namespace") == ("core", "v1", "Namespace")
