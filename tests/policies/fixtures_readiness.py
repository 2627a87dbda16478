"""Fixtures of the readiness rules (policies/readiness.py); merged into policy_fixtures.FIXTURES."""

from __future__ import annotations

from typing import Optional

from policy_fixtures import (
    ATTACH,
    CLUSTER,
    IN,
    NG,
    ROLE,
    ROLE_POLICY,
    SG,
    Case,
    R,
    cluster_props,
    doc,
    helm,
    ng_props,
    rid,
)

ACCOUNT = "123456789012"
MANAGED = "arn:aws:iam::aws:policy/"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
INSTANCE_PROFILE = "aws:iam/instanceProfile:InstanceProfile"
POLICY = "aws:iam/policy:Policy"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
ASG_TAG = "aws:autoscaling/tag:Tag"
POD_IDENTITY = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
CHART_V4 = "kubernetes:helm.sh/v4:Chart"
NODEPOOL = "kubernetes:karpenter.sh/v1:NodePool"
TRUST_EC2 = doc({"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                 "Action": "sts:AssumeRole"})
POD_TRUST = doc({"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
                 "Action": ["sts:AssumeRole", "sts:TagSession"]})


# ----------------------------------------------------------------------------------------------
# node-role-can-bootstrap
# ----------------------------------------------------------------------------------------------
def role(name: str, trust: str = TRUST_EC2, **inputs) -> dict:
    """A role whose physical name is `<name>-name` (what attachments' `role` holds)."""
    return R(ROLE, name, {"assumeRolePolicy": trust, **inputs},
             outputs={"arn": f"arn:aws:iam::{ACCOUNT}:role/{name}-name", "name": f"{name}-name"},
             rid=f"{name}-name")


def attach(role_name: str, *policies: str) -> list:
    return [R(ATTACH, f"{role_name}-{p}", {"role": f"{role_name}-name",
                                           "policyArn": p if ":" in p else MANAGED + p})
            for p in policies]


def node_stack(*policies: str, extra: Optional[list] = None, **role_inputs) -> list:
    """A node group running as role `node` with `policies` attached."""
    return [role("node", **role_inputs), *attach("node", *policies),
            R(NG, "pool", ng_props(nodeRoleArn=f"arn:aws:iam::{ACCOUNT}:role/node-name")),
            *(extra or [])]


WORKER, MINIMAL = "AmazonEKSWorkerNodePolicy", "AmazonEKSWorkerNodeMinimalPolicy"
PULL, READ_ONLY = "AmazonEC2ContainerRegistryPullOnly", "AmazonEC2ContainerRegistryReadOnly"


def role_policy(role_name: str, *statements) -> dict:
    return R(ROLE_POLICY, f"{role_name}-inline", {"role": f"{role_name}-name",
                                                  "policy": doc(*statements)})


DENY_DESCRIBE = {"Sid": "NoDescribe", "Effect": "Deny", "Action": "ec2:Describe*",
                 "Resource": "*"}

# ----------------------------------------------------------------------------------------------
# eks-private-endpoint-reachable
# ----------------------------------------------------------------------------------------------
CLUSTER_SG = "sg-cluster"


def private_cluster(public: bool = False, **vpc_over) -> dict:
    vpc = {"endpointPrivateAccess": True, "endpointPublicAccess": public,
           "subnetIds": [rid("private-a")], "clusterSecurityGroupId": CLUSTER_SG, **vpc_over}
    # clusterSecurityGroupId is an output; `trainyard check` lays inputs over outputs key by key,
    # so the inputs' vpcConfig repeats it.
    return R(CLUSTER, "cluster", cluster_props(vpcConfig=dict(vpc)),
             outputs={"name": "cluster-name", "vpcConfig": dict(vpc)}, rid="cluster-name")


def api_rule(name: str = "api-from-vpn", sg: str = CLUSTER_SG, port: int = 443,
             protocol: str = "tcp", **source) -> dict:
    source = source or {"cidrIpv4": "10.100.8.0/24"}
    return R(IN, name, {"securityGroupId": sg, "ipProtocol": protocol, "fromPort": port,
                        "toPort": port, "description": "Kubernetes API from the VPN", **source})


RUNNER_SG = R(SG, "runner", {"description": "CI runner", "vpcId": rid("vpc")}, tags=True)
EXTRA_SG = R(SG, "api-extra", {"description": "API from the bastion", "vpcId": rid("vpc"),
                               "ingress": [{"protocol": "tcp", "fromPort": 443, "toPort": 443,
                                            "cidrBlocks": ["10.100.9.0/24"]}]}, tags=True)

# ----------------------------------------------------------------------------------------------
# gpu-pool-scale-from-zero
# ----------------------------------------------------------------------------------------------
POOL_LABELS = {"trainyard.io/pool": "a100", "trainyard.io/gpu": "A100-40GB"}
TEMPLATE = "k8s.io/cluster-autoscaler/node-template"


def pool(name: str = "pool", labels: Optional[dict] = None, min_size: int = 0,
         capacity: str = "ON_DEMAND") -> dict:
    props = ng_props(capacity=capacity, labels=dict(POOL_LABELS if labels is None else labels),
                     scalingConfig={"minSize": min_size, "desiredSize": 0, "maxSize": 4})
    return R(NG, name, props,
             outputs={"resources": [{"autoscalingGroups": [{"name": f"eks-{name}-asg"}]}]})


def karpenter(v4: bool = False) -> dict:
    chart = "oci://public.ecr.aws/karpenter/karpenter"
    if v4:
        return R(CHART_V4, "karpenter", {"chart": chart, "version": "1.8.1",
                                         "namespace": "kube-system"})
    return helm("karpenter", chart, "1.8.1", None)


def nodepool(pool_value: str = "a100") -> dict:
    return R(NODEPOOL, f"nodepool-{pool_value}", {
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": pool_value},
        "spec": {"template": {"metadata": {"labels": {"trainyard.io/pool": pool_value}},
                              "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws",
                                                        "kind": "EC2NodeClass",
                                                        "name": "default"}}}}})


def autoscaler(discover: Optional[str] = "cluster-name") -> dict:
    rel = helm("cluster-autoscaler", "cluster-autoscaler", "9.52.1",
               "https://kubernetes.github.io/autoscaler")
    values = {"rbac": {"serviceAccount": {"name": "cluster-autoscaler"}}}
    if discover:
        values["autoDiscovery"] = {"clusterName": discover}
    rel["inputs"]["values"] = values
    return rel


def autoscaler_role(*actions: str) -> list:
    return [role("ca", POD_TRUST),
            role_policy("ca", {"Effect": "Allow", "Action": list(actions), "Resource": "*"}),
            R(POD_IDENTITY, "ca-identity", {"clusterName": "cluster-name",
                                            "namespace": "kube-system",
                                            "serviceAccount": "cluster-autoscaler",
                                            "roleArn": f"arn:aws:iam::{ACCOUNT}:role/ca-name"})]


CA_ACTIONS = ("autoscaling:DescribeAutoScalingGroups", "autoscaling:SetDesiredCapacity",
              "autoscaling:TerminateInstanceInAutoScalingGroup", "ec2:DescribeInstanceTypes",
              "eks:DescribeNodegroup")


def asg_tags(name: str, *keys: str) -> list:
    return [R(ASG_TAG, f"{name}-tag-{i}", {"autoscalingGroupName": f"eks-{name}-asg",
                                           "tag": {"key": k, "value": "x",
                                                   "propagateAtLaunch": False}})
            for i, k in enumerate(keys)]


# ----------------------------------------------------------------------------------------------
# eks-version-in-standard-support
# ----------------------------------------------------------------------------------------------
def versioned(version: Optional[str], support: Optional[str] = "STANDARD") -> list:
    props = cluster_props()
    if version is None:
        props.pop("version")
    else:
        props["version"] = version
    if support:
        props["upgradePolicy"] = {"supportType": support}
    return [R(CLUSTER, "cluster", props, outputs={"name": "cluster-name"}, rid="cluster-name")]


NOV_27 = {"asOf": "2026-11-27"}


READINESS_FIXTURES: dict = {
    "node-role-can-bootstrap": {
        "bad": [
            Case(node_stack(MINIMAL, PULL), "node", label="minimal policy only"),
            Case(node_stack(WORKER), "node", label="no ECR pull"),
            Case(node_stack(WORKER, PULL, extra=[role_policy("node", DENY_DESCRIBE)]), "node",
                 label="deny DescribeInstances"),
            Case(node_stack(managedPolicyArns=[MANAGED + MINIMAL, MANAGED + READ_ONLY]), "node",
                 label="managedPolicyArns minimal"),
            Case([role("karpenter-node"), *attach("karpenter-node", MINIMAL, PULL),
                  R(ACCESS_ENTRY, "karpenter-entry", {
                      "clusterName": "cluster-name", "type": "EC2_LINUX",
                      "principalArn": f"arn:aws:iam::{ACCOUNT}:role/karpenter-node-name"})],
                 "karpenter-node", label="karpenter access entry"),
            Case([role("self-managed", inlinePolicies=[{"name": "describe", "policy": doc(
                      {"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"})}]),
                  R(INSTANCE_PROFILE, "profile", {"role": "self-managed-name"})],
                 "self-managed", label="instance profile without ECR"),
        ],
        "good": [
            Case(node_stack(WORKER, PULL)),
            Case(node_stack(extra=[role_policy("node", {
                "Effect": "Allow", "Action": ["ec2:Describe*", "ecr:*"], "Resource": "*"})]),
                label="inline wildcards"),
            Case(node_stack(f"arn:aws:iam::{ACCOUNT}:policy/node-boot", READ_ONLY,
                            extra=[R(POLICY, "node-boot", {"policy": doc({
                                "Effect": "Allow", "Action": "ec2:DescribeInstances",
                                "Resource": "*"})},
                                outputs={"arn": f"arn:aws:iam::{ACCOUNT}:policy/node-boot"})]),
                 label="customer policy by arn"),
            Case(node_stack(managedPolicyArns=[MANAGED + MINIMAL, MANAGED + READ_ONLY,
                                               MANAGED + "AmazonEKS_CNI_Policy"]),
                 label="CNI policy grants DescribeInstances"),
            Case(node_stack(WORKER, PULL, extra=[role_policy("node", {
                "Effect": "Deny", "Action": "ec2:TerminateInstances", "Resource": "*"})]),
                label="unrelated deny"),
        ],
    },
    "eks-private-endpoint-reachable": {
        "bad": [
            Case([private_cluster()], "cluster", label="no rule"),
            Case([private_cluster(), api_rule(sg="sg-other")], "cluster", label="wrong group"),
            Case([private_cluster(), api_rule(port=22)], "cluster", label="ssh only"),
            Case([private_cluster(), api_rule(protocol="udp")], "cluster", label="udp 443"),
            Case([private_cluster(), api_rule("api-open", cidrIpv4="0.0.0.0/0")], "api-open",
                 label="open to the internet"),
            Case([private_cluster(), api_rule("api-open6", cidrIpv6="::/0")], "cluster",
                 label="ipv6 open is no path"),
            Case([private_cluster(), api_rule(referencedSecurityGroupId=CLUSTER_SG)], "cluster",
                 label="self reference"),
            Case([private_cluster(), R(SG_RULE, "api-egress", {
                "type": "egress", "securityGroupId": CLUSTER_SG, "protocol": "tcp",
                "fromPort": 443, "toPort": 443, "cidrBlocks": ["10.100.8.0/24"]})], "cluster",
                label="egress rule"),
        ],
        "good": [
            Case([private_cluster(), api_rule()]),
            Case([private_cluster(), RUNNER_SG,
                  api_rule("api-from-runner", referencedSecurityGroupId=rid("runner"))],
                 label="from runner group"),
            Case([private_cluster(), R(SG_RULE, "api-legacy", {
                "type": "ingress", "securityGroupId": CLUSTER_SG, "protocol": "tcp",
                "fromPort": 0, "toPort": 65535, "cidrBlocks": ["10.100.8.0/24"],
                "description": "all TCP from the VPN"})], label="legacy rule"),
            Case([private_cluster(securityGroupIds=[rid("api-extra")]), EXTRA_SG],
                 label="inline ingress on an extra group"),
            Case([private_cluster(public=True, publicAccessCidrs=["203.0.113.0/24"])],
                 label="public endpoint"),
        ],
    },
    "gpu-pool-scale-from-zero": {
        "bad": [
            Case([pool()], "pool", label="nothing scales it"),
            Case([pool(), karpenter(), nodepool("h100")], "pool", label="no nodepool for pool"),
            Case([pool(), nodepool()], "pool", label="nodepool without karpenter"),
            Case([pool(), autoscaler()], "pool", label="autoscaler without template"),
            Case([pool(), autoscaler(discover=None), *autoscaler_role(*CA_ACTIONS)], "pool",
                 label="autoscaler without auto-discovery"),
            Case([pool(labels={**POOL_LABELS, "trainyard.io/efa": "true"}), autoscaler(),
                  *autoscaler_role(*CA_ACTIONS)], "pool", label="efa pool needs resource tag"),
            Case([pool(), autoscaler(), *asg_tags("pool", f"{TEMPLATE}/label/trainyard.io/pool")],
                 "pool", label="autoscaler missing taint tag"),
        ],
        "good": [
            Case([pool(), karpenter(), nodepool()], label="karpenter"),
            Case([pool(), karpenter(v4=True), nodepool()], label="karpenter chart v4"),
            Case([pool(), autoscaler(), *autoscaler_role(*CA_ACTIONS)],
                 label="autoscaler reads the node group"),
            Case([pool(), autoscaler(), *asg_tags(
                "pool", f"{TEMPLATE}/label/trainyard.io/pool", f"{TEMPLATE}/label/trainyard.io/gpu",
                f"{TEMPLATE}/taint/nvidia.com/gpu")], label="autoscaler template tags"),
            Case([pool(capacity="CAPACITY_BLOCK")], label="capacity block"),
            Case([pool(min_size=1)], label="min size 1"),
        ],
    },
    "eks-version-in-standard-support": {
        "bad": [
            Case(versioned("1.33"), "cluster", config=NOV_27, label="past standard support"),
            Case(versioned("1.33", support=None), "cluster", config=NOV_27,
                 label="past standard, upgrade policy unset"),
            Case(versioned("1.99"), "cluster", config=NOV_27, label="unknown version"),
            Case(versioned("1.33", "EXTENDED"), "cluster", config={"asOf": "2027-07-29"},
                 label="past extended support"),
            Case(versioned("1.34"), "cluster", config={"asOf": "2026-12-02"},
                 label="standard ends on the day"),
        ],
        "good": [
            Case(versioned("1.34"), config=NOV_27),
            Case(versioned("1.36"), config=NOV_27, label="1.36"),
            Case(versioned("1.33", "EXTENDED"), config=NOV_27, label="extended opt-in"),
            Case(versioned(None), config=NOV_27, label="no version"),
        ],
    },
}
