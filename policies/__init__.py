"""trainyard's CrossGuard policy pack, as importable modules.

`POLICIES` is the full list, in family order; `policies/__main__.py` serves exactly this list to
the Pulumi engine (`pulumi preview --policy-pack policies`) and `trainyard check` runs the same
objects offline over a plan. Rules live in one module per family; see docs/policies.md.
"""

from __future__ import annotations

from . import (
    cluster,
    compute,
    iam,
    karpenter,
    kubernetes,
    netpol,
    network,
    notebooks,
    pods,
    principals,
    queues,
    rbac,
    readiness,
    schedulability,
    serving,
    storage,
    supply_chain,
    tagging,
)
from .common import FAMILIES

PACK_NAME = "trainyard"


def _collect(module) -> list:
    from pulumi_policy import Policy

    return [v for v in vars(module).values() if isinstance(v, Policy)]


BY_FAMILY = {
    "network": _collect(network),
    "efa-compute": _collect(compute),
    "cluster": _collect(cluster),
    "storage": _collect(storage),
    "iam": _collect(iam) + _collect(principals),
    "kubernetes": _collect(kubernetes) + _collect(pods) + _collect(netpol) + _collect(rbac)
    + _collect(serving) + _collect(notebooks),
    "tagging-cost": _collect(tagging),
    "supply-chain": _collect(supply_chain),
    "readiness": _collect(readiness) + _collect(karpenter) + _collect(queues)
    + _collect(schedulability),
}
# Modules import each other's helpers, never each other's policies: each policy belongs to the
# module that declares it.
for _family, _policies in BY_FAMILY.items():
    BY_FAMILY[_family] = [p for p in _policies if p.family == _family]

POLICIES = [p for family in FAMILIES for p in BY_FAMILY[family]]


def by_name() -> dict:
    return {p.name: p for p in POLICIES}


__all__ = ["POLICIES", "BY_FAMILY", "PACK_NAME", "by_name"]
