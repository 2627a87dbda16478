"""Fixtures of the elastic-capacity rules (policies/karpenter.py), and Karpenter cases of rules
that also judge NodePools and EC2NodeClasses (gpu-budget and the compute rules); merged into
policy_fixtures.FIXTURES."""

from __future__ import annotations

from typing import Optional

from policy_fixtures import NG, SUBNET, Case, R, ng_props, rid

NODEPOOL = "kubernetes:karpenter.sh/v1:NodePool"
NODECLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"


def nodepool(name: str, pool: Optional[str], types=("g5.48xlarge", "g6.48xlarge"),
             market: str = "spot", limits: Optional[dict] = None, taints: Optional[list] = None,
             requirements: Optional[list] = None, labels: Optional[dict] = None) -> dict:
    """A NodePool labelling its nodes trainyard.io/pool=<pool> (no label when pool is None);
    `types` () leaves out the instance-type requirement, `requirements` are added."""
    labels = {**({"trainyard.io/pool": pool} if pool else {}), **(labels or {})}
    reqs = [{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": list(types)}
            ] if types else []
    reqs += [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": [market]},
             *(requirements or [])]
    tmpl = {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name},
            "requirements": reqs}
    if taints is not None:
        tmpl["taints"] = taints
    spec = {"template": {"metadata": {"labels": labels}, "spec": tmpl},
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5m"}}
    if limits is not None:
        spec["limits"] = limits
    return R(NODEPOOL, name, {"apiVersion": "karpenter.sh/v1", "kind": "NodePool",
                              "metadata": {"name": name}, "spec": spec})


GPU_TAINT = [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]


def nodeclass(name: str, efa: int = 0, subnets=("private-a",), **over) -> dict:
    """A compliant EC2NodeClass (logical name <name>-class, object name <name>) in the current
    EFA layout Karpenter takes (primary `interface`, `efa-only` on card 0 device 1 and on
    device 0 of every other card); `over` replaces spec fields (None removes one)."""
    spec = {"amiSelectorTerms": [{"alias": "al2023@latest"}], "instanceProfile": "node-profile",
            "subnetSelectorTerms": [{"id": rid(s)} for s in subnets],
            "securityGroupSelectorTerms": [{"id": rid("cluster-sg")}],
            "metadataOptions": {"httpEndpoint": "enabled", "httpPutResponseHopLimit": 2,
                                "httpTokens": "required"},
            "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {
                "volumeSize": "200Gi", "volumeType": "gp3", "encrypted": True}}]}
    if efa:
        spec["networkInterfaces"] = [
            {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"},
            {"networkCardIndex": 0, "deviceIndex": 1, "interfaceType": "efa-only"},
            *({"networkCardIndex": c, "deviceIndex": 0, "interfaceType": "efa-only"}
              for c in range(1, efa))]
    spec.update(over)
    spec = {k: v for k, v in spec.items() if v is not None}
    return R(NODECLASS, f"{name}-class", {"apiVersion": "karpenter.k8s.aws/v1",
                                          "kind": "EC2NodeClass", "metadata": {"name": name},
                                          "spec": spec})


def efa_nodepool(name: str = "a100", types=("p4d.24xlarge",), efa: int = 4, **class_over) -> list:
    """An EFA pool served by Karpenter: NodePool (labelled trainyard.io/efa) + EC2NodeClass."""
    return [nodepool(name, name, types=types, market="on-demand", taints=GPU_TAINT,
                     labels={"trainyard.io/efa": "true"}),
            nodeclass(name, efa=efa, **class_over)]


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
    "gpu-capacity-not-spot-only": {
        "bad": [Case([nodepool("g-spot", "g-spot", taints=GPU_TAINT)], "g-spot",
                     config={"requireNonSpot": True}, label="only a spot NodePool"),
                Case([R(NG, "spot-ng", ng_props(types=("g5.48xlarge", "g6.48xlarge"),
                                                capacity="SPOT")),
                      nodepool("g-spot", "g-spot", taints=GPU_TAINT)], "spot-ng",
                     config={"requireNonSpot": True}, label="spot node group and NodePool")],
        "good": [Case([nodepool("g-spot", "g-spot", taints=GPU_TAINT),
                       nodepool("a100", "a100", types=("p4d.24xlarge",), market="on-demand",
                                taints=GPU_TAINT)],
                      config={"requireNonSpot": True}, label="an on-demand NodePool"),
                 Case([R(NG, "spot-ng", ng_props(types=("g5.48xlarge", "g6.48xlarge"),
                                                 capacity="SPOT")),
                       nodepool("a100", "a100", types=("p4d.24xlarge",), market="on-demand",
                                taints=GPU_TAINT)],
                      config={"requireNonSpot": True}, label="spot group, on-demand NodePool")],
    },
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


# The compute rules (policies/compute.py) on NodePools and EC2NodeClasses.
DEV_FAMILIES = {"allowedFamilies": ["g5", "g6", "g6e", "m6i", "m7i", "c6i"]}


def _class_only(**over) -> list:
    return [nodeclass("pool", **over)]


def _subnet(name: str, **tags) -> dict:
    return R(SUBNET, name, {"vpcId": rid("vpc"), "cidrBlock": "10.0.0.0/24",
                            "tags": {"trainyard.io/tier": "private", **tags}},
             outputs={"id": rid(name), "tags": {"trainyard.io/tier": "private", **tags}})


def _ami_pool(**class_over) -> list:
    return [nodepool("g", "g", taints=GPU_TAINT), nodeclass("g", **class_over)]


KARPENTER_EXTRA_CASES.update({
    "allowed-instance-types": {
        "bad": [
            Case([nodepool("dev-p5", "dev-p5", types=("p5.48xlarge", "p5e.48xlarge"),
                           taints=GPU_TAINT)], "dev-p5", config=DEV_FAMILIES,
                 label="NodePool with p5 types"),
            Case([nodepool("open", "open", types=(), taints=GPU_TAINT,
                           requirements=[{"key": "karpenter.k8s.aws/instance-category",
                                          "operator": "In", "values": ["g", "p"]}],
                           limits={"nvidia.com/gpu": "8"})], "open", config=DEV_FAMILIES,
                 label="GPU NodePool restricting neither types nor families"),
            Case([nodepool("fam", "fam", types=(), taints=GPU_TAINT,
                           requirements=[{"key": "karpenter.k8s.aws/instance-family",
                                          "operator": "In", "values": ["g5", "p5"]}])],
                 "fam", config=DEV_FAMILIES, label="NodePool family requirement"),
        ],
        "good": [
            Case([nodepool("dev-spot", "dev-spot", types=("g5.xlarge", "g6.xlarge"),
                           taints=GPU_TAINT)], config=DEV_FAMILIES, label="NodePool g5/g6"),
            Case([nodepool("fam", "fam", types=(), taints=GPU_TAINT,
                           requirements=[{"key": "karpenter.k8s.aws/instance-family",
                                          "operator": "In", "values": ["g5", "g6"]}])],
                 config=DEV_FAMILIES, label="NodePool allowed families"),
            Case([nodepool("mixed", "mixed", types=("p5.48xlarge", "g5.48xlarge"),
                           taints=GPU_TAINT,
                           requirements=[{"key": "karpenter.k8s.aws/instance-family",
                                          "operator": "In", "values": ["g5"]}])],
                 config=DEV_FAMILIES, label="type excluded by the family requirement"),
            Case([nodepool("general", None, types=(), market="on-demand",
                           requirements=[{"key": "karpenter.k8s.aws/instance-category",
                                          "operator": "In", "values": ["c", "m"]}])],
                 config=DEV_FAMILIES, label="CPU NodePool judged on what it lists"),
        ],
    },
    "spot-pool-diversified": {
        "bad": [
            Case([nodepool("g-spot", "g-spot", types=("g5.48xlarge",), taints=GPU_TAINT)],
                 "g-spot", label="Spot NodePool with one type"),
            Case([nodepool("g-spot", "g-spot", types=("g5.48xlarge", "g5.12xlarge"),
                           taints=GPU_TAINT)], "g-spot", label="Spot NodePool mixing shapes"),
            Case([nodepool("fam", "fam", types=(), taints=GPU_TAINT,
                           requirements=[{"key": "karpenter.k8s.aws/instance-family",
                                          "operator": "In", "values": ["g5"]}])],
                 "fam", label="Spot NodePool listing no types"),
        ],
        "good": [
            Case([nodepool("g-spot", "g-spot", taints=GPU_TAINT)], label="Spot NodePool"),
            Case([nodepool("a100", "a100", types=("p4d.24xlarge",), market="on-demand",
                           taints=GPU_TAINT)], label="on-demand NodePool with one type"),
        ],
    },
    "gpu-node-taint": {
        "bad": [
            Case([nodepool("g-spot", "g-spot")], "g-spot", label="NodePool without taints"),
            Case([nodepool("trn", "trn", types=("trn1.32xlarge",), market="on-demand",
                           taints=GPU_TAINT)], "trn", label="Neuron NodePool with NVIDIA taint"),
            Case([nodepool("fam", "fam", types=(), taints=[{
                "key": "nvidia.com/gpu", "value": "true", "effect": "PreferNoSchedule"}],
                requirements=[{"key": "karpenter.k8s.aws/instance-family", "operator": "In",
                               "values": ["g6e"]}])], "fam", label="NodePool soft taint"),
        ],
        "good": [
            Case([nodepool("g-spot", "g-spot", taints=GPU_TAINT)], label="tainted NodePool"),
            Case([nodepool("cpu", "cpu", types=("m6i.xlarge", "m7i.xlarge"),
                           market="on-demand")], label="CPU NodePool"),
        ],
    },
    "gpu-ami-type-match": {
        "bad": [
            Case(_ami_pool(amiSelectorTerms=[
                {"name": "amazon-eks-node-al2023-x86_64-standard-1.33-*"}], amiFamily="AL2023"),
                "g-class", label="EC2NodeClass pins the standard AMI for a GPU NodePool"),
            Case(_ami_pool(amiSelectorTerms=[{"alias": "windows2022@latest"}]), "g-class",
                 label="Windows EC2NodeClass for a GPU NodePool"),
        ],
        "good": [
            Case(_ami_pool(), label="alias al2023 (Karpenter picks the NVIDIA variant)"),
            Case(_ami_pool(amiSelectorTerms=[{"alias": "bottlerocket@v1.40.0"}]),
                 label="alias bottlerocket"),
            Case(_ami_pool(amiSelectorTerms=[
                {"name": "amazon-eks-node-al2023-x86_64-nvidia-1.33-*"}], amiFamily="AL2023"),
                label="EC2NodeClass pins the NVIDIA AMI"),
        ],
    },
    "node-ami-container-optimized": {
        "bad": [Case(_class_only(amiSelectorTerms=[{"alias": "al2@latest"}]), "pool-class",
                     label="EC2NodeClass on AL2"),
                Case(_class_only(amiSelectorTerms=[{"id": "ami-0123456789abcdef0"}],
                                 amiFamily="AL2"), "pool-class", label="EC2NodeClass amiFamily AL2")],
        "good": [Case(_class_only(), label="EC2NodeClass alias al2023"),
                 Case(_class_only(amiSelectorTerms=[{"alias": "bottlerocket@latest"}]),
                      label="EC2NodeClass alias bottlerocket")],
    },
    "launch-template-imdsv2": {
        "bad": [Case(_class_only(metadataOptions={"httpTokens": "optional"}), "pool-class",
                     label="EC2NodeClass IMDSv1")],
        "good": [Case(_class_only(metadataOptions=None),
                      label="EC2NodeClass without metadataOptions (CRD default: required)")],
    },
    "launch-template-imds-hop-limit": {
        "bad": [Case(_class_only(metadataOptions={"httpTokens": "required",
                                                  "httpPutResponseHopLimit": 3}),
                     "pool-class", label="EC2NodeClass hop limit 3")],
        "good": [Case(_class_only(metadataOptions={"httpTokens": "required"}),
                      config={"maxHopLimit": 1}, label="EC2NodeClass hop limit default 1")],
    },
    "launch-template-encrypted-volumes": {
        "bad": [Case(_class_only(blockDeviceMappings=[{"deviceName": "/dev/xvda", "ebs": {
            "volumeSize": "200Gi", "volumeType": "gp3"}}]), "pool-class",
                     label="EC2NodeClass volume without encrypted")],
        "good": [Case(_class_only(), label="EC2NodeClass encrypted volume"),
                 Case(_class_only(blockDeviceMappings=None),
                      label="EC2NodeClass with Karpenter's default (encrypted) root volume")],
    },
    "efa-interface-layout": {
        "bad": [Case(_class_only(networkInterfaces=[
            {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "efa"},
            {"networkCardIndex": 1, "deviceIndex": 0, "interfaceType": "efa-only"}]),
            "pool-class", label="EC2NodeClass with type efa (not in Karpenter's API)"),
                Case(_class_only(networkInterfaces=[
                    {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "efa-only"}]),
                     "pool-class", label="EC2NodeClass primary efa-only")],
        "good": [Case(_class_only(efa=4), label="EC2NodeClass current layout")],
    },
    "efa-interface-count": {
        "bad": [Case(efa_nodepool(efa=3), "a100-class", label="p4d NodePool, 3 EFA"),
                Case(efa_nodepool(types=("g5.2xlarge", "g6.2xlarge"), efa=1), "a100-class",
                     label="NodePool type without EFA"),
                Case([nodepool("fam", "fam", types=(), market="on-demand", taints=GPU_TAINT,
                               requirements=[{"key": "karpenter.k8s.aws/instance-family",
                                              "operator": "In", "values": ["p4d"]}]),
                      nodeclass("fam", efa=4)], "fam-class",
                     label="EFA EC2NodeClass for a NodePool listing no types")],
        "good": [Case(efa_nodepool(), label="p4d NodePool, 4 EFA"),
                 Case(efa_nodepool(name="g", types=("g5.48xlarge", "g6.48xlarge"), efa=1),
                      label="g5/g6.48xlarge NodePool, 1 EFA"),
                 Case(efa_nodepool(efa=0), label="EFA NodePool, Karpenter attaches the maximum")],
    },
    "efa-pool-single-subnet": {
        "bad": [Case(efa_nodepool(subnets=("private-a", "private-b")), "a100-class",
                     label="EFA EC2NodeClass with two subnets"),
                Case([_subnet("private-a", **{"kubernetes.io/role/internal-elb": "1"}),
                      _subnet("private-b", **{"kubernetes.io/role/internal-elb": "1"}),
                      *efa_nodepool(subnetSelectorTerms=[{"tags": {
                          "kubernetes.io/role/internal-elb": "*"}}])], "a100-class",
                     label="EFA EC2NodeClass tags matching two subnets")],
        "good": [Case(efa_nodepool(), label="EFA EC2NodeClass with one subnet"),
                 Case([_subnet("private-a", Name="pool-a"), _subnet("private-b", Name="pool-b"),
                       *efa_nodepool(subnetSelectorTerms=[{"tags": {"Name": "pool-a"}}])],
                      label="EFA EC2NodeClass tags matching one subnet"),
                 Case([nodepool("eval", "eval-spot", taints=GPU_TAINT),
                       nodeclass("eval", subnets=("private-a", "private-b", "private-c"))],
                      label="non-EFA NodePool over three subnets")],
    },
})
