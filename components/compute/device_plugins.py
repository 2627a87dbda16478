"""DevicePlugins: the NVIDIA and EFA Kubernetes device plugins (upstream Helm charts, pinned in
components/data/charts.yaml).

- NVIDIA device plugin: on NVIDIA nodes only (the chart's default affinity wants NFD labels we
  don't run), tolerating the GPU taint. Not on Bottlerocket nodes, whose AMI runs its own.
- EFA device plugin: ONLY on nodes labelled `trainyard.io/efa: "true"`; on a node without EFA
  devices the plugin exits and the pod restarts forever. The chart (aws/eks-charts
  stable/aws-efa-k8s-device-plugin) renders one DaemonSet for every kind of EFA node, NVIDIA and
  Neuron alike (its container has been privileged since eks-charts#1245, for the Neuron-EFA
  topology). Its values give two ANDed filters, and we use both: `nodeSelector` (the EFA label)
  and `supportedInstanceLabels`, which the chart turns into a required node affinity, one term
  per key `In` the values; we key it on the accelerator vendor instead of the chart's
  instance-type list, which lags new types. The chart adds `eks.amazonaws.com/compute-type
  NotIn [auto]` itself (Auto Mode nodes bring their own plugin). Only keys the chart has are
  passed (tests/components/data/chart_value_keys.yaml records them).

Both depend on the cluster, its add-ons and every GPU node group, so `pulumi destroy` removes
them while the cluster still answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.compute.addons import ChartPin, chart
from components.compute.catalog import Catalog, load_catalog
from components.compute.gpu_pool import AMI_FAMILY_LABEL
from components.compute.userdata import is_bottlerocket
from components.config import GpuPoolConfig
from components.services.k8s_names import (
    ACCELERATOR_LABEL,
    EFA_LABEL,
    GPU_TAINT_KEY,
    SYSTEM_NAMESPACES,
)

NVIDIA_CHART = "nvidia-device-plugin"
EFA_CHART = "aws-efa-k8s-device-plugin"
EFA_TAINT_KEY = "aws.amazon.com/efa"


@dataclass(frozen=True)
class DevicePluginsArgs:
    provider: k8s.Provider
    """Kubernetes provider of the cluster (required)."""
    pools: Sequence[GpuPoolConfig]
    """The stack's GPU pools: which plugins are needed (required; may be empty)."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Cluster, add-ons and GPU node groups: created first, deleted last. Default none."""
    namespace: str = SYSTEM_NAMESPACES["device_plugins"]
    """Namespace of both releases. Default kube-system."""
    catalog: Optional[Catalog] = None
    """Instance catalog. Default: components/data/instances.yaml."""


# ----------------------------------------------------------------------------------------------
# Pure values
# ----------------------------------------------------------------------------------------------
def _toleration(key: str) -> dict:
    return {"key": key, "operator": "Exists", "effect": "NoSchedule"}


def _required(*expressions: dict) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": list(expressions)}]}}}


def needs_nvidia_plugin(pools: Sequence[GpuPoolConfig], catalog: Catalog) -> bool:
    return any(catalog.get(t).vendor == "nvidia" and not is_bottlerocket(p.ami_type)
               for p in pools for t in p.instance_types)


def efa_vendors(pools: Sequence[GpuPoolConfig], catalog: Catalog) -> set[str]:
    return {catalog.get(t).vendor for p in pools if p.efa for t in p.instance_types}  # type: ignore[misc]


def nvidia_plugin_values() -> dict:
    return {
        "affinity": _required(
            {"key": ACCELERATOR_LABEL, "operator": "In", "values": ["nvidia"]},
            {"key": AMI_FAMILY_LABEL, "operator": "NotIn", "values": ["bottlerocket"]}),
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                        _toleration(GPU_TAINT_KEY["nvidia"])],
        "priorityClassName": "system-node-critical",
        "gfd": {"enabled": False},
        "nfd": {"enabled": False},
    }


def efa_plugin_values(vendors: set[str]) -> dict:
    """Values of the EFA chart for EFA pools of these accelerator `vendors` (nvidia, neuron).
    The DaemonSet lands where the node has the EFA label AND its vendor is listed, and tolerates
    the GPU/Neuron taints and `aws.amazon.com/efa`; the chart adds CriticalAddonsOnly."""
    return {
        "nodeSelector": {EFA_LABEL: "true"},
        "supportedInstanceLabels": {"keys": [ACCELERATOR_LABEL],
                                    "values": sorted(v for v in vendors if v)},
        "tolerations": [_toleration(GPU_TAINT_KEY["nvidia"]), _toleration(GPU_TAINT_KEY["neuron"]),
                        _toleration(EFA_TAINT_KEY)],
    }


# ----------------------------------------------------------------------------------------------
# Component
# ----------------------------------------------------------------------------------------------
class DevicePlugins(pulumi.ComponentResource):
    nvidia: Optional[k8s.helm.v3.Release]
    efa: Optional[k8s.helm.v3.Release]

    def __init__(self, name: str, args: DevicePluginsArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:DevicePlugins", name, None, opts)
        self._name, self._args = name, args
        catalog = args.catalog or load_catalog()
        self.nvidia = self.efa = None
        if needs_nvidia_plugin(args.pools, catalog):
            self.nvidia = self._release("nvidia", chart(NVIDIA_CHART), nvidia_plugin_values())
        vendors = efa_vendors(args.pools, catalog)
        if vendors:
            self.efa = self._release("efa", chart(EFA_CHART), efa_plugin_values(vendors))
        self.register_outputs({"releases": [r.name for r in (self.nvidia, self.efa) if r]})

    def _release(self, role: str, pin: ChartPin, values: dict) -> k8s.helm.v3.Release:
        return k8s.helm.v3.Release(
            f"{self._name}-{role}",
            # A fixed release name: one per cluster, and `helm list` / DaemonSet names stay
            # readable for operators.
            name=pin.chart, chart=pin.chart, version=pin.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=pin.repo),
            namespace=self._args.namespace, values=values,
            max_history=5, timeout=600,
            opts=pulumi.ResourceOptions(parent=self, provider=self._args.provider,
                                        depends_on=list(self._args.depends_on)))
