"""Deploy-readiness rules for GPU sharing with Kueue: will a team's TrainJob be admitted, and can
Kueue's promises be kept.

- `team-queue-covers-flavors`: every team namespace has a ClusterQueue (and a LocalQueue onto it)
  whose flavors cover every GPU pool the team may use, with every resource those pools' pods
  request (an EFA pod also asks for EFA devices and huge pages; Kueue never admits a request no
  quota covers).
- `team-quota-admits-queue`: the namespace's ResourceQuota is not below what its ClusterQueue can
  admit (nominal + borrowing): otherwise Kueue admits a job whose pods are then refused, the job
  never becomes ready, waitForPodsReady evicts it and it requeues, forever.
- `queue-quota-fits-capacity` (advisory): the nominal quota the ClusterQueues guarantee fits what
  the pools can hold at their maximum (managed node groups at maxSize, Karpenter NodePools at
  their GPU limit); otherwise the message says by how much it is oversubscribed.

Pools are found by the `trainyard.io/pool` label their nodes carry, whoever makes them; a
ResourceFlavor belongs to the pool its `nodeLabels` select.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Optional

from pulumi_policy import Severity

from . import facts
from .common import (
    ACCELERATOR_LABEL,
    ADVISORY,
    EFA_LABEL,
    KARPENTER_NODEPOOL,
    MANDATORY,
    POOL_LABEL,
    PURPOSE_LABEL,
    Refs,
    Stack,
    get,
    plain,
    schema,
    short,
    stack_rule,
)
from .compute import LT, NODE_GROUP, launch_template_of, node_group_types
from .kubernetes import NAMESPACE, RESOURCE_QUOTA, TEAM_LABEL, _objects_in

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
GPU_RESOURCES = {"nvidia": "nvidia.com/gpu", "neuron": "aws.amazon.com/neuron"}
EFA_RESOURCES = ("vpc.amazonaws.com/efa", "hugepages-2Mi")
_KUEUE = re.compile(r"^kubernetes:kueue\.x-k8s\.io/v1beta\d+:(\w+)$")


# ----------------------------------------------------------------------------------------------
# Reading the plan
# ----------------------------------------------------------------------------------------------
def kueue_objects(stack: Stack, kind: str) -> list:
    return [r for r in stack.resources
            if (m := _KUEUE.match(r.resource_type)) and m.group(1) == kind]


_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "m": Fraction(1, 1000), "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
           "P": 10**15, "E": 10**18}
_QTY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?)$")


def quantity(value: Any) -> Optional[Fraction]:
    """A Kubernetes quantity (`64`, `1536Gi`, `500m`, 8.0) as a number; None when malformed."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return Fraction(value)
    m = _QTY.match(str(value).strip())
    if not m:
        return None
    number, exp, suffix = m.groups()
    out = Fraction(number)
    if exp:
        return out * Fraction(10) ** int(exp[1:])
    return out * _SUFFIX[suffix or ""]


def selector_matches(selector: Any, labels: Mapping[str, str]) -> bool:
    """A LabelSelector against labels. None selects nothing (Kueue's namespaceSelector
    default); {} selects everything."""
    if selector is None:
        return False
    sel = plain(selector)
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), list(e.get("values") or [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def namespace_labels(ns) -> dict[str, str]:
    """The namespace's labels as the API server will hold them (it adds the name label)."""
    labels = dict(plain(get(ns.props, "metadata.labels")) or {})
    labels[NAMESPACE_NAME_LABEL] = str(get(ns.props, "metadata.name"))
    return labels


@dataclass
class Pool:
    name: str
    resource: Optional[str]
    """Accelerator resource its nodes advertise; None for CPU pools."""
    capacity: Optional[int]
    """Accelerators at the maximum; None: unbounded (a NodePool without a GPU limit)."""
    efa: bool
    urn: str
    provisioner: str


def gpu_pools(stack: Stack) -> dict[str, Pool]:
    """Pool label -> the GPU pool (managed node groups and Karpenter NodePools)."""
    out: dict[str, Pool] = {}
    lts = stack.of(LT)
    for ng in stack.of(NODE_GROUP):
        labels = plain(get(ng.props, "labels")) or {}
        name = str(labels.get(POOL_LABEL) or short(ng.urn))
        lt = launch_template_of(stack, ng, lts)
        types = node_group_types(ng.props, lt.props if lt is not None else None)
        specs = [s for s in (facts.lookup(t) for t in types) if s is not None]
        vendor = next((s.vendor for s in specs if s.vendor), None)
        if not vendor or labels.get(PURPOSE_LABEL, "training") != "training":
            continue  # no accelerators, or a serving pool (not queued)
        per_node = max(s.gpus for s in specs)
        max_size = int(get(ng.props, "scalingConfig.maxSize", 0) or 0)
        out[name] = Pool(name, GPU_RESOURCES[vendor], per_node * max_size,
                         str(labels.get(EFA_LABEL, "")).lower() == "true", ng.urn, "node group")
    for np in stack.of(KARPENTER_NODEPOOL):
        spec = plain(get(np.props, "spec")) or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        name = labels.get(POOL_LABEL)
        limits = spec.get("limits") or {}
        resource = next((r for r in GPU_RESOURCES.values() if r in limits), None)
        if resource is None and labels.get(ACCELERATOR_LABEL) in GPU_RESOURCES:
            resource = GPU_RESOURCES[labels[ACCELERATOR_LABEL]]
        if not name or resource is None or labels.get(PURPOSE_LABEL, "training") != "training":
            continue
        limit = quantity(limits.get(resource))
        out[str(name)] = Pool(str(name), resource, int(limit) if limit is not None else None,
                              str(labels.get(EFA_LABEL, "")).lower() == "true", np.urn,
                              "NodePool")
    return out


def flavor_pools(stack: Stack) -> dict[str, Optional[str]]:
    """ResourceFlavor name -> the pool its nodeLabels select (None: no pool label)."""
    out = {}
    for rf in kueue_objects(stack, "ResourceFlavor"):
        labels = plain(get(rf.props, "spec.nodeLabels")) or {}
        out[str(get(rf.props, "metadata.name"))] = labels.get(POOL_LABEL)
    return out


def groups(obj) -> list[dict]:
    return [g for g in (plain(get(obj.props, "spec.resourceGroups")) or []) if isinstance(g, dict)]


def flavor_quota(obj, flavor: str, resource: str, key: str = "nominalQuota") -> Optional[Fraction]:
    """`key` of (flavor, resource) in a ClusterQueue's / Cohort's resource groups; None when the
    flavor or resource is not listed or the key is unset."""
    for g in groups(obj):
        for f in g.get("flavors") or []:
            if f.get("name") != flavor:
                continue
            for r in f.get("resources") or []:
                if r.get("name") == resource and r.get(key) is not None:
                    return quantity(r[key])
    return None


def listed(obj) -> dict[str, set[str]]:
    """Flavor -> the resources the object's resource groups cover for it."""
    out: dict[str, set[str]] = {}
    for g in groups(obj):
        for f in g.get("flavors") or []:
            out.setdefault(str(f.get("name")), set()).update(g.get("coveredResources") or [])
    return out


def team_namespaces(stack: Stack) -> list:
    return [ns for ns in stack.of(NAMESPACE)
            if TEAM_LABEL in (plain(get(ns.props, "metadata.labels")) or {})]


def queues_of(stack: Stack, ns) -> list:
    labels = namespace_labels(ns)
    return [cq for cq in kueue_objects(stack, "ClusterQueue")
            if selector_matches(get(cq.props, "spec.namespaceSelector"), labels)]


def _names(values: Sequence[str]) -> str:
    return ", ".join(sorted(values))


# ----------------------------------------------------------------------------------------------
# team-queue-covers-flavors
# ----------------------------------------------------------------------------------------------
@stack_rule(
    name="team-queue-covers-flavors",
    description="Every team namespace has a ClusterQueue admitting it and a LocalQueue onto it, "
                "whose flavors cover every GPU pool the team may use with every resource that "
                "pool's pods request (GPUs; EFA devices and huge pages on EFA pools).",
    family="readiness", level=MANDATORY, severity=Severity.HIGH, gpu=True,
    refs=Refs(other=("kueue-docs:cluster-queue", "kueue-docs:resource-flavor",
                     "kueue-docs:local-queue")),
    config=schema(teamPools={
        "type": "object", "default": {},
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
        "description": "Team (namespace) -> the GPU pools it may use; a team not listed may "
                       "use every GPU pool."}),
    remediation="Give each team a ClusterQueue (namespaceSelector on its namespace) listing a "
                "ResourceFlavor (nodeLabels trainyard.io/pool=<pool>) for every pool it may "
                "use, covering the pool's accelerator resource (and vpc.amazonaws.com/efa, "
                "hugepages-2Mi on EFA pools), and a LocalQueue in the namespace pointing at it "
                "(components/services/kueue.py builds all of them from the stack config).")
def team_queue_covers_flavors(stack: Stack, cfg, report):
    pools = gpu_pools(stack)
    by_pool: dict[str, list[str]] = {}
    for flavor, pool in flavor_pools(stack).items():
        if pool:
            by_pool.setdefault(str(pool), []).append(flavor)
    local_queues = kueue_objects(stack, "LocalQueue")
    for ns in team_namespaces(stack):
        team = str(get(ns.props, "metadata.name"))
        cqs = queues_of(stack, ns)
        if not cqs:
            report(f"team namespace {team} has no ClusterQueue whose namespaceSelector admits "
                   "it: its TrainJobs stay suspended, never admitted.", ns.urn)
            continue
        names = {str(get(cq.props, "metadata.name")) for cq in cqs}
        mine = [lq for lq in local_queues
                if ns in stack.linked(lq, "metadata.namespace", [ns], keys=("metadata.name",))
                and str(get(lq.props, "spec.clusterQueue")) in names]
        if not mine:
            report(f"team namespace {team} has no LocalQueue pointing at ClusterQueue "
                   f"{_names(names)}: a job's kueue.x-k8s.io/queue-name label has nothing to "
                   "name, and the job is never admitted.", ns.urn)
        allowed = cfg["teamPools"].get(team)
        wanted = [p for p in pools.values() if allowed is None or p.name in allowed]
        for cq in cqs:
            covered = listed(cq)
            missing, short_of = [], []
            for p in sorted(wanted, key=lambda p: p.name):
                flavors = [f for f in by_pool.get(p.name, []) if f in covered]
                if not flavors:
                    missing.append(p.name)
                    continue
                need = {p.resource, *(EFA_RESOURCES if p.efa else ())}
                if not any(need <= covered[f] for f in flavors):
                    lacks = need - set().union(*(covered[f] for f in flavors))
                    short_of.append(f"{p.name} (no quota for {_names(lacks)})")
            name = get(cq.props, "metadata.name")
            if missing:
                no_flavor = [m for m in missing if m not in by_pool]
                note = (f"; no ResourceFlavor selects {_names(no_flavor)} at all"
                        if no_flavor else "")
                report(f"ClusterQueue {name} (team {team}) lists no flavor of GPU pool(s) "
                       f"{_names(missing)}{note}: the team's jobs for those pools are never "
                       "admitted.", cq.urn)
            if short_of:
                report(f"ClusterQueue {name} (team {team}) does not cover every resource the "
                       f"pods of {', '.join(short_of)} request: Kueue admits no request no "
                       "quota covers.", cq.urn)


# ----------------------------------------------------------------------------------------------
# team-quota-admits-queue
# ----------------------------------------------------------------------------------------------
def cohort_totals(stack: Stack, cohort: str) -> dict[tuple[str, str], Fraction]:
    """(flavor, resource) -> all nominal quota in the cohort: its ClusterQueues' and the Cohort
    object's own."""
    out: dict[tuple[str, str], Fraction] = {}
    members = [cq for cq in kueue_objects(stack, "ClusterQueue")
               if get(cq.props, "spec.cohortName") == cohort]
    members += [c for c in kueue_objects(stack, "Cohort") if get(c.props, "metadata.name") == cohort]
    for obj in members:
        for g in groups(obj):
            for f in g.get("flavors") or []:
                for r in f.get("resources") or []:
                    q = quantity(r.get("nominalQuota")) or Fraction(0)
                    key = (str(f.get("name")), str(r.get("name")))
                    out[key] = out.get(key, Fraction(0)) + q
    return out


def admissible(stack: Stack, cq, resource: str) -> Optional[Fraction]:
    """The most of `resource` the ClusterQueue can admit at once: per flavor its nominal quota
    plus what it may borrow (bounded by its borrowingLimit and by what the cohort holds); None
    when it does not cover the resource."""
    cohort = get(cq.props, "spec.cohortName")
    totals = cohort_totals(stack, str(cohort)) if cohort else {}
    out, seen = Fraction(0), False
    for flavor, covered in listed(cq).items():
        if resource not in covered:
            continue
        seen = True
        nominal = flavor_quota(cq, flavor, resource) or Fraction(0)
        if not cohort:
            out += nominal
            continue
        limit = flavor_quota(cq, flavor, resource, "borrowingLimit")
        reach = max(nominal, totals.get((flavor, resource), nominal))
        out += reach if limit is None else min(nominal + limit, reach)
    return out if seen else None


@stack_rule(
    name="team-quota-admits-queue",
    description="A team namespace's ResourceQuota is not below what its ClusterQueue can admit "
                "(nominal quota plus borrowing), so Kueue never admits pods the quota refuses.",
    family="readiness", level=MANDATORY, severity=Severity.HIGH, gpu=True,
    refs=Refs(other=("kueue-docs:wait-for-pods-ready", "k8s-docs:resource-quotas")),
    remediation="Raise the ResourceQuota's requests.<gpu resource> to the ClusterQueue's "
                "nominal quota plus its borrowing limits (components/services/teams.py takes it from "
                "kueue.QuotaPlan.ceilings()), or lower the ClusterQueue's borrowingLimit.")
def team_quota_admits_queue(stack: Stack, cfg, report):
    for ns in team_namespaces(stack):
        cqs = queues_of(stack, ns)
        quotas = _objects_in(stack, ns, (RESOURCE_QUOTA,))
        for resource in sorted(set(GPU_RESOURCES.values())):
            reach = [a for a in (admissible(stack, cq, resource) for cq in cqs) if a is not None]
            if not reach:
                continue
            need = sum(reach)
            for q in quotas:
                hard = plain(get(q.props, "spec.hard")) or {}
                for key in (f"requests.{resource}", resource):
                    have = quantity(hard.get(key)) if key in hard else None
                    if have is not None and have < need:
                        report(f"ResourceQuota {get(q.props, 'metadata.name')} in team namespace "
                               f"{get(ns.props, 'metadata.name')} caps {key} at {have} but its "
                               f"ClusterQueue can admit {math.ceil(need)} (nominal plus "
                               "borrowing): pods of an admitted job beyond the quota are "
                               "refused, the job never becomes ready, waitForPodsReady evicts "
                               "and requeues it, over and over.", q.urn)


# ----------------------------------------------------------------------------------------------
# queue-quota-fits-capacity
# ----------------------------------------------------------------------------------------------
@stack_rule(
    name="queue-quota-fits-capacity",
    description="The GPU quota the ClusterQueues guarantee (nominal) fits the GPU pools at their "
                "maximum (node groups at maxSize, Karpenter NodePools at their GPU limit), in "
                "total and per pool; else says by how much it is oversubscribed.",
    family="readiness", level=ADVISORY, severity=Severity.MEDIUM, gpu=True,
    refs=Refs(other=("kueue-docs:cluster-queue#nominalquota",)),
    remediation="Lower teams[].gpuQuota or raise the pools' maxSize (a Karpenter pool's limit "
                "follows it); components/services/kueue.py deals quota onto pools in flavor order and "
                "puts what the pools cannot hold on the first flavor.")
def queue_quota_fits_capacity(stack: Stack, cfg, report):
    cqs = kueue_objects(stack, "ClusterQueue")
    if not cqs:
        return
    pools = gpu_pools(stack)
    if any(p.capacity is None for p in pools.values()):
        return  # a NodePool without a GPU limit: nothing bounds the pools
    flavors = flavor_pools(stack)
    resources = set(GPU_RESOURCES.values())

    def nominal(obj, flavor: Optional[str] = None) -> Fraction:
        total = Fraction(0)
        for g in groups(obj):
            for f in g.get("flavors") or []:
                if flavor is not None and f.get("name") != flavor:
                    continue
                for r in f.get("resources") or []:
                    if r.get("name") in resources:
                        total += quantity(r.get("nominalQuota")) or Fraction(0)
        return total

    promised = sum((nominal(cq) for cq in cqs), Fraction(0))
    capacity = sum(p.capacity or 0 for p in pools.values())
    over = []
    for flavor, pool in sorted(flavors.items()):
        if pool not in pools:
            continue
        held = sum((nominal(cq, flavor) for cq in cqs), Fraction(0))
        if held > (pools[pool].capacity or 0):
            over.append(f"{flavor}: {math.ceil(held)} guaranteed of {pools[pool].capacity}")
    if promised <= capacity and not over:
        return
    biggest = max(cqs, key=lambda cq: nominal(cq))
    head = (f"the ClusterQueues guarantee {math.ceil(promised)} GPUs of nominal quota but the "
            f"GPU pools hold at most {capacity} at their maximum: oversubscribed by "
            f"{math.ceil(promised - capacity)}" if promised > capacity else
            f"the ClusterQueues' {math.ceil(promised)} GPUs of nominal quota fit the pools' "
            f"{capacity} in total but not pool by pool")
    detail = f" (per pool: {'; '.join(over)})" if over else ""
    report(f"{head}{detail}. Jobs admitted on quota the pools cannot hold stay Pending until "
           "waitForPodsReady requeues them; lower teams[].gpuQuota or raise the pools' maximum.",
           biggest.urn)
