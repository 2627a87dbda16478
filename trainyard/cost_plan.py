"""`trainyard cost`: what it reads from a plan (no prices here): the resource types it prices,
node groups' launch templates, reserved capacity and root volumes, Karpenter volume sizes, the
persistent volumes charts ask for, and the stack's region. trainyard/cost.py prices them."""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from trainyard.errors import UsageError

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
CLUSTER = "aws:eks/cluster:Cluster"
NAT = "aws:ec2/natGateway:NatGateway"
VPC_ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
EFS = "aws:efs/fileSystem:FileSystem"
FSX = "aws:fsx/lustreFileSystem:LustreFileSystem"
KMS_KEY = "aws:kms/key:Key"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
SIZES = ("min", "desired", "max")


def _inputs(r: dict) -> dict:
    return r.get("inputs") or {}


def _launch_templates(plan: dict) -> dict:
    out = {}
    for r in plan["resources"]:
        if r["type"] == LAUNCH_TEMPLATE:
            for key in (r.get("id"), (r.get("outputs") or {}).get("name"), _inputs(r).get("name")):
                if key:
                    out[key] = r
    return out


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{what}: expected a number, got {json.dumps(value)}")
    return int(value)


def reservation_of(node_group: dict, launch_template: Optional[dict]) -> Optional[str]:
    """`capacity-block` or `odcr` when the group runs on reserved capacity (which is never
    Spot), else None."""
    if (_inputs(node_group).get("capacityType") or "") == "CAPACITY_BLOCK":
        return "capacity-block"
    lt = _inputs(launch_template or {})
    if ((lt.get("instanceMarketOptions") or {}).get("marketType")) == "capacity-block":
        return "capacity-block"
    target = (lt.get("capacityReservationSpecification") or {}).get("capacityReservationTarget")
    if target:
        return "odcr"
    return None


def root_volumes(node_group: dict, launch_template: Optional[dict]) -> list[tuple[int, str]]:
    """(GiB, volume type) of the EBS volumes each node boots with: the launch template's block
    device mappings, else the group's diskSize. Empty when the plan does not say."""
    out = []
    for m in _inputs(launch_template or {}).get("blockDeviceMappings") or []:
        ebs = (m or {}).get("ebs") or {}
        if ebs.get("volumeSize") is not None:
            out.append((_int(ebs["volumeSize"], f"launch template {launch_template['name']}: "
                                                "blockDeviceMappings.ebs.volumeSize"),
                        str(ebs.get("volumeType") or "gp3")))
    if not out and _inputs(node_group).get("diskSize") is not None:
        out.append((_int(_inputs(node_group)["diskSize"], f"node group {node_group['name']}: "
                                                          "diskSize"), "gp3"))
    return out


def _volume_gib(size: Any, what: str) -> int:
    """An EC2NodeClass volumeSize (`200Gi`, `1Ti`, `100G`) in GiB."""
    text = str(size)
    for suffix, factor in (("Ti", 1024), ("Gi", 1), ("T", 1000 ** 4 / 1024 ** 3),
                           ("G", 1000 ** 3 / 1024 ** 3)):
        if text.endswith(suffix):
            try:
                return math.ceil(float(text[:-len(suffix)]) * factor)
            except ValueError:
                break
    raise UsageError(f"{what}: volumeSize {json.dumps(size)} is not a size like 200Gi")


def _helm_volumes(values: Any, path: str = "") -> list[tuple[str, int]]:
    """(values path, GiB) of every persistent volume a chart's values ask for: each
    `volumeClaimTemplate` storage request and each enabled `persistence.size`."""
    out: list[tuple[str, int]] = []
    if isinstance(values, dict):
        for key, v in values.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "volumeClaimTemplate" and isinstance(v, dict):
                size = (((v.get("spec") or {}).get("resources") or {}).get("requests")
                        or {}).get("storage")
                gib = _gib(size)
                if gib:
                    out.append((here, gib))
                continue
            if key == "persistence" and isinstance(v, dict) and v.get("enabled", True) \
                    and _gib(v.get("size")):
                out.append((here, _gib(v.get("size"))))  # type: ignore[arg-type]
                continue
            out += _helm_volumes(v, here)
    elif isinstance(values, list):
        for i, v in enumerate(values):
            out += _helm_volumes(v, f"{path}[{i}]")
    return out


_QUANTITY = {"Gi": 1, "Ti": 1024, "Mi": 1 / 1024, "G": 1e9 / 2**30, "T": 1e12 / 2**30}


def _gib(quantity: Any) -> Optional[int]:
    """A Kubernetes storage quantity in whole GiB (rounded up, as EBS provisions)."""
    if not isinstance(quantity, str):
        return None
    for suffix, factor in _QUANTITY.items():
        if quantity.endswith(suffix) and quantity[: -len(suffix)].replace(".", "", 1).isdigit():
            return max(1, math.ceil(float(quantity[: -len(suffix)]) * factor))
    return None


def _volume_label(path: str) -> str:
    """`prometheus.prometheusSpec.storageSpec.volumeClaimTemplate` -> `prometheus`."""
    return path.split(".")[0]


def _region(plan: dict) -> Optional[str]:
    for r in plan.get("resources", []):
        arn = (r.get("outputs") or {}).get("arn")
        if isinstance(arn, str) and arn.startswith("arn:"):
            parts = arn.split(":")
            if len(parts) > 3 and parts[3]:
                return parts[3]
    return None
