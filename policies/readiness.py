"""Deploy-readiness rules: would the platform work once `pulumi up` applied it?

Node identity (node roles can bootstrap), reachability (a private endpoint has a deployer path),
capacity (pools that start at zero have something that scales them), lifecycle (the Kubernetes
version is in EKS standard support on the plan's date). Scheduling lives in schedulability.py.

Facts these rules rely on live beside them, as data: policies/managed_policies.py (what the AWS
managed policies nodes use allow) and policies/eks_versions.py (the EKS support calendar).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple, Optional

from pulumi_policy import Severity

from .common import (
    EFA_LABEL,
    KARPENTER_NODEPOOL,
    MANDATORY,
    POOL_LABEL,
    Refs,
    Stack,
    UnknownValueError,
    as_int,
    get,
    is_open_cidr,
    items,
    peek,
    ports_cover,
    schema,
    short,
    stack_rule,
    truthy,
)
from .eks_versions import CALENDAR, minor, next_in_standard_support
from .managed_policies import AWS_MANAGED_ACTIONS, aws_managed_name
from .storage import listify, policy_document, statements
from .supply_chain import HELM_TYPES, chart_name

CLUSTER = "aws:eks/cluster:Cluster"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
POD_IDENTITY = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
POLICY = "aws:iam/policy:Policy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
POLICY_ATTACHMENT = "aws:iam/policyAttachment:PolicyAttachment"
INSTANCE_PROFILE = "aws:iam/instanceProfile:InstanceProfile"
SG = "aws:ec2/securityGroup:SecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
ASG_TAG = "aws:autoscaling/tag:Tag"


CLUSTER_SG = "vpcConfig.clusterSecurityGroupId"
ASG_NAME = "resources.0.autoscalingGroups.0.name"
CA_TEMPLATE = "k8s.io/cluster-autoscaler/node-template"


class CannotJudge(UnknownValueError):
    """'Cannot judge' for something other than a preview unknown (e.g. a managed policy the pack
    has no data for): the engine and `trainyard check` report it like an unknown value."""

    def __init__(self, message: str):
        Exception.__init__(self, message)
        self.unknown_type_sentinel = ""
        self.props = []
        self.message = message


# ----------------------------------------------------------------------------------------------
# IAM: what a role may do, from every policy the stack attaches to it
# ----------------------------------------------------------------------------------------------
def action_matches(pattern: str, action: str) -> bool:
    """IAM action matching: case-insensitive, `*` any run of characters, `?` one character
    (fnmatch-style, but without fnmatch's `[...]` classes, which IAM does not have)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, action, flags=re.IGNORECASE) is not None


class Statement(NamedTuple):
    effect: str
    actions: tuple
    negated: bool
    """NotAction: the statement covers every action its patterns do NOT match."""
    where: str

    def covers(self, action: str) -> bool:
        return any(action_matches(str(p), action) for p in self.actions) != self.negated


@dataclass
class Grants:
    statements: list = field(default_factory=list)
    unknown: list = field(default_factory=list)
    """Attached policies the pack cannot read (not in managed_policies.py, not in the stack)."""

    def denial(self, action: str) -> Optional[Statement]:
        """The Deny statement that covers `action` (conditions ignored: a Deny that may apply
        is treated as applying)."""
        return next((s for s in self.statements if s.effect == "Deny" and s.covers(action)),
                    None)

    def allows(self, action: str) -> bool:
        return self.denial(action) is None and any(
            s.effect == "Allow" and s.covers(action) for s in self.statements)


def document_statements(value: Any, where: str) -> list[Statement]:
    out = []
    for st in statements(policy_document(value)):
        negated = "NotAction" in st
        actions = listify(st.get("NotAction") if negated else st.get("Action"))
        out.append(Statement(str(st.get("Effect", "Allow")), tuple(actions), negated, where))
    return out


def _add_managed(stack: Stack, arn: str, grants: Grants) -> None:
    name = aws_managed_name(arn)
    if name in AWS_MANAGED_ACTIONS:
        grants.statements.append(Statement("Allow", tuple(AWS_MANAGED_ACTIONS[name]), False, name))
        return
    for pol in stack.of(POLICY):
        if peek(pol, "arn") == arn:
            grants.statements += document_statements(get(pol.props, "policy"),
                                                     f"policy {short(pol.urn)}")
            return
    grants.unknown.append(name or arn)


def _add_attached(stack: Stack, attachment, grants: Grants) -> None:
    try:
        arn = get(attachment.props, "policyArn")
    except UnknownValueError:  # a policy of this stack, not created yet: follow the dependency
        policies = stack.linked(attachment, "policyArn", stack.of(POLICY), keys=("arn",))
        if not policies:
            raise
        for pol in policies:
            grants.statements += document_statements(get(pol.props, "policy"),
                                                     f"policy {short(pol.urn)}")
        return
    if arn:
        _add_managed(stack, str(arn), grants)


def role_grants(stack: Stack, role) -> Grants:
    """Every statement the stack gives `role`: managed policies (its own managedPolicyArns,
    RolePolicyAttachment, PolicyAttachment), inline policies (inlinePolicies, RolePolicy)."""
    grants = Grants()
    for arn in items(get(role.props, "managedPolicyArns")):
        _add_managed(stack, str(arn), grants)
    for i, inline in enumerate(items(get(role.props, "inlinePolicies"))):
        grants.statements += document_statements(
            get(inline, "policy"), f"inline policy {get(inline, 'name') or i}")
    for rp in stack.of(ROLE_POLICY):
        if role in stack.linked(rp, "role", [role], keys=("name", "id")):
            grants.statements += document_statements(get(rp.props, "policy"),
                                                     f"role policy {short(rp.urn)}")
    for att in stack.of(ATTACHMENT):
        if role in stack.linked(att, "role", [role], keys=("name", "id")):
            _add_attached(stack, att, grants)
    for att in stack.of(POLICY_ATTACHMENT):
        if role in stack.linked(att, "roles", [role], keys=("name", "id")):
            _add_attached(stack, att, grants)
    return grants


# ----------------------------------------------------------------------------------------------
# Node identity
# ----------------------------------------------------------------------------------------------
NODE_ACCESS_ENTRY_TYPES = ("EC2_LINUX", "EC2")

_JOIN = ("AL2023 nodes fail to join (nodeadm looks up the instance's private DNS name at boot and "
         "retries for ~10 min, then NodeCreationFailure)", "AmazonEKSWorkerNodePolicy")
_PULL = ("the kubelet cannot pull images from ECR (the VPC CNI and kube-proxy add-on images live "
         "there), so nodes never become Ready", "AmazonEC2ContainerRegistryPullOnly")
NODE_ACTIONS = {
    # The instance-id node-name feature gate of nodeadm is off by default, so every AL2023 node
    # calls DescribeInstances for its private DNS name (AWS_FACTS.md, 2026-11 deploy review).
    "ec2:DescribeInstances": _JOIN,
    # The kubelet image credential provider (ecr-credential-provider).
    "ecr:GetAuthorizationToken": _PULL,
    "ecr:BatchGetImage": _PULL,
    "ecr:GetDownloadUrlForLayer": _PULL,
}


def node_roles(stack: Stack) -> list:
    """Roles that nodes run as: node groups' nodeRoleArn, EC2 access entries (Karpenter and
    self-managed nodes), instance profiles."""
    roles = stack.of(ROLE)
    found: dict[str, Any] = {}

    def add(matches):
        for r in matches:
            found.setdefault(r.urn, r)

    for ng in stack.of(NODE_GROUP):
        add(stack.linked(ng, "nodeRoleArn", roles, keys=("arn",)))
    for entry in stack.of(ACCESS_ENTRY):
        if str(get(entry.props, "type") or "STANDARD") in NODE_ACCESS_ENTRY_TYPES:
            add(stack.linked(entry, "principalArn", roles, keys=("arn",)))
    for profile in stack.of(INSTANCE_PROFILE):
        add(stack.linked(profile, "role", roles, keys=("name", "id")))
    return list(found.values())


@stack_rule(
    name="node-role-can-bootstrap",
    description="Every IAM role that nodes run as can do what node bootstrap needs: "
                "ec2:DescribeInstances (AL2023 nodeadm) and ECR image pulls (kubelet).",
    family="readiness", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("aws-docs:create-node-role", "aws-docs:al2023-nodeadm",
                     "aws-docs:ecr-on-eks")),
    remediation="Attach arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy and "
                "AmazonEC2ContainerRegistryPullOnly (or ...ReadOnly) to the node role, and drop "
                "any Deny of ec2:DescribeInstances or ECR pulls. AmazonEKSWorkerNodeMinimalPolicy "
                "is for EKS Auto Mode nodes only.")
def node_role_can_bootstrap(stack: Stack, cfg, report):
    undecided = []
    for role in node_roles(stack):
        name = short(role.urn)
        grants = role_grants(stack, role)
        missing: dict[tuple, list[str]] = {}
        for action, why in NODE_ACTIONS.items():
            deny = grants.denial(action)
            if deny is not None:
                report(f"node role {name} denies {action} ({deny.where}): {why[0]}; remove "
                       f"{action} from that Deny.", role.urn)
            elif not grants.allows(action):
                missing.setdefault(why, []).append(action)
        if missing and grants.unknown:
            undecided.append(f"node role {name} attaches {', '.join(grants.unknown)}, which "
                             "policies/managed_policies.py does not describe; without it the "
                             "role cannot call "
                             + ", ".join(a for acts in missing.values() for a in acts))
            continue
        for (harm, fix), actions in missing.items():
            report(f"node role {name} cannot call {', '.join(actions)}: {harm}; attach {fix}.",
                   role.urn)
    if undecided:
        raise CannotJudge("; ".join(undecided))


# ----------------------------------------------------------------------------------------------
# Reachability
# ----------------------------------------------------------------------------------------------
class Path(NamedTuple):
    rule: Any
    where: str
    source: str
    open: bool


def _tcp(protocol: Any) -> bool:
    return str(protocol).lower() in ("tcp", "6", "-1", "all")


class _ClusterGroups:
    """The security groups on the control plane's ENIs: the EKS-created cluster security group
    (known only as the cluster's output) and any listed in vpcConfig.securityGroupIds."""

    def __init__(self, stack: Stack, cluster):
        try:
            present = "clusterSecurityGroupId" in (get(cluster.props, "vpcConfig") or {})
        except UnknownValueError:  # there, unknown until the cluster exists
            present = True
        if not present:
            raise CannotJudge(f"cluster {short(cluster.urn)}: its security group id (output "
                              "vpcConfig.clusterSecurityGroupId) is not in the plan, so the "
                              "rules that open it cannot be found")
        self.stack = stack
        self.extra = stack.linked(cluster, "vpcConfig.securityGroupIds", stack.of(SG))
        self.candidates = [cluster, *self.extra]
        try:
            self.raw = {str(i) for i in items(get(cluster.props, "vpcConfig.securityGroupIds"))}
        except UnknownValueError:
            self.raw = set()

    def hits(self, res, prop: str) -> set:
        """Which of the groups `res.props[prop]` names (urns, or raw ids of groups outside the
        stack). Raises UnknownValueError when neither the value nor its dependencies tell."""
        found = {c.urn for c in self.stack.linked(res, prop, self.candidates,
                                                  keys=(CLUSTER_SG, "id"))}
        value = peek(res, prop)
        if value in self.raw:
            found.add(value)
        return found


def _is_set(props, key: str) -> bool:
    """Whether `key` holds a value; an unknown value counts as set (it will hold one)."""
    try:
        return bool(get(props, key))
    except UnknownValueError:
        return True


def _cidr_paths(rule, where: str, cidrs) -> list[Path]:
    return [Path(rule, where, str(c), is_open_cidr(c)) for c in cidrs if c]


def private_endpoint_paths(stack: Stack, cluster) -> list[Path]:
    """Ingress that admits TCP 443 into the cluster's groups from outside them."""
    groups = _ClusterGroups(stack, cluster)
    paths: list[Path] = []
    for rule in stack.of(INGRESS_RULE):
        target = groups.hits(rule, "securityGroupId")
        p = rule.props
        if not target or not _tcp(get(p, "ipProtocol")) or \
                not ports_cover(get(p, "fromPort"), get(p, "toPort"), get(p, "ipProtocol"), 443):
            continue
        paths += _cidr_paths(rule, "", [get(p, "cidrIpv4"), get(p, "cidrIpv6")])
        if get(p, "prefixListId"):
            paths.append(Path(rule, "", f"prefix list {get(p, 'prefixListId')}", False))
        if _is_set(p, "referencedSecurityGroupId") and \
                not (groups.hits(rule, "referencedSecurityGroupId") & target):
            paths.append(Path(rule, "", "a referenced security group", False))
    for rule in stack.of(SG_RULE):
        p = rule.props
        if get(p, "type") != "ingress":
            continue
        target = groups.hits(rule, "securityGroupId")
        if not target or not _tcp(get(p, "protocol")) or \
                not ports_cover(get(p, "fromPort"), get(p, "toPort"), get(p, "protocol"), 443):
            continue
        paths += _cidr_paths(rule, "", items(get(p, "cidrBlocks")) +
                             items(get(p, "ipv6CidrBlocks")))
        if items(get(p, "prefixListIds")):
            paths.append(Path(rule, "", "a prefix list", False))
        if _is_set(p, "sourceSecurityGroupId") and not truthy(get(p, "self")) and \
                not (groups.hits(rule, "sourceSecurityGroupId") & target):
            paths.append(Path(rule, "", "a referenced security group", False))
    for sg in groups.extra:
        own = peek(sg, "id")
        for i, entry in enumerate(items(get(sg.props, "ingress"))):
            proto = get(entry, "protocol")
            if not _tcp(proto) or not ports_cover(get(entry, "fromPort"), get(entry, "toPort"),
                                                  proto, 443):
                continue
            where = f" (ingress[{i}])"
            paths += _cidr_paths(sg, where, items(get(entry, "cidrBlocks")) +
                                 items(get(entry, "ipv6CidrBlocks")))
            if items(get(entry, "prefixListIds")):
                paths.append(Path(sg, where, "a prefix list", False))
            if any(str(s) != own for s in items(get(entry, "securityGroups"))):
                paths.append(Path(sg, where, "a referenced security group", False))
    return paths


@stack_rule(
    name="eks-private-endpoint-reachable",
    description="A cluster with a private-only API endpoint has a security group rule admitting "
                "TCP 443 from the deployer's network (not from 0.0.0.0/0).",
    family="readiness", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("aws-docs:cluster-endpoint", "aws-docs:sec-group-reqs")),
    remediation="Add aws.vpc.SecurityGroupIngressRule(security_group_id=<cluster>.vpc_config."
                "cluster_security_group_id, ip_protocol='tcp', from_port=443, to_port=443, "
                "cidr_ipv4=<VPN, bastion or in-VPC CI runner CIDR> or "
                "referenced_security_group_id=<runner security group>, description=...). "
                "A GitHub-hosted runner cannot reach a private endpoint.")
def eks_private_endpoint_reachable(stack: Stack, cfg, report):
    for cluster in stack.of(CLUSTER):
        public = get(cluster.props, "vpcConfig.endpointPublicAccess")
        if public is None or truthy(public):  # EKS default is public; eks-endpoint-access judges
            continue
        name = short(cluster.urn)
        paths = private_endpoint_paths(stack, cluster)
        for path in paths:
            if path.open:
                report(f"security group rule {short(path.rule.urn)}{path.where} opens the private "
                       f"API endpoint of cluster {name} to {path.source}: that admits everything "
                       "that can route into the VPC (peered networks, every VPN user, every pod "
                       "and instance), not a deployer path; admit only the VPN, bastion or CI "
                       "runner network (its CIDR or security group).", path.rule.urn)
        if not any(not p.open for p in paths):
            report(f"cluster {name} has a private-only API endpoint (endpointPublicAccess false) "
                   "and no security group rule admits TCP 443 to its cluster security group from "
                   "outside it: the EKS-created group admits only itself, so the machine running "
                   "`pulumi up` (every Helm release and Kubernetes object), kubectl and CI cannot "
                   "connect. Add a SecurityGroupIngressRule on vpc_config.cluster_security_"
                   "group_id for tcp/443 from the VPN, bastion or CI runner CIDR (cidr_ipv4) or "
                   "security group (referenced_security_group_id).", cluster.urn)


# ----------------------------------------------------------------------------------------------
# Capacity
# ----------------------------------------------------------------------------------------------
def _labels(props) -> Mapping:
    labels = get(props, "labels")
    return labels if isinstance(labels, Mapping) else {}


def _installs(stack: Stack, chart: str) -> list:
    return [r for r in stack.of(*HELM_TYPES) if chart_name(r.props) == chart]


def _nodepool_pools(stack: Stack) -> set:
    pools = set()
    for np in stack.of(KARPENTER_NODEPOOL):
        labels = get(np.props, "spec.template.metadata.labels")
        if isinstance(labels, Mapping) and POOL_LABEL in labels:
            pools.add(str(labels[POOL_LABEL]))
    return pools


def _autoscaler_roles(stack: Stack, release, values) -> list:
    """The IAM roles cluster-autoscaler runs as: Pod Identity associations for its service
    account in the release's namespace, or the IRSA role-arn annotation in its values."""
    namespace = get(release.props, "namespace") or "default"
    account = get(values, "rbac.serviceAccount.name")
    roles = stack.of(ROLE)
    found = []
    for assoc in stack.of(POD_IDENTITY):
        sa = str(get(assoc.props, "serviceAccount") or "")
        if get(assoc.props, "namespace") == namespace and (
                sa == account if account else "cluster-autoscaler" in sa):
            found += stack.linked(assoc, "roleArn", roles, keys=("arn",))
    annotations = get(values, "rbac.serviceAccount.annotations")
    if isinstance(annotations, Mapping) and "eks.amazonaws.com/role-arn" in annotations:
        arn = annotations["eks.amazonaws.com/role-arn"]
        found += [r for r in roles if peek(r, "arn") == arn]
    return found


def _autoscaler_gaps(stack: Stack, ng, release, values) -> tuple[list[str], list[str]]:
    """What cluster-autoscaler lacks to build a template node for an empty managed node group:
    (label and taint tags, resource tags).

    Managed node groups' Auto Scaling groups carry the auto-discovery tags
    (k8s.io/cluster-autoscaler/enabled and .../<cluster>) from EKS itself; the node group's own
    `tags` do NOT reach the Auto Scaling group, so template tags must be aws.autoscaling.Tag.
    Since 1.24 (kubernetes/autoscaler#4491) the autoscaler reads an empty managed node group's
    labels and taints from eks:DescribeNodegroup, so those tags are optional when its role may
    call it; the GPU count it takes from the instance type. Nothing tells it about EFA devices:
    EFA pools need the resources/vpc.amazonaws.com/efa tag either way."""
    asg_tags = {str(get(t.props, "tag.key")) for t in stack.of(ASG_TAG)
                if stack.linked(t, "autoscalingGroupName", [ng], keys=(ASG_NAME,))}
    labels = _labels(ng.props)
    template: list[str] = []
    if not any(role_grants(stack, r).allows("eks:DescribeNodegroup")
               for r in _autoscaler_roles(stack, release, values)):
        wanted = [f"{CA_TEMPLATE}/label/{k}" for k in labels]
        wanted += [f"{CA_TEMPLATE}/taint/{get(t, 'key')}" for t in items(get(ng.props, "taints"))]
        template = [w for w in wanted if w not in asg_tags]
    efa_tag = f"{CA_TEMPLATE}/resources/vpc.amazonaws.com/efa"
    resources = [efa_tag] if str(labels.get(EFA_LABEL, "")).lower() == "true" and \
        efa_tag not in asg_tags else []
    return template, resources


def _autoscaler_reason(stack: Stack, ng, releases) -> Optional[str]:
    """None when some cluster-autoscaler release can scale `ng` up from zero, else why not."""
    cluster = peek(ng, "clusterName")
    reasons = []
    for rel in releases:
        values = get(rel.props, "values") or {}
        discovered = get(values, "autoDiscovery.clusterName")
        if not discovered or (cluster and str(discovered) != cluster):
            reasons.append(f"The cluster-autoscaler release {short(rel.urn)} does not "
                           "auto-discover this cluster: set its values "
                           f"autoDiscovery.clusterName={cluster or '<cluster name>'}")
            continue
        template, resources = _autoscaler_gaps(stack, ng, rel, values)
        if not template and not resources:
            return None
        fixes = []
        if template:
            shown = ", ".join(template[:3]) + (f" and {len(template) - 3} more"
                                               if len(template) > 3 else "")
            fixes.append("give its role eks:DescribeNodegroup (it then reads the empty node "
                         "group's labels and taints from EKS) or tag its Auto Scaling group "
                         f"with aws.autoscaling.Tag {shown}")
        if resources:
            fixes.append(f"tag its Auto Scaling group with {resources[0]}=<EFA interfaces per "
                         "node> (nothing else tells the autoscaler about EFA devices)")
        reasons.append(f"The cluster-autoscaler release {short(rel.urn)} cannot build a "
                       f"template node while the group is empty: {'; and '.join(fixes)}")
    return "; ".join(reasons)


@stack_rule(
    name="gpu-pool-scale-from-zero",
    description="Every node pool that starts at zero nodes has something that scales it up: "
                "Karpenter with a NodePool for the pool, or cluster-autoscaler that can build "
                "its template while it is empty.",
    family="readiness", level=MANDATORY, severity=Severity.MEDIUM, gpu=True,
    refs=Refs(other=("karpenter-docs:nodepools", "cluster-autoscaler:aws-scaling-from-zero",
                     "aws-docs:managed-node-groups")),
    remediation="Install Karpenter (chart karpenter) with a karpenter.sh/v1 NodePool whose "
                "spec.template.metadata.labels carry trainyard.io/pool=<pool>, or "
                "cluster-autoscaler with autoDiscovery.clusterName, eks:DescribeNodegroup on its "
                "role and, for EFA pools, the node-template/resources/vpc.amazonaws.com/efa tag "
                "on the Auto Scaling group; or raise the pool's minSize.")
def gpu_pool_scale_from_zero(stack: Stack, cfg, report):
    karpenter = _installs(stack, "karpenter")
    nodepools = _nodepool_pools(stack)
    autoscalers = _installs(stack, "cluster-autoscaler")
    for ng in stack.of(NODE_GROUP):
        # Exempt: a Capacity Block pool is sized to its reservation, not to demand. It can only
        # run while the block is active, and the block is paid for used or not, so minSize 0
        # there is not a pool waiting for an autoscaler.
        if get(ng.props, "capacityType") == "CAPACITY_BLOCK":
            continue
        if as_int(get(ng.props, "scalingConfig.minSize")) != 0:
            continue
        name = short(ng.urn)
        pool = str(_labels(ng.props).get(POOL_LABEL) or name)
        if karpenter and pool in nodepools:
            continue
        reason = _autoscaler_reason(stack, ng, autoscalers) if autoscalers else None
        if autoscalers and reason is None:
            continue
        head = (f"node group {name} starts at 0 nodes (minSize 0) and nothing scales it up: a "
                f"TrainJob sent to pool '{pool}' stays Pending.")
        if karpenter:
            fix = (f"Karpenter is installed but no NodePool labels its nodes {POOL_LABEL}={pool}: "
                   "add a karpenter.sh/v1 NodePool for the pool")
        elif pool in nodepools:
            fix = (f"A Karpenter NodePool for pool '{pool}' exists but Karpenter is not "
                   "installed: install the karpenter chart")
        elif reason:
            fix = reason
        else:
            fix = ("Install Karpenter with a NodePool for the pool, or cluster-autoscaler with "
                   "its auto-discovery tags")
        report(f"{head} {fix}.", ng.urn)


# ----------------------------------------------------------------------------------------------
# Lifecycle
# ----------------------------------------------------------------------------------------------
def plan_date(cfg) -> date:
    """The date the plan is judged on: config `asOf` (ISO date) or today."""
    as_of = str(cfg.get("asOf") or "").strip()
    if not as_of:
        return date.today()
    try:
        return date.fromisoformat(as_of)
    except ValueError:
        raise ValueError(f"eks-version-in-standard-support.asOf: expected an ISO date "
                         f"(YYYY-MM-DD), got {as_of!r}") from None


@stack_rule(
    name="eks-version-in-standard-support",
    description="The cluster's Kubernetes version is in EKS standard support on the plan's date "
                "(or in extended support when the cluster opts into it).",
    family="readiness", level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(other=("aws-docs:kubernetes-versions", "aws-docs:eks-upgrade-policy")),
    config=schema(asOf={
        "type": "string", "default": "",
        "description": "Judge the plan as of this ISO date (YYYY-MM-DD); empty means today."}),
    remediation="Upgrade the cluster one minor at a time to a version in standard support "
                "(policies/eks_versions.py), or set upgrade_policy.support_type='EXTENDED' "
                "(billed per cluster hour) until the upgrade lands. With 'STANDARD' EKS upgrades "
                "the control plane itself when standard support ends.")
def eks_version_in_standard_support(stack: Stack, cfg, report):
    today = plan_date(cfg)
    for cluster in stack.of(CLUSTER):
        version = get(cluster.props, "version")
        if version is None:
            continue  # EKS creates the cluster on its current default version
        name = short(cluster.urn)
        v = minor(version)
        entry = CALENDAR.get(v) if v else None
        if entry is None:
            report(f"cluster {name}: unknown Kubernetes version {version}: the EKS support "
                   "calendar (policies/eks_versions.py) has no dates for it; add it to the "
                   "calendar with its end of standard and extended support.", cluster.urn)
            continue
        support = str(get(cluster.props, "upgradePolicy.supportType") or "")
        approx = "" if entry.confirmed else " (approximate date)"
        target = next_in_standard_support(v, today)
        upgrade = (f"upgrade it, one minor at a time, to {target} or later" if target else
                   "upgrade it to a version in standard support")
        if today < entry.end_of_standard:
            continue
        if support == "EXTENDED":
            if today < entry.end_of_extended:
                continue  # opted in: allowed, and billed per cluster hour
            report(f"cluster {name} runs Kubernetes {v}, past the end of EKS extended support "
                   f"on {entry.end_of_extended}{approx}: EKS upgrades the control plane itself "
                   f"under the pinned node groups and add-ons; {upgrade}.", cluster.urn)
            continue
        days = (today - entry.end_of_standard).days
        ago = f"{days} days before {today}" if days else "the plan's date"
        then = ("EKS upgrades the control plane itself (upgradePolicy.supportType STANDARD), "
                f"under node groups and add-ons pinned to {v}"
                if support == "STANDARD" else
                "with upgradePolicy unset EKS keeps it on extended support, billed per cluster "
                "hour, without saying so")
        report(f"cluster {name} runs Kubernetes {v}, whose EKS standard support ended on "
               f"{entry.end_of_standard}{approx} ({ago}): {then}. "
               f"{upgrade[0].upper()}{upgrade[1:]}, or opt into extended support "
               f"(upgradePolicy.supportType EXTENDED, billed per cluster hour) until "
               f"{entry.end_of_extended}.", cluster.urn)
