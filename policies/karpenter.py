"""Deploy-readiness rules for elastic capacity: every node pool has one provisioner.

A pool (`trainyard.io/pool=<name>` on its nodes) is made either by an EKS managed node group or
by a Karpenter NodePool, never both: pods that tolerate the pool's taint and select its label
are then scheduled onto whichever nodes exist, Karpenter launches more while the node group keeps
its own, and neither's maximum bounds the pool. Two NodePools for one pool split it the same way
(each with its own limits, so the pool can reach twice its maximum).
"""

from __future__ import annotations

from collections.abc import Mapping

from pulumi_policy import Severity

from .common import MANDATORY, Refs, Stack, get, plain, short, stack_rule
from .readiness import KARPENTER_NODEPOOL

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
POOL_LABEL = "trainyard.io/pool"


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
                "config (components/config.py), or remove the extra node group or NodePool "
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
