"""Pod specs everywhere: every pod template the plan declares, and the pod settings the project
passes to Helm charts and EKS add-ons.

Where pod settings live in a plan:
- Kubernetes objects: any mapping holding `containers` (Pods, Deployments, DaemonSets, Jobs,
  JobSets, Kubeflow Cluster/TrainingRuntimes, KServe predictors with containers), plus the
  container-like blocks of CRDs that have no pod spec of their own: a TrainJob's `spec.trainer`
  (image, env, resourcesPerNode) and a KServe InferenceService component's `model`.
- Helm releases (`values`) and EKS add-ons (`configurationValues`): chart-specific shapes, read by
  key wherever they appear (`securityContext`, `containerSecurityContext`, `hostNetwork`,
  `capabilities.add`, `hostPath`, `env`/`extraEnv`, `image`, `resources`...). What a chart
  renders from its own defaults is not in the plan and is not judged here (the scheduling side
  of chart defaults is policies/chart_pods.py's).

Workloads that legitimately need host access (device plugins, DCGM, node exporters, CSI node
plugins, the CNI) are listed once, in EXEMPT (policies/pod_settings.py), each with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

from pulumi_policy import Severity

from .common import (
    ADVISORY,
    MANDATORY,
    Refs,
    Stack,
    get,
    peek,
    plain,
    resource_rule,
    schema,
    stack_rule,
    truthy,
)
from .kubernetes import kind_of
from .pod_settings import (  # noqa: F401  (ADDON, EXEMPT, walk... re-exported for other modules)
    ADDON,
    BASELINE_CAPABILITIES,
    ENV_KEYS,
    EXEMPT,
    EXEMPT_CONFIG,
    SECRET_VALUE_KEY,
    SERVICE_ACCOUNT,
    Exemption,
    PodView,
    Unknown,
    Values,
    container_name,
    env_entries,
    exemption,
    image_of,
    in_security_context,
    known,
    parse_config_values,
    pod_views,
    registry_allowed,
    registry_of,
    resource_gaps,
    runtime_socket,
    secret_literal,
    values_exempt,
    values_of,
    walk,
)


# ----------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------
def _refs(checkov=(), cis=(), pss=()) -> Refs:
    return Refs(checkov=tuple(checkov), cis=tuple(cis),
                other=tuple(f"k8s-pss:{p}" for p in pss))


@resource_rule(
    name="pod-no-host-pid",
    description="No pod shares the host's PID namespace (hostPID), in the plan's pod templates "
                "or in the Helm values / add-on configuration it passes, unless the workload is "
                "on the allow-list.",
    family="kubernetes", types=(), level=MANDATORY, severity=Severity.HIGH,
    refs=_refs(("CKV_K8S_17",), ("4.2.2",), ("baseline/Host Namespaces",)),
    config=schema(exemptWorkloads=EXEMPT_CONFIG),
    remediation="Remove hostPID; a workload that truly needs the host's processes goes on the "
                "allow-list (policies/pod_settings.py EXEMPT or exemptWorkloads) with its reason.")
def pod_no_host_pid(args, cfg, report):
    _host_namespaces(args, cfg, report, ("hostPID",))


@resource_rule(
    name="pod-no-host-network-ipc",
    description="No pod uses the host's network or IPC namespace (hostNetwork, hostIPC) unless "
                "the workload is on the allow-list.",
    family="kubernetes", types=(), level=ADVISORY, severity=Severity.MEDIUM,
    refs=_refs(("CKV_K8S_18", "CKV_K8S_19"), ("4.2.3", "4.2.4"), ("baseline/Host Namespaces",)),
    config=schema(exemptWorkloads=EXEMPT_CONFIG),
    remediation="Remove hostNetwork/hostIPC (use a Service or a hostPort-free design); list a "
                "node agent that needs them in exemptWorkloads with the reason.")
def pod_no_host_network_ipc(args, cfg, report):
    _host_namespaces(args, cfg, report, ("hostNetwork", "hostIPC"))


def _host_namespaces(args, cfg, report, keys: Sequence[str]) -> None:
    extra = cfg["exemptWorkloads"]
    for view in pod_views(args.resource_type, args.props):
        if exemption(view.workload, extra):
            continue
        for k in keys:
            if truthy(view.spec.get(k)):
                report(f"pod spec at {view.where} sets {k}: true: remove it, or put "
                       f"{view.workload} on the allow-list with the reason.")
    v = values_of(args)
    if v is None:
        return
    for path, key, value in walk(v.values):
        if key in keys and truthy(known(value)) and not values_exempt(v, path, extra):
            report(f"{v.source} values set {path}: true: remove it, or put {v.name} on the "
                   "allow-list with the reason.")


@resource_rule(
    name="k8s-no-privileged-containers",
    description="No container runs privileged (pod templates, Helm values, add-on "
                "configuration) unless its workload is on the documented allow-list (device "
                "plugins, DCGM, node exporters, CSI node plugins, the CNI).",
    family="kubernetes", types=(), level=MANDATORY, severity=Severity.HIGH,
    refs=_refs(("CKV_K8S_16",), ("4.2.1",), ("baseline/Privileged Containers",)),
    config=schema(exemptWorkloads=EXEMPT_CONFIG),
    remediation="Drop privileged and add only the capabilities needed (EFA needs none: the EFA "
                "device plugin hands the devices over); a node agent that needs it goes on the "
                "allow-list with the reason.")
def k8s_no_privileged_containers(args, cfg, report):
    extra = cfg["exemptWorkloads"]
    for view in pod_views(args.resource_type, args.props):
        if exemption(view.workload, extra):
            continue
        for path, c in view.containers:
            if truthy((c.get("securityContext") or {}).get("privileged")):
                report(f"{container_name(path, c)} is privileged: drop privileged and add only "
                       "the capabilities it needs, or allow-list the workload with a reason.")
    v = values_of(args)
    if v is None:
        return
    for path, key, value in walk(v.values):
        if key == "privileged" and in_security_context(path) and truthy(known(value)) \
                and not values_exempt(v, path, extra):
            report(f"{v.source} values set {path}: true: drop it, or allow-list {v.name} with "
                   "the reason (exemptWorkloads).")


def _host_paths(view: PodView) -> list[tuple[str, str]]:
    out = []
    for i, vol in enumerate(view.spec.get("volumes") or []):
        if isinstance(vol, Mapping) and isinstance(vol.get("hostPath"), Mapping):
            out.append((f"{view.where}.volumes[{i}] ({vol.get('name')})",
                        str(vol["hostPath"].get("path", ""))))
    return out


def _values_host_paths(v: Values) -> list[tuple[str, str]]:
    out = []
    for path, key, value in walk(v.values):
        if key == "hostPath":
            value = known(value)
            p = value.get("path") if isinstance(value, Mapping) else value
            if isinstance(p, str):
                out.append((path, p))
    return out


@resource_rule(
    name="pod-no-runtime-socket",
    description="No pod mounts the container runtime's socket (containerd, Docker, CRI-O) or a "
                "directory holding it (/, /var, /run...) through hostPath, unless the "
                "workload's allow-list entry names that exact path.",
    family="kubernetes", types=(), level=MANDATORY, severity=Severity.CRITICAL,
    refs=_refs(("CKV_K8S_27",), ("4.2.1",), ("baseline/HostPath Volumes",)),
    config=schema(exemptWorkloads=EXEMPT_CONFIG),
    remediation="Remove the hostPath volume: a pod that reaches the runtime socket controls "
                "every container on the node (a read-only mount does not stop connect()). Use "
                "the kubelet pod-resources API instead.")
def pod_no_runtime_socket(args, cfg, report):
    extra = cfg["exemptWorkloads"]
    for view in pod_views(args.resource_type, args.props):
        e = exemption(view.workload, extra)
        for where, p in _host_paths(view):
            if runtime_socket(p) and not _names_path(e, p):
                report(f"{where} mounts hostPath {p}, which exposes the container runtime: "
                       "remove it.")
    v = values_of(args)
    if v is not None:
        for where, p in _values_host_paths(v):
            if runtime_socket(p) and not _names_path(values_exempt(v, where, extra), p):
                report(f"{v.source} values mount hostPath {p} at {where}, which exposes the "
                       "container runtime: remove it.")


def _names_path(e: Optional[Exemption], p: str) -> bool:
    return e is not None and "/" + p.strip().strip("/") in {
        "/" + a.strip("/") for a in e.host_paths}


def _path_allowed(p: str, e: Optional[Exemption]) -> bool:
    if e is None:
        return False
    if not e.host_paths:
        return True
    p = "/" + p.strip("/")
    return any(p == a or p.startswith(a.rstrip("/") + "/") for a in e.host_paths)


@resource_rule(
    name="pod-hostpath-restricted",
    description="hostPath volumes only on allow-listed node agents, and only the host paths "
                "their entry names (a device plugin needs the kubelet's device-plugin "
                "directory, not /).",
    family="kubernetes", types=(), level=ADVISORY, severity=Severity.MEDIUM,
    refs=_refs(cis=("4.2.1",), pss=("baseline/HostPath Volumes", "restricted/Volume Types")),
    config=schema(exemptWorkloads=EXEMPT_CONFIG),
    remediation="Use emptyDir, a PVC or a projected volume; node agents that need a host path go "
                "on the allow-list with the paths and the reason.")
def pod_hostpath_restricted(args, cfg, report):
    extra = cfg["exemptWorkloads"]
    for view in pod_views(args.resource_type, args.props):
        e = exemption(view.workload, extra)
        for where, p in _host_paths(view):
            if not _path_allowed(p, e):
                report(f"{where} mounts hostPath {p}: use another volume type, or allow-list "
                       f"{view.workload} with this path and the reason.")
    v = values_of(args)
    if v is not None:
        for where, p in _values_host_paths(v):
            if not _path_allowed(p, values_exempt(v, where, extra)):
                report(f"{v.source} values mount hostPath {p} at {where}: use another volume "
                       f"type, or allow-list {v.name} with this path and the reason.")


@resource_rule(
    name="pod-no-added-capabilities",
    description="Containers add no Linux capability beyond the Pod Security baseline set "
                "(SYS_ADMIN, NET_ADMIN, NET_RAW, SYS_PTRACE, ALL... are refused) unless the "
                "workload is on the allow-list.",
    family="kubernetes", types=(), level=ADVISORY, severity=Severity.HIGH,
    refs=_refs(("CKV_K8S_25", "CKV_K8S_28", "CKV_K8S_39"), ("4.2.7", "4.2.8", "4.2.9"),
               ("baseline/Capabilities", "restricted/Capabilities")),
    config=schema(exemptWorkloads=EXEMPT_CONFIG),
    remediation="Remove the capability from capabilities.add (and drop ALL); allow-list a node "
                "agent that needs it with the reason.")
def pod_no_added_capabilities(args, cfg, report):
    extra = cfg["exemptWorkloads"]
    for view in pod_views(args.resource_type, args.props):
        if exemption(view.workload, extra):
            continue
        for path, c in view.containers:
            added = get(c, "securityContext.capabilities.add") or []
            bad = sorted({str(a).upper().removeprefix("CAP_") for a in added}
                         - BASELINE_CAPABILITIES)
            if bad:
                report(f"{container_name(path, c)} adds {', '.join(bad)}: remove them (drop "
                       "ALL, add only what the baseline allows).")
    v = values_of(args)
    if v is None:
        return
    for path, key, value in walk(v.values):
        if key == "add" and path.split(".")[-2:-1] == ["capabilities"]:
            added = known(value) or []
            bad = sorted({str(a).upper().removeprefix("CAP_") for a in added}
                         - BASELINE_CAPABILITIES)
            if bad and not values_exempt(v, path, extra):
                report(f"{v.source} values add capabilities {', '.join(bad)} at {path}: remove "
                       f"them, or allow-list {v.name} with the reason.")


@resource_rule(
    name="pod-no-root-or-escalation",
    description="Containers the plan defines set allowPrivilegeEscalation: false, and no pod "
                "template or chart value asks for root (runAsUser: 0, runAsNonRoot: false) or "
                "allows privilege escalation.",
    family="kubernetes", types=(), level=ADVISORY, severity=Severity.MEDIUM,
    refs=_refs(("CKV_K8S_20", "CKV_K8S_23"), ("4.2.5", "4.2.6"),
               ("restricted/Privilege Escalation", "restricted/Running as Non-root user")),
    config=schema(exemptWorkloads=EXEMPT_CONFIG),
    remediation="Set securityContext.allowPrivilegeEscalation: false (with capabilities.drop "
                "[ALL] and seccompProfile RuntimeDefault); run as a non-root UID where the "
                "image allows.")
def pod_no_root_or_escalation(args, cfg, report):
    extra = cfg["exemptWorkloads"]
    for view in pod_views(args.resource_type, args.props):
        if exemption(view.workload, extra):
            continue
        pod_sc = view.spec.get("securityContext") or {}
        for path, c in view.containers:
            sc = {**pod_sc, **(c.get("securityContext") or {})}
            if sc.get("allowPrivilegeEscalation") is not False and not truthy(
                    sc.get("privileged")):
                report(f"{container_name(path, c)} does not set allowPrivilegeEscalation: "
                       "false: set it in the container's securityContext.")
            _root(sc, container_name(path, c), report)
    v = values_of(args)
    if v is None:
        return
    for path, key, value in walk(v.values):
        if not in_security_context(path) or key not in ("runAsUser", "runAsNonRoot",
                                                         "allowPrivilegeEscalation"):
            continue
        value = known(value)
        bad = (key == "runAsUser" and value in (0, 0.0, "0")) or \
              (key == "runAsNonRoot" and value is False) or \
              (key == "allowPrivilegeEscalation" and truthy(value))
        if bad and not values_exempt(v, path, extra):
            report(f"{v.source} values set {path}: {value!r}: run as non-root without "
                   "privilege escalation.")


def _root(sc: Mapping, where: str, report) -> None:
    if sc.get("runAsUser") in (0, 0.0, "0"):
        report(f"{where} runs as UID 0 (runAsUser: 0): run as a non-root UID.")
    if sc.get("runAsNonRoot") is False:
        report(f"{where} sets runAsNonRoot: false: drop it, or set it true where the image "
               "allows.")


def _compute(resources: Mapping) -> bool:
    """A container's resources (CPU or memory named), not a volume claim's (storage)."""
    named = set()
    for k in ("requests", "limits"):
        if isinstance(resources.get(k), Mapping):
            named |= set(resources[k])
    return bool(named & {"cpu", "memory"})


@resource_rule(
    name="pod-resources-set",
    description="Containers the plan defines request CPU and memory and cap memory "
                "(limits.memory); so do the `resources` blocks the project passes to charts.",
    family="kubernetes", types=(), level=ADVISORY, severity=Severity.LOW,
    refs=_refs(("CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13"),
               pss=()),
    config=schema(requireCpuLimit={
        "type": "boolean", "default": False,
        "description": "Also require limits.cpu. Off by default: a CPU limit throttles a "
                       "training step's bursts (data loading, NCCL progress threads) without "
                       "protecting the node, which CPU requests already share fairly."}),
    remediation="Set resources.requests.cpu, resources.requests.memory and "
                "resources.limits.memory (equal to the request for Guaranteed memory).")
def pod_resources_set(args, cfg, report):
    cpu_limit = bool(cfg["requireCpuLimit"])
    for view in pod_views(args.resource_type, args.props):
        for path, c in view.containers:
            if path.endswith("]") and ".ephemeralContainers[" in path:
                continue  # ephemeral containers take no resources
            missing = resource_gaps(c.get("resources"), cpu_limit)
            if missing:
                report(f"{container_name(path, c)} has no {', '.join(missing)}: set them.")
    v = values_of(args)
    if v is None:
        return
    for path, key, value in walk(v.values):
        value = None if isinstance(value, Unknown) else value
        if key == "resources" and isinstance(value, Mapping) and _compute(value):
            missing = resource_gaps(plain(value), cpu_limit)
            if missing:
                report(f"{v.source} values {path} have no {', '.join(missing)}: set them.")


@resource_rule(
    name="pod-no-plaintext-secret-env",
    description="No credential in plain text in pod env or chart values: env vars named like "
                "a token, password, secret or key, and values keys like adminPassword or "
                "apiToken, take their value from a Secret (valueFrom / existingSecret), never "
                "a literal.",
    family="kubernetes", types=(), level=MANDATORY, severity=Severity.HIGH,
    refs=_refs(("CKV_K8S_35",), ("4.4.1", "4.4.2")),
    remediation="Move the value into a Secret (External Secrets from AWS Secrets Manager) and "
                "reference it with env[].valueFrom.secretKeyRef (charts: existingSecret).")
def pod_no_plaintext_secret_env(args, cfg, report):
    for view in pod_views(args.resource_type, args.props):
        for path, c in view.containers:
            for name, value, from_ref in env_entries(c.get("env")):
                if not from_ref and secret_literal(name, value):
                    report(f"{container_name(path, c)} sets {name} to a literal: use "
                           "valueFrom.secretKeyRef.")
    v = values_of(args)
    if v is None:
        return
    for path, key, value in walk(v.values):
        if isinstance(value, Unknown):
            continue
        if key in ENV_KEYS:
            for name, val, from_ref in env_entries(value):
                if not from_ref and secret_literal(name, val):
                    report(f"{v.source} values set {path} {name} to a literal: reference a "
                           "Secret instead.")
        elif SECRET_VALUE_KEY.search(key) and not key.lower().startswith("existing") and \
                isinstance(value, str) and value.strip():
            report(f"{v.source} values carry a credential in plain text at {path}: use the "
                   "chart's existingSecret (or equivalent) fed by External Secrets.")


DEFAULT_REGISTRIES = [
    "*.dkr.ecr.*.amazonaws.com", "public.ecr.aws", "registry.k8s.io", "nvcr.io", "quay.io",
    "ghcr.io/kubeflow", "docker.io/kubeflow", "docker.io/kserve"]


@resource_rule(
    name="pod-image-registry-allowed",
    description="Images come from the approved registries (ECR, public.ecr.aws, "
                "registry.k8s.io, nvcr.io...), in pod templates and in chart values; images the "
                "project sets in chart values are pinned (no :latest, no missing tag).",
    family="kubernetes", types=(), level=ADVISORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_K8S_14", "CKV_K8S_43"), cis=("5.1.4",)),
    config=schema(allowedRegistries={
        "type": "array", "items": {"type": "string"}, "default": DEFAULT_REGISTRIES,
        "description": "Registry hosts (`*` matches within a label) or repository prefixes "
                       "(host/path) images may come from; Docker Hub short names are "
                       "docker.io/<name>."}),
    remediation="Mirror the image into the stack's ECR repository (or add its registry to "
                "allowedRegistries after review) and pin a version tag or digest.")
def pod_image_registry_allowed(args, cfg, report):
    from .supply_chain import image_problem

    allowed = cfg["allowedRegistries"]
    for view in pod_views(args.resource_type, args.props):
        for path, c in view.containers:
            image = c.get("image")
            if isinstance(image, str) and not registry_allowed(image, allowed):
                report(f"{container_name(path, c)} pulls {image} from an unapproved registry: "
                       "mirror it to ECR or add the registry to allowedRegistries.")
    v = values_of(args)
    if v is None:
        return
    for path, key, value in walk(v.values):
        if key != "image" or isinstance(value, Unknown):
            continue
        image = image_of(value)
        if not image:
            continue
        # A mapping without a tag leaves the tag to the chart (its appVersion, pinned with
        # the chart version): only what the values state is judged.
        explicit_tag = isinstance(value, str) or value.get("tag") not in (None, "") \
            or bool(value.get("digest"))
        problem = image_problem(image, False) if explicit_tag else None
        if problem:
            report(f"{v.source} values set image {image} at {path}, which {problem}: pin a "
                   "version tag or digest.")
        has_host = registry_of(image) is not None
        if has_host and not registry_allowed(image, allowed):
            report(f"{v.source} values pull {image} at {path} from an unapproved registry.")


RUNTIME_KINDS = ("ServingRuntime", "ClusterServingRuntime")
"""KServe runtimes: container templates whose pods run as the InferenceService's account."""


@stack_rule(
    name="pod-service-account-token",
    description="Pod templates the plan defines do not mount a Kubernetes API token they do "
                "not need: automountServiceAccountToken is false on the pod or on every service "
                "account of that name the plan creates (the EKS Pod Identity token is separate "
                "and unaffected).",
    family="kubernetes", level=ADVISORY, severity=Severity.LOW,
    refs=_refs(("CKV_K8S_38",), ("4.1.5", "4.1.6")),
    remediation="Set automountServiceAccountToken: false on the pod template or on its service "
                "account; keep the token only for pods that call the Kubernetes API.")
def pod_service_account_token(stack: Stack, cfg, report):
    accounts: dict[str, list] = {}
    for sa in stack.of(SERVICE_ACCOUNT):
        name = get(sa.props, "metadata.name")
        accounts.setdefault(name, []).append(
            (get(sa.props, "metadata.namespace"), get(sa.props, "automountServiceAccountToken")))
    for r in stack.resources:
        namespace = peek(r, "metadata.namespace")
        if kind_of(r.resource_type) in RUNTIME_KINDS:
            continue
        for view in pod_views(r.resource_type, r.props):
            if not view.spec or view.spec.get("automountServiceAccountToken") is False:
                continue
            sa = view.spec.get("serviceAccountName") or view.spec.get("serviceAccount") \
                or "default"
            # A namespaced template uses its namespace's account; a cluster-scoped one (a
            # ClusterTrainingRuntime) whichever namespace the job runs in: all must be off.
            found = [flag for ns, flag in accounts.get(sa, []) if namespace in (None, ns)]
            if found and all(flag is False for flag in found):
                continue
            report(f"pod spec at {view.where} (service account {sa}) mounts an API token: set "
                   "automountServiceAccountToken: false on the pod or its service account "
                   "unless it calls the Kubernetes API.", r.urn)


__all__ = ["EXEMPT", "Exemption", "pod_views", "walk", "values_of"]
