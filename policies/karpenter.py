"""Elastic capacity: the deploy-readiness rule that every node pool has one provisioner, and
Karpenter's side of the compute rules (reading NodePools and EC2NodeClasses for them).

A pool (`trainyard.io/pool=<name>` on its nodes) is made either by an EKS managed node group or
by a Karpenter NodePool, never both: pods that tolerate the pool's taint and select its label
are then scheduled onto whichever nodes exist, Karpenter launches more while the node group keeps
its own, and neither's maximum bounds the pool. Two NodePools for one pool split it the same way
(each with its own limits, so the pool can reach twice its maximum).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from pulumi_policy import Severity

from . import facts
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
    short,
    stack_rule,
    tags_of,
)
from .schedulability import Pool, node_pools
from .scheduling import BLOCKING

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"


def _label(value) -> str:
    labels = plain(value)
    return str(labels.get(POOL_LABEL) or "") if isinstance(labels, Mapping) else ""


def pool_providers(stack: Stack) -> dict[str, list[tuple[str, object]]]:
    """Pool label -> [(kind, resource)] for every node group and NodePool that labels its nodes
    with it ("node group" / "NodePool")."""
    out: dict[str, list[tuple[str, object]]] = {}
    for ng in stack.of(NODE_GROUP):
        label = _label(get(ng.props, "labels"))
        if label:
            out.setdefault(label, []).append(("node group", ng))
    for np in stack.of(KARPENTER_NODEPOOL):
        label = _label(get(np.props, "spec.template.metadata.labels"))
        if label:
            out.setdefault(label, []).append(("NodePool", np))
    return out


@stack_rule(
    name="elastic-pool-single-provisioner",
    description="Every node pool (trainyard.io/pool label value) is served by exactly one "
                "provisioner: a managed node group or one Karpenter NodePool, not both and not "
                "two NodePools.",
    family="readiness", level=MANDATORY, severity=Severity.HIGH, gpu=True,
    refs=Refs(other=("karpenter-docs:nodepools", "karpenter-docs:migrating-from-cas",
                     "aws-docs:managed-node-groups")),
    remediation="Give the pool one provisioner: set the pool's `provisioner` in the stack "
                "config (components/config/__init__.py), or remove the extra node group or NodePool "
                "whose nodes carry the same trainyard.io/pool label.")
def elastic_pool_single_provisioner(stack: Stack, cfg, report):
    for label, providers in sorted(pool_providers(stack).items()):
        groups = [r for kind, r in providers if kind == "node group"]
        nodepools = [r for kind, r in providers if kind == "NodePool"]
        if groups and nodepools:
            names = ", ".join(f"node group {short(r.urn)}" for r in groups) + " and " + \
                ", ".join(f"NodePool {short(r.urn)}" for r in nodepools)
            for r in nodepools:
                report(f"pool '{label}' is served by {names}: pods for the pool land on either, "
                       "Karpenter launches nodes while the node group keeps its own, and neither "
                       "maximum bounds the pool; keep one provisioner.", r.urn)
        elif len(nodepools) > 1:
            names = ", ".join(short(r.urn) for r in nodepools)
            for r in nodepools:
                report(f"pool '{label}' is served by {len(nodepools)} NodePools ({names}): each "
                       "has its own limits, so the pool can grow past its maximum, and pods are "
                       "split between them; keep one NodePool per pool.", r.urn)


# ----------------------------------------------------------------------------------------------
# Karpenter's side of the compute rules (policies/compute.py): what a NodePool may launch and how
# its EC2NodeClass configures the nodes, read as Karpenter reads them (CRD defaults included).
# The NodePools themselves are read by policies/schedulability.py (`node_pools`); this adds what
# the compute rules need beyond that. compute.py imports this module, never the reverse.
# ----------------------------------------------------------------------------------------------
NODEPOOL = KARPENTER_NODEPOOL
NODECLASS = KARPENTER_NODECLASS
SUBNET = "aws:ec2/subnet:Subnet"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
FAMILY = "karpenter.k8s.aws/instance-family"
CATEGORY = "karpenter.k8s.aws/instance-category"
CAPACITY = "karpenter.sh/capacity-type"
NIC_TYPES = ("interface", "efa-only")
"""The interface types an EC2NodeClass's networkInterfaces take (the CRD's enum: no `efa`)."""
EFA_TYPES = ("efa", "efa-only")
IMDS_DEFAULTS = {"httpEndpoint": "enabled", "httpProtocolIPv6": "disabled",
                 "httpPutResponseHopLimit": 1, "httpTokens": "required"}
"""The CRD's default for spec.metadataOptions and for each field of it left out."""
ACCELERATED_ALIASES = ("al2", "al2023", "bottlerocket")
"""Alias families Karpenter resolves per instance type to the standard, NVIDIA or Neuron
variant of the EKS-optimized AMI."""
OPTIMIZED = ("al2023", "bottlerocket")


@dataclass
class NodePoolView:
    """A NodePool as schedulability's reader sees it, with its EC2NodeClass (None when the stack
    has none of that name, or for a resource rule that sees the NodePool alone)."""

    res: Any
    pool: Pool
    node_class: Optional[Any] = None

    @property
    def name(self) -> str:
        return short(self.res.urn)

    @property
    def types(self) -> list[str]:
        """The types of the instance-type requirement (In); [] when it has none."""
        return [v.instance_type for v in self.pool.variants if INSTANCE_TYPE in v.labels]

    def requirement(self, key: str) -> frozenset:
        """Values of an `In` requirement (or template label) on `key`; empty when none."""
        return frozenset(self.pool.variants[0].labels.get(key) or ())

    @property
    def spot(self) -> bool:
        return "spot" in self.requirement(CAPACITY)

    @property
    def vendor(self) -> Optional[str]:
        """Accelerator vendor of what the NodePool launches: from its instance types, else its
        family/category requirements, GPU/accelerator requirements, limits or the
        trainyard.io/accelerator label. None: a CPU pool."""
        if self.pool.vendor:
            return self.pool.vendor
        for fam in sorted(self.requirement(FAMILY)):
            if facts.vendor_of(fam):
                return facts.vendor_of(fam)
        for cat in sorted(self.requirement(CATEGORY)):
            if cat in facts.ACCELERATED_PREFIXES:
                return facts.ACCELERATED_PREFIXES[cat]
        for req in plain(get(self.res.props, "spec.template.spec.requirements")) or []:
            key, op = str(req.get("key") or ""), req.get("operator")
            if op in ("Exists", "Gt") or (op == "In" and set(map(str, req.get("values") or []))
                                          - {"0"}):
                if key.startswith("karpenter.k8s.aws/instance-gpu-"):
                    return "nvidia"
                if key.startswith("karpenter.k8s.aws/instance-accelerator-"):
                    return "neuron"
        limits = plain(get(self.res.props, "spec.limits")) or {}
        for vendor, resource in (("nvidia", "nvidia.com/gpu"), ("neuron", "aws.amazon.com/neuron")):
            if resource in limits:
                return vendor
        return next((a for a in sorted(self.requirement("trainyard.io/accelerator"))
                     if a in facts.GPU_TAINT_KEY), None)

    def efa_interfaces(self) -> list:
        if self.node_class is None:
            return []
        return [n for n in items(get(self.node_class.props, "spec.networkInterfaces"))
                if get(n, "interfaceType") in EFA_TYPES]


def view(res) -> NodePoolView:
    """One NodePool on its own (resource rules)."""
    return NodePoolView(res, node_pools(Stack([res]))[0])


def nodepools(stack: Stack) -> list[NodePoolView]:
    """Every NodePool of the stack with its EC2NodeClass (spec.template.spec.nodeClassRef)."""
    nps = {r.urn: r for r in stack.of(NODEPOOL)}
    classes = stack.of(NODECLASS)
    out = []
    for pool in node_pools(Stack(list(nps.values()) + classes)):
        res = nps[pool.urn]
        ref = get(res.props, "spec.template.spec.nodeClassRef.name")
        match = next((c for c in classes if get(c.props, "metadata.name") == ref), None)
        out.append(NodePoolView(res, pool, match))
    return out


def category(instance_type: str) -> str:
    return re.match(r"[a-z]*", facts.family(instance_type)).group(0)


def check_allowed_families(res, allowed: set, report) -> None:
    """allowed-instance-types on a NodePool: the types it lists (those its family and category
    requirements leave), else the families it lists; a GPU NodePool with neither may launch
    anything."""
    v = view(res)
    families, categories = v.requirement(FAMILY), v.requirement(CATEGORY)
    allowed_text = ", ".join(sorted(allowed))
    if v.types:
        for t in v.types:
            if (families and facts.family(t) not in families) or \
                    (categories and category(t) not in categories):
                continue  # excluded by another requirement: never launched
            if facts.family(t) not in allowed:
                report(f"instance type {t} (family {facts.family(t)}) is not allowed in this "
                       f"environment (allowed: {allowed_text}).")
    elif families:
        for fam in sorted(families - allowed):
            report(f"instance family {fam} ({FAMILY} requirement) is not allowed in this "
                   f"environment (allowed: {allowed_text}).")
    elif v.vendor is not None:
        only = f" (only {CATEGORY} {', '.join(sorted(categories))})" if categories else ""
        report(f"GPU NodePool restricts neither {INSTANCE_TYPE} nor {FAMILY}{only}: Karpenter "
               "may launch any type that fits a pending pod; add an `In` requirement listing "
               f"the pool's types or families (allowed: {allowed_text}).")


def missing_taint(res) -> Optional[str]:
    """gpu-node-taint on a NodePool (spec.template.spec.taints)."""
    v = view(res)
    vendor = v.vendor
    if vendor is None:
        return None
    key = facts.GPU_TAINT_KEY[vendor]
    if any(t.key == key and t.effect in BLOCKING for t in v.pool.taints):
        return None
    return (f"accelerated NodePool ({', '.join(v.types) or vendor}) has no {key} taint: add "
            f"{{key: {key}, value: 'true', effect: NoSchedule}} to spec.template.spec.taints.")


def metadata_options(props) -> dict:
    """An EC2NodeClass's spec.metadataOptions with the CRD's defaults filled in."""
    given = plain(get(props, "spec.metadataOptions")) or {}
    return {**IMDS_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}


def ami_family(props) -> tuple[Optional[str], bool]:
    """(family in lower case, whether it comes from an `alias` term) of an EC2NodeClass."""
    for term in items(get(props, "spec.amiSelectorTerms")):
        if get(term, "alias"):
            return str(get(term, "alias")).split("@", 1)[0].lower(), True
    family_ = get(props, "spec.amiFamily")
    return (str(family_).lower() if family_ else None), False


def ami_family_problem(props) -> Optional[str]:
    """node-ami-container-optimized on an EC2NodeClass."""
    family_, alias = ami_family(props)
    if family_ in (None, "custom") or family_ in OPTIMIZED or family_.startswith("bottlerocket"):
        return None
    where = f"amiSelectorTerms alias {family_}@..." if alias else f"amiFamily {family_}"
    return (f"{where} is not AL2023 or Bottlerocket: use amiSelectorTerms "
            "[{alias: al2023@<version>}] (or bottlerocket@<version>).")


def _name_vendor(name: str) -> Optional[str]:
    name = name.lower()
    if "nvidia" in name or "-gpu-" in name:
        return "nvidia"
    return "neuron" if "neuron" in name else None


def ami_mismatches(stack: Stack):
    """gpu-ami-type-match on NodePools: (EC2NodeClass urn, problem). An alias of AL2, AL2023 or
    Bottlerocket is resolved per instance type (the NVIDIA or Neuron variant for accelerated
    types); AMIs pinned by name are used for every type, so their driver stack must match;
    AMIs pinned by id or tags only (like amiFamily Custom) are not judged."""
    for v in nodepools(stack):
        cls = v.node_class
        if cls is None:
            continue
        family_, alias = ami_family(cls.props)
        vendor = v.vendor
        what = f"NodePool {v.name} ({', '.join(v.types) or vendor or 'CPU'})"
        if family_ is None or family_ == "custom" or (alias and family_ in ACCELERATED_ALIASES):
            continue
        if family_.startswith("windows"):
            if vendor:
                yield cls.urn, (f"EC2NodeClass {short(cls.urn)} runs {family_} for accelerated "
                                f"{what}: Windows AMIs carry no {vendor} driver stack; use "
                                "amiSelectorTerms [{alias: al2023@<version>}].")
            continue
        if alias:
            continue
        names = [str(get(t, "name")) for t in items(get(cls.props, "spec.amiSelectorTerms"))
                 if get(t, "name")]
        if names and vendor not in {_name_vendor(n) for n in names}:
            want = f"the {vendor.upper()} variant" if vendor else "a standard (non-GPU) variant"
            yield cls.urn, (f"EC2NodeClass {short(cls.urn)} pins AMI name(s) {names}, used for "
                            f"every type of {what}: select {want}, or use the alias "
                            f"{family_}@<version>, which Karpenter resolves per instance type.")


def _tags_match(tags: Mapping, selector: Mapping) -> bool:
    return all(k in tags and fnmatch.fnmatchcase(str(tags[k]), str(want))
               for k, want in selector.items())


def subnet_problem(stack: Stack, v: NodePoolView) -> Optional[str]:
    """efa-pool-single-subnet on an EFA NodePool: its EC2NodeClass's subnetSelectorTerms must
    select exactly one subnet (ids; tag terms resolved against the stack's subnets)."""
    cls = v.node_class
    subnets = stack.of(SUBNET)
    found: list[str] = []
    for i, term in enumerate(items(get(cls.props, "spec.subnetSelectorTerms"))):
        try:
            sid = get(term, "id")
        except UnknownValueError:  # preview: a subnet the stack creates; one subnet all the same
            sid = f"<subnet of term {i}>"
        if sid:
            found.append(str(sid))
            continue
        selector = plain(get(term, "tags")) or {}
        matched = [str(peek(s, "id")) for s in subnets if _tags_match(tags_of(s.props), selector)]
        if not matched:
            return (f"subnetSelectorTerms[{i}] of EFA EC2NodeClass {short(cls.urn)} (NodePool "
                    f"{v.name}) matches no subnet of this stack by tags {selector}: select the "
                    "pool's one subnet by id.")
        found += matched
    unique = sorted(set(found))
    if len(unique) == 1:
        return None
    return (f"EFA EC2NodeClass {short(cls.urn)} (NodePool {v.name}) selects {len(unique)} subnets"
            f"{' (' + ', '.join(unique) + ')' if unique else ''}: an EFA pool must live in exactly "
            "one subnet/AZ; keep a single subnetSelectorTerms entry with the pool's subnet id.")


def spot_types(res) -> Optional[list[str]]:
    """spot-pool-diversified: the types of a Spot NodePool (karpenter.sh/capacity-type In
    [spot, ...]); None for any other."""
    v = view(res)
    return v.types if v.spot else None


def check_efa_counts(stack: Stack, report, per_type) -> None:
    """efa-interface-count on NodePools: every type against the EFA interfaces of its
    EC2NodeClass (`per_type(type, interfaces, pool, template)` -> problems, compute.py's).
    An EC2NodeClass without networkInterfaces is not judged: Karpenter then attaches each
    type's maximum to nodes for pods that request EFA."""
    for v in nodepools(stack):
        efa = v.efa_interfaces()
        if not efa:
            continue
        cls = short(v.node_class.urn)
        if not v.types:
            report(f"EC2NodeClass {cls} attaches {len(efa)} EFA interface(s) but NodePool "
                   f"{v.name} lists no {INSTANCE_TYPE}: list its types, each with exactly that "
                   "EFA count.", v.node_class.urn)
        for t in v.types:
            for problem in per_type(t, efa, f"NodePool {v.name}", f"EC2NodeClass {cls}"):
                report(problem, v.node_class.urn)


def check_subnets(stack: Stack, report) -> None:
    """efa-pool-single-subnet on EFA NodePools (their EC2NodeClass's subnets)."""
    for v in nodepools(stack):
        problem = subnet_problem(stack, v) if v.pool.efa and v.node_class is not None else None
        if problem:
            report(problem, v.node_class.urn)
