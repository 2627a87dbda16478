"""Deploy-readiness: every pod template the plan declares can land on some node pool.

Node pools are the plan's EKS managed node groups and Karpenter NodePools: their labels (plus the
ones EKS/Karpenter and the kubelet add), taints, and the nodes they launch (instance types, with
allocatable resources from policies/facts.py and policies/scheduling.py). Pod templates come from
three places: Kubernetes objects with a pod spec (Deployments, DaemonSets, Jobs, Kubeflow Trainer
runtimes, ...), Helm releases and EKS add-ons (rendered from their values with the facts table in
policies/chart_pods.py).

- A DaemonSet must reach every pool it is meant for (charts/add-ons: the table says which; a
  DaemonSet object: the pools its nodeSelector/affinity select): one violation per pool it misses.
- Anything else must fit at least one pool; the violation lists each candidate pool's reason.

What cannot be decided (an unknown chart or add-on, a chart default nobody recorded, a pool of
unknown instance types) is reported as "cannot judge", never as a pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Optional

from pulumi_policy import Severity

from . import facts
from .chart_pods import ADDONS, CHARTS, Setting, Workload, chart_name, render
from .common import (
    KARPENTER_NODECLASS,
    KARPENTER_NODEPOOL,
    MANDATORY,
    POOL_LABEL,
    Refs,
    Stack,
    UnknownValueError,
    get,
    items,
    peek,
    plain,
    schema,
    short,
    stack_rule,
)
from .kubernetes import HELM_RELEASE, is_k8s_object, kind_of, pod_specs
from .scheduling import (
    IGNORED,
    VM_MEMORY_OVERHEAD,
    NodeShape,
    Taint,
    max_pods_bound,
    pod_requests,
    resource_misfit,
    selector_mismatch,
    taint_of,
    untolerated,
)

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
ADDON = "aws:eks/addon:Addon"


EFA_TYPES = ("efa", "efa-only")
# Kinds whose objects carry pod templates; other objects are never read (an unknown value in,
# say, a NetworkPolicy must not stop this rule).
POD_KINDS = {"Pod", "PodTemplate", "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet",
             "ReplicationController", "Job", "CronJob", "JobSet", "LeaderWorkerSet",
             "TrainingRuntime", "ClusterTrainingRuntime", "TrainJob"}
# Pod-spec fields that do not affect scheduling: skipped unread (they often hold values unknown at
# preview, such as image URIs of repositories the same stack creates).
IRRELEVANT = {"image", "env", "envFrom", "command", "args", "volumeMounts", "volumes", "ports",
              "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "securityContext",
              "annotations", "labels", "workingDir", "imagePullSecrets", "serviceAccountName",
              "data", "stringData", "metadata", "status"}


class CannotJudge(UnknownValueError):
    """Raised last, after every verdict that could be reached was reported: the engine and
    `trainyard check` list it under "cannot judge" (an advisory diagnostic, never a pass)."""

    def __init__(self, message: str):
        Exception.__init__(self, message)
        self.unknown_type_sentinel = ""
        self.props = []
        self.message = message


# ----------------------------------------------------------------------------------------------
# Node pools
# ----------------------------------------------------------------------------------------------
@dataclass
class Variant:
    """One kind of node a pool launches (one per instance type)."""

    instance_type: str
    labels: dict
    shape: Optional[NodeShape]
    """None when the instance type is not in policies/facts.py: resources cannot be judged."""


@dataclass
class Pool:
    name: str
    urn: str
    taints: tuple
    variants: list
    vendor: Optional[str] = None
    bottlerocket: bool = False
    efa: bool = False

    def meant(self, target: str) -> bool:
        return {"all": True, "nvidia": self.vendor == "nvidia",
                "nvidia-no-bottlerocket": self.vendor == "nvidia" and not self.bottlerocket,
                "efa": self.efa, "neuron": self.vendor == "neuron"}[target]


def _shape(instance_type: str, efa: Optional[int], karpenter: bool,
           overhead: Fraction = VM_MEMORY_OVERHEAD,
           max_pods: Optional[int] = None) -> Optional[NodeShape]:
    """`max_pods`: the kubelet's maxPods where the plan sets it (an EC2NodeClass's
    spec.kubelet.maxPods); else the bound for the provisioner."""
    spec = facts.lookup(instance_type)
    if spec is None:
        return None
    return NodeShape(instance_type, spec.vcpus, spec.memory_gib, spec.gpus, spec.vendor,
                     spec.max_efa if efa is None else efa,
                     max_pods or max_pods_bound(spec.vcpus, karpenter), overhead)


def _one(value: Any) -> frozenset:
    return frozenset([str(value)])


def _variants(base: dict, types: Sequence[str], efa: Optional[int], karpenter: bool,
              overhead: Fraction, max_pods: Optional[int] = None) -> list:
    if not types:
        return [Variant("(unknown type)", dict(base), None)]
    return [Variant(t, {**base, "node.kubernetes.io/instance-type": _one(t),
                        "beta.kubernetes.io/instance-type": _one(t)},
                    _shape(t, efa, karpenter, overhead, max_pods)) for t in types]


def _finish(pool: Pool, labels: Mapping, types: Sequence[str], ami: str = "") -> Pool:
    vendors = [facts.vendor_of(t) for t in types] + [facts.AMI_VENDOR.get(ami)]
    pool.vendor = next((v for v in vendors if v), None)
    pool.bottlerocket = "BOTTLEROCKET" in ami.upper() or \
        labels.get("trainyard.io/ami-family") == "bottlerocket"
    pool.efa = pool.efa or str(labels.get("trainyard.io/efa")) == "true"
    return pool


def _node_group_pool(stack: Stack, ng, templates: list, overhead: Fraction) -> Pool:
    props = ng.props
    labels = {str(k): str(v) for k, v in (plain(get(props, "labels")) or {}).items()}
    lt = stack.linked(ng, "launchTemplate.id", templates) if get(props, "launchTemplate") \
        else []
    lt_props = lt[0].props if lt else {}
    types = [str(t) for t in plain(get(props, "instanceTypes")) or []]
    if not types and get(lt_props, "instanceType"):
        types = [str(get(lt_props, "instanceType"))]  # Capacity Block pools
    efa = sum(1 for nic in items(get(lt_props, "networkInterfaces"))
              if get(nic, "interfaceType") in EFA_TYPES)
    ami = str(get(props, "amiType") or "")
    arch = "arm64" if "ARM" in ami.upper() else "amd64"
    base = {k: _one(v) for k, v in labels.items()}
    base.update({"kubernetes.io/os": _one("linux"), "beta.kubernetes.io/os": _one("linux"),
                 "kubernetes.io/arch": _one(arch), "beta.kubernetes.io/arch": _one(arch),
                 "eks.amazonaws.com/capacityType": _one(get(props, "capacityType") or
                                                        "ON_DEMAND")})
    ng_name = get(props, "nodeGroupName")
    if isinstance(ng_name, str):
        base["eks.amazonaws.com/nodegroup"] = _one(ng_name)
    name = labels.get(POOL_LABEL) or (ng_name if isinstance(ng_name, str) else short(ng.urn))
    taints = tuple(taint_of(t) for t in plain(get(props, "taints")) or [])
    pool = Pool(name, ng.urn, taints, _variants(base, types, efa, False, overhead),
                efa=efa > 0)
    return _finish(pool, labels, types, ami)


def _node_pool(np, classes: Sequence, overhead: Fraction) -> Pool:
    template = plain(get(np.props, "spec.template")) or {}
    labels = {str(k): str(v) for k, v in ((template.get("metadata") or {}).get("labels")
                                          or {}).items()}
    spec = template.get("spec") or {}
    base = {k: _one(v) for k, v in labels.items()}
    base.update({"kubernetes.io/os": _one("linux"), "kubernetes.io/arch": _one("amd64"),
                 "karpenter.sh/capacity-type": _one("on-demand")})
    types: list = []
    for req in spec.get("requirements") or []:
        if req.get("operator") != "In" or not req.get("values"):
            continue
        values = frozenset(str(v) for v in req["values"])
        if req.get("key") in ("node.kubernetes.io/instance-type",
                              "beta.kubernetes.io/instance-type"):
            types = sorted(values)
        else:
            base[req["key"]] = values
    name = labels.get(POOL_LABEL) or get(np.props, "metadata.name") or short(np.urn)
    base["karpenter.sh/nodepool"] = _one(name)
    # EFA: the EC2NodeClass's interfaces when it lists them, else Karpenter attaches the type's
    # maximum to EFA-requesting pods' nodes; only on pools labelled for EFA.
    ref = (spec.get("nodeClassRef") or {}).get("name")
    mine = [c for c in classes if get(c.props, "metadata.name") == ref]
    nics = [n for c in mine for n in items(get(c.props, "spec.networkInterfaces"))]
    max_pods = next((int(v) for c in mine
                     if isinstance(v := get(c.props, "spec.kubelet.maxPods"), (int, float))
                     and not isinstance(v, bool)), None)
    efa_pool = str(labels.get("trainyard.io/efa")) == "true"
    efa = sum(1 for n in nics if get(n, "interfaceType") in EFA_TYPES) if nics else \
        (None if efa_pool else 0)
    taints = tuple(taint_of(t) for t in spec.get("taints") or [])
    pool = Pool(str(name), np.urn, taints,
                _variants(base, types, efa, True, overhead, max_pods),
                efa=efa is None or efa > 0)
    return _finish(pool, labels, types)


def node_pools(stack: Stack, overhead: Fraction = VM_MEMORY_OVERHEAD) -> list[Pool]:
    lts = stack.of(LAUNCH_TEMPLATE)
    classes = stack.of(KARPENTER_NODECLASS)
    return [_node_group_pool(stack, ng, lts, overhead) for ng in stack.of(NODE_GROUP)] + \
        [_node_pool(np, classes, overhead) for np in stack.of(KARPENTER_NODEPOOL)]


# ----------------------------------------------------------------------------------------------
# Pod templates
# ----------------------------------------------------------------------------------------------
@dataclass
class Template:
    urn: str
    title: str
    kind: str
    spec: dict
    where: str
    """Where the settings live, for messages ("in the X add-on's configurationValues")."""
    paths: dict
    """tolerations / nodeSelector / affinity / resources -> the path to change."""
    meant_for: Optional[str] = None
    """None: must fit some pool; "selected": the pools its selectors pick; else a pool class."""
    group: Optional[str] = None
    unknown: list = field(default_factory=list)


def _sched_view(value: Any) -> Any:
    """Plain copy of an object without the fields that never affect scheduling (left unread)."""
    if isinstance(value, Mapping):
        return {k: _sched_view(value[k]) for k in value if k not in IRRELEVANT}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_sched_view(value[i]) for i in range(len(value))]
    return value


def object_templates(stack: Stack) -> list[Template]:
    out = []
    for r in stack.resources:
        t = r.resource_type
        if not is_k8s_object(t) or kind_of(t) not in POD_KINDS:
            continue
        kind = kind_of(t)
        name = peek(r, "metadata.name") or short(r.urn)
        specs = list(pod_specs(_sched_view(r.props)))
        for where, spec in specs:
            path = where.lstrip(".")
            suffix = f" ({path})" if len(specs) > 1 else ""
            paths = {k: f"{path}.{k}" for k in ("tolerations", "nodeSelector", "affinity")}
            paths["resources"] = f"{path}.containers[*].resources"
            out.append(Template(r.urn, f"{kind} {name}{suffix}", kind, spec, "in the pod template",
                                paths, "selected" if kind == "DaemonSet" else None))
    return out


def _paths(w: Workload) -> dict:
    def p(s: Any, fallback: str) -> str:
        return s.path if isinstance(s, Setting) else getattr(s, "path", fallback)
    tolerations = p(w.tolerations, "tolerations")
    if w.tolerate_all is not None:
        tolerations += f" (or set {w.tolerate_all.path}: true)"
    return {"tolerations": tolerations,
            "nodeSelector": p(w.node_selector, "nodeSelector"),
            "affinity": p(w.affinity, "affinity"), "resources": p(w.resources, "resources")}


def _rendered(urn: str, source: str, where: str, workloads: Sequence[Workload],
              values: Any) -> list[Template]:
    out = []
    for w in workloads:
        spec, unknown = render(w, values)
        if spec is not None:
            out.append(Template(urn, f"{w.kind} {w.name} ({source})", w.kind, spec, where,
                                _paths(w), w.meant_for, w.group, unknown))
    return out


def _config_values(raw: Any) -> Mapping:
    """An add-on's configurationValues: JSON, or YAML (EKS accepts both). ValueError if it is
    neither, or not a mapping."""
    if raw in (None, ""):
        return {}
    if isinstance(raw, Mapping):
        return raw
    try:
        parsed = json.loads(raw)
    except ValueError:
        try:
            import yaml  # PyYAML comes with the pulumi SDK
        except ImportError as e:  # pragma: no cover
            raise ValueError("not JSON") from e
        try:
            parsed = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ValueError(str(e)) from e
    if not isinstance(parsed, Mapping):
        raise ValueError("not a mapping")
    return parsed


def packaged_templates(stack: Stack, unjudged: list) -> list[Template]:
    out = []
    for r in stack.of(HELM_RELEASE):
        name = chart_name(get(r.props, "chart") or "")
        if name not in CHARTS:
            unjudged.append(f"Helm release {short(r.urn)}: chart {name} is not in "
                            "policies/chart_pods.py")
            continue
        out += _rendered(r.urn, f"Helm release {short(r.urn)}",
                         f"in the {name} Helm release's values", CHARTS[name],
                         get(r.props, "values") or {})
    for r in stack.of(ADDON):
        name = str(get(r.props, "addonName"))
        if name not in ADDONS:
            unjudged.append(f"add-on {name}: not in policies/chart_pods.py")
            continue
        try:
            values = _config_values(get(r.props, "configurationValues"))
        except ValueError:
            unjudged.append(f"add-on {name}: configurationValues is not a JSON or YAML map")
            continue
        out += _rendered(r.urn, f"{name} add-on", f"in the {name} add-on's configurationValues",
                         ADDONS[name], values)
    return out


# ----------------------------------------------------------------------------------------------
# Verdicts
# ----------------------------------------------------------------------------------------------
OK, LABELS, TAINT, RESOURCES, UNKNOWN = "ok", "labels", "taint", "resources", "unknown"
RANK = {LABELS: 0, TAINT: 1, RESOURCES: 2, UNKNOWN: 3, OK: 4}


@dataclass
class Verdict:
    status: str
    reason: str = ""
    taint: Optional[Taint] = None


def judge(t: Template, pool: Pool) -> Verdict:
    """Can `t`'s pod run on `pool`? DaemonSets need every node of the pool, others one."""
    if t.unknown:
        return Verdict(UNKNOWN, "no recorded chart default for " + ", ".join(t.unknown))
    every = t.kind == "DaemonSet"
    quant = "all" if every else "any"
    misses = [(v, selector_mismatch(t.spec, v.labels, quant)) for v in pool.variants]
    candidates = [v for v, miss in misses if miss is None]
    failed = [(v, miss) for v, miss in misses if miss is not None]
    if not candidates or (every and failed):
        v, miss = failed[0]
        nodes = f" on {v.instance_type} nodes" if every and len(pool.variants) > 1 else ""
        return Verdict(LABELS, f"{miss} does not match the pool's labels{nodes}")
    taint = untolerated(t.spec.get("tolerations") or [], pool.taints)
    if taint is not None:
        return Verdict(TAINT, f"taint {taint} not tolerated", taint)
    requests = pod_requests(t.spec)
    results = []  # (fits: True / False / None = cannot tell, reason) per candidate node kind
    for v in candidates:
        if v.shape is None:
            asks = any(a > 0 for r, a in requests.items() if r not in IGNORED)
            results.append((None if asks else True,
                            f"instance type {v.instance_type} is not in policies/facts.py"))
            continue
        known, reason = resource_misfit(requests, v.shape)
        results.append(((not reason) if known else None, reason))
    fits = [ok for ok, _ in results]
    if (every and all(fits)) or (not every and any(fits)):
        return Verdict(OK)
    misfit = next((r for ok, r in results if ok is False), None)
    if misfit is not None and (every or None not in fits):
        return Verdict(RESOURCES, misfit)
    return Verdict(UNKNOWN, next(r for ok, r in results if ok is None))


def _fix(t: Template, v: Verdict) -> str:
    if v.status == TAINT:
        return (f"add a toleration for {v.taint.key}:{v.taint.effect} to "
                f"{t.paths['tolerations']} {t.where}")
    if v.status == LABELS:
        return (f"make {t.paths['nodeSelector']} / {t.paths['affinity']} {t.where} match the "
                "pool's labels")
    return f"lower the requests in {t.paths['resources']} {t.where} or add a larger pool"


def _check_daemonsets(group: list, pools: list, report, unjudged: list) -> None:
    t = group[0]
    if t.meant_for == "selected":
        # the pools (and, within them, the kinds of node) its own selectors pick
        meant = []
        for p in pools:
            picked = [v for v in p.variants if selector_mismatch(t.spec, v.labels, "any") is None]
            if picked:
                meant.append(replace(p, variants=picked))
        if not meant:
            miss = selector_mismatch(t.spec, pools[0].variants[0].labels, "any") if pools \
                else "its selectors"
            report(f"{t.title} selects no node pool ({miss} matches none): fix "
                   f"{t.paths['nodeSelector']} / {t.paths['affinity']} {t.where}.", t.urn)
            return
    else:
        meant = [p for p in pools if p.meant(t.meant_for)]
    for pool in meant:
        verdicts = [(member, judge(member, pool)) for member in group]
        if any(v.status == OK for _, v in verdicts):
            continue
        member, v = max(verdicts, key=lambda mv: RANK[mv[1].status])
        if v.status == UNKNOWN:
            unjudged.append(f"{member.title} on pool {pool.name}: {v.reason}")
            continue
        report(f"{member.title} cannot run on pool {pool.name}: {v.reason}; "
               f"{_fix(member, v)}.", member.urn)


def _check_fits_some_pool(t: Template, pools: list, report, unjudged: list) -> None:
    verdicts = [(p, judge(t, p)) for p in pools]
    if any(v.status == OK for _, v in verdicts):
        return
    matched = [(p, v) for p, v in verdicts if v.status != LABELS]
    if not matched:
        miss = verdicts[0][1].reason.split(" does not match")[0] if verdicts else "it"
        report(f"{t.title} fits no node pool: {miss} matches no pool; "
               f"{_fix(t, Verdict(LABELS))}.", t.urn)
        return
    unknown = [(p, v) for p, v in matched if v.status == UNKNOWN]
    if unknown:
        unjudged.append(f"{t.title} on pool {unknown[0][0].name}: {unknown[0][1].reason}")
        return
    reasons = "; ".join(f"pool {p.name}: {v.reason}" for p, v in matched)
    order = {TAINT: 0, LABELS: 1, RESOURCES: 2}
    fixes = "; or ".join(dict.fromkeys(
        _fix(t, v) for _, v in sorted(matched, key=lambda pv: order[pv[1].status])))
    report(f"{t.title} fits no node pool ({reasons}): {fixes}.", t.urn)


@stack_rule(
    name="k8s-pods-schedulable",
    description="Every pod template the plan declares (Kubernetes objects, Helm releases, EKS "
                "add-ons) fits a node pool, and every DaemonSet reaches each pool it is meant "
                "for (taints tolerated, selectors matched, requests within one node).",
    family="readiness", level=MANDATORY, severity=Severity.HIGH, gpu=True,
    config=schema(vmMemoryOverheadPercent={
        "type": "number", "default": 7.5, "minimum": 0, "maximum": 50,
        "description": "Share of an instance's nominal memory the kubelet never sees, in percent "
                       "(Karpenter's vmMemoryOverheadPercent default; real nodes: 2-5%)."}),
    refs=Refs(other=("k8s-docs:taint-and-toleration", "k8s-docs:assign-pod-node",
                     "k8s-docs:reserve-compute-resources", "aws-docs:eks-node-health")),
    remediation="Tolerate the pool's taints (for a chart or an add-on: at the values or "
                "configurationValues path the message names), make nodeSelector/affinity match "
                "a pool's labels, or keep requests below one node's allocatable resources.")
def k8s_pods_schedulable(stack: Stack, cfg, report):
    overhead = Fraction(str(cfg["vmMemoryOverheadPercent"])) / 100
    pools = node_pools(stack, overhead)
    unjudged: list = []
    templates = object_templates(stack) + packaged_templates(stack, unjudged)
    if templates and not pools:
        unjudged.append("the plan declares no node pool")
        templates = []
    groups: dict = {}
    for t in templates:
        if t.kind == "DaemonSet":
            groups.setdefault((t.urn, t.group or t.title), []).append(t)
        else:
            _check_fits_some_pool(t, pools, report, unjudged)
    for group in groups.values():
        _check_daemonsets(group, pools, report, unjudged)
    if unjudged:
        more = f" (and {len(unjudged) - 3} more)" if len(unjudged) > 3 else ""
        raise CannotJudge("; ".join(unjudged[:3]) + more)
