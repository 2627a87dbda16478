"""EKS cluster rules: secrets encryption, control-plane logging, endpoint exposure, version,
access entries, required add-ons, private nodes."""

from __future__ import annotations

from pulumi_policy import Severity

from .common import (
    ADVISORY,
    MANDATORY,
    Refs,
    Stack,
    cidr_within,
    get,
    is_open_cidr,
    items,
    resource_rule,
    schema,
    short,
    stack_rule,
    tags_of,
    truthy,
)

CLUSTER = "aws:eks/cluster:Cluster"
ADDON = "aws:eks/addon:Addon"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
SUBNET = "aws:ec2/subnet:Subnet"

LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]


@resource_rule(
    name="eks-secrets-encryption",
    description="EKS encrypts Kubernetes secrets with a customer-managed KMS key.",
    family="cluster", types=(CLUSTER,), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_58",), trivy=("AWS-0039",), cis=("5.3.1",)),
    remediation="Set encryption_config={'provider': {'key_arn': <KMS key arn>}, 'resources': "
                "['secrets']}.")
def eks_secrets_encryption(args, cfg, report):
    enc = get(args.props, "encryptionConfig")
    resources = [str(r) for r in items(get(enc, "resources"))] if enc else []
    if "secrets" not in resources or not get(enc, "provider.keyArn"):
        report("Kubernetes secrets are not envelope-encrypted with a KMS key: set "
               "encryption_config with provider.key_arn and resources=['secrets'].")


@resource_rule(
    name="eks-control-plane-logging",
    description="EKS control-plane logs (audit included) are sent to CloudWatch.",
    family="cluster", types=(CLUSTER,), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_AWS_37",), trivy=("AWS-0038",), cis=("2.1.1",)),
    config=schema(requiredLogTypes={
        "type": "array", "items": {"type": "string", "enum": LOG_TYPES}, "default": LOG_TYPES,
        "description": "Control-plane log types that must be enabled."}),
    remediation="Set enabled_cluster_log_types to include every required type (api, audit, "
                "authenticator, controllerManager, scheduler).")
def eks_control_plane_logging(args, cfg, report):
    enabled = {str(t) for t in items(get(args.props, "enabledClusterLogTypes"))}
    missing = [t for t in cfg["requiredLogTypes"] if t not in enabled]
    if missing:
        report(f"control-plane log types {', '.join(missing)} are off: add them to "
               "enabled_cluster_log_types.")


@resource_rule(
    name="eks-endpoint-access",
    description="The EKS API endpoint is private, or public only to the environment's allowed "
                "CIDRs (never 0.0.0.0/0).",
    family="cluster", types=(CLUSTER,), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_38", "CKV_AWS_39"), trivy=("AWS-0040", "AWS-0041"),
              cis=("5.4.1", "5.4.2")),
    config=schema(
        allowPublicEndpoint={"type": "boolean", "default": False,
                             "description": "Whether the API endpoint may be public at all."},
        allowedPublicCidrs={"type": "array", "items": {"type": "string"}, "default": [],
                            "description": "CIDRs a public endpoint may be opened to; each of "
                                           "publicAccessCidrs must lie inside one of them."}),
    remediation="Set vpc_config.endpoint_private_access=True and either "
                "endpoint_public_access=False or public_access_cidrs within the allowed list in "
                "policies/config/<env>.json.")
def eks_endpoint_access(args, cfg, report):
    vpc = get(args.props, "vpcConfig") or {}
    if not truthy(get(vpc, "endpointPrivateAccess")):
        report("endpointPrivateAccess is off: set vpc_config.endpoint_private_access=True so "
               "nodes reach the API inside the VPC.")
    public = get(vpc, "endpointPublicAccess")
    if public is None or truthy(public):  # EKS default is public
        if not cfg["allowPublicEndpoint"]:
            report("the API endpoint is public, which this environment does not allow: set "
                   "vpc_config.endpoint_public_access=False.")
            return
        cidrs = [str(c) for c in items(get(vpc, "publicAccessCidrs"))]
        if not cidrs or any(is_open_cidr(c) for c in cidrs):
            report("the public API endpoint is open to 0.0.0.0/0: set "
                   "vpc_config.public_access_cidrs to your office/VPN ranges.")
            return
        allowed = cfg["allowedPublicCidrs"]
        for c in cidrs:
            if not cidr_within(c, allowed):
                report(f"public_access_cidrs entry {c} is outside this environment's allowed "
                       f"ranges ({', '.join(allowed) or 'none'}).")


@resource_rule(
    name="eks-access-entries",
    description="Cluster access is managed with EKS access entries (authentication mode API), "
                "not the aws-auth ConfigMap.",
    family="cluster", types=(CLUSTER,), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(cis=("5.5.1",)),
    config=schema(allowedModes={
        "type": "array", "items": {"type": "string",
                                   "enum": ["API", "API_AND_CONFIG_MAP", "CONFIG_MAP"]},
        "default": ["API"], "description": "Allowed accessConfig.authenticationMode values."}),
    remediation="Set access_config={'authentication_mode': 'API'} and grant access with "
                "aws.eks.AccessEntry + AccessPolicyAssociation.")
def eks_access_entries(args, cfg, report):
    mode = get(args.props, "accessConfig.authenticationMode") or "CONFIG_MAP"
    if mode not in cfg["allowedModes"]:
        report(f"authentication mode is {mode}: set access_config.authentication_mode to "
               f"{' or '.join(cfg['allowedModes'])} and use access entries.")


@resource_rule(
    name="eks-no-bootstrap-admin",
    description="The cluster creator is not silently granted cluster-admin.",
    family="cluster", types=(CLUSTER,), level=ADVISORY, severity=Severity.LOW,
    refs=Refs(cis=("5.5.1", "4.1.1")),
    remediation="Set access_config.bootstrap_cluster_creator_admin_permissions=False and grant "
                "admins explicit access entries.")
def eks_no_bootstrap_admin(args, cfg, report):
    flag = get(args.props, "accessConfig.bootstrapClusterCreatorAdminPermissions")
    if flag is None or truthy(flag):
        how = "is unset, and EKS then turns it on" if flag is None else "is on"
        report(f"bootstrapClusterCreatorAdminPermissions {how}: whoever created the cluster holds "
               "cluster-admin outside any access entry. Set trainyard:cluster."
               "bootstrapCreatorAdmin to false and list the deployer and admin roles in "
               "adminRoleArns (access entries).")


@stack_rule(
    name="eks-required-addons",
    description="The cluster installs the add-ons the platform depends on (Pod Identity agent, "
                "VPC CNI, CoreDNS, kube-proxy; node monitoring agent when auto-repair is on).",
    family="cluster", level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(cis=("5.2.1",), other=("aws-docs:eks-add-ons",)),
    config=schema(requiredAddons={
        "type": "array", "items": {"type": "string"},
        "default": ["vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent"],
        "description": "EKS add-on names every cluster must install."}),
    remediation="Add aws.eks.Addon(cluster_name=..., addon_name=<name>) for each missing add-on.")
def eks_required_addons(stack: Stack, cfg, report):
    addons = stack.of(ADDON)
    repair = any(truthy(get(ng.props, "nodeRepairConfig.enabled")) for ng in stack.of(NODE_GROUP))
    for cluster in stack.of(CLUSTER):
        names = {str(get(a.props, "addonName")) for a in addons
                 if cluster in stack.linked(a, "clusterName", [cluster], keys=("name", "id"))}
        required = list(cfg["requiredAddons"])
        if repair and "eks-node-monitoring-agent" not in required:
            required.append("eks-node-monitoring-agent")
        missing = [n for n in required if n not in names]
        if missing:
            report(f"cluster {short(cluster.urn)} lacks add-on(s) {', '.join(missing)}: add an "
                   "aws.eks.Addon for each.", cluster.urn)


@stack_rule(
    name="eks-private-nodes",
    description="Node groups launch only into private subnets.",
    family="cluster", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(cis=("5.4.3",), checkov=("CKV_AWS_130",)),
    remediation="Give node groups only private subnet ids (tagged trainyard.io/tier=private, "
                "no public IP on launch).")
def eks_private_nodes(stack: Stack, cfg, report):
    subnets = stack.of(SUBNET)
    for ng in stack.of(NODE_GROUP):
        for sn in stack.linked(ng, "subnetIds", subnets):
            tags = tags_of(sn.props)
            if tags.get("trainyard.io/tier") == "public" or tags.get("kubernetes.io/role/elb") \
                    == "1" or truthy(get(sn.props, "mapPublicIpOnLaunch")):
                report(f"node group {short(ng.urn)} launches into public subnet "
                       f"{short(sn.urn)}: use the private subnets.", ng.urn)
