"""LoadBalancerController: the AWS Load Balancer Controller (eks-charts, pinned) with its own EKS
Pod Identity role, turning the serving Ingresses into one Application Load Balancer.

The role's policy is built here from the controller's documented actions, kept as data
(components/data/serving/alb-controller-iam.json, with source and version). Two changes make it
narrower than the documented one: every condition on the controller's ownership tag
`elbv2.k8s.aws/cluster` requires this cluster's name (the documented policy only asks that the tag
exist, so one cluster's controller could change another's load balancers), and WAF, WAFv2, Shield
and Cognito are left out (switched off in the chart values), as are the Outposts customer-owned
IP pool actions (no Outposts). The documented `*` resources stay only where the action takes no
resource ARN (Describe*, acm:ListCertificates). Runs in kube-system on the system nodes, two
replicas.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws_context import aws_context
from components.services.identity import cluster_arn, pod_identity_trust_policy
from components.services.monitoring import deep_merge
from components.serving.helm import DATA, ON_SYSTEM_NODES, release, small, values_file

CHART = "aws-load-balancer-controller"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "aws-load-balancer-controller"


@dataclass(frozen=True)
class LoadBalancerControllerArgs:
    cluster_name: pulumi.Input[str]
    """EKS cluster name (required)."""
    provider: k8s.Provider
    """Kubernetes provider of the cluster (required)."""
    vpc_id: pulumi.Input[str]
    """The cluster's VPC (required; the controller does not have to ask IMDS)."""
    region: str
    """AWS region (required)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on the AWS resources. Default none."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Cluster, add-ons and system nodes. Default none."""


@functools.lru_cache(maxsize=1)
def policy_data() -> dict:
    with (DATA / "alb-controller-iam.json").open() as f:
        return json.load(f)


def controller_policy(partition: str, region: str, account: str, cluster_name: str,
                      vpc_id: str) -> str:
    """Least privilege for the controller of one cluster (see the module docstring)."""
    data = policy_data()
    g, tag = data["groups"], data["tagKey"]
    elb = f"arn:{partition}:elasticloadbalancing:{region}:{account}"
    vpc = f"arn:{partition}:ec2:{region}:{account}:vpc/{vpc_id}"
    lbs = [f"{elb}:targetgroup/*/*", f"{elb}:loadbalancer/net/*/*", f"{elb}:loadbalancer/app/*/*"]
    owned = {f"aws:ResourceTag/{tag}": cluster_name}
    requested = {f"aws:RequestTag/{tag}": cluster_name}
    sgs = f"arn:{partition}:ec2:{region}:{account}:security-group/*"
    # The controller makes ALBs only (Ingresses): application load balancers, their listeners
    # and rules.
    listeners = [f"{elb}:loadbalancer/app/*/*", f"{elb}:listener/app/*/*/*",
                 f"{elb}:listener-rule/app/*/*/*/*"]

    def stmt(sid: str, actions: list, resource, condition: Optional[dict] = None) -> dict:
        s = {"Sid": sid, "Effect": "Allow", "Action": sorted(set(actions)), "Resource": resource}
        if condition:
            s["Condition"] = condition
        return s

    statements = [
        stmt("ElbServiceLinkedRole", g["serviceLinkedRole"], "*",
             {"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}}),
        stmt("Describe", g["describe"], "*"),
        # No resource-level permissions for Describe* and acm:ListCertificates (AWS Service
        # Authorization Reference); the two actions that take an ARN are scoped.
        stmt("ListCertificates", g["listCertificates"], "*"),
        stmt("DescribeCertificates", g["describeCertificate"],
             f"arn:{partition}:acm:{region}:{account}:certificate/*"),
        stmt("VpcSecurityGroups", g["vpcSecurityGroups"], vpc),
        stmt("CreateSecurityGroupInVpc", g["createSecurityGroup"], vpc),
        stmt("CreateTaggedSecurityGroup", g["createSecurityGroup"], sgs,
             {"StringEquals": requested}),
        stmt("TagSecurityGroupOnCreate", g["tagSecurityGroupOnCreate"], sgs,
             {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup", **requested}}),
        stmt("RetagOwnSecurityGroups", g["retagOwnSecurityGroups"], sgs,
             {"StringEquals": owned, "Null": {f"aws:RequestTag/{tag}": "true"}}),
        stmt("OwnSecurityGroups", g["ownSecurityGroups"], sgs, {"StringEquals": owned}),
        # Rules on the nodes' security groups admitting the ALB: those groups carry no
        # controller tag, so this stays as documented (any security group, ingress only).
        stmt("NodeSecurityGroupIngress", g["securityGroupIngress"], sgs,
             {"ArnEquals": {"ec2:Vpc": vpc}}),
        stmt("CreateTagged", g["createTagged"], lbs, {"StringEquals": requested}),
        stmt("ListenersAndRules", g["listenersAndRules"], listeners),
        stmt("RetagOwn", g["retagOwn"], lbs,
             {"StringEquals": owned, "Null": {f"aws:RequestTag/{tag}": "true"}}),
        stmt("TagListenersAndRules", g["tagListenersAndRules"],
             [f"{elb}:listener/net/*/*/*", f"{elb}:listener/app/*/*/*",
              f"{elb}:listener-rule/net/*/*/*", f"{elb}:listener-rule/app/*/*/*"]),
        stmt("ModifyOwn", g["modifyOwn"], [*lbs, *listeners], {"StringEquals": owned}),
        stmt("TagOnCreate", g["tagOnCreate"], lbs,
             {"StringEquals": {"elasticloadbalancing:CreateAction": [
                 "CreateTargetGroup", "CreateLoadBalancer"], **requested}}),
        stmt("Targets", g["targets"], f"{elb}:targetgroup/*/*"),
        stmt("ListenerSettings", g["listenerSettings"], listeners),
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def values(cluster_name: pulumi.Input[str], region: str, vpc_id: pulumi.Input[str]) -> dict:
    # Outputs are added after the merge (deep_merge copies values, which Outputs refuse).
    merged = deep_merge(values_file("aws-load-balancer-controller"), {
        "region": region, "nodeSelector": dict(ON_SYSTEM_NODES),
        "resources": small("100m", "256Mi", "512Mi")})
    return {**merged, "clusterName": cluster_name, "vpcId": vpc_id}


class LoadBalancerController(pulumi.ComponentResource):
    role: aws.iam.Role
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: LoadBalancerControllerArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:LoadBalancerController", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account, region, partition = aws_context(self)
        source = pulumi.Output.all(partition, region, account, args.cluster_name) \
            .apply(lambda v: cluster_arn(*v))
        tags = {**args.tags, "Name": f"{name}-controller"}
        self.role = aws.iam.Role(
            f"{name}-controller", description="AWS Load Balancer Controller (EKS Pod Identity)",
            assume_role_policy=pulumi.Output.all(account, source)
            .apply(lambda v: pod_identity_trust_policy(*v)), tags=tags, opts=child)
        self.policy = aws.iam.RolePolicy(
            f"{name}-controller", role=self.role.id,
            policy=pulumi.Output.all(partition, region, account, args.cluster_name, args.vpc_id)
            .apply(lambda v: controller_policy(*v)), opts=child)
        self.association = aws.eks.PodIdentityAssociation(
            f"{name}-controller", cluster_name=args.cluster_name, namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT, role_arn=self.role.arn, tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)))
        self.release = release(
            f"{name}-release", CHART, NAMESPACE,
            values(args.cluster_name, args.region, args.vpc_id),
            pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[
                *args.depends_on, self.association, self.policy]))
        self.register_outputs({"roleArn": self.role.arn})
