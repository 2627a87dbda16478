"""Cluster: the EKS control plane and what every node needs.

KMS-encrypted secrets, every control-plane log type into a pre-created encrypted log group,
private API endpoint (public only for configured CIDRs) with TCP 443 opened on the cluster
security group to the declared deployer networks, access entries (authentication mode API), the
cluster and node IAM roles, the OIDC provider, pinned EKS managed add-ons, a small on-demand
system node group, and the Kubernetes provider later components use.

Creation order (and, reversed, deletion order):
    IAM, KMS, log group -> cluster -> pod-identity agent, vpc-cni, kube-proxy -> system nodes
    -> coredns, CSI drivers, node monitoring agent.
Kubernetes objects must depend on `k8s_dependencies` so `pulumi destroy` deletes them while the
cluster and its nodes still exist (docs/operations.md "Teardown order").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws_context import aws_context
from components.compute.addons import AddonPin, addon_configuration, addon_pins
from components.config import SYSTEM_POOL_NAME, ClusterConfig
from components.services.k8s_names import POOL_LABEL

CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
"""Every EKS control-plane log type (CKV_AWS_37 / CIS EKS 2.1.1)."""
CLUSTER_ADMIN_POLICY = "AmazonEKSClusterAdminPolicy"
POD_IDENTITY_SERVICE = "pods.eks.amazonaws.com"
SYSTEM_ROOT_VOLUME_GIB = 50
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly")
"""What a managed node needs to join and run (EKS user guide, "Amazon EKS node IAM role"):
AmazonEKSWorkerNodePolicy grants `ec2:DescribeInstances`, which AL2023's nodeadm calls at boot to
learn the instance's private DNS name (the node name; instance-id naming is off by default) and
retries for ~10 minutes before the node group fails with NodeCreationFailure; the minimal policy
grants only `eks-auth:AssumeRoleForPodIdentity` and is meant for EKS Auto Mode nodes. Image pulls
need the ECR pull-only policy. The CNI and CSI drivers get their own Pod Identity roles instead
of widening this one."""
API_PORT = 443


@dataclass(frozen=True)
class ClusterArgs:
    config: ClusterConfig
    """Typed `trainyard:cluster` section."""
    cluster_name: str
    """Physical EKS cluster name (required). Fixed rather than auto-named because the
    control-plane log group `/aws/eks/<name>/cluster` must exist, with retention and KMS, before
    the cluster does; otherwise EKS creates it unencrypted and never expiring."""
    vpc_id: pulumi.Input[str]
    """The network's VPC (required)."""
    subnet_ids: Sequence[pulumi.Input[str]]
    """Private subnets for the control-plane ENIs and the system nodes (required)."""
    region: str
    """AWS region, for `aws eks get-token` in the kubeconfig (required)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on every taggable resource. Default none."""


# ----------------------------------------------------------------------------------------------
# Pure policy and config builders
# ----------------------------------------------------------------------------------------------
def trust_policy(service: str, tag_session: bool = False, source_account: Optional[str] = None,
                 source_arn: Optional[str] = None) -> str:
    """Who may assume a role. Pod Identity roles name the account and cluster they serve, so no
    other cluster's agent can use them (confused deputy)."""
    statement: dict = {"Effect": "Allow", "Principal": {"Service": service},
                       "Action": ["sts:AssumeRole", "sts:TagSession"] if tag_session
                       else "sts:AssumeRole"}
    if source_account:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": source_account}}
        if source_arn:
            statement["Condition"]["ArnEquals"] = {"aws:SourceArn": source_arn}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]}, sort_keys=True)


def key_policy(account_id: str, partition: str, region: str,
               log_group: Optional[str] = None) -> str:
    """The account root administers the key (IAM policies then grant use). With `log_group`,
    CloudWatch Logs may use it for that log group only."""
    statements = [{"Sid": "AccountAdmin", "Effect": "Allow",
                   "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
                   "Action": "kms:*", "Resource": "*"}]
    if log_group:
        statements.append({
            "Sid": "CloudWatchLogs", "Effect": "Allow",
            "Principal": {"Service": f"logs.{region}.amazonaws.com"},
            "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                       "kms:Describe*"],
            "Resource": "*",
            "Condition": {"ArnEquals": {"kms:EncryptionContext:aws:logs:arn":
                                        f"arn:{partition}:logs:{region}:{account_id}:"
                                        f"log-group:{log_group}"}}})
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def cluster_kms_policy(key_arn: str) -> str:
    """What the cluster role needs to envelope-encrypt Kubernetes secrets with `key_arn`."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Resource": key_arn,
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"]}]},
        sort_keys=True)


def log_group_name(cluster_name: str) -> str:
    return f"/aws/eks/{cluster_name}/cluster"


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` (no stored credentials)."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": cluster_name,
        "clusters": [{"name": cluster_name,
                      "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": cluster_name,
                      "context": {"cluster": cluster_name, "user": cluster_name}}],
        "users": [{"name": cluster_name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region,
                     "--output", "json"],
            "interactiveMode": "Never"}}}],
    }, sort_keys=True)


def deployer_ingress_rules(config: ClusterConfig) -> list[dict]:
    """One TCP 443 ingress rule on the cluster security group per declared deployer network or
    security group (the EKS-created group admits only itself). Keys are stable logical-name
    suffixes, values the rule's arguments less the group id."""
    access = config.deployer_access
    rules = []
    for cidr in access.cidrs:
        slug = re.sub(r"[^0-9a-f]+", "-", cidr.lower()).strip("-")
        field_name = "cidr_ipv6" if ":" in cidr else "cidr_ipv4"
        rules.append({"slug": f"cidr-{slug}", field_name: cidr,
                      "description": f"Kubernetes API (443) from deployer network {cidr}"})
    for sg in access.security_group_ids:
        rules.append({"slug": sg, "referenced_security_group_id": sg,
                      "description": f"Kubernetes API (443) from deployer security group {sg}"})
    return rules


def endpoint_access(config: ClusterConfig) -> dict:
    """vpc_config endpoint settings: private always; public only for the configured CIDRs."""
    out = {"endpoint_private_access": True,
           "endpoint_public_access": config.endpoint_public_access}
    if config.endpoint_public_access:
        out["public_access_cidrs"] = list(config.public_access_cidrs)
    return out


def role_slug(role_arn: str) -> str:
    """A logical-name-safe slug of an IAM role ARN's name (stable across list reordering)."""
    name = role_arn.rsplit("/", 1)[-1]
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


def repair_thresholds(max_size: int) -> dict:
    """Stop auto-repair when many nodes fail at once (a bad AMI or AZ event, not a bad node);
    repair a few at a time. Counts, not percentages: one node of a 2-node pool is 50%."""
    return {"max_unhealthy_node_threshold_count": max(2, -(-max_size // 4)),
            "max_parallel_nodes_repaired_count": max(1, -(-max_size // 8))}


def metadata_options(hop_limit: int) -> dict:
    """IMDSv2 only (CKV_AWS_79); hop limit 2 lets pods reach IMDS through one hop, 1 blocks them."""
    return {"http_endpoint": "enabled", "http_tokens": "required",
            "http_put_response_hop_limit": hop_limit, "instance_metadata_tags": "disabled"}


def root_volume(device_name: str, size_gib: int) -> dict:
    return {"device_name": device_name, "ebs": {
        "volume_size": size_gib, "volume_type": "gp3", "encrypted": "true",
        "delete_on_termination": "true"}}


def tag_specifications(tags: Mapping[str, str]) -> list[dict]:
    """Tags EC2 puts on what the node group launches (instances, volumes, interfaces)."""
    return [{"resource_type": t, "tags": dict(tags)}
            for t in ("instance", "volume", "network-interface")]


# ----------------------------------------------------------------------------------------------
# Component
# ----------------------------------------------------------------------------------------------
class Cluster(pulumi.ComponentResource):
    name: pulumi.Output[str]
    arn: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    cluster_security_group_id: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    node_role: aws.iam.Role
    node_role_arn: pulumi.Output[str]
    kubernetes_version: str
    k8s_provider: k8s.Provider
    node_dependencies: list[pulumi.Resource]
    """What node groups must wait for: the cluster and the pre-node add-ons (CNI)."""
    k8s_dependencies: list[pulumi.Resource]
    """What every Kubernetes object must depend on: cluster, system nodes, every add-on."""

    def __init__(self, name: str, args: ClusterArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Cluster", name, None, opts)
        self._name, self._args = name, args
        self.kubernetes_version = args.config.kubernetes_version
        self._child = pulumi.ResourceOptions(parent=self)
        self._account, _, self._partition = aws_context(self)

        self._create_iam()
        self._create_encryption_and_logs()
        self._create_cluster()
        self._create_deployer_access()
        self._create_access_entries()
        self._create_addons(before_nodes=True)
        self._create_system_nodes()
        self._create_addons(before_nodes=False)
        self._create_k8s_provider()

        self.k8s_dependencies = [self.cluster, self.system_node_group, *self.addons.values(),
                                 *self.deployer_rules]
        self.register_outputs({
            "name": self.name, "arn": self.arn, "endpoint": self.endpoint,
            "clusterSecurityGroupId": self.cluster_security_group_id,
            "oidcProviderArn": self.oidc_provider_arn, "nodeRoleArn": self.node_role_arn,
        })

    # -- helpers ---------------------------------------------------------------------------
    def _tags(self, name: str) -> dict[str, str]:
        return {**self._args.tags, "Name": name}

    def _managed_policy(self, policy: str) -> pulumi.Output[str]:
        return self._partition.apply(lambda p: f"arn:{p}:iam::aws:policy/{policy}")

    def _role(self, role: str, trust: pulumi.Input[str], policies: Sequence[str],
              description: str) -> aws.iam.Role:
        n = f"{self._name}-{role}"
        r = aws.iam.Role(n, assume_role_policy=trust,
                         description=description, tags=self._tags(n), opts=self._child)
        for policy in policies:
            aws.iam.RolePolicyAttachment(f"{n}-{policy.rsplit('/', 1)[-1]}", role=r.name,
                                         policy_arn=self._managed_policy(policy),
                                         opts=self._child)
        return r

    # -- pieces ----------------------------------------------------------------------------
    def _create_iam(self) -> None:
        self.cluster_role = self._role("control-plane", trust_policy("eks.amazonaws.com", True),
                                       ["AmazonEKSClusterPolicy"], "EKS control plane")
        self.node_role = self._role("node", trust_policy("ec2.amazonaws.com"), NODE_POLICIES,
                                    "EKS worker nodes (system and GPU pools)")
        self.node_role_arn = self.node_role.arn

    def _create_encryption_and_logs(self) -> None:
        n, a = self._name, self._args
        region = a.region
        logs = log_group_name(a.cluster_name)
        self.secrets_key = aws.kms.Key(
            f"{n}-secrets", description=f"Envelope encryption of EKS secrets ({a.cluster_name})",
            enable_key_rotation=True, deletion_window_in_days=30,
            policy=pulumi.Output.all(self._account, self._partition)
            .apply(lambda v: key_policy(v[0], v[1], region)),
            tags=self._tags(f"{n}-secrets"), opts=self._child)
        self._secrets_policy = aws.iam.RolePolicy(
            f"{n}-cluster-kms", role=self.cluster_role.id,
            policy=self.secrets_key.arn.apply(cluster_kms_policy), opts=self._child)
        self.logs_key = aws.kms.Key(
            f"{n}-logs", description=f"Encrypts the EKS control-plane logs ({a.cluster_name})",
            enable_key_rotation=True, deletion_window_in_days=30,
            policy=pulumi.Output.all(self._account, self._partition)
            .apply(lambda v: key_policy(v[0], v[1], region, logs)),
            tags=self._tags(f"{n}-logs"), opts=self._child)
        self.log_group = aws.cloudwatch.LogGroup(
            f"{n}-control-plane", name=logs,  # the name EKS writes to; see ClusterArgs
            retention_in_days=a.config.log_retention_days, kms_key_id=self.logs_key.arn,
            tags=self._tags(logs), opts=self._child)

    def _create_cluster(self) -> None:
        n, a, c = self._name, self._args, self._args.config
        self.cluster = aws.eks.Cluster(
            f"{n}-eks",
            name=a.cluster_name,  # fixed: see ClusterArgs.cluster_name
            version=c.kubernetes_version,
            role_arn=self.cluster_role.arn,
            vpc_config={"subnet_ids": list(a.subnet_ids), **endpoint_access(c)},
            encryption_config={"provider": {"key_arn": self.secrets_key.arn},
                               "resources": ["secrets"]},
            enabled_cluster_log_types=list(CONTROL_PLANE_LOG_TYPES),
            access_config={"authentication_mode": "API",
                           # Off (prod's default): admins come only from access entries, which
                           # must name the deployer's role (config enforces it). Create-only.
                           "bootstrap_cluster_creator_admin_permissions":
                               c.bootstrap_creator_admin},
            # vpc-cni, kube-proxy and coredns come as pinned managed add-ons instead.
            bootstrap_self_managed_addons=False,
            upgrade_policy={"support_type": c.support_type},
            tags=self._tags(a.cluster_name),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[
                self.log_group, self._secrets_policy]))
        self.name = self.cluster.name
        self.arn = self.cluster.arn
        self.endpoint = self.cluster.endpoint
        self.cluster_security_group_id = self.cluster.vpc_config.cluster_security_group_id
        issuer = self.cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer)
        self.oidc_provider = aws.iam.OpenIdConnectProvider(
            f"{n}-oidc", url=issuer, client_id_lists=["sts.amazonaws.com"],
            tags=self._tags(f"{n}-oidc"), opts=self._child)
        self.oidc_provider_arn = self.oidc_provider.arn

    def _create_deployer_access(self) -> None:
        """TCP 443 to the cluster security group from where `pulumi up` runs; without it a
        private-only endpoint is unreachable and every Kubernetes object fails."""
        self.deployer_rules = []
        for rule in deployer_ingress_rules(self._args.config):
            args = {k: v for k, v in rule.items() if k != "slug"}
            n = f"{self._name}-api-from-{rule['slug']}"
            self.deployer_rules.append(aws.vpc.SecurityGroupIngressRule(
                n, security_group_id=self.cluster_security_group_id, ip_protocol="tcp",
                from_port=API_PORT, to_port=API_PORT, tags=self._tags(n), opts=self._child,
                **args))

    def _create_access_entries(self) -> None:
        n = self._name
        policy = self._partition.apply(
            lambda p: f"arn:{p}:eks::aws:cluster-access-policy/{CLUSTER_ADMIN_POLICY}")
        self.access_entries = {}
        for arn in self._args.config.admin_role_arns:
            slug = f"{n}-admin-{role_slug(arn)}"
            entry = aws.eks.AccessEntry(slug, cluster_name=self.cluster.name, principal_arn=arn,
                                        type="STANDARD", tags=self._tags(slug), opts=self._child)
            aws.eks.AccessPolicyAssociation(
                slug, cluster_name=self.cluster.name, principal_arn=arn, policy_arn=policy,
                access_scope={"type": "cluster"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]))
            self.access_entries[arn] = entry

    def _create_addons(self, before_nodes: bool) -> None:
        if before_nodes:
            self.addons: dict[str, aws.eks.Addon] = {}
        pins = [p for p in addon_pins(self.kubernetes_version) if p.before_nodes == before_nodes]
        for pin in pins:
            deps: list[pulumi.Resource] = []
            if not before_nodes:
                deps.append(self.system_node_group)
            elif pin.service_account and "eks-pod-identity-agent" in self.addons:
                deps.append(self.addons["eks-pod-identity-agent"])  # it hands out the creds
            self.addons[pin.name] = self._addon(pin, deps)
        if before_nodes:
            self.node_dependencies = [self.cluster, *self.addons.values()]

    def _addon(self, pin: AddonPin, deps: list[pulumi.Resource]) -> aws.eks.Addon:
        n = f"{self._name}-{pin.name}"
        associations = None
        if pin.service_account and pin.policy:
            trust = pulumi.Output.all(self._account, self.arn).apply(
                lambda v: trust_policy(POD_IDENTITY_SERVICE, True, v[0], v[1]))
            role = self._role(f"{pin.name}-pod", trust, [pin.policy],
                              f"Pod Identity role of the {pin.name} add-on")
            associations = [{"role_arn": role.arn, "service_account": pin.service_account}]
            deps = [*deps, role]
        return aws.eks.Addon(
            n, cluster_name=self.cluster.name, addon_name=pin.name, addon_version=pin.version,
            configuration_values=addon_configuration(pin.name),
            pod_identity_associations=associations,
            resolve_conflicts_on_create="OVERWRITE", resolve_conflicts_on_update="OVERWRITE",
            tags=self._tags(n), opts=pulumi.ResourceOptions(parent=self, depends_on=deps))

    def _create_system_nodes(self) -> None:
        n, s = f"{self._name}-system", self._args.config.system_nodes
        lt = aws.ec2.LaunchTemplate(
            n, description="EKS system nodes: IMDSv2, encrypted gp3 root",
            update_default_version=True,
            metadata_options=metadata_options(2),
            block_device_mappings=[root_volume("/dev/xvda", SYSTEM_ROOT_VOLUME_GIB)],
            vpc_security_group_ids=[self.cluster_security_group_id],
            tag_specifications=tag_specifications(self._tags(n)),
            tags=self._tags(n), opts=self._child)
        self.system_launch_template = lt
        self.system_node_group = aws.eks.NodeGroup(
            n, cluster_name=self.cluster.name, node_role_arn=self.node_role_arn,
            version=self.kubernetes_version, ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND", instance_types=list(s.instance_types),
            subnet_ids=list(self._args.subnet_ids),
            launch_template={"id": lt.id, "version": lt.latest_version.apply(str)},
            scaling_config={"min_size": s.min_size, "desired_size": s.desired_size,
                            "max_size": s.max_size},
            update_config={"max_unavailable": 1},
            node_repair_config={"enabled": True, **repair_thresholds(s.max_size)},
            labels={POOL_LABEL: SYSTEM_POOL_NAME},
            tags=self._tags(n),
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.node_dependencies,
                                        ignore_changes=["scalingConfig.desiredSize"]))

    def _create_k8s_provider(self) -> None:
        region = self._args.region
        config = pulumi.Output.all(self.cluster.name, self.cluster.endpoint,
                                   self.cluster.certificate_authority.data).apply(
            lambda v: kubeconfig(v[0], v[1], v[2], region))
        self.k8s_provider = k8s.Provider(
            f"{self._name}-k8s", kubeconfig=config,
            # A new CA or endpoint string must not replace every Kubernetes object: the provider
            # is identified by the cluster ARN, which changes only when the cluster is replaced.
            cluster_identifier=self.cluster.arn,
            opts=self._child)
