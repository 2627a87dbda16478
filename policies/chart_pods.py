"""What the Helm charts and EKS add-ons in the plan run on the nodes, as data.

The plan holds a Helm release's `values` and an add-on's `configurationValues`, not the
DaemonSets and Deployments they render. This table says, per chart / add-on name, which workloads
it renders, where in the values each one's nodeSelector, tolerations, affinity and resources live,
the chart's own DEFAULTS for those (what renders when the values leave them out), and, for
DaemonSets, which node pools they are MEANT to reach:

    all                     every pool (CNI, kube-proxy, CSI node plugins, node exporters)
    nvidia                  every pool of NVIDIA instance types
    nvidia-no-bottlerocket  NVIDIA pools not on Bottlerocket (whose AMI has its own plugin)
    efa                     every pool whose nodes attach EFA interfaces
    neuron                  every pool of Trainium/Inferentia types

Values merge like Helm's: maps merge key by key into the defaults, lists and scalars replace them,
null deletes. A default recorded as UNKNOWN makes the workload "cannot judge" unless the values
set it. Sources: each chart's values.yaml and templates upstream, read 2026-11 (the version read
is noted per entry; where it is not the pinned one, the fields used have not changed between
them). Adding a chart: see docs/policies.md, "Deploy readiness".
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from .common import plain


class _Unknown:
    """A chart default nobody recorded (one instance; copies are itself)."""

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


UNKNOWN: Any = _Unknown()
MISSING = object()


@dataclass(frozen=True)
class Setting:
    path: str
    """Dotted path in the values (configurationValues for add-ons)."""
    default: Any = None
    """The chart's default; UNKNOWN when it could not be established."""


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str
    """DaemonSet, Deployment, StatefulSet or Job, as rendered."""
    meant_for: Optional[str] = None
    """DaemonSets only: the pools it must reach (see the module docstring)."""
    node_selector: Optional[Setting] = None
    tolerations: Optional[Setting] = None
    affinity: Union[Setting, Callable[[Any], Any], None] = None
    resources: Optional[Setting] = None
    enabled: Optional[Setting] = None
    """Rendered only when this value is truthy (a non-empty list counts)."""
    fixed_node_selector: Mapping = None  # type: ignore[assignment]
    fixed_tolerations: Sequence = ()
    """Tolerations the template always adds."""
    tolerate_all: Optional[Setting] = None
    """A `tolerateAllTaints` switch: on, the pod tolerates every taint."""
    added_unless_all: Sequence = ()
    """Tolerations the template adds when tolerate_all is off."""
    sidecars: Optional[Setting] = None
    """Extra containers the values add to the pod."""
    group: Optional[str] = None
    """Workloads of one group split the pools between them: a pool is reached if one does."""


def _get(values: Any, path: str) -> Any:
    cur = values
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return MISSING
        cur = cur[part]
    return cur


def _merge(default: Any, given: Any) -> Any:
    if isinstance(default, Mapping) and isinstance(given, Mapping):
        out = dict(default)
        for k, v in given.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _merge(out.get(k, MISSING), v)
        return out
    return given


def _has_unknown(value: Any) -> bool:
    if value is UNKNOWN:
        return True
    if isinstance(value, Mapping):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_unknown(v) for v in value)
    return False


def resolve(values: Any, s: Setting) -> Any:
    """The effective value at `s.path`: the user's (merged into the default), else the default.
    Reads only that path, so an unknown elsewhere in the values does not matter; an unknown at
    the path raises UnknownValueError (cannot judge)."""
    given = _get(values, s.path)
    default = copy.deepcopy(s.default)
    if given is MISSING:
        return default
    given = plain(given)
    if given is None:
        return None
    return _merge(default, given) if isinstance(default, Mapping) else given


def render(w: Workload, values: Any) -> tuple[Optional[dict], list[str]]:
    """(pod spec, unknown paths): the pod spec the chart renders for `w` from `values`, None
    when the values switch it off. Unknown paths are chart defaults this table does not know and
    the values do not set."""
    unknown: list[str] = []

    def val(s: Optional[Setting], empty: Any) -> Any:
        if s is None:
            return empty
        v = resolve(values, s)
        if _has_unknown(v):
            unknown.append(s.path)
            return empty
        return empty if v is None else v

    if w.enabled is not None and not val(w.enabled, None) and not unknown:
        return None, []
    if w.tolerate_all is not None and val(w.tolerate_all, False):
        tolerations = [{"operator": "Exists"}]
    else:
        tolerations = list(val(w.tolerations, [])) + list(w.added_unless_all)
    if callable(w.affinity):
        affinity = w.affinity(values)
        if _has_unknown(affinity):
            unknown.append(getattr(w.affinity, "path", "affinity"))
            affinity = {}
    else:
        affinity = val(w.affinity, {})
    containers = [{"name": w.name, "resources": val(w.resources, {})}]
    containers += [c for c in val(w.sidecars, []) if isinstance(c, Mapping)]
    spec = {"containers": containers,
            "nodeSelector": {**(w.fixed_node_selector or {}), **val(w.node_selector, {})},
            "tolerations": list(w.fixed_tolerations) + tolerations,
            "affinity": affinity}
    return spec, unknown


# ----------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------
LINUX = {"kubernetes.io/os": "linux"}
CRITICAL = {"key": "CriticalAddonsOnly", "operator": "Exists"}
NOEXECUTE_300 = {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
EXISTS = [{"operator": "Exists"}]


def _required(*exprs: dict) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": list(exprs)}]}}}


def _not_in(key: str, *values: str) -> dict:
    return {"key": key, "operator": "NotIn", "values": list(values)}


def _in(key: str, *values: str) -> dict:
    return {"key": key, "operator": "In", "values": list(values)}


NOT_FARGATE = _not_in("eks.amazonaws.com/compute-type", "fargate")
LINUX_ARCH = (_in("kubernetes.io/os", "linux"), _in("kubernetes.io/arch", "amd64", "arm64"))


def _std(prefix: str, *, ns=None, tol=None, aff=None, res=None) -> dict:
    """Settings at `<prefix>.nodeSelector|tolerations|affinity|resources` (prefix "" = root)."""
    p = f"{prefix}." if prefix else ""
    return dict(node_selector=Setting(f"{p}nodeSelector", ns or {}),
                tolerations=Setting(f"{p}tolerations", tol if tol is not None else []),
                affinity=Setting(f"{p}affinity", aff or {}),
                resources=Setting(f"{p}resources", res or {}))


def _label_affinity(path: str, default_keys: list, default_values: Any):
    """The EFA device plugin's affinity: one term `<key> In <values>` per key of
    `<path>.keys` (templates/daemonset.yaml)."""
    s = Setting(path, {"keys": default_keys, "values": default_values})

    def build(values: Any) -> Any:
        labels = resolve(values, s) or {}
        keys, vals = labels.get("keys") or [], labels.get("values")
        if _has_unknown(vals) or _has_unknown(keys):
            return UNKNOWN
        return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [_in(k, *vals)]} for k in keys]}}}

    build.path = f"{path}.values"  # type: ignore[attr-defined]
    return build


# eks-node-monitoring-agent values.yaml, dcgmAgent.affinity: the NVIDIA instance types.
DCGM_NVIDIA_TYPES = (
    "g3.16xlarge g3.4xlarge g3.8xlarge g3s.xlarge g4dn.12xlarge g4dn.16xlarge g4dn.2xlarge "
    "g4dn.4xlarge g4dn.8xlarge g4dn.metal g4dn.xlarge g5.12xlarge g5.16xlarge g5.24xlarge "
    "g5.2xlarge g5.48xlarge g5.4xlarge g5.8xlarge g5.xlarge g5g.16xlarge g5g.2xlarge g5g.4xlarge "
    "g5g.8xlarge g5g.metal g5g.xlarge g6.12xlarge g6.16xlarge g6.24xlarge g6.2xlarge g6.48xlarge "
    "g6.4xlarge g6.8xlarge g6.xlarge g6e.12xlarge g6e.16xlarge g6e.24xlarge g6e.2xlarge "
    "g6e.48xlarge g6e.4xlarge g6e.8xlarge g6e.xlarge g6f.2xlarge g6f.4xlarge g6f.large g6f.xlarge "
    "g7.12xlarge g7.24xlarge g7.2xlarge g7.48xlarge g7.4xlarge g7.8xlarge g7e.12xlarge "
    "g7e.24xlarge g7e.2xlarge g7e.48xlarge g7e.4xlarge g7e.8xlarge gr6.4xlarge gr6.8xlarge "
    "gr6f.4xlarge p2.16xlarge p2.8xlarge p2.xlarge p3.16xlarge p3.2xlarge p3.8xlarge "
    "p3dn.24xlarge p4d.24xlarge p4de.24xlarge p5.48xlarge p5.4xlarge p5e.48xlarge p5en.48xlarge "
    "p6-b200.48xlarge p6-b300.48xlarge p6e-gb200.36xlarge p6e-gb300.36xlarge").split()
NO_SPECIAL_COMPUTE = (_not_in("eks.amazonaws.com/compute-type", "fargate", "auto", "hybrid"),
                      _not_in("sagemaker.amazonaws.com/compute-type", "hyperpod"))

# ----------------------------------------------------------------------------------------------
# Helm charts, by chart name (the last path segment of `chart`)
# ----------------------------------------------------------------------------------------------
CHARTS: dict[str, tuple[Workload, ...]] = {
    # NVIDIA/k8s-device-plugin deployments/helm/nvidia-device-plugin/values.yaml (0.18 line):
    # the default affinity wants NFD/GFD labels, which EKS nodes lack unless NFD runs.
    "nvidia-device-plugin": (
        Workload("nvidia-device-plugin", "DaemonSet", "nvidia-no-bottlerocket",
                 enabled=Setting("devicePlugin.enabled", True),
                 **_std("", tol=[CRITICAL, {"key": "nvidia.com/gpu", "operator": "Exists",
                                            "effect": "NoSchedule"}],
                        aff={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [_in(
                                    "feature.node.kubernetes.io/pci-10de.present", "true")]},
                                {"matchExpressions": [_in(
                                    "feature.node.kubernetes.io/cpu-model.vendor_id", "NVIDIA")]},
                                {"matchExpressions": [_in("nvidia.com/gpu.present", "true")]},
                            ]}}})),
    ),
    # aws/eks-charts stable/aws-efa-k8s-device-plugin templates/daemonset.yaml and
    # daemonset-privileged.yaml: CriticalAddonsOnly always, then `tolerations` (default []); the
    # affinity is built from supportedInstanceLabels / privilegedSupportedInstanceLabels; the
    # privileged DaemonSet renders only when its list is non-empty. The standard list at 0.5.26
    # was not read (only older copies): UNKNOWN unless the values set it.
    "aws-efa-k8s-device-plugin": (
        Workload("aws-efa-k8s-device-plugin", "DaemonSet", "efa", group="efa-plugin",
                 node_selector=Setting("nodeSelector", {}),
                 tolerations=Setting("tolerations", []), fixed_tolerations=(CRITICAL,),
                 affinity=_label_affinity("supportedInstanceLabels",
                                          ["node.kubernetes.io/instance-type"], UNKNOWN),
                 resources=Setting("resources", {"requests": {"cpu": "10m", "memory": "20Mi"}})),
        Workload("aws-efa-k8s-device-plugin-privileged", "DaemonSet", "efa", group="efa-plugin",
                 enabled=Setting("privilegedSupportedInstanceLabels.values", [
                     "inf1.24xlarge", "trn1.32xlarge", "trn1n.32xlarge", "trn2.48xlarge",
                     "trn2u.48xlarge"]),
                 node_selector=Setting("nodeSelector", {}),
                 tolerations=Setting("tolerations", []), fixed_tolerations=(CRITICAL,),
                 affinity=_label_affinity("privilegedSupportedInstanceLabels",
                                          ["node.kubernetes.io/instance-type"], [
                                              "inf1.24xlarge", "trn1.32xlarge", "trn1n.32xlarge",
                                              "trn2.48xlarge", "trn2u.48xlarge"]),
                 resources=Setting("resources", {"requests": {"cpu": "10m", "memory": "20Mi"}})),
    ),
    # NVIDIA/dcgm-exporter deployment/values.yaml (2.x to 4.x): nodeSelector {}, tolerations [],
    # affinity {}, resources {}.
    "dcgm-exporter": (Workload("dcgm-exporter", "DaemonSet", "nvidia", **_std("")),),
    # prometheus-community/helm-charts kube-prometheus-stack values.yaml (82.x) and its
    # prometheus-node-exporter subchart values.yaml: the node exporter tolerates every
    # NoSchedule taint (not NoExecute); everything else has no nodeSelector/tolerations.
    "kube-prometheus-stack": (
        Workload("prometheus-node-exporter", "DaemonSet", "all",
                 enabled=Setting("nodeExporter.enabled", True),
                 sidecars=Setting("prometheus-node-exporter.sidecars", []),
                 **_std("prometheus-node-exporter", ns=dict(LINUX),
                        tol=[{"effect": "NoSchedule", "operator": "Exists"}])),
        Workload("prometheus", "StatefulSet", enabled=Setting("prometheus.enabled", True),
                 **_std("prometheus.prometheusSpec")),
        Workload("alertmanager", "StatefulSet", enabled=Setting("alertmanager.enabled", True),
                 **_std("alertmanager.alertmanagerSpec")),
        Workload("grafana", "Deployment", enabled=Setting("grafana.enabled", True),
                 **_std("grafana")),
        Workload("kube-state-metrics", "Deployment",
                 enabled=Setting("kubeStateMetrics.enabled", True), **_std("kube-state-metrics")),
        Workload("prometheus-operator", "Deployment",
                 enabled=Setting("prometheusOperator.enabled", True),
                 **_std("prometheusOperator")),
        Workload("admission-webhook-patch", "Job",
                 enabled=Setting("prometheusOperator.admissionWebhooks.patch.enabled", True),
                 **_std("prometheusOperator.admissionWebhooks.patch")),
    ),
    # kubeflow/trainer charts/kubeflow-trainer values.yaml (2.x): manager.*; JobSet subchart
    # (kubernetes-sigs/jobset charts/jobset values.yaml) under jobset.controller.*.
    "kubeflow-trainer": (
        Workload("kubeflow-trainer-controller-manager", "Deployment", **_std("manager")),
        Workload("jobset-controller-manager", "Deployment",
                 enabled=Setting("jobset.install", True),
                 **_std("jobset.controller", res={"requests": {"cpu": "500m", "memory": "128Mi"},
                                                  "limits": {"cpu": "2", "memory": "4Gi"}})),
    ),
    # aws/karpenter-provider-aws charts/karpenter values.yaml (the keys below are unchanged from
    # the 0.3x charts through the 1.x line; the v1.14 getting-started guide sets
    # controller.resources): one Deployment (2 replicas, hostname anti-affinity), nodeSelector
    # kubernetes.io/os linux, CriticalAddonsOnly tolerated, and a required node affinity keeping
    # it off nodes Karpenter itself made (karpenter.sh/nodepool DoesNotExist).
    "karpenter": (
        Workload("karpenter", "Deployment", node_selector=Setting("nodeSelector", dict(LINUX)),
                 tolerations=Setting("tolerations", [CRITICAL]),
                 affinity=Setting("affinity", {
                     **_required({"key": "karpenter.sh/nodepool", "operator": "DoesNotExist"}),
                     "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                         {"topologyKey": "kubernetes.io/hostname"}]}}),
                 resources=Setting("controller.resources", {})),
    ),
    # kubernetes-sigs/kueue charts/kueue values.yaml and templates/manager/manager.yaml (0.1x to
    # 0.20): one Deployment; nodeSelector, tolerations and (0.20) affinity under
    # controllerManager, default none; resources under controllerManager.manager (requests
    # 500m / 512Mi, limits 2 / 512Mi). KueueViz (two more Deployments) only with enableKueueViz.
    "kueue": (
        Workload("kueue-controller-manager", "Deployment",
                 node_selector=Setting("controllerManager.nodeSelector", {}),
                 tolerations=Setting("controllerManager.tolerations", []),
                 affinity=Setting("controllerManager.affinity", {}),
                 resources=Setting("controllerManager.manager.resources", {
                     "requests": {"cpu": "500m", "memory": "512Mi"},
                     "limits": {"cpu": "2", "memory": "512Mi"}})),
        Workload("kueueviz-backend", "Deployment", enabled=Setting("enableKueueViz", False),
                 **_std("kueueViz.backend")),
        Workload("kueueviz-frontend", "Deployment", enabled=Setting("enableKueueViz", False),
                 **_std("kueueViz.frontend")),
    ),
}

# ----------------------------------------------------------------------------------------------
# EKS add-ons, by addonName: configurationValues are the chart values of the add-on
# ----------------------------------------------------------------------------------------------
CSI_RES = {"requests": {"cpu": "10m", "memory": "40Mi"}, "limits": {"memory": "256Mi"}}
ADDONS: dict[str, tuple[Workload, ...]] = {
    # aws/eks-node-monitoring-agent charts/eks-node-monitoring-agent values.yaml, daemonset.yaml,
    # dcgm-daemonset.yaml: the agent tolerates everything; dcgm-server has NO tolerations by
    # default and an affinity to NVIDIA instance types.
    "eks-node-monitoring-agent": (
        Workload("eks-node-monitoring-agent", "DaemonSet", "all", fixed_node_selector=LINUX,
                 **_std("nodeAgent", tol=EXISTS,
                        aff=_required(*NO_SPECIAL_COMPUTE, _in("kubernetes.io/arch", "amd64",
                                                               "arm64")),
                        res={"requests": {"cpu": "10m", "memory": "30Mi"},
                             "limits": {"cpu": "250m", "memory": "200Mi"}})),
        Workload("dcgm-server", "DaemonSet", "nvidia", fixed_node_selector=LINUX,
                 enabled=Setting("dcgmAgent.enabled", True),
                 **_std("dcgmAgent", tol=[], aff=_required(
                     _in("node.kubernetes.io/instance-type", *DCGM_NVIDIA_TYPES),
                     *NO_SPECIAL_COMPUTE, _in("kubernetes.io/arch", "amd64")))),
    ),
    # kubernetes-sigs/aws-ebs-csi-driver charts values.yaml and templates/_node.tpl:
    # node.tolerateAllTaints defaults to true ("the driver node tolerates all taints").
    "aws-ebs-csi-driver": (
        Workload("ebs-csi-node", "DaemonSet", "all", fixed_node_selector=LINUX,
                 tolerate_all=Setting("node.tolerateAllTaints", True),
                 **_std("node", tol=[NOEXECUTE_300], res=CSI_RES,
                        aff=_required(NOT_FARGATE))),
        Workload("ebs-csi-controller", "Deployment",
                 **_std("controller", tol=[CRITICAL, NOEXECUTE_300],
                        res={"requests": {"cpu": "10m", "memory": "40Mi"},
                             "limits": {"memory": "256Mi"}})),
    ),
    # kubernetes-sigs/aws-efs-csi-driver charts values.yaml, node-daemonset.yaml.
    "aws-efs-csi-driver": (
        Workload("efs-csi-node", "DaemonSet", "all", fixed_node_selector=LINUX,
                 **_std("node", tol=EXISTS, aff=_required(NOT_FARGATE))),
        Workload("efs-csi-controller", "Deployment",
                 **_std("controller", tol=[CRITICAL, {"key": "efs.csi.aws.com/agent-not-ready",
                                                      "operator": "Exists"}])),
    ),
    # kubernetes-sigs/aws-fsx-csi-driver charts values.yaml (driver v1.4 to v1.10) and
    # node-daemonset.yaml: node.tolerateAllTaints defaults to true.
    "aws-fsx-csi-driver": (
        Workload("fsx-csi-node", "DaemonSet", "all", fixed_node_selector=LINUX,
                 tolerate_all=Setting("node.tolerateAllTaints", True),
                 added_unless_all=({"key": "fsx.csi.aws.com/agent-not-ready",
                                    "operator": "Exists"},),
                 **_std("node", tol=[NOEXECUTE_300], res=CSI_RES, aff=_required(NOT_FARGATE))),
        Workload("fsx-csi-controller", "Deployment",
                 **_std("controller", tol=[CRITICAL, NOEXECUTE_300], res=CSI_RES)),
    ),
    # awslabs/mountpoint-s3-csi-driver charts/aws-mountpoint-s3-csi-driver values.yaml (v2.x)
    # and templates/node.yaml: tolerateAllTaints true by default.
    "aws-mountpoint-s3-csi-driver": (
        Workload("s3-csi-node", "DaemonSet", "all", fixed_node_selector=LINUX,
                 tolerate_all=Setting("node.tolerateAllTaints", True),
                 added_unless_all=(CRITICAL, {"key": "s3.csi.aws.com/agent-not-ready",
                                              "operator": "Exists"}, NOEXECUTE_300),
                 **_std("node", res=CSI_RES, aff=_required(
                     _not_in("eks.amazonaws.com/compute-type", "fargate", "hybrid")))),
    ),
    # aws/amazon-vpc-cni-k8s charts/aws-vpc-cni: aws-node tolerates everything.
    "vpc-cni": (Workload("aws-node", "DaemonSet", "all",
                         **_std("", tol=EXISTS, aff=_required(*LINUX_ARCH, NOT_FARGATE),
                                res={"requests": {"cpu": "25m"}})),),
    # aws/eks-pod-identity-agent charts/eks-pod-identity-agent values.yaml.
    "eks-pod-identity-agent": (
        Workload("eks-pod-identity-agent", "DaemonSet", "all",
                 **_std("", tol=EXISTS, aff=_required(*LINUX_ARCH, NOT_FARGATE))),),
    # No chart: the kube-proxy DaemonSet EKS installs tolerates every taint (operator Exists);
    # its add-on configuration has no scheduling settings.
    "kube-proxy": (Workload("kube-proxy", "DaemonSet", "all", fixed_tolerations=tuple(EXISTS),
                            resources=Setting("resources", {"requests": {"cpu": "100m"}})),),
    # No chart: the CoreDNS Deployment EKS installs (its add-on configuration schema exposes
    # nodeSelector, tolerations, affinity and resources with these defaults).
    "coredns": (Workload("coredns", "Deployment", **_std(
        "", tol=[CRITICAL, {"key": "node-role.kubernetes.io/control-plane",
                            "effect": "NoSchedule"}], aff=_required(*LINUX_ARCH),
        res={"requests": {"cpu": "100m", "memory": "70Mi"}, "limits": {"memory": "170Mi"}})),),
}


# external-secrets/external-secrets deploy/charts/external-secrets values.yaml (0.1x to 2.x):
# the controller takes nodeSelector / tolerations / affinity / resources at the root, the
# webhook under webhook.*, the cert controller under certController.*; all default empty.
CHARTS["external-secrets"] = (
    Workload("external-secrets", "Deployment", **_std("")),
    Workload("external-secrets-webhook", "Deployment",
             enabled=Setting("webhook.create", True), **_std("webhook")),
    Workload("external-secrets-cert-controller", "Deployment",
             enabled=Setting("certController.create", True), **_std("certController")),
)


def chart_name(chart: str) -> str:
    """`oci://ghcr.io/kubeflow/charts/kubeflow-trainer` and `repo/name` -> the chart name."""
    return str(chart).rstrip("/").rsplit("/", 1)[-1]


# Serving charts (policies/serving_charts.py): kept beside the serving rules' family.
from .serving_charts import SERVING_CHARTS  # noqa: E402

CHARTS.update(SERVING_CHARTS)
