"""Kubernetes scheduling semantics as pure functions, for the schedulability rule.

Everything here works on plain dicts (pod specs, tolerations, affinities as the API writes them)
and has its own tests (tests/policies/test_schedulability.py), several property-based:

- quantities: `parse_quantity("1500m") == Fraction(3, 2)`, binary and decimal suffixes, exponents;
- pod requests: container requests (limits without requests count as requests), init containers,
  native sidecars (init containers with `restartPolicy: Always`) and `overhead`, as the scheduler
  sums them;
- taints and tolerations, nodeSelector and required node affinity (terms ORed, expressions ANDed,
  In / NotIn / Exists / DoesNotExist / Gt / Lt);
- allocatable resources of a node from the instance facts, with the reservations stated below.

Node labels are `{key: frozenset(possible values)}`: a managed node group's labels have one value
each; a Karpenter NodePool requirement `key In [a, b]` leaves the label open between a and b. Label
checks take a quantifier: "any" (some node the pool can launch matches: Deployments, Jobs) or "all"
(every node matches: DaemonSets, which must reach every node of a pool).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Optional

# ----------------------------------------------------------------------------------------------
# Quantities
# ----------------------------------------------------------------------------------------------
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": 1,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([a-zA-Z]{0,2})$")
GIB = 2**30
MIB = 2**20


def parse_quantity(value: Any) -> Fraction:
    """A Kubernetes resource quantity as an exact number (cores, bytes, devices).
    Raises ValueError for anything the API server would reject."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(Decimal(repr(value)))
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = m.groups()
    try:
        base = Fraction(Decimal(number))
    except InvalidOperation as e:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"not a quantity: {value!r}") from e
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix in _DECIMAL:
        return base * _DECIMAL[suffix]
    raise ValueError(f"unknown quantity suffix {suffix!r} in {value!r}")


# ----------------------------------------------------------------------------------------------
# Pod requests
# ----------------------------------------------------------------------------------------------
def container_requests(container: Mapping) -> dict[str, Fraction]:
    """Requests of one container; a limit without a request is the request (API defaulting)."""
    res = container.get("resources") or {}
    out = {k: parse_quantity(v) for k, v in (res.get("limits") or {}).items()}
    out.update({k: parse_quantity(v) for k, v in (res.get("requests") or {}).items()})
    return out


def _add(a: dict, b: Mapping) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _max(a: dict, b: Mapping) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = max(out.get(k, 0), v)
    return out


def pod_requests(spec: Mapping) -> dict[str, Fraction]:
    """What the scheduler reserves for a pod: max(regular containers + sidecars, each init
    container + the sidecars started before it), plus the RuntimeClass overhead."""
    regular: dict = {}
    for c in spec.get("containers") or []:
        regular = _add(regular, container_requests(c))
    sidecars: dict = {}
    peak: dict = {}
    for c in spec.get("initContainers") or []:
        req = container_requests(c)
        if c.get("restartPolicy") == "Always":  # native sidecar: runs alongside the pod
            sidecars = _add(sidecars, req)
            peak = _max(peak, sidecars)
        else:
            peak = _max(peak, _add(sidecars, req))
    total = _max(_add(regular, sidecars), peak)
    return _add(total, {k: parse_quantity(v) for k, v in (spec.get("overhead") or {}).items()})


# ----------------------------------------------------------------------------------------------
# Taints and tolerations
# ----------------------------------------------------------------------------------------------
EKS_TAINT_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute",
                     "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
BLOCKING = ("NoSchedule", "NoExecute")


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else \
            f"{self.key}:{self.effect}"


def taint_of(t: Mapping) -> Taint:
    """A taint from an EKS node group (NO_SCHEDULE) or a Kubernetes/Karpenter spec (NoSchedule)."""
    effect = str(t.get("effect") or "")
    return Taint(str(t.get("key") or ""), str(t.get("value") or ""),
                 EKS_TAINT_EFFECTS.get(effect, effect))


def tolerates(toleration: Mapping, taint: Taint) -> bool:
    """Kubernetes toleration matching: an empty effect matches every effect; `Exists` with an
    empty key matches every taint; `Equal` (the default) needs the key and the value."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.effect:
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return key in ("", taint.key)
    if operator == "Equal":
        return key == taint.key and str(toleration.get("value") or "") == taint.value
    return False


def untolerated(tolerations: Sequence[Mapping], taints: Sequence[Taint]) -> Optional[Taint]:
    """The first NoSchedule/NoExecute taint no toleration matches (PreferNoSchedule never
    blocks)."""
    for taint in taints:
        if taint.effect in BLOCKING and not any(tolerates(t, taint) for t in tolerations or ()):
            return taint
    return None


# ----------------------------------------------------------------------------------------------
# nodeSelector and required node affinity
# ----------------------------------------------------------------------------------------------
Labels = Mapping[str, frozenset]


def _int(s: str) -> Optional[int]:
    try:
        return int(s)
    except (TypeError, ValueError):
        return None


def match_expression(expr: Mapping, labels: Labels, quant: str = "any") -> bool:
    """One matchExpressions entry against a node's possible labels."""
    key, op = expr.get("key"), expr.get("operator")
    values = {str(v) for v in expr.get("values") or []}
    possible = labels.get(key)
    pick = any if quant == "any" else all
    if op == "Exists":
        return possible is not None
    if op == "DoesNotExist":
        return possible is None
    if op == "In":
        return possible is not None and pick(v in values for v in possible)
    if op == "NotIn":
        return possible is None or pick(v not in values for v in possible)
    if op in ("Gt", "Lt") and possible is not None and len(values) == 1:
        bound = _int(next(iter(values)))
        nums = [_int(v) for v in possible]
        if bound is None or None in nums:
            return False
        return pick((n > bound) if op == "Gt" else (n < bound) for n in nums)
    return False


def match_term(term: Mapping, labels: Labels, quant: str = "any") -> bool:
    """A nodeSelectorTerm: its expressions ANDed. An empty term matches nothing; node names
    (matchFields) are unknown before the nodes exist, so a term using them never matches."""
    exprs = list(term.get("matchExpressions") or [])
    if term.get("matchFields") or not exprs:
        return False
    return all(match_expression(e, labels, quant) for e in exprs)


def required_terms(spec: Mapping) -> Optional[list]:
    aff = ((spec.get("affinity") or {}).get("nodeAffinity") or {}) \
        .get("requiredDuringSchedulingIgnoredDuringExecution")
    if aff is None:
        return None
    return list(aff.get("nodeSelectorTerms") or [])


def selector_mismatch(spec: Mapping, labels: Labels, quant: str = "any") -> Optional[str]:
    """Why the pod's nodeSelector or required node affinity rejects a node, or None."""
    for key, value in (spec.get("nodeSelector") or {}).items():
        if not match_expression({"key": key, "operator": "In", "values": [value]}, labels, quant):
            return f"nodeSelector {key}={value}"
    terms = required_terms(spec)
    if terms is not None and not any(match_term(t, labels, quant) for t in terms):
        return "required node affinity"
    return None


# ----------------------------------------------------------------------------------------------
# Allocatable
# ----------------------------------------------------------------------------------------------
# Before a node exists its capacity is estimated the way Karpenter does it: EC2's nominal memory
# less VM_MEMORY_OVERHEAD (Karpenter's documented `vmMemoryOverheadPercent` default, 7.5%; real
# nodes lose 2-5% to firmware and the kernel, so this errs towards "does not fit"; the rule's
# config can lower it per environment). Then the
# kubelet's reservations on the EKS AL2023 AMI (nodeadm):
#   kube-reserved memory = 255 MiB + 11 MiB x max pods
#   kube-reserved CPU    = 6% of the first core + 1% of the second + 0.5% of cores 3-4
#                          + 0.25% of every core above 4
#   eviction threshold   = memory.available 100 MiB
# with max pods at its upper bound: managed node groups cap it at 110 below 30 vCPUs and 250 from
# 30 vCPUs (EKS "choose instance types"); Karpenter's ENI-limited default is at most 737.
# EFA nodes pre-allocate 5128 x 2 MiB huge pages (AWS_FACTS), which the kubelet takes out of
# allocatable memory and offers as hugepages-2Mi. GPUs / Neuron devices: one per accelerator; EFA
# devices: the EFA interfaces the node actually attaches.
VM_MEMORY_OVERHEAD = Fraction(75, 1000)
EVICTION_HARD = 100 * MIB
EFA_HUGEPAGES = 5128 * 2 * MIB
GPU_RESOURCE = {"nvidia": "nvidia.com/gpu", "neuron": "aws.amazon.com/neuron"}
MODELED = ("cpu", "memory", "nvidia.com/gpu", "aws.amazon.com/neuron", "vpc.amazonaws.com/efa",
           "hugepages-2Mi")
IGNORED = ("ephemeral-storage", "pods")


def max_pods_bound(vcpus: int, karpenter: bool = False) -> int:
    if vcpus < 30:
        return 110
    return 737 if karpenter else 250


def kube_reserved_cpu(vcpus: int) -> Fraction:
    """Cores reserved for the kubelet and container runtime (the EKS AMI formula)."""
    millis = Fraction(0)
    for core in range(1, vcpus + 1):
        millis += 60 if core == 1 else 10 if core == 2 else 5 if core <= 4 else Fraction(5, 2)
    return millis / 1000


def kube_reserved_memory(max_pods: int) -> int:
    return (255 + 11 * max_pods) * MIB


@dataclass(frozen=True)
class NodeShape:
    """One node a pool can launch."""

    instance_type: str
    vcpus: int
    memory_gib: int
    accelerators: int
    vendor: Optional[str]
    efa: int
    """EFA interfaces attached (the launch template's, not the type's maximum)."""
    max_pods: int
    vm_overhead: Fraction = VM_MEMORY_OVERHEAD
    """Share of EC2's nominal memory the kubelet never sees (config: vmMemoryOverheadPercent)."""


def allocatable(shape: NodeShape) -> dict[str, Fraction]:
    memory = Fraction(shape.memory_gib * GIB) * (1 - shape.vm_overhead) \
        - kube_reserved_memory(shape.max_pods) - EVICTION_HARD
    out = {"cpu": shape.vcpus - kube_reserved_cpu(shape.vcpus), "vpc.amazonaws.com/efa":
           Fraction(shape.efa), "hugepages-2Mi": Fraction(EFA_HUGEPAGES if shape.efa else 0)}
    out["memory"] = memory - out["hugepages-2Mi"]
    for vendor, resource in GPU_RESOURCE.items():
        out[resource] = Fraction(shape.accelerators if shape.vendor == vendor else 0)
    return out


def _amount(resource: str, amount: Fraction) -> str:
    if resource == "memory" or resource.startswith("hugepages-"):
        return f"{float(amount) / GIB:.1f} GiB"
    if resource == "cpu":
        return f"{round(float(amount), 3):g} CPU"
    return f"{float(amount):g}"


def resource_misfit(requests: Mapping[str, Fraction], shape: NodeShape) -> tuple[bool, str]:
    """(known, reason): reason is "" when the pod fits one node; known is False when the pod asks
    for a resource this model does not know (the verdict is then "cannot judge")."""
    alloc = allocatable(shape)
    for resource, amount in requests.items():
        if amount <= 0 or resource in IGNORED:
            continue
        if resource not in MODELED:
            return False, f"requests {resource}, which policies/scheduling.py does not model"
        if amount > alloc[resource]:
            what = "" if resource == "cpu" else f" {resource}"
            has = _amount(resource, alloc[resource])
            if resource in ("cpu", "memory") or resource.startswith("hugepages-"):
                has += " allocatable"
            return True, (f"requests {_amount(resource, amount)}{what}, a {shape.instance_type} "
                          f"node has {has}")
    return True, ""
