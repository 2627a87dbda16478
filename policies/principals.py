"""Who a resource or trust policy lets in: wildcard principals and the conditions that really
restrict them, and principals from accounts the stack does not own or trust."""

from __future__ import annotations

import re
from typing import Any, Optional

from pulumi_policy import Severity

from .common import (
    MANDATORY,
    Refs,
    Stack,
    UnknownValueError,
    get,
    is_open_cidr,
    peek,
    schema,
    short,
    stack_rule,
)
from .storage import listify, policy_document, statements

ROLE = "aws:iam/role:Role"
KMS_KEY = "aws:kms/key:Key"
KMS_KEY_POLICY = "aws:kms/keyPolicy:KeyPolicy"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
ECR_REPO_POLICY = "aws:ecr/repositoryPolicy:RepositoryPolicy"
QUEUE_POLICY = "aws:sqs/queuePolicy:QueuePolicy"
TOPIC_POLICY = "aws:sns/topicPolicy:TopicPolicy"
SECRET_POLICY = "aws:secretsmanager/secretPolicy:SecretPolicy"

# Resource type -> the property holding its resource (or trust) policy.
POLICY_PROPS = {ROLE: "assumeRolePolicy", KMS_KEY: "policy", KMS_KEY_POLICY: "policy",
                BUCKET_POLICY: "policy", ECR_REPO_POLICY: "policy", QUEUE_POLICY: "policy",
                TOPIC_POLICY: "policy", SECRET_POLICY: "policy"}

RESTRICTING_KEYS = {
    # Global condition keys that pin who (or which resource, for service principals) can act:
    # AWS IAM guide "AWS global condition context keys" and "The confused deputy problem".
    "aws:principalorgid", "aws:principalorgpaths", "aws:principalaccount", "aws:principalarn",
    "aws:sourcearn", "aws:sourceaccount", "aws:sourceorgid", "aws:sourceorgpaths",
    "aws:sourcevpce", "aws:sourcevpc", "aws:sourceip", "aws:userid",
    # KMS key policies: the documented way to let "any principal of account X" use a key
    # through a service (KMS developer guide "kms:CallerAccount").
    "kms:calleraccount",
}
# Operators that make a key *required* to match a value. Negated operators (StringNotEquals,
# NotIpAddress, ArnNotLike, ...) admit everything else, `...IfExists` admits requests without the
# key, Null only tests presence: none of them restricts an Allow.
_POSITIVE = re.compile(r"^(ForAnyValue:|ForAllValues:)?(StringEquals|StringEqualsIgnoreCase|"
                       r"StringLike|ArnEquals|ArnLike|IpAddress)$")


def is_wildcard_principal(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        return any(p == "*" or (isinstance(p, str) and re.fullmatch(r"arn:aws[\w-]*:iam::\*:.*", p))
                   for p in listify(principal.get("AWS")))
    return False


def _concrete(key: str, value: Any) -> bool:
    values = [str(v) for v in listify(value)]
    if not values:
        return False
    for v in values:
        if v.strip() in ("", "*"):
            return False
        if key == "aws:sourceip" and is_open_cidr(v):
            return False
        if key in ("aws:principalarn", "aws:sourcearn") and re.search(r":\*(:|$)", v):
            return False  # arn:aws:iam::*:role/x names any account
    return True


def restricting_conditions(condition: Any) -> list[str]:
    """The condition keys of a statement that actually restrict who may act."""
    out = []
    if not isinstance(condition, dict):
        return out
    for op, block in condition.items():
        if not isinstance(block, dict) or not _POSITIVE.match(str(op)):
            continue
        for key, value in block.items():
            k = str(key).lower()
            if k in RESTRICTING_KEYS and _concrete(k, value):
                out.append(str(key))
    return out


RESTRICTING_ADVICE = ("aws:PrincipalOrgID or aws:PrincipalAccount (who), aws:SourceArn with "
                      "aws:SourceAccount (for a service acting on your behalf), aws:SourceVpce or "
                      "aws:SourceVpc (network path), kms:CallerAccount (KMS)")


def unrestricted_wildcards(doc: Optional[dict]) -> list[tuple[str, list[str]]]:
    """(statement label, its non-restricting condition keys) for every Allow statement with a
    wildcard principal and no restricting condition."""
    out = []
    for i, st in enumerate(statements(doc)):
        if st.get("Effect", "Allow") != "Allow" or not is_wildcard_principal(st.get("Principal")):
            continue
        if restricting_conditions(st.get("Condition")):
            continue
        cond = st.get("Condition") if isinstance(st.get("Condition"), dict) else {}
        others = [f"{op} {k}" for op, block in cond.items() if isinstance(block, dict)
                  for k in block]
        out.append((str(st.get("Sid") or i), others))
    return out


# ----------------------------------------------------------------------------------------------
# Cross-account principals
# ----------------------------------------------------------------------------------------------
_ARN_ACCOUNT = re.compile(r"^arn:aws[\w-]*:[\w-]+:[\w-]*:(\d{12}):")


def principal_accounts(principal: Any) -> list[str]:
    """12-digit account ids an `AWS` principal names (ARNs or bare ids)."""
    if not isinstance(principal, dict):
        return []
    out = []
    for p in listify(principal.get("AWS")):
        s = str(p)
        if re.fullmatch(r"\d{12}", s):
            out.append(s)
        else:
            m = _ARN_ACCOUNT.match(s)
            if m:
                out.append(m.group(1))
    return out


def _own_accounts(stack: Stack) -> set[str]:
    """Accounts the stack's own resources live in, from their known ARNs (outputs)."""
    out = set()
    for r in stack.resources:
        if not r.resource_type.startswith("aws:"):
            continue
        arn = peek(r, "arn")
        m = _ARN_ACCOUNT.match(str(arn)) if arn else None
        if m:
            out.add(m.group(1))
    return out


@stack_rule(
    name="no-cross-account-principal",
    description="Trust, bucket, KMS key, ECR, SQS, SNS and secret policies admit AWS principals "
                "only from the stack's own account or an account the environment's policy "
                "config lists.",
    family="iam", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_61",), other=("aws-docs:iam-cross-account-access",)),
    config=schema(allowedAccounts={
        "type": "array", "items": {"type": "string", "pattern": "^[0-9]{12}$"}, "default": [],
        "description": "Other AWS accounts (12-digit ids) trusted by this environment, e.g. a "
                       "central CI or log-archive account. The stack's own account (from its "
                       "resources' ARNs) is always allowed."}),
    remediation="Remove the foreign principal, or list its account under "
                "no-cross-account-principal.allowedAccounts in policies/config/<env>.json with "
                "the reason in the pull request.")
def no_cross_account_principal(stack: Stack, cfg, report):
    allowed = set(cfg["allowedAccounts"])
    own: Optional[set[str]] = None
    for res in stack.of(*POLICY_PROPS):
        doc = policy_document(get(res.props, POLICY_PROPS[res.resource_type]))
        for i, st in enumerate(statements(doc)):
            if st.get("Effect", "Allow") != "Allow":
                continue
            accounts = principal_accounts(st.get("Principal"))
            if not accounts:
                continue
            if own is None:
                own = _own_accounts(stack)
                if not own:  # fresh preview: no ARN known yet, own and foreign cannot be told apart
                    raise UnknownValueError("arn", ["arn"])
            for acct in sorted(set(accounts) - own - allowed):
                report(f"{POLICY_PROPS[res.resource_type]} statement {st.get('Sid') or i} of "
                       f"{short(res.urn)} admits principals of account {acct}, which is neither "
                       "this stack's account nor in no-cross-account-principal.allowedAccounts: "
                       "remove it or list the account in policies/config/<env>.json.", res.urn)
