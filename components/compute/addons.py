"""Pinned EKS add-on and Helm chart versions (components/data/{addons,charts}.yaml), plus the
add-on configuration the platform needs. Pure functions over data.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from components.network import netmath

DATA = Path(__file__).resolve().parents[1] / "data"
ADDONS_PATH = DATA / "addons.yaml"
CHARTS_PATH = DATA / "charts.yaml"

VPC_CNI_MINIMUM = (1, 18, 5)
"""First VPC CNI release that leaves `efa-only` interfaces alone (AWS_FACTS)."""
MINIMUM_IP_TARGET = 10
"""Addresses the CNI keeps assigned per node even when idle: GPU nodes run one training pod plus
~8 DaemonSet pods, so 10 avoids an EC2 call per pod start without hoarding addresses."""


@dataclass(frozen=True)
class AddonPin:
    name: str
    version: str
    """Exact `vX.Y.Z-eksbuild.N`."""
    before_nodes: bool
    """Installed before any node group (nodes need it to become Ready)."""
    service_account: Optional[str] = None
    """kube-system service account that gets a Pod Identity role, if the add-on calls AWS."""
    policy: Optional[str] = None
    """AWS managed policy of that role, relative to `arn:<partition>:iam::aws:policy/`."""


@dataclass(frozen=True)
class ChartPin:
    chart: str
    repo: str
    version: str
    avoid: tuple[str, ...] = ()
    minimum: Optional[str] = None


def version_tuple(version: str) -> tuple[int, ...]:
    """`v1.20.4-eksbuild.2` / `0.18.2` -> (1, 20, 4) / (0, 18, 2)."""
    core = version.lstrip("v").split("-", 1)[0]
    return tuple(int(p) for p in core.split("."))


# ----------------------------------------------------------------------------------------------
# EKS add-ons
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _addon_data() -> dict:
    with ADDONS_PATH.open() as f:
        return yaml.safe_load(f)


def addon_pins(kubernetes_version: str, data: Optional[Mapping] = None) -> tuple[AddonPin, ...]:
    """Every managed add-on for `kubernetes_version`, pre-node ones first.

    Raises ValueError when the data file lacks the version or an add-on, or pins a VPC CNI too
    old for `efa-only` interfaces."""
    data = data if data is not None else _addon_data()
    versions = data["versions"].get(kubernetes_version)
    if versions is None:
        raise ValueError(f"components/data/addons.yaml has no add-on versions for Kubernetes "
                         f"{kubernetes_version}")
    order = [(n, True) for n in data["before_nodes"]] + [(n, False) for n in data["after_nodes"]]
    pins = []
    for name, before in order:
        if name not in versions:
            raise ValueError(f"components/data/addons.yaml: no {name} version for Kubernetes "
                             f"{kubernetes_version}")
        pi = data.get("pod_identity", {}).get(name, {})
        pins.append(AddonPin(name, str(versions[name]), before, pi.get("service_account"),
                             pi.get("policy")))
    cni = next((p for p in pins if p.name == "vpc-cni"), None)
    if cni and version_tuple(cni.version) < VPC_CNI_MINIMUM:
        raise ValueError(f"vpc-cni {cni.version} is older than 1.18.5, which `efa-only` "
                         "interfaces need")
    return tuple(pins)


def vpc_cni_configuration() -> str:
    """configuration_values of the vpc-cni add-on (JSON, as EKS takes it).

    - WARM_IP_TARGET / MINIMUM_IP_TARGET: allocate addresses one by one instead of a whole
      ENI's worth per node. A p5 could otherwise hold ~50 idle addresses per attached ENI;
      components/network/netmath.py sizes subnets assuming WARM_IP_TARGET.
    - ENABLE_PREFIX_DELEGATION off: /28 prefixes would fragment the subnets the EFA pools share
      and make netmath's per-address budget wrong.
    - `efa-only` interfaces need nothing here beyond VPC CNI >= 1.18.5 (it skips them); pods
      only get addresses from network card 0, so many-NIC nodes don't multiply IP use.
    - enableNetworkPolicy: NetworkPolicies (team namespaces) are enforced, not silently ignored.
      EFA traffic bypasses the kernel and is not affected; NCCL's TCP bootstrap is.
    """
    return json.dumps({
        "enableNetworkPolicy": "true",
        "env": {
            "WARM_IP_TARGET": str(netmath.WARM_IP_TARGET),
            "MINIMUM_IP_TARGET": str(MINIMUM_IP_TARGET),
            "ENABLE_PREFIX_DELEGATION": "false",
        },
    }, sort_keys=True)


TOLERATE_ALL = {"operator": "Exists"}
CSI_NODE_ADDONS = ("aws-ebs-csi-driver", "aws-efs-csi-driver", "aws-fsx-csi-driver")
"""Add-ons whose node DaemonSet must run on every node that mounts volumes."""


def addon_configuration(name: str) -> Optional[str]:
    """configuration_values for add-ons that need any (JSON), else None."""
    if name == "vpc-cni":
        return vpc_cni_configuration()
    if name in CSI_NODE_ADDONS:
        # The node DaemonSets must also run on tainted GPU nodes, or pods there can't mount.
        return json.dumps({"node": {"tolerations": [TOLERATE_ALL]}}, sort_keys=True)
    if name == "eks-node-monitoring-agent":
        # Its dcgm-server DaemonSet (the GPU health checks node auto-repair acts on) has no
        # tolerations by default, so it never reaches the tainted GPU nodes; the chart's own
        # affinity already limits it to NVIDIA instance types. Only `dcgmAgent` is set: the
        # node agent already tolerates every taint, and the managed add-on's schema refuses
        # keys it does not know (additionalProperties: false), so nothing else is sent.
        return json.dumps({"dcgmAgent": {"tolerations": [TOLERATE_ALL]}}, sort_keys=True)
    return None


# ----------------------------------------------------------------------------------------------
# Helm charts
# ----------------------------------------------------------------------------------------------
def chart_problem(name: str, pin: ChartPin) -> Optional[str]:
    if pin.version in pin.avoid:
        return f"{name} {pin.version} is a known-bad version (avoid {', '.join(pin.avoid)})"
    if pin.minimum and version_tuple(pin.version) < version_tuple(pin.minimum):
        return f"{name} {pin.version} is older than the minimum {pin.minimum}"
    parts = pin.version.removeprefix("v").split(".")  # charts tagged v1.2.3 (KServe)
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return f"{name} version {pin.version!r} is not an exact X.Y.Z pin"
    return None


@functools.lru_cache(maxsize=1)
def load_charts() -> dict[str, ChartPin]:
    with CHARTS_PATH.open() as f:
        raw = yaml.safe_load(f)["charts"]
    return parse_charts(raw)


def parse_charts(raw: Mapping) -> dict[str, ChartPin]:
    pins = {}
    for name, c in raw.items():
        pin = ChartPin(chart=c["chart"], repo=c["repo"], version=str(c["version"]),
                       avoid=tuple(str(v) for v in c.get("avoid", ())),
                       minimum=str(c["minimum"]) if c.get("minimum") else None)
        problem = chart_problem(name, pin)
        if problem:
            raise ValueError(f"components/data/charts.yaml: {problem}")
        pins[name] = pin
    return pins


def chart(name: str) -> ChartPin:
    return load_charts()[name]
