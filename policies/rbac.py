"""RBAC and EKS access: what the Roles, ClusterRoles and bindings the plan declares let a subject
do, and which IAM principals EKS access entries make cluster administrators.

Only RBAC objects in the plan are judged. The RBAC a Helm chart installs (controllers' own
ClusterRoles: Karpenter, Kueue, the Kubeflow Trainer, kube-prometheus-stack...) is rendered by
Helm at apply time and is not in the plan; docs/policies.md says how to review it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatch
from typing import Any, Optional

from pulumi_policy import Severity

from .common import (
    ADVISORY,
    MANDATORY,
    Refs,
    Stack,
    get,
    items,
    peek,
    plain,
    resource_rule,
    schema,
    short,
    stack_rule,
)
from .kubernetes import CLUSTER_ROLE, CLUSTER_ROLE_BINDING, ROLE, ROLE_BINDING

ACCESS_POLICY_ASSOCIATION = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
ADMIN_ACCESS_POLICIES = ("AmazonEKSClusterAdminPolicy", "AmazonEKSAdminPolicy")
READ_VERBS = {"get", "list", "watch", "*"}
ESCALATION_VERBS = {"bind", "escalate", "impersonate"}
REMOTE_SHELL = {"pods/exec", "pods/attach", "nodes/proxy"}
WORKLOAD_RESOURCES = {"pods", "deployments", "daemonsets", "statefulsets", "replicasets", "jobs",
                      "cronjobs", "replicationcontrollers", "*"}
WRITE_VERBS = {"create", "update", "patch", "*"}

ALLOWED_ROLES = {
    "type": "array", "default": [],
    "items": {"type": "object", "required": ["name", "reason"], "properties": {
        "name": {"type": "string"}, "reason": {"type": "string"}}},
    "description": "Roles/ClusterRoles (metadata.name) allowed this permission, each with the "
                   "reason."}


def _allowed(props: Any, allowed: Sequence[Mapping]) -> bool:
    name = get(props, "metadata.name")
    return any(isinstance(a, Mapping) and a.get("name") == name and a.get("reason")
               for a in allowed)


def _lower(values: Any) -> set:
    return {str(v).lower() for v in items(values)}


def core_group(rule: Mapping) -> bool:
    groups = {str(g) for g in items(rule.get("apiGroups"))}
    return not groups or "" in groups or "*" in groups


def role_rules(props: Any) -> list[tuple[int, Mapping]]:
    return [(i, r) for i, r in enumerate(plain(items(get(props, "rules")))) if isinstance(r, Mapping)]


def role_name(args) -> str:
    return get(args.props, "metadata.name") or short(args.urn)


@resource_rule(
    name="rbac-no-secret-read",
    description="No Role or ClusterRole lets its subjects read Secrets (get/list/watch on "
                "secrets, or '*'), except `get` on named secrets (resourceNames); roles the "
                "stack needs are listed in config with the reason.",
    family="kubernetes", types=(ROLE, CLUSTER_ROLE), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV2_K8S_5",), cis=("4.1.2",)),
    config=schema(allowedRoles=ALLOWED_ROLES),
    remediation="Drop get/list/watch on secrets; mount the one secret the workload needs (or "
                "grant get with resourceNames). Credentials from AWS come through Pod Identity, "
                "not Kubernetes Secrets.")
def rbac_no_secret_read(args, cfg, report):
    if _allowed(args.props, cfg["allowedRoles"]):
        return
    for i, rule in role_rules(args.props):
        resources = _lower(rule.get("resources"))
        verbs = _lower(rule.get("verbs")) & READ_VERBS
        if not core_group(rule) or not ({"secrets", "*"} & resources) or not verbs:
            continue
        if rule.get("resourceNames") and verbs == {"get"}:
            continue
        report(f"rules[{i}] of {role_name(args)} grants {', '.join(sorted(verbs))} on secrets: "
               "every subject bound to it reads the namespace's credentials; drop it or limit "
               "it to get on resourceNames.")


@resource_rule(
    name="rbac-no-escalation-verbs",
    description="No Role or ClusterRole grants bind, escalate or impersonate (each lets a "
                "subject gain permissions it was not given) unless listed in config with the "
                "reason.",
    family="kubernetes", types=(ROLE, CLUSTER_ROLE), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_K8S_157", "CKV_K8S_158", "CKV2_K8S_3"), cis=("4.1.8",)),
    config=schema(allowedRoles=ALLOWED_ROLES),
    remediation="Remove the verb; grant the specific roles the subject needs instead.")
def rbac_no_escalation_verbs(args, cfg, report):
    if _allowed(args.props, cfg["allowedRoles"]):
        return
    for i, rule in role_rules(args.props):
        verbs = _lower(rule.get("verbs")) & ESCALATION_VERBS
        if verbs:
            report(f"rules[{i}] of {role_name(args)} grants {', '.join(sorted(verbs))}: a "
                   "subject bound to it can raise its own permissions; remove it.")


@resource_rule(
    name="rbac-no-exec-attach",
    description="No Role or ClusterRole grants a shell into pods or nodes: pods/exec, "
                "pods/attach or nodes/proxy (or '*' resources with create/get).",
    family="kubernetes", types=(ROLE, CLUSTER_ROLE), level=ADVISORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV2_K8S_2",), cis=("4.1.4",)),
    config=schema(allowedRoles=ALLOWED_ROLES),
    remediation="Remove the subresource; debugging access goes through an EKS access policy for "
                "people, time-bound, not through a workload's role.")
def rbac_no_exec_attach(args, cfg, report):
    if _allowed(args.props, cfg["allowedRoles"]):
        return
    for i, rule in role_rules(args.props):
        resources = _lower(rule.get("resources"))
        verbs = _lower(rule.get("verbs")) & {"create", "get", "*"}
        hit = resources & REMOTE_SHELL or ({"*"} & resources and "*" in verbs and
                                           core_group(rule))
        if hit and verbs:
            what = ", ".join(sorted(resources & REMOTE_SHELL)) or "every resource"
            report(f"rules[{i}] of {role_name(args)} grants {what} ({', '.join(sorted(verbs))}): "
                   "a shell in other pods; remove it.")


def _creates_workloads(props: Any) -> Optional[str]:
    for i, rule in role_rules(props):
        res = _lower(rule.get("resources")) & WORKLOAD_RESOURCES
        verbs = _lower(rule.get("verbs")) & WRITE_VERBS
        if res and verbs:
            return f"rules[{i}] ({', '.join(sorted(verbs))} on {', '.join(sorted(res))})"
    return None


@stack_rule(
    name="rbac-no-kube-system-workloads",
    description="Nothing the plan binds may create or change pods (or their controllers) in "
                "kube-system: not a Role there, not a ClusterRole bound there or cluster-wide "
                "to a non-system subject.",
    family="kubernetes", level=ADVISORY, severity=Severity.HIGH,
    refs=Refs(cis=("4.1.4",)),
    config=schema(allowedRoles=ALLOWED_ROLES),
    remediation="Bind the role in the namespace the workload manages, not kube-system or "
                "cluster-wide; kube-system runs node agents with host access.")
def rbac_no_kube_system_workloads(stack: Stack, cfg, report):
    allowed = cfg["allowedRoles"]
    for role in stack.of(ROLE):
        if peek(role, "metadata.namespace") == "kube-system" and \
                not _allowed(role.props, allowed):
            what = _creates_workloads(role.props)
            if what:
                report(f"Role {peek(role, 'metadata.name')} in kube-system grants {what}: "
                       "scope it to another namespace.", role.urn)
    cluster_roles = {peek(r, "metadata.name"): r for r in stack.of(CLUSTER_ROLE)}
    for b in stack.of(ROLE_BINDING, CLUSTER_ROLE_BINDING):
        if get(b.props, "roleRef.kind") != "ClusterRole":
            continue
        cluster_wide = b.resource_type == CLUSTER_ROLE_BINDING
        if not cluster_wide and peek(b, "metadata.namespace") != "kube-system":
            continue
        role = cluster_roles.get(get(b.props, "roleRef.name"))
        if role is None or _allowed(role.props, allowed) or _system_only(b.props):
            continue
        what = _creates_workloads(role.props)
        if what:
            where = "cluster-wide" if cluster_wide else "in kube-system"
            report(f"binding {peek(b, 'metadata.name')} grants ClusterRole "
                   f"{get(b.props, 'roleRef.name')} {where}, whose {what} reach kube-system: "
                   "bind it with a RoleBinding in the namespace it manages.", b.urn)


def _system_only(props: Any) -> bool:
    subjects = [s for s in plain(items(get(props, "subjects"))) if isinstance(s, Mapping)]
    return bool(subjects) and all(str(s.get("name", "")).startswith("system:")
                                  and s.get("kind") in ("User", "Group") for s in subjects)


@resource_rule(
    name="eks-access-no-admin-for-workloads",
    description="EKS access entries associate AmazonEKSClusterAdminPolicy or "
                "AmazonEKSAdminPolicy only with the deployer and admin principals the stack's "
                "config names; a workload role (nodes, pods, CI jobs) never gets them.",
    family="kubernetes", types=(ACCESS_POLICY_ASSOCIATION,), level=MANDATORY,
    severity=Severity.CRITICAL,
    refs=Refs(cis=("4.1.1", "5.5.1"), other=("aws-docs:eks-access-policies",)),
    config=schema(adminPrincipals={
        "type": "array", "items": {"type": "string"}, "default": [],
        "description": "IAM principal ARNs (shell patterns allowed) that may hold the EKS admin "
                       "access policies: the deploy role and the humans' admin role "
                       "(trainyard:cluster.adminRoleArns)."}),
    remediation="Associate a namespaced AmazonEKSEditPolicy/AmazonEKSViewPolicy (accessScope "
                "type namespace), or Kubernetes RBAC, with the workload's role; list real "
                "admin principals in adminPrincipals.")
def eks_access_no_admin_for_workloads(args, cfg, report):
    policy = str(get(args.props, "policyArn", "") or "").rsplit("/", 1)[-1]
    if policy not in ADMIN_ACCESS_POLICIES:
        return
    principal = str(get(args.props, "principalArn", "") or "")
    if any(fnmatch(principal, str(p)) for p in cfg["adminPrincipals"]):
        return
    report(f"{principal or 'a principal'} gets {policy}, and it is not one of the admin "
           "principals in adminPrincipals: give a workload role a namespaced edit/view policy "
           "or RBAC instead, or list the principal if it is an administrator.")
