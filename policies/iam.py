"""Identity and IAM rules: managed-policy attachments, policy documents, trust policies, KMS."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from .common import (
    ADVISORY,
    MANDATORY,
    Refs,
    get,
    items,
    resource_rule,
    truthy,
)
from .storage import listify, policy_document, statements

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
POLICY = "aws:iam/policy:Policy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
KMS_KEY = "aws:kms/key:Key"
KMS_KEY_POLICY = "aws:kms/keyPolicy:KeyPolicy"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
ECR_REPO_POLICY = "aws:ecr/repositoryPolicy:RepositoryPolicy"

ADMIN_POLICIES = ("AdministratorAccess",)
ECR_WRITE_POLICIES = ("AmazonEC2ContainerRegistryFullAccess", "AmazonEC2ContainerRegistryPowerUser",
                      "AmazonElasticContainerRegistryPublicFullAccess")
READ_ONLY_VERBS = ("Describe", "List", "Get", "BatchGet", "Head", "Lookup", "Search", "View")


def permission_documents(args) -> Iterator[tuple[str, dict]]:
    """(where, document) for every permissions policy a resource carries."""
    p, t = args.props, args.resource_type
    if t in (ROLE_POLICY, POLICY):
        doc = policy_document(get(p, "policy"))
        if doc:
            yield "policy", doc
    elif t == ROLE:
        for i, inline in enumerate(items(get(p, "inlinePolicies"))):
            doc = policy_document(get(inline, "policy"))
            if doc:
                yield f"inlinePolicies[{i}]", doc


def managed_arns(args) -> list[str]:
    if args.resource_type == ATTACHMENT:
        return [str(get(args.props, "policyArn", ""))]
    if args.resource_type == ROLE:
        return [str(a) for a in items(get(args.props, "managedPolicyArns"))]
    return []


def _allows(st: dict) -> bool:
    return st.get("Effect", "Allow") == "Allow"


@resource_rule(
    name="iam-no-admin-access",
    description="No role gets AdministratorAccess or an Allow of '*' on '*'.",
    family="iam", types=(ROLE, ROLE_POLICY, POLICY, ATTACHMENT), level=MANDATORY,
    severity=Severity.CRITICAL,
    refs=Refs(checkov=("CKV_AWS_274", "CKV_AWS_62")),
    remediation="Attach least-privilege policies scoped to the actions and resources the role "
                "needs.")
def iam_no_admin_access(args, cfg, report):
    for arn in managed_arns(args):
        if arn.rsplit("/", 1)[-1] in ADMIN_POLICIES and ":aws:policy/" in arn:
            report(f"attaches {arn}: replace it with a least-privilege policy.")
    for where, doc in permission_documents(args):
        for st in statements(doc):
            if _allows(st) and "*" in listify(st.get("Action")) and "*" in listify(st.get("Resource")):
                report(f"{where} allows '*' on '*' (full admin): scope actions and resources.")


@resource_rule(
    name="iam-no-wildcard-actions",
    description="Policy statements do not allow every action ('*').",
    family="iam", types=(ROLE, ROLE_POLICY, POLICY), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_63",)),
    remediation="List the actions the workload needs instead of '*'.")
def iam_no_wildcard_actions(args, cfg, report):
    for where, doc in permission_documents(args):
        for i, st in enumerate(statements(doc)):
            if _allows(st) and "*" in listify(st.get("Action")):
                report(f"{where} statement {st.get('Sid') or i} allows Action '*': list the "
                       "needed actions.")


def _read_only(action: str) -> bool:
    verb = action.split(":", 1)[-1]
    return any(verb.startswith(v) for v in READ_ONLY_VERBS)


@resource_rule(
    name="iam-no-wildcard-resources",
    description="Write or permission-management actions are scoped to resources, not '*'.",
    family="iam", types=(ROLE, ROLE_POLICY, POLICY), level=ADVISORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_AWS_355", "CKV_AWS_290")),
    remediation="Replace Resource '*' with the ARNs the actions apply to, or add conditions "
                "(e.g. aws:ResourceTag) for actions that cannot be scoped.")
def iam_no_wildcard_resources(args, cfg, report):
    for where, doc in permission_documents(args):
        for i, st in enumerate(statements(doc)):
            if not _allows(st) or "*" not in listify(st.get("Resource")) or st.get("Condition"):
                continue
            writes = [a for a in listify(st.get("Action")) if isinstance(a, str) and a != "*"
                      and not _read_only(a)]
            if writes:
                report(f"{where} statement {st.get('Sid') or i} allows {', '.join(writes[:3])}"
                       f"{' ...' if len(writes) > 3 else ''} on Resource '*': scope it to ARNs "
                       "or add a condition.")


@resource_rule(
    name="iam-no-ecr-write-for-nodes",
    description="No role gets ECR write/admin managed policies; nodes pull read-only.",
    family="iam", types=(ROLE, ATTACHMENT), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(cis=("5.1.2", "5.1.3")),
    remediation="Use AmazonEC2ContainerRegistryReadOnly (or ...PullOnly) for node roles; give "
                "CI its own push role outside the cluster.")
def iam_no_ecr_write_for_nodes(args, cfg, report):
    for arn in managed_arns(args):
        if arn.rsplit("/", 1)[-1] in ECR_WRITE_POLICIES:
            report(f"attaches {arn}: nodes and pods need only "
                   "AmazonEC2ContainerRegistryReadOnly.")


def _principal_is_wildcard(principal) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        return "*" in listify(principal.get("AWS"))
    return False


@resource_rule(
    name="no-wildcard-principal",
    description="Resource and trust policies never allow '*' as principal without a condition.",
    family="iam", types=(ROLE, KMS_KEY, KMS_KEY_POLICY, BUCKET_POLICY, ECR_REPO_POLICY),
    level=MANDATORY, severity=Severity.CRITICAL,
    refs=Refs(checkov=("CKV_AWS_33", "CKV_AWS_70")),
    remediation="Name the principals (account roles, service principals), or add a condition "
                "such as aws:PrincipalOrgID / aws:SourceArn.")
def no_wildcard_principal(args, cfg, report):
    key = "assumeRolePolicy" if args.resource_type == ROLE else "policy"
    doc = policy_document(get(args.props, key))
    for i, st in enumerate(statements(doc)):
        if _allows(st) and _principal_is_wildcard(st.get("Principal")) and not st.get("Condition"):
            report(f"{key} statement {st.get('Sid') or i} allows Principal '*' without a "
                   "condition: name the principals or add a restricting condition.")


@resource_rule(
    name="irsa-trust-scoped",
    description="Roles trusted through the cluster's OIDC provider are scoped to a service "
                "account (a :sub condition).",
    family="iam", types=(ROLE,), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(cis=("5.2.1",)),
    remediation="Add Condition StringEquals {'<issuer>:sub': 'system:serviceaccount:<ns>:<sa>', "
                "'<issuer>:aud': 'sts.amazonaws.com'}, or use EKS Pod Identity instead.")
def irsa_trust_scoped(args, cfg, report):
    doc = policy_document(get(args.props, "assumeRolePolicy"))
    for i, st in enumerate(statements(doc)):
        if not _allows(st) or "sts:AssumeRoleWithWebIdentity" not in listify(st.get("Action")):
            continue
        cond = st.get("Condition") or {}
        keys = [k for op in cond.values() if isinstance(op, dict) for k in op]
        if not any(k.endswith(":sub") for k in keys):
            report(f"trust statement {st.get('Sid') or i} lets any service account of the "
                   "OIDC provider assume the role: add a ':sub' condition naming the service "
                   "account.")


@resource_rule(
    name="pod-identity-trust-policy",
    description="Roles for EKS Pod Identity trust pods.eks.amazonaws.com with sts:AssumeRole AND "
                "sts:TagSession.",
    family="iam", types=(ROLE,), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(cis=("5.2.1",), other=("aws-docs:pod-id-role",)),
    remediation="Trust statement: Principal {Service: 'pods.eks.amazonaws.com'}, Action "
                "['sts:AssumeRole', 'sts:TagSession'].")
def pod_identity_trust_policy(args, cfg, report):
    doc = policy_document(get(args.props, "assumeRolePolicy"))
    for i, st in enumerate(statements(doc)):
        principal = st.get("Principal")
        services = listify(principal.get("Service")) if isinstance(principal, dict) else []
        if not _allows(st) or "pods.eks.amazonaws.com" not in services:
            continue
        actions = set(listify(st.get("Action")))
        missing = [a for a in ("sts:AssumeRole", "sts:TagSession") if a not in actions]
        if missing:
            report(f"trust statement {st.get('Sid') or i} for pods.eks.amazonaws.com lacks "
                   f"{', '.join(missing)}: Pod Identity needs both sts:AssumeRole and "
                   "sts:TagSession.")


@resource_rule(
    name="kms-key-rotation",
    description="Symmetric KMS keys rotate automatically.",
    family="iam", types=(KMS_KEY,), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_AWS_7",), trivy=("AWS-0065",)),
    remediation="Set enable_key_rotation=True.")
def kms_key_rotation(args, cfg, report):
    spec = get(args.props, "customerMasterKeySpec", "SYMMETRIC_DEFAULT")
    usage = get(args.props, "keyUsage", "ENCRYPT_DECRYPT")
    if spec != "SYMMETRIC_DEFAULT" or usage != "ENCRYPT_DECRYPT":
        return
    if not truthy(get(args.props, "enableKeyRotation")):
        report("automatic key rotation is off: set enable_key_rotation=True.")
