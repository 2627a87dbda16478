"""Storage's Kubernetes side: StorageClasses and, in every team namespace, the shared EFS claim
(and the FSx claim where FSx is on), statically bound to volumes of the planned file systems."""

from __future__ import annotations

import pytest

from components.storage import efs, fsx
from tests.conftest import STACKS, resources, storage_unit_plan
from trainyard.synth import load_config

SC = "kubernetes:storage.k8s.io/v1:StorageClass"
PV = "kubernetes:core/v1:PersistentVolume"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
NS = "kubernetes:core/v1:Namespace"


def claims(plan: dict, name: str) -> dict[str, dict]:
    return {r["inputs"]["metadata"]["namespace"]: r for r in resources(plan, PVC)
            if r["inputs"]["metadata"]["name"] == name}


def volume_of(plan: dict, claim: dict) -> dict:
    (pv,) = [r for r in resources(plan, PV)
             if r["outputs"]["metadata"]["name"] == claim["inputs"]["spec"]["volumeName"]]
    return pv


def team_namespaces(plan: dict) -> dict[str, dict]:
    return {r["inputs"]["metadata"]["name"]: r for r in resources(plan, NS)}


def check_efs_side(plan: dict, teams: set[str]) -> None:
    (fs,) = resources(plan, "aws:efs/fileSystem:FileSystem")
    (ap,) = resources(plan, "aws:efs/accessPoint:AccessPoint")
    (sc,) = [r for r in resources(plan, SC) if r["inputs"]["metadata"]["name"] == "efs-shared"]
    assert sc["inputs"]["provisioner"] == "efs.csi.aws.com"
    assert sc["inputs"]["parameters"]["fileSystemId"] == fs["id"]
    assert sc["inputs"]["parameters"]["provisioningMode"] == "efs-ap"
    mount_targets = {r["urn"] for r in resources(plan, "aws:efs/mountTarget:MountTarget")}
    assert mount_targets <= set(sc["dependencies"])
    found = claims(plan, "shared-efs")
    assert set(found) == teams
    namespaces = team_namespaces(plan)
    for team, claim in found.items():
        spec = claim["inputs"]["spec"]
        assert spec["accessModes"] == ["ReadWriteMany"]
        assert spec["storageClassName"] == "efs-shared"
        assert namespaces[team]["urn"] in claim["dependencies"]
        pv = volume_of(plan, claim)
        assert pv["inputs"]["spec"]["csi"] == {"driver": "efs.csi.aws.com",
                                               "volumeHandle": f"{fs['id']}::{ap['id']}"}
        assert pv["inputs"]["spec"]["claimRef"] == {"namespace": team, "name": "shared-efs"}
        assert pv["inputs"]["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        assert pv["inputs"]["spec"]["accessModes"] == ["ReadWriteMany"]


def check_fsx_side(plan: dict, teams: set[str], capacity_gib: int) -> None:
    (fs,) = resources(plan, "aws:fsx/lustreFileSystem:LustreFileSystem")
    (addon,) = [r for r in resources(plan, "aws:eks/addon:Addon")
                if r["inputs"]["addonName"] == "aws-fsx-csi-driver"]
    (sc,) = [r for r in resources(plan, SC) if r["inputs"]["metadata"]["name"] == "fsx-lustre"]
    assert sc["inputs"]["provisioner"] == "fsx.csi.aws.com"
    assert sc["inputs"]["reclaimPolicy"] == "Retain" and "parameters" not in sc["inputs"]
    assert addon["urn"] in sc["dependencies"]
    found = claims(plan, "fsx-lustre")
    assert set(found) == teams
    for team, claim in found.items():
        spec = claim["inputs"]["spec"]
        assert spec["resources"]["requests"]["storage"] == f"{capacity_gib}Gi"
        pv = volume_of(plan, claim)
        csi = pv["inputs"]["spec"]["csi"]
        assert csi["driver"] == "fsx.csi.aws.com" and csi["volumeHandle"] == fs["id"]
        assert csi["volumeAttributes"] == {"dnsname": fs["outputs"]["dnsName"],
                                           "mountname": fs["outputs"]["mountName"]}
        assert pv["inputs"]["spec"]["claimRef"] == {"namespace": team, "name": "fsx-lustre"}


@pytest.mark.parametrize("stack", STACKS)
def test_committed_stacks_claims(plan_for, stack):
    plan, cfg = plan_for(stack), load_config(stack)
    teams = {t.name for t in cfg.teams}
    check_efs_side(plan, teams)
    if cfg.storage.fsx.enabled:
        check_fsx_side(plan, teams, cfg.storage.fsx.storage_capacity_gib)
    else:
        assert not claims(plan, "fsx-lustre")
        assert not [r for r in resources(plan, "aws:eks/addon:Addon")
                    if r["inputs"]["addonName"] == "aws-fsx-csi-driver"]


@pytest.mark.parametrize("stack", STACKS)
def test_storage_objects_use_cluster_provider_and_dependencies(plan_for, stack):
    plan = plan_for(stack)
    clusters = resources(plan, "aws:eks/cluster:Cluster")
    assert clusters
    node_groups = {r["urn"] for r in resources(plan, "aws:eks/nodeGroup:NodeGroup")}
    ours = [r for r in plan["resources"]
            if r["type"] in (SC, PV, PVC) and "-storage-" in r["name"]]
    assert ours
    for r in ours:
        assert r["provider"], r["name"]
        assert clusters[0]["urn"] in r["dependencies"], r["name"]
        # Waits for the system nodes only: a GPU pool without capacity must not block claims.
        system = {u for u in node_groups if u.endswith("-system")}
        assert system and system <= set(r["dependencies"]), r["name"]
        assert not (node_groups - system) & set(r["dependencies"]), r["name"]


def test_unit_plan_many_teams():
    plan = storage_unit_plan("prod", teams=("research", "applied", "eval"))
    check_efs_side(plan, {"research", "applied", "eval"})
    check_fsx_side(plan, {"research", "applied", "eval"}, 2400)
    for r in resources(plan, PV) + resources(plan, PVC) + resources(plan, SC):
        assert r["provider"] == "unit-k8s"


def test_constants_match_shared_names():
    assert efs.STORAGE_CLASS == "efs-shared" and fsx.STORAGE_CLASS == "fsx-lustre"
    assert efs.volume_handle("fs-1", "fsap-2") == "fs-1::fsap-2"
    assert fsx.volume_capacity(1200) == "1200Gi"
