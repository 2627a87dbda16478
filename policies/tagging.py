"""Tagging and cost rules: required tags, the per-environment GPU budget, NAT gateway count and
the S3 gateway endpoint that keeps checkpoint/dataset traffic off NAT."""

from __future__ import annotations

import json
from typing import Any

from pulumi_policy import Severity

from . import facts
from .common import (
    ADVISORY,
    MANDATORY,
    Refs,
    Stack,
    as_int,
    get,
    plain,
    resource_rule,
    schema,
    short,
    stack_rule,
    tags_of,
)
from .common import KARPENTER_NODEPOOL as NODEPOOL
from .compute import LT, NODE_GROUP, launch_template_of, node_group_types

# Types in this platform that take `tags` (pulumi-aws v7). tests/policies checks each against the
# installed provider SDK. Anything else with a `tags` input is checked too.
TAGGABLE = frozenset({
    "aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/internetGateway:InternetGateway",
    "aws:ec2/natGateway:NatGateway", "aws:ec2/eip:Eip", "aws:ec2/routeTable:RouteTable",
    "aws:ec2/vpcEndpoint:VpcEndpoint", "aws:ec2/flowLog:FlowLog",
    "aws:ec2/securityGroup:SecurityGroup", "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
    "aws:ec2/placementGroup:PlacementGroup", "aws:ec2/launchTemplate:LaunchTemplate",
    "aws:cloudwatch/logGroup:LogGroup", "aws:kms/key:Key",
    "aws:eks/cluster:Cluster", "aws:eks/nodeGroup:NodeGroup", "aws:eks/addon:Addon",
    "aws:eks/accessEntry:AccessEntry", "aws:eks/podIdentityAssociation:PodIdentityAssociation",
    "aws:iam/role:Role", "aws:iam/policy:Policy", "aws:iam/openIdConnectProvider:OpenIdConnectProvider",
    "aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2", "aws:efs/fileSystem:FileSystem",
    "aws:efs/accessPoint:AccessPoint", "aws:fsx/lustreFileSystem:LustreFileSystem",
    "aws:ecr/repository:Repository",
})
NAT = "aws:ec2/natGateway:NatGateway"
VPC = "aws:ec2/vpc:Vpc"
VPC_ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"


def provider_default_tags(provider) -> dict:
    """Tags the aws provider adds to every resource (`defaultTags.tags`)."""
    if provider is None:
        return {}
    value: Any = get(provider.props, "defaultTags")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    value = plain(value) if value is not None else {}
    tags = value.get("tags") if isinstance(value, dict) else None
    return dict(tags) if isinstance(tags, dict) else {}


@resource_rule(
    name="required-tags",
    description="Every taggable AWS resource carries the required tags (environment, owner, "
                "cost-center), directly or through the provider's default tags.",
    family="tagging-cost", types=(), level=MANDATORY, severity=Severity.LOW,
    refs=Refs(other=("aws-tagging-best-practices", "aws-config:required-tags")),
    config=schema(requiredTags={
        "type": "array", "items": {"type": "string"},
        "default": ["environment", "owner", "cost-center"],
        "description": "Tag keys every taggable resource must carry (non-empty values)."}),
    remediation="Pass the stack's tags (components get them from StackConfig.tags) or set "
                "default_tags on the aws provider.")
def required_tags(args, cfg, report):
    t = args.resource_type
    if not t.startswith("aws:"):
        return
    if t not in TAGGABLE and "tags" not in args.props:
        return
    tags = {**provider_default_tags(args.provider), **tags_of(args.props)}
    missing = [k for k in cfg["requiredTags"] if not str(tags.get(k, "")).strip()]
    if missing:
        report(f"missing required tag(s) {', '.join(missing)}: add them to tags (or the "
               "provider's default_tags).")


def _pool_facts(stack: Stack):
    """(resource, instance types, facts per type, max nodes, on-demand?) of every GPU-capable
    pool: managed node groups at scalingConfig.maxSize, Karpenter NodePools at the most nodes
    their limits allow."""
    lts = stack.of(LT)
    for ng in stack.of(NODE_GROUP):
        lt = launch_template_of(stack, ng, lts)
        types = node_group_types(ng.props, lt.props if lt is not None else None)
        specs = [facts.lookup(t) for t in types]
        yield ng, types, specs, as_int(get(ng.props, "scalingConfig.maxSize"), 0) or 0, \
            get(ng.props, "capacityType", "ON_DEMAND") in ("ON_DEMAND", "CAPACITY_BLOCK")
    for np in stack.of(NODEPOOL):
        spec = plain(get(np.props, "spec")) or {}
        reqs = {r.get("key"): list(r.get("values") or []) for r in
                ((spec.get("template") or {}).get("spec") or {}).get("requirements") or []
                if isinstance(r, dict) and r.get("operator") == "In"}
        types = [str(t) for t in reqs.get("node.kubernetes.io/instance-type") or []]
        specs = [facts.lookup(t) for t in types]
        known = [x for x in specs if x is not None]
        limits = spec.get("limits") or {}
        bounds = [int(float(str(limits[key]))) // per for key, per in (
            ("nvidia.com/gpu", max((x.gpus for x in known), default=0)),
            ("aws.amazon.com/neuron", max((x.gpus for x in known), default=0)),
            ("cpu", max((x.vcpus for x in known), default=0)))
            if key in limits and per and str(limits[key]).replace(".", "", 1).isdigit()]
        # No limit: Karpenter would launch without bound; count it as unbounded (reported).
        yield np, types, specs, min(bounds) if bounds else None, \
            any(v != "spot" for v in reqs.get("karpenter.sh/capacity-type") or ["on-demand"])


@stack_rule(
    name="gpu-budget",
    description="GPU pools at maximum size (node groups' maxSize, Karpenter NodePools' limits) "
                "stay within the environment's GPU count and on-demand $/hour budget.",
    family="tagging-cost", level=MANDATORY, severity=Severity.HIGH, gpu=True,
    refs=Refs(other=("trainyard:gpu-budget", "aws-quota:L-417A185B", "aws-quota:L-7212CCBC")),
    config=schema(
        maxGpus={"type": "integer", "minimum": 0, "default": 16,
                 "description": "Most GPUs/accelerators all node groups may reach at max size."},
        maxOnDemandUsdPerHour={"type": "number", "minimum": 0, "default": 100,
                               "description": "Most on-demand (ON_DEMAND + CAPACITY_BLOCK) "
                                              "list-price $/hour at max size, all GPU pools."}),
    remediation="Lower scaling_config.max_size, move a pool to SPOT, or raise the budget in "
                "policies/config/<env>.json after approval.")
def gpu_budget(stack: Stack, cfg, report):
    total_gpus, total_usd, pools, biggest = 0, 0.0, [], None
    for ng, types, specs, max_size, on_demand in _pool_facts(stack):
        if max_size is None:
            if any(facts.vendor_of(t) for t in types):
                report(f"NodePool {short(ng.urn)} has no accelerator or cpu limit: Karpenter "
                       "can grow it without bound; set spec.limits.", ng.urn)
            continue
        if any(s is None for s in specs):
            if any(facts.vendor_of(t) for t in types):
                unknown = [t for t, s in zip(types, specs, strict=True) if s is None]
                report(f"pool {short(ng.urn)} uses {', '.join(unknown)}, unknown to the "
                       "pack's facts (policies/facts.py): the GPU budget cannot be checked.",
                       ng.urn)
            continue
        gpus = max((s.gpus for s in specs), default=0)
        if gpus == 0:
            continue
        n_gpus = gpus * max_size
        usd = 0.0
        if on_demand:
            usd = max(s.price for s in specs) * max_size
        total_gpus += n_gpus
        total_usd += usd
        pools.append(f"{short(ng.urn)}: {max_size}x{gpus} GPUs" + (f", ${usd:,.2f}/h" if usd else ""))
        if biggest is None or n_gpus > biggest[0]:
            biggest = (n_gpus, ng.urn)
    if biggest is None:
        return
    if total_gpus > int(cfg["maxGpus"]):
        report(f"GPU pools can reach {total_gpus} GPUs, over this environment's budget of "
               f"{int(cfg['maxGpus'])} ({'; '.join(pools)}): lower max sizes or raise maxGpus.",
               biggest[1])
    if total_usd > float(cfg["maxOnDemandUsdPerHour"]):
        report(f"on-demand GPU capacity can cost ${total_usd:,.2f}/h at max size (list prices of "
               f"{facts.PRICE_DATE}), over the ${float(cfg['maxOnDemandUsdPerHour']):,.2f}/h "
               "budget: lower max sizes, use SPOT, or raise maxOnDemandUsdPerHour.", biggest[1])


@stack_rule(
    name="nat-gateway-count",
    description="The stack runs no more NAT gateways than the environment allows.",
    family="tagging-cost", level=ADVISORY, severity=Severity.LOW,
    refs=Refs(other=("aws-pricing:nat-gateway",)),
    config=schema(maxNatGateways={"type": "integer", "minimum": 0, "default": 3,
                                  "description": "Most NAT gateways for the stack."}),
    remediation="Use natGateways: single for non-production stacks.")
def nat_gateway_count(stack: Stack, cfg, report):
    nats = stack.of(NAT)
    if len(nats) > int(cfg["maxNatGateways"]):
        report(f"{len(nats)} NAT gateways (~${len(nats) * 0.045 * 730:,.0f}/month before data "
               f"charges) exceed this environment's {int(cfg['maxNatGateways'])}: use a single "
               "NAT gateway.", nats[0].urn)


@stack_rule(
    name="s3-gateway-endpoint",
    description="VPCs with NAT gateways have an S3 gateway endpoint, so checkpoint and dataset "
                "traffic does not pay NAT data processing.",
    family="tagging-cost", level=ADVISORY, severity=Severity.LOW, gpu=True,
    refs=Refs(other=("aws-docs:vpc-endpoints-s3",)),
    remediation="Add aws.ec2.VpcEndpoint(vpc_id=..., service_name='com.amazonaws.<region>.s3', "
                "vpc_endpoint_type='Gateway', route_table_ids=<private route tables>).")
def s3_gateway_endpoint(stack: Stack, cfg, report):
    if not stack.of(NAT):
        return
    endpoints = stack.of(VPC_ENDPOINT)
    for vpc in stack.of(VPC):
        mine = [e for e in endpoints if vpc in stack.linked(e, "vpcId", [vpc])]
        if not any(str(get(e.props, "serviceName", "")).endswith(".s3") and
                   get(e.props, "vpcEndpointType", "Gateway") == "Gateway" for e in mine):
            report(f"VPC {short(vpc.urn)} has no S3 gateway endpoint: S3 traffic goes through "
                   "NAT at $0.045/GB; add a Gateway endpoint for S3.", vpc.urn)
