"""Identity and IAM rules: managed-policy attachments, policy documents, trust policies, KMS."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, NamedTuple, Optional

from pulumi_policy import Severity

from . import iam_db
from .common import (
    ADVISORY,
    MANDATORY,
    Refs,
    Stack,
    get,
    items,
    peek,
    resource_rule,
    schema,
    short,
    stack_rule,
    truthy,
)
from .managed_policies import aws_managed_name
from .principals import POLICY_PROPS, RESTRICTING_ADVICE, unrestricted_wildcards
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
BROAD_POLICIES = ("PowerUserAccess", "IAMFullAccess", "AmazonS3FullAccess", "AmazonEC2FullAccess",
                  "SecretsManagerReadWrite")
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


@resource_rule(
    name="no-wildcard-principal",
    description="Resource and trust policies allow Principal '*' only with a condition that "
                "restricts who can act (aws:PrincipalOrgID, aws:PrincipalAccount, aws:SourceArn, "
                "aws:SourceAccount, aws:SourceVpce, ...); any other condition does not count.",
    family="iam", types=tuple(POLICY_PROPS), level=MANDATORY, severity=Severity.CRITICAL,
    refs=Refs(checkov=("CKV_AWS_33", "CKV_AWS_70", "CKV_AWS_283"),
              other=("aws-docs:confused-deputy", "aws-docs:global-condition-keys")),
    remediation="Name the principals (account roles, service principals), or add a positive "
                "condition (StringEquals / ArnLike / IpAddress, not ...IfExists or a negated "
                f"operator) on {RESTRICTING_ADVICE}. aws:SecureTransport or aws:UserAgent "
                "alone do not restrict who can act.")
def no_wildcard_principal(args, cfg, report):
    key = POLICY_PROPS[args.resource_type]
    for sid, others in unrestricted_wildcards(policy_document(get(args.props, key))):
        has = f" (its condition {', '.join(others)} does not restrict who can act)" if others \
            else " without a condition"
        report(f"{key} statement {sid} allows Principal '*'{has}: name the principals or add a "
               f"positive condition on {RESTRICTING_ADVICE}.")


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


# ----------------------------------------------------------------------------------------------
# IAM semantics: wildcards expanded through the action database (policies/iam_db.py)
# ----------------------------------------------------------------------------------------------
_ARN_ID = re.compile(r"^arn:[^:]*:([^:]*):[^:]*:[^:]*:(.*)$")


def wild_resource(resource: Any) -> bool:
    """`*`, or an ARN whose resource part names no particular resource (`role/*`, `*`,
    `bucket/*` with the bucket itself a wildcard, ...)."""
    r = str(resource)
    if r.strip() == "*":
        return True
    m = _ARN_ID.match(r)
    if not m:
        return False
    service, rest = m.group(1), m.group(2)
    if service == "s3":  # bucket[/key]: no type prefix, a bucket name is not a wildcard
        return rest.startswith("*")
    return bool(re.fullmatch(r"([\w-]+[/:])?\*(/\*)?", rest)) or rest == ""


class Grant(NamedTuple):
    res: Any            # the plan resource carrying the statement
    where: str          # "policy", "inlinePolicies[0]"
    sid: str
    actions: frozenset  # expanded, canonical case
    resources: list
    condition: dict

    def any_resource(self) -> bool:
        return any(wild_resource(r) for r in self.resources)

    def lower(self) -> set[str]:
        return {a.lower() for a in self.actions}


def grants_of(res, where: str, doc: Optional[dict]) -> list[Grant]:
    out = []
    for i, st in enumerate(statements(doc)):
        if not _allows(st):
            continue
        if "NotAction" in st:
            excluded = iam_db.expand_all(listify(st.get("NotAction")))
            actions = iam_db.expand("*") - excluded
        else:
            actions = iam_db.expand_all(listify(st.get("Action")))
        resources = ["*"] if "NotResource" in st else [str(r) for r in listify(st.get("Resource"))]
        out.append(Grant(res, where, str(st.get("Sid") or i), actions, resources,
                         st.get("Condition") if isinstance(st.get("Condition"), dict) else {}))
    return out


def _grants(args) -> list[Grant]:
    return [g for where, doc in permission_documents(args) for g in grants_of(args, where, doc)]


def _service_wildcards(args) -> list[tuple[str, str, bool]]:
    """(where, `svc:*` element, on any resource?) for every Allow of a whole service."""
    out = []
    for where, doc in permission_documents(args):
        for i, st in enumerate(statements(doc)):
            if not _allows(st):
                continue
            anyres = "NotResource" in st or any(wild_resource(r) for r in listify(st.get("Resource")))
            for a in listify(st.get("Action")):
                if isinstance(a, str) and re.fullmatch(r"[\w*-]+:\*", a.strip()):
                    out.append((f"{where} statement {st.get('Sid') or i}", a.strip(), anyres))
    return out


@resource_rule(
    name="iam-no-service-wildcard-on-all-resources",
    description="No policy allows a whole service (`s3:*`, `ec2:*`, `*:*`) on every resource.",
    family="iam", types=(ROLE, ROLE_POLICY, POLICY), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_62", "CKV_AWS_290", "CKV_AWS_355"),
              trivy=("AWS-0057",), other=("aws-docs:iam-least-privilege",)),
    remediation="List the actions the workload calls (the rule's message names how many the "
                "wildcard grants) and scope Resource to the ARNs it touches.")
def iam_no_service_wildcard_on_all_resources(args, cfg, report):
    for where, action, anyres in _service_wildcards(args):
        if anyres:
            n = len(iam_db.expand(action))
            report(f"{where} allows {action} ({n} actions in {iam_db.database_version()}) on "
                   "every resource: list the needed actions and scope Resource to ARNs.")


@resource_rule(
    name="iam-service-wildcard-actions",
    description="Policies list actions rather than a whole service (`s3:*`), even on a "
                "specific resource.",
    family="iam", types=(ROLE, ROLE_POLICY, POLICY), level=ADVISORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_AWS_63",), other=("aws-docs:iam-least-privilege",)),
    remediation="Replace `svc:*` with the actions used (e.g. s3:GetObject, s3:PutObject, "
                "s3:ListBucket): `s3:*` on a bucket includes s3:PutBucketPolicy and "
                "s3:DeleteBucket.")
def iam_service_wildcard_actions(args, cfg, report):
    for where, action, anyres in _service_wildcards(args):
        if not anyres:
            risky = sorted(a for a in iam_db.expand(action)
                           if iam_db.access_level(a) == "Permissions management")
            report(f"{where} allows {action} ({len(iam_db.expand(action))} actions, "
                   f"{len(risky)} of them permissions management, e.g. "
                   f"{', '.join(risky[:2]) or 'none'}): list the actions the workload needs.")


def _names(actions: set[str], wanted: frozenset[str]) -> list[str]:
    return sorted(a for a in actions if a.lower() in wanted)


@resource_rule(
    name="iam-no-credential-exposure",
    description="No policy allows actions that hand out credentials (sts:AssumeRole, "
                "iam:CreateAccessKey, secrets of other services, ec2:GetPasswordData, ...) on "
                "every resource.",
    family="iam", types=(ROLE, ROLE_POLICY, POLICY), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_287",), other=("cloudsplaining:CredentialsExposure",
                                                 "policy_sentry:credentials-exposure")),
    config=schema(allowedActions={
        "type": "array", "items": {"type": "string"}, "default": ["ecr:GetAuthorizationToken"],
        "description": "Credential actions that may stay on Resource '*' (ECR's token action "
                       "cannot be scoped and only authenticates pulls the registry policy "
                       "allows)."}),
    remediation="Scope the action to the roles/users/secrets the workload needs (e.g. "
                "sts:AssumeRole on arn:aws:iam::<account>:role/<role>), or drop it.")
def iam_no_credential_exposure(args, cfg, report):
    allowed = {a.lower() for a in cfg["allowedActions"]}
    wanted = iam_db.credentials_exposure() - allowed
    for g in _grants(args):
        if g.any_resource():
            hits = _names(set(g.actions), wanted)
            if hits:
                report(f"{g.where} statement {g.sid} allows {', '.join(hits[:4])}"
                       f"{' ...' if len(hits) > 4 else ''} on every resource: these hand out "
                       "credentials; scope them to named ARNs.")


@resource_rule(
    name="iam-no-data-exfiltration",
    description="No policy allows bulk data reads (s3:GetObject, secretsmanager:GetSecretValue, "
                "ssm:GetParameter*, kms:Decrypt, ...) or resource-exposure actions (resource "
                "policies, sharing) on every resource without a condition.",
    family="iam", types=(ROLE, ROLE_POLICY, POLICY), level=ADVISORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_AWS_288", "CKV_AWS_289"),
              other=("cloudsplaining:DataExfiltration", "cloudsplaining:ResourceExposure")),
    remediation="Scope Resource to the buckets/secrets/parameters/keys the workload reads, or "
                "add a condition (aws:ResourceTag, kms:ViaService, s3:prefix).")
def iam_no_data_exfiltration(args, cfg, report):
    wanted = iam_db.DATA_READ | iam_db.resource_exposure()
    for g in _grants(args):
        if g.any_resource() and not g.condition:
            hits = _names(set(g.actions), wanted)
            if hits:
                report(f"{g.where} statement {g.sid} allows {', '.join(hits[:4])}"
                       f"{' ...' if len(hits) > 4 else ''} ({len(hits)} data-read or "
                       "resource-exposure actions) on every resource: scope it to ARNs.")


# ----------------------------------------------------------------------------------------------
# Per role: privilege escalation and managed policies (joins roles with their policies)
# ----------------------------------------------------------------------------------------------
ROLE_KEYS = ("name", "id", "arn")


def role_grants(stack: Stack, role) -> list[Grant]:
    out = [g for where, doc in permission_documents(role) for g in grants_of(role, where, doc)]
    for rp in stack.of(ROLE_POLICY):
        if role in stack.linked(rp, "role", [role], ROLE_KEYS):
            out += [g for where, doc in permission_documents(rp) for g in grants_of(rp, where, doc)]
    policies = stack.of(POLICY)
    for att in stack.of(ATTACHMENT):
        if role in stack.linked(att, "role", [role], ROLE_KEYS):
            for pol in stack.linked(att, "policyArn", policies, ("arn", "id")):
                out += [g for where, doc in permission_documents(pol)
                        for g in grants_of(pol, where, doc)]
    return out


def _targets_self_or_any(g: Grant, own: set[str]) -> bool:
    return any(wild_resource(r) or r in own for r in g.resources)


def escalations(grants: list[Grant], own: set[str]) -> list[tuple[Grant, str]]:
    """(grant to report, why) for every escalation path the grants open."""
    out = []
    for g in grants:
        selfish = _names(set(g.actions), iam_db.SELF_ESCALATION)
        if selfish and _targets_self_or_any(g, own):
            out.append((g, f"{', '.join(selfish[:3])} on "
                           f"{'itself' if not g.any_resource() else 'any principal'} lets it "
                           "grant itself any permission"))
    passers = [g for g in grants if "iam:passrole" in g.lower() and g.any_resource()]
    launch = sorted({a for g in grants for a in g.actions
                     if a.lower() in iam_db.PASSROLE_LAUNCHERS})
    if passers and launch:
        out.append((passers[0], f"iam:PassRole on any role with {', '.join(launch[:3])}"
                                f"{' ...' if len(launch) > 3 else ''} lets it run code as any "
                                "role in the account"))
    return out


@stack_rule(
    name="iam-privilege-escalation",
    description="No role (or customer managed policy) can escalate: iam:PassRole on any role "
                "together with a compute launch (ec2:RunInstances, lambda:CreateFunction, "
                "eks:CreateNodegroup, sagemaker/glue jobs, ...), or policy/trust changes "
                "(iam:AttachRolePolicy, PutRolePolicy, CreatePolicyVersion, "
                "UpdateAssumeRolePolicy, CreateAccessKey, ...) on itself or on any principal. "
                "Wildcards are expanded with the IAM action database.",
    family="iam", level=MANDATORY, severity=Severity.CRITICAL,
    refs=Refs(checkov=("CKV_AWS_286", "CKV_AWS_110"), cis=("5.2.1",),
              other=("cloudsplaining:PrivilegeEscalation", "rhino-security:aws-iam-escalation")),
    remediation="Scope iam:PassRole to the one role the service launches (with "
                "iam:PassedToService), and never give a role IAM write actions on itself or '*'.")
def iam_privilege_escalation(stack: Stack, cfg, report):
    roles = stack.of(ROLE)
    attached: set[str] = set()
    for role in roles:
        own = {str(v) for v in (peek(role, "arn"), peek(role, "name")) if v}
        grants = role_grants(stack, role)
        attached |= {g.res.urn for g in grants}
        for g, why in escalations(grants, own):
            report(f"role {short(role.urn)}: {g.where} statement {g.sid} of {short(g.res.urn)}: "
                   f"{why}. Scope iam:PassRole to named roles and drop IAM write actions.",
                   g.res.urn)
    for pol in stack.of(POLICY):  # customer managed policies attached outside this stack
        if pol.urn in attached:
            continue
        grants = [g for where, doc in permission_documents(pol) for g in grants_of(pol, where, doc)]
        for g, why in escalations(grants, set()):
            report(f"policy {short(pol.urn)}: {g.where} statement {g.sid}: {why}.", pol.urn)


@stack_rule(
    name="iam-managed-policy-allow-list",
    description="AWS managed policies are attached only where the role's kind needs them (node, "
                "control plane, pod/add-on; list in policies/iam_db.py with sources): never "
                "AdministratorAccess, PowerUserAccess, IAMFullAccess, AmazonS3FullAccess and "
                "the like.",
    family="iam", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_274",), cis=("5.1.2", "5.2.1"),
              other=("aws-docs:create-node-role", "aws-docs:cluster-iam-role",
                     "aws-docs:eks-add-ons")),
    config=schema(extraAllowed={
        "type": "object", "default": {},
        "description": "Role kind (node, cluster, pod, other) -> further AWS managed policy "
                       "names this environment allows, with the reason in the PR."}),
    remediation="Detach the policy and give the role a scoped inline policy, or add the policy "
                "to iam-managed-policy-allow-list.extraAllowed.<kind> in policies/config/<env>.json "
                "if it is the documented minimum.")
def iam_managed_policy_allow_list(stack: Stack, cfg, report):
    roles = stack.of(ROLE)
    extra = {k: list(v) for k, v in (cfg["extraAllowed"] or {}).items()}

    def judge(arn: str, role, where) -> None:
        name = aws_managed_name(arn)
        if not name:
            return
        if role is None:
            if name in ADMIN_POLICIES + BROAD_POLICIES or name.endswith("FullAccess"):
                report(f"{short(where.urn)} attaches {name} to a role outside this stack: it "
                       "is broader than any platform role needs.", where.urn)
            return
        kinds = iam_db.role_kinds(policy_document(get(role.props, "assumeRolePolicy")))
        kind = "/".join(kinds)
        allowed = iam_db.allowed_managed(kinds, extra)
        if name not in allowed:
            report(f"{short(where.urn)} attaches AWS managed {name} to {kind} role "
                   f"{short(role.urn)}, which needs only {', '.join(sorted(allowed)) or 'inline policies'}"
                   ": replace it with a scoped inline policy (or allow it in extraAllowed."
                   f"{kinds[0]}).", where.urn)

    for role in roles:
        for arn in items(get(role.props, "managedPolicyArns")):
            judge(str(arn), role, role)
    for att in stack.of(ATTACHMENT):
        linked = stack.linked(att, "role", roles, ROLE_KEYS)
        judge(str(get(att.props, "policyArn", "")), linked[0] if linked else None, att)
