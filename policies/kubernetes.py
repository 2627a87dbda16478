"""Kubernetes object rules: namespaces (pod security, network policies, GPU quotas), RBAC,
workloads outside `default`, pod specs (privileged containers, /dev/infiniband host mounts)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy import Severity

from .common import (
    MANDATORY,
    Refs,
    Stack,
    get,
    items,
    plain,
    resource_rule,
    schema,
    short,
    stack_rule,
)

NAMESPACE = "kubernetes:core/v1:Namespace"
RESOURCE_QUOTA = "kubernetes:core/v1:ResourceQuota"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
CLUSTER_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
CLUSTER_ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
HELM_CHART_V4 = "kubernetes:helm.sh/v4:Chart"

PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
TEAM_LABEL = "trainyard.io/team"
GPU_QUOTA_KEYS = ("requests.nvidia.com/gpu", "requests.aws.amazon.com/neuron",
                  "requests.aws.amazon.com/neuroncore")
CLUSTER_SCOPED = {
    # Kubernetes built-ins
    "Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding",
    "CustomResourceDefinition", "StorageClass", "PriorityClass", "RuntimeClass", "IngressClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService", "CSIDriver",
    "CSINode", "VolumeAttachment", "CertificateSigningRequest", "FlowSchema",
    "PriorityLevelConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding", "DeviceClass",
    # CRDs the platform installs or users add (each CRD's `scope: Cluster`)
    "ResourceFlavor", "ClusterQueue", "Cohort", "WorkloadPriorityClass", "Topology",  # Kueue
    "AdmissionCheck", "MultiKueueCluster", "MultiKueueConfig", "ProvisioningRequestConfig",
    "NodePool", "EC2NodeClass", "NodeClass", "NodeClaim", "NodeOverlay",  # Karpenter
    "ClusterTrainingRuntime",  # Kubeflow Trainer
    "ClusterServingRuntime", "ClusterStorageContainer",  # KServe
    "ClusterIssuer",  # cert-manager
    "ClusterTriggerAuthentication",  # KEDA
    "ClusterSecretStore", "ClusterExternalSecret", "ClusterGenerator",  # External Secrets
    "ClusterPolicy", "NVIDIADriver",  # NVIDIA GPU Operator
}
"""Kinds that take no metadata.namespace. A custom kind is matched by name, whatever its API
group; a namespaced CRD that shares a name here (none known) would need its group added."""
# Pulumi-only component types that live under `kubernetes:` but are not API objects.
NOT_API_OBJECTS = ("kubernetes:helm.sh/", "kubernetes:yaml", "kubernetes:kustomize")


def is_k8s_object(resource_type: str) -> bool:
    return resource_type.startswith("kubernetes:") and \
        not resource_type.startswith(NOT_API_OBJECTS) and \
        not resource_type.startswith("pulumi:providers")


def kind_of(resource_type: str) -> str:
    return resource_type.rsplit(":", 1)[-1]


def pod_specs(value: Any, path: str = "") -> Iterator[tuple[str, Mapping]]:
    """Every mapping holding `containers` (a pod spec) anywhere in an object, with its path."""
    if isinstance(value, Mapping):
        if isinstance(value.get("containers"), (list, tuple)):
            yield path or ".", value
        for k, v in value.items():
            yield from pod_specs(v, f"{path}.{k}")
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for i, v in enumerate(value):
            yield from pod_specs(v, f"{path}[{i}]")


@resource_rule(
    name="k8s-namespace-pod-security",
    description="Every namespace enforces a Pod Security Standard; `privileged` only where the "
                "environment allows it.",
    family="kubernetes", types=(NAMESPACE,), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(cis=("4.2.1", "4.2.2", "4.2.3", "4.2.4", "4.2.5")),
    config=schema(privilegedNamespaces={
        "type": "array", "items": {"type": "string"},
        "default": ["kube-system", "monitoring", "gpu-operator"],
        "description": "Namespaces that may enforce `privileged` (node exporters, device "
                       "plugins)."}),
    remediation="Label the namespace pod-security.kubernetes.io/enforce: restricted (or "
                "baseline for training pods that need hugepages/IPC_LOCK).")
def k8s_namespace_pod_security(args, cfg, report):
    name = get(args.props, "metadata.name")
    level = (get(args.props, "metadata.labels") or {}).get(PSA_ENFORCE)  # key holds dots
    if level not in ("privileged", "baseline", "restricted"):
        report(f"namespace {name or short(args.urn)} has no {PSA_ENFORCE} label: set it to "
               "'restricted' or 'baseline'.")
    elif level == "privileged" and name not in cfg["privilegedNamespaces"]:
        report(f"namespace {name} enforces 'privileged' pod security: use 'baseline' or "
               "'restricted', or add it to privilegedNamespaces in the policy config after "
               "review.")


def _namespace_name(ns) -> Any:
    return get(ns.props, "metadata.name")


def _objects_in(stack: Stack, ns, types: Sequence[str]) -> list:
    out = []
    for obj in stack.of(*types):
        if ns in stack.linked(obj, "metadata.namespace", [ns], keys=("metadata.name",)):
            out.append(obj)
    return out


@stack_rule(
    name="k8s-namespace-network-policy",
    description="Every namespace the stack creates has at least one NetworkPolicy.",
    family="kubernetes", level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(cis=("4.3.2",)),
    config=schema(exemptNamespaces={
        "type": "array", "items": {"type": "string"}, "default": ["kube-system"],
        "description": "Namespaces that need no NetworkPolicy."}),
    remediation="Add a default-deny NetworkPolicy (plus the allows the namespace needs) in "
                "the namespace.")
def k8s_namespace_network_policy(stack: Stack, cfg, report):
    for ns in stack.of(NAMESPACE):
        name = _namespace_name(ns)
        if name in cfg["exemptNamespaces"]:
            continue
        if not _objects_in(stack, ns, (NETWORK_POLICY,)):
            report(f"namespace {name or short(ns.urn)} has no NetworkPolicy: add a default-deny "
                   "policy and explicit allows.", ns.urn)


@stack_rule(
    name="team-gpu-quota",
    description="Every team namespace (label trainyard.io/team) caps GPU requests with a "
                "ResourceQuota.",
    family="kubernetes", level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(other=("k8s-docs:resource-quotas-extended-resources",)), gpu=True,
    remediation="Add a ResourceQuota in the namespace with hard: {'requests.nvidia.com/gpu': "
                "'<gpuQuota>'}.")
def team_gpu_quota(stack: Stack, cfg, report):
    for ns in stack.of(NAMESPACE):
        labels = get(ns.props, "metadata.labels") or {}
        if TEAM_LABEL not in labels:
            continue
        quotas = _objects_in(stack, ns, (RESOURCE_QUOTA,))
        hard_keys = {k for q in quotas for k in (get(q.props, "spec.hard") or {})}
        if not hard_keys.intersection(GPU_QUOTA_KEYS):
            report(f"team namespace {_namespace_name(ns) or short(ns.urn)} has no GPU quota: add "
                   "a ResourceQuota with hard requests.nvidia.com/gpu.", ns.urn)


@resource_rule(
    name="k8s-no-default-namespace",
    description="Nothing is deployed into the `default` namespace.",
    family="kubernetes", types=(), level=MANDATORY, severity=Severity.LOW,
    refs=Refs(cis=("4.5.2",)),
    remediation="Set metadata.namespace (Helm: namespace=) to a dedicated namespace.")
def k8s_no_default_namespace(args, cfg, report):
    t = args.resource_type
    if t in (HELM_RELEASE, HELM_CHART_V4):
        ns = get(args.props, "namespace")
        if ns in (None, "", "default"):
            report("Helm release installs into the `default` namespace: set namespace= (and "
                   "create_namespace or a Namespace resource).")
        return
    if not is_k8s_object(t) or kind_of(t) in CLUSTER_SCOPED:
        return
    if get(args.props, "metadata.namespace") in (None, "", "default"):
        report(f"{kind_of(t)} lands in the `default` namespace: set metadata.namespace.")


@resource_rule(
    name="k8s-no-cluster-admin-binding",
    description="No binding grants cluster-admin beyond the allowed list.",
    family="kubernetes", types=(CLUSTER_ROLE_BINDING, ROLE_BINDING), level=MANDATORY,
    severity=Severity.HIGH, refs=Refs(cis=("4.1.1",)),
    config=schema(allowedBindings={
        "type": "array", "items": {"type": "string"}, "default": [],
        "description": "metadata.name of bindings allowed to reference cluster-admin."}),
    remediation="Bind a narrower ClusterRole (or use EKS access policies for humans).")
def k8s_no_cluster_admin_binding(args, cfg, report):
    if get(args.props, "roleRef.name") != "cluster-admin":
        return
    name = get(args.props, "metadata.name")
    subjects = [s for s in items(get(args.props, "subjects")) if isinstance(s, Mapping)]
    if subjects and all(str(s.get("name", "")).startswith("system:") and
                        s.get("kind") in ("Group", "User") for s in subjects):
        return  # Kubernetes' own (system:masters and the like), not a workload or a person
    if name not in cfg["allowedBindings"]:
        report(f"binding {name or short(args.urn)} grants cluster-admin: bind a least-privilege "
               "role instead.")


@resource_rule(
    name="k8s-rbac-no-wildcards",
    description="Roles and ClusterRoles do not use '*' for verbs or resources.",
    family="kubernetes", types=(CLUSTER_ROLE, ROLE), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(cis=("4.1.3",)),
    remediation="List the verbs and resources the subject needs.")
def k8s_rbac_no_wildcards(args, cfg, report):
    for i, rule in enumerate(items(get(args.props, "rules"))):
        for key in ("verbs", "resources", "apiGroups"):
            if key != "apiGroups" and "*" in [str(v) for v in items(get(rule, key))]:
                report(f"rules[{i}].{key} contains '*': list the {key} needed.")


@resource_rule(
    name="k8s-no-infiniband-hostpath",
    description="No pod mounts /dev/infiniband through hostPath (it bypasses the EFA device "
                "plugin's accounting).",
    family="kubernetes", types=(), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("aws-docs:efa-eks",)), gpu=True,
    remediation="Remove the hostPath volume; request vpc.amazonaws.com/efa resources so the EFA "
                "device plugin mounts the devices.")
def k8s_no_infiniband_hostpath(args, cfg, report):
    if not is_k8s_object(args.resource_type):
        return
    for where, spec in pod_specs(plain(args.props)):
        for vol in spec.get("volumes") or []:
            path = str((vol.get("hostPath") or {}).get("path", "")) if isinstance(vol, dict) else ""
            if path.rstrip("/").startswith("/dev/infiniband"):
                report(f"pod spec at {where} mounts hostPath {path} (volume "
                       f"{vol.get('name')}): request vpc.amazonaws.com/efa instead.")
