"""Where pod settings live in a plan, read as data for the pod rules (policies/pods.py): the pod
templates of Kubernetes objects, the values of Helm releases and the configurationValues of EKS
add-ons, the allow-list of workloads that need host access, and the pure judgements the rules
share (runtime sockets, credential-looking env names, registries, resources)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from .common import UnknownValueError, get, plain
from .kubernetes import HELM_CHART_V4, HELM_RELEASE, is_k8s_object, kind_of, pod_specs

ADDON = "aws:eks/addon:Addon"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
HELM_TYPES = (HELM_RELEASE, HELM_CHART_V4)


# ----------------------------------------------------------------------------------------------
# The allow-list: workloads that need host access, and why (one place)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exemption:
    reason: str
    host_paths: tuple[str, ...] = ()
    """hostPath prefixes the workload needs (empty: any hostPath it declares)."""
    value_paths: tuple[str, ...] = ()
    """Helm/add-on values only: the exemption covers settings under these value paths (empty:
    the whole release)."""


EXEMPT: dict[str, Exemption] = {
    # Device plugins register with the kubelet through its device-plugin socket directory.
    "nvidia-device-plugin": Exemption(
        "NVIDIA device plugin: registers GPUs with the kubelet and enumerates /dev/nvidia*",
        ("/var/lib/kubelet/device-plugins", "/dev", "/run/nvidia", "/var/run/cdi")),
    "aws-efa-k8s-device-plugin": Exemption(
        "EFA device plugin: registers /dev/infiniband devices with the kubelet (the privileged "
        "DaemonSet for Trainium/Inferentia types)",
        ("/var/lib/kubelet/device-plugins", "/dev/infiniband", "/sys")),
    "dcgm-exporter": Exemption(
        "DCGM exporter: SYS_ADMIN for profiling counters, the kubelet pod-resources socket to map "
        "GPUs to pods", ("/var/lib/kubelet/pod-resources", "/proc", "/sys")),
    "prometheus-node-exporter": Exemption(
        "node-exporter: host network and PID namespaces, reads the host's /proc, /sys and /",
        ("/proc", "/sys", "/")),
    "kube-prometheus-stack": Exemption(
        "only its node-exporter subchart, which needs the host namespaces and /proc, /sys",
        ("/proc", "/sys", "/"), value_paths=("prometheus-node-exporter",)),
    "eks-node-monitoring-agent": Exemption(
        "EKS node monitoring agent and its DCGM server: read kernel and GPU health on the host"),
    "aws-ebs-csi-driver": Exemption(
        "CSI node plugin: mounts volumes into the kubelet's pod directories (bidirectional "
        "mount propagation needs privileged)", ("/var/lib/kubelet", "/dev", "/sys", "/run/udev")),
    "aws-efs-csi-driver": Exemption("CSI node plugin: mounts EFS into the kubelet's pod dirs",
                                    ("/var/lib/kubelet", "/var/run/efs", "/etc/amazon/efs")),
    "aws-fsx-csi-driver": Exemption("CSI node plugin: mounts FSx for Lustre for pods",
                                    ("/var/lib/kubelet", "/dev", "/sys")),
    "aws-mountpoint-s3-csi-driver": Exemption("CSI node plugin: mounts S3 buckets for pods",
                                              ("/var/lib/kubelet", "/proc/mounts")),
    "vpc-cni": Exemption("aws-node: programs the node's network (host network, NET_ADMIN, "
                         "privileged init)", ("/opt/cni", "/etc/cni", "/var/log/aws-routed-eni",
                                              "/var/run/aws-node", "/run/xtables.lock",
                                              "/sys/fs/bpf")),
    "aws-node": Exemption("the VPC CNI DaemonSet (see vpc-cni)"),
    "kube-proxy": Exemption("kube-proxy: programs iptables/ipvs on the host (host network, "
                            "privileged)", ("/run/xtables.lock", "/lib/modules", "/var/log")),
    "eks-pod-identity-agent": Exemption("Pod Identity agent: serves credentials on the node's "
                                        "link-local address (host network)"),
}


def exemption(name: Optional[str], extra: Sequence[Mapping]) -> Optional[Exemption]:
    """The built-in exemption for `name`, or one from the policy config (`{name, reason}`)."""
    if not name:
        return None
    if name in EXEMPT:
        return EXEMPT[name]
    for e in extra:
        if isinstance(e, Mapping) and e.get("name") == name and e.get("reason"):
            return Exemption(str(e["reason"]), tuple(e.get("hostPaths") or ()))
    return None


EXEMPT_CONFIG = {
    "type": "array", "default": [],
    "items": {"type": "object", "required": ["name", "reason"], "properties": {
        "name": {"type": "string"}, "reason": {"type": "string"},
        "hostPaths": {"type": "array", "items": {"type": "string"}}}},
    "description": "More workloads (metadata.name, Helm chart or add-on name) allowed host "
                   "access, each with the reason (the built-in list: policies/pod_settings.py EXEMPT)."}


# ----------------------------------------------------------------------------------------------
# Pod views of Kubernetes objects
# ----------------------------------------------------------------------------------------------
@dataclass
class PodView:
    """One pod template: `spec` holds the pod-level fields, `containers` (path, container)."""

    where: str
    spec: Mapping
    containers: list = field(default_factory=list)
    workload: Optional[str] = None


CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
KSERVE_COMPONENTS = ("predictor", "transformer", "explainer")


def pod_views(resource_type: str, props: Mapping) -> list[PodView]:
    """Every pod template of a Kubernetes object, with container-like CRD blocks."""
    if not is_k8s_object(resource_type):
        return []
    obj = plain(props)
    name = get(obj, "metadata.name")
    out = []
    for where, spec in pod_specs(obj):
        containers = [(f"{where}.{key}[{i}]", c) for key in CONTAINER_LISTS
                      for i, c in enumerate(spec.get(key) or []) if isinstance(c, Mapping)]
        out.append(PodView(where, spec, containers, name))
    kind = kind_of(resource_type)
    if kind == "TrainJob" and isinstance(get(obj, "spec.trainer"), Mapping):
        trainer = dict(get(obj, "spec.trainer"))
        trainer.setdefault("resources", trainer.get("resourcesPerNode") or {})
        out.append(PodView(".spec.trainer", {}, [(".spec.trainer", trainer)], name))
    if kind == "InferenceService":
        # A component (predictor...) is a pod spec whose `model` is one more container.
        for comp in KSERVE_COMPONENTS:
            spec = get(obj, f"spec.{comp}")
            model = get(obj, f"spec.{comp}.model")
            if not isinstance(spec, Mapping):
                continue
            model_c = [(f".spec.{comp}.model", model)] if isinstance(model, Mapping) else []
            view = next((v for v in out if v.where == f".spec.{comp}"), None)
            if view is not None:
                view.containers += model_c
            else:
                out.append(PodView(f".spec.{comp}", spec, model_c, name))
    return out


def container_name(path: str, c: Mapping) -> str:
    return f"container {c.get('name') or '?'} at {path}"


# ----------------------------------------------------------------------------------------------
# Helm values and add-on configuration, walked by key
# ----------------------------------------------------------------------------------------------
class Unknown:
    """A value unknown at preview, met while walking values; carries the engine's error."""

    def __init__(self, error: Exception):
        self.error = error

    def __repr__(self) -> str:
        return "<unknown>"


@dataclass(frozen=True)
class Values:
    source: str
    """"Helm release <chart>" or "<name> add-on", for messages."""
    name: str
    """Chart or add-on name: what EXEMPT is keyed by."""
    values: Any


def walk(value: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every mapping entry; values unknown at preview come back as
    `Unknown` instead of raising, so an unknown name elsewhere does not stop the walk."""
    if isinstance(value, Mapping):
        for k in list(value.keys()):
            p = f"{path}.{k}" if path else str(k)
            try:
                v = value[k]
            except UnknownValueError as e:
                yield p, str(k), Unknown(e)
                continue
            yield p, str(k), v
            yield from walk(v, p)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        for i in range(len(value)):
            try:
                v = value[i]
            except UnknownValueError:
                continue
            yield from walk(v, f"{path}[{i}]")


def parse_config_values(raw: Any) -> Any:
    """An add-on's configurationValues (JSON or YAML); None when unparsable."""
    if raw in (None, ""):
        return {}
    if isinstance(raw, Mapping):
        return raw
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        try:
            import yaml

            return yaml.safe_load(raw)
        except Exception:  # noqa: BLE001 - unparsable values are another rule's business
            return None


def values_of(args) -> Optional[Values]:
    """The chart values / add-on configuration a resource passes, or None."""
    t = args.resource_type
    if t in HELM_TYPES:
        chart = str(get(args.props, "chart", "") or "").rstrip("/").rsplit("/", 1)[-1]
        return Values(f"Helm release {chart}", chart, args.props.get("values") or {})
    if t == ADDON:
        name = str(get(args.props, "addonName", "") or "")
        try:
            raw = args.props.get("configurationValues")
        except UnknownValueError:
            return None
        parsed = parse_config_values(raw)
        return Values(f"{name} add-on", name, parsed) if isinstance(parsed, Mapping) else None
    return None


def values_exempt(v: Values, path: str, extra: Sequence[Mapping]) -> Optional[Exemption]:
    e = exemption(v.name, extra)
    if e is None:
        return None
    if e.value_paths and not any(path == p or path.startswith(p + ".") for p in e.value_paths):
        return None
    return e


def known(value: Any) -> Any:
    """A value from `walk`; an unknown one raises so the rule reports "cannot judge"."""
    if isinstance(value, Unknown):
        raise value.error
    return value


def in_security_context(path: str) -> bool:
    return any(part.lower().endswith("securitycontext") for part in path.split(".")[:-1])


# ----------------------------------------------------------------------------------------------
# Shared judgements
# ----------------------------------------------------------------------------------------------
RUNTIME_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/var/run/containerd",
                   "/run/containerd", "/var/run/crio", "/run/crio", "/var/run/cri-dockerd.sock",
                   "/var/lib/docker", "/var/lib/containerd")
RUNTIME_PARENTS = ("/", "/var", "/run", "/var/run", "/var/lib")
"""Mounting one of these exposes the runtime sockets below it."""

BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
"""Pod Security Standards, baseline: the only capabilities a container may add."""

SECRET_ENV = re.compile(r"(^|[_\-.])(TOKEN|PASSWORD|PASSWD|PWD|SECRET|KEY|APIKEY|CREDENTIALS?|"
                        r"PRIVATE_?KEY)($|[_\-.])", re.IGNORECASE)
SECRET_VALUE_KEY = re.compile(r"(password|passwd|token|apikey|api_key|secretkey|secret_key|"
                              r"accesskey|access_key|privatekey|private_key|clientsecret)$",
                              re.IGNORECASE)
"""Helm values keys holding a credential (`adminPassword`, `apiToken`, `secretKey`...); keys
naming a Secret (`existingSecret`, `passwordKey`, `tokenSecretRef`) do not match."""


def runtime_socket(path: str) -> bool:
    """A hostPath that is, or holds, a container runtime's socket."""
    p = "/" + str(path).strip().strip("/")
    if p in RUNTIME_PARENTS or any(p == s or p.startswith(s + "/") for s in RUNTIME_SOCKETS):
        return True
    name = p.rsplit("/", 1)[-1]
    return name.endswith(".sock") and any(r in name for r in ("docker", "containerd", "crio"))


def secret_literal(name: Any, value: Any) -> bool:
    """An env entry whose name says credential and whose value is a literal."""
    if not isinstance(name, str) or not SECRET_ENV.search(name):
        return False
    return isinstance(value, str) and value.strip() != "" and not value.startswith("$(")


def env_entries(env: Any) -> list[tuple[Any, Any, bool]]:
    """(name, value, from_ref) of a container's env list or a chart's env map."""
    out = []
    if isinstance(env, Mapping):
        for k, v in env.items():
            if isinstance(v, Mapping):
                out.append((k, v.get("value"), "valueFrom" in v))
            else:
                out.append((k, v, False))
    elif isinstance(env, Sequence) and not isinstance(env, str):
        for e in env:
            if isinstance(e, Mapping):
                out.append((e.get("name"), e.get("value"), "valueFrom" in e))
    return out


ENV_KEYS = ("env", "extraEnv", "extraEnvs", "envVars", "extraEnvVars", "extraEnvironmentVars")


def resource_gaps(resources: Any, require_cpu_limit: bool) -> list[str]:
    r = resources if isinstance(resources, Mapping) else {}
    req, lim = r.get("requests") or {}, r.get("limits") or {}
    missing = [f"requests.{k}" for k in ("cpu", "memory") if k not in req]
    if "memory" not in lim:
        missing.append("limits.memory")
    if require_cpu_limit and "cpu" not in lim:
        missing.append("limits.cpu")
    return missing


def image_of(value: Any) -> Optional[str]:
    """A chart's image setting as `[registry/]repository[:tag][@digest]`; None when the values
    leave the repository to the chart."""
    if isinstance(value, str):
        return value
    if not isinstance(value, Mapping):
        return None
    repo = value.get("repository") or value.get("image") or value.get("name")
    if not isinstance(repo, str):
        return None
    registry = value.get("registry")
    ref = f"{registry.rstrip('/')}/{repo}" if isinstance(registry, str) and registry else repo
    tag, digest = value.get("tag"), value.get("digest")
    if tag not in (None, ""):
        ref += f":{tag}"
    if isinstance(digest, str) and digest:
        ref += f"@{digest}" if not digest.startswith("@") else digest
    return ref


def registry_of(image: str) -> Optional[str]:
    """The registry host of an image reference, None for Docker Hub short names."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def registry_allowed(image: str, allowed: Sequence[str]) -> bool:
    host = registry_of(image) or "docker.io"
    ref = image if registry_of(image) else f"docker.io/{image}"
    for a in allowed:
        a = str(a)
        if "*" in a:
            if re.fullmatch(re.escape(a).replace(r"\*", "[^/]*"), host):
                return True
        elif ref.startswith(a.rstrip("/") + "/") or host == a:
            return True
    return False
