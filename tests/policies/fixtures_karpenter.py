"""Fixtures of the elastic-capacity rules (policies/karpenter.py), and Karpenter cases of rules
that also judge NodePools (gpu-budget); merged into policy_fixtures.FIXTURES."""

from __future__ import annotations

from typing import Optional

from policy_fixtures import NG, Case, R, ng_props

NODEPOOL = "kubernetes:karpenter.sh/v1:NodePool"


def nodepool(name: str, pool: Optional[str], types=("g5.48xlarge", "g6.48xlarge"),
             market: str = "spot", limits: Optional[dict] = None) -> dict:
    """A NodePool labelling its nodes trainyard.io/pool=<pool> (no label when pool is None)."""
    labels = {"trainyard.io/pool": pool} if pool else {}
    spec = {"template": {"metadata": {"labels": labels}, "spec": {
        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name},
        "requirements": [
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": list(types)},
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": [market]}]}},
        "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5m"}}
    if limits is not None:
        spec["limits"] = limits
    return R(NODEPOOL, name, {"apiVersion": "karpenter.sh/v1", "kind": "NodePool",
                              "metadata": {"name": name}, "spec": spec})


def group(name: str, pool: str, capacity: str = "ON_DEMAND") -> dict:
    return R(NG, name, ng_props(capacity=capacity, labels={"trainyard.io/pool": pool}))


KARPENTER_FIXTURES = {
    "elastic-pool-single-provisioner": {
        "bad": [
            Case([group("a100-ng", "a100"), nodepool("a100", "a100", types=("p4d.24xlarge",),
                                                     market="on-demand")],
                 "a100", label="node group and NodePool for one pool"),
            Case([nodepool("g-spot", "g-spot"), nodepool("g-spot-extra", "g-spot")],
                 "g-spot-extra", label="two NodePools for one pool"),
            Case([group("h100-ng", "h100", "CAPACITY_BLOCK"),
                  nodepool("h100", "h100", types=("p5.48xlarge",), market="on-demand")],
                 "h100", label="a NodePool beside a Capacity Block group"),
        ],
        "good": [
            Case([group("h100-ng", "h100", "CAPACITY_BLOCK"), nodepool("g-spot", "g-spot"),
                  nodepool("eval", "eval-spot", types=("g5.12xlarge", "g6.12xlarge"))],
                 label="one provisioner per pool"),
            Case([group("system", "system"), group("a100-ng", "a100")],
                 label="node groups only"),
            Case([nodepool("default", None)], label="a NodePool that is no trainyard pool"),
        ],
    },
}

# Cases added to rules whose other fixtures live in policy_fixtures.py.
KARPENTER_EXTRA_CASES = {
    "gpu-budget": {
        "bad": [
            Case([nodepool("g-spot", "g-spot", limits={"nvidia.com/gpu": "64", "cpu": "1536"})],
                 "g-spot", config={"maxGpus": 32}, label="NodePool limits over the GPU count"),
            Case([nodepool("a100", "a100", types=("p4d.24xlarge",), market="on-demand",
                           limits={"nvidia.com/gpu": "128", "cpu": "1536"})],
                 "a100", config={"maxGpus": 256, "maxOnDemandUsdPerHour": 100},
                 label="on-demand NodePool over the dollars"),
            Case([nodepool("open", "open")], "open", config={"maxGpus": 256},
                 label="NodePool without limits"),
        ],
        "good": [
            Case([group("h100-ng", "h100", "CAPACITY_BLOCK"),
                  nodepool("g-spot", "g-spot", limits={"nvidia.com/gpu": "16", "cpu": "384"})],
                 config={"maxGpus": 32, "maxOnDemandUsdPerHour": 100},
                 label="node group and NodePool within budget"),
        ],
    },
}
