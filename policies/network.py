"""Network rules: VPC flow logs, the default security group, subnets, security group exposure."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from pulumi_policy import Severity

from .common import (
    ADVISORY,
    MANDATORY,
    Refs,
    Stack,
    all_ports,
    as_int,
    get,
    is_open_cidr,
    items,
    ports_cover,
    resource_rule,
    schema,
    short,
    stack_rule,
    tags_of,
    truthy,
)

VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"
SG = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_SG = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS_RULE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"

ADMIN_PORTS = {22: "SSH", 3389: "RDP"}


class Ingress(NamedTuple):
    cidrs: list
    from_port: Any
    to_port: Any
    protocol: Any
    where: str


def ingress_rules(args) -> Iterator[Ingress]:
    """Every ingress permission a resource grants, whatever resource type carries it."""
    p, t = args.props, args.resource_type
    if t == INGRESS_RULE:
        yield Ingress([get(p, "cidrIpv4"), get(p, "cidrIpv6")], get(p, "fromPort"),
                      get(p, "toPort"), get(p, "ipProtocol"), "")
    elif t == SG_RULE:
        if get(p, "type") == "ingress":
            yield Ingress(items(get(p, "cidrBlocks")) + items(get(p, "ipv6CidrBlocks")),
                          get(p, "fromPort"), get(p, "toPort"), get(p, "protocol"), "")
    elif t in (SG, DEFAULT_SG):
        for i, rule in enumerate(items(get(p, "ingress"))):
            yield Ingress(items(get(rule, "cidrBlocks")) + items(get(rule, "ipv6CidrBlocks")),
                          get(rule, "fromPort"), get(rule, "toPort"), get(rule, "protocol"),
                          f" (ingress[{i}])")


INGRESS_TYPES = (INGRESS_RULE, SG_RULE, SG, DEFAULT_SG)


@stack_rule(
    name="vpc-flow-logs",
    description="Every VPC has a flow log.",
    family="network", level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV2_AWS_11",), trivy=("AWS-0178",)),
    remediation="Add an aws.ec2.FlowLog with vpc_id=<the VPC's id> and traffic_type ALL, "
                "delivering to a KMS-encrypted CloudWatch log group.")
def vpc_flow_logs(stack: Stack, cfg, report):
    logs = stack.of(FLOW_LOG)
    for vpc in stack.of(VPC):
        if not any(vpc in stack.linked(fl, "vpcId", [vpc]) for fl in logs):
            report(f"VPC {short(vpc.urn)} has no flow log: add an aws.ec2.FlowLog with "
                   f"vpc_id set to this VPC.", vpc.urn)


@stack_rule(
    name="default-security-group-closed",
    description="Each VPC's default security group is adopted and allows no traffic.",
    family="network", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV2_AWS_12",), trivy=("AWS-0173",)),
    remediation="Adopt the default security group with aws.ec2.DefaultSecurityGroup(vpc_id=...) "
                "and no ingress or egress blocks (adoption removes every rule).")
def default_security_group_closed(stack: Stack, cfg, report):
    defaults = stack.of(DEFAULT_SG)
    for sg in defaults:
        for key in ("ingress", "egress"):
            if items(get(sg.props, key)):
                report(f"default security group {short(sg.urn)} has {key} rules: remove every "
                       f"{key} block so the default group allows nothing.", sg.urn)
    for vpc in stack.of(VPC):
        if not any(vpc in stack.linked(d, "vpcId", [vpc]) for d in defaults):
            report(f"VPC {short(vpc.urn)}'s default security group is not managed: add an "
                   "aws.ec2.DefaultSecurityGroup for it with no rules.", vpc.urn)


def _public_tier(props) -> bool:
    tags = tags_of(props)
    return tags.get("trainyard.io/tier") == "public" or tags.get("kubernetes.io/role/elb") == "1"


@resource_rule(
    name="subnet-no-auto-public-ip",
    description="Private subnets do not assign public IPs to instances at launch.",
    family="network", types=(SUBNET,), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_130",), trivy=("AWS-0164",), cis=("5.4.3",)),
    remediation="Set map_public_ip_on_launch=False; only subnets tagged "
                "trainyard.io/tier=public (NAT gateways, load balancers) may be public.")
def subnet_no_auto_public_ip(args, cfg, report):
    if truthy(get(args.props, "mapPublicIpOnLaunch")) and not _public_tier(args.props):
        report("mapPublicIpOnLaunch is true on a subnet not tagged trainyard.io/tier=public: set "
               "map_public_ip_on_launch=False (nodes live in private subnets behind NAT).")


@resource_rule(
    name="no-admin-ports-from-internet",
    description="No security group rule opens SSH (22) or RDP (3389) to 0.0.0.0/0 or ::/0; no "
                "node group allows SSH from anywhere.",
    family="network", types=INGRESS_TYPES + (NODE_GROUP,), level=MANDATORY,
    severity=Severity.CRITICAL,
    refs=Refs(checkov=("CKV_AWS_24", "CKV_AWS_25", "CKV_AWS_100"), trivy=("AWS-0107",)),
    remediation="Remove the rule or restrict its source to a bastion/VPN security group or CIDR; "
                "use SSM Session Manager instead of SSH.")
def no_admin_ports_from_internet(args, cfg, report):
    if args.resource_type == NODE_GROUP:
        ra = get(args.props, "remoteAccess")
        if ra and get(ra, "ec2SshKey") and not items(get(ra, "sourceSecurityGroupIds")):
            report("remoteAccess sets ec2SshKey without sourceSecurityGroupIds, which opens SSH "
                   "to 0.0.0.0/0: remove remoteAccess (use SSM) or name the allowed security "
                   "groups.")
        return
    for rule in ingress_rules(args):
        open_cidrs = [c for c in rule.cidrs if is_open_cidr(c)]
        if not open_cidrs:
            continue
        for port, label in ADMIN_PORTS.items():
            if ports_cover(rule.from_port, rule.to_port, rule.protocol, port):
                report(f"ingress{rule.where} allows {label} (port {port}) from {open_cidrs[0]}: "
                       "restrict the source to a bastion or VPN range, or remove the rule.")


@resource_rule(
    name="no-all-ports-from-internet",
    description="No security group rule opens every port (or protocol -1) to the internet.",
    family="network", types=INGRESS_TYPES, level=MANDATORY, severity=Severity.CRITICAL,
    refs=Refs(checkov=("CKV_AWS_277",), trivy=("AWS-0107",)),
    remediation="Open only the ports the service needs, from the narrowest source.")
def no_all_ports_from_internet(args, cfg, report):
    for rule in ingress_rules(args):
        open_cidrs = [c for c in rule.cidrs if is_open_cidr(c)]
        if open_cidrs and all_ports(rule.from_port, rule.to_port, rule.protocol):
            report(f"ingress{rule.where} allows all ports/protocols from {open_cidrs[0]}: open "
                   "only the needed ports, from a narrower source.")


_DEFAULT_DESCRIPTIONS = {"", "managed by pulumi", "managed by terraform"}


@resource_rule(
    name="security-group-descriptions",
    description="Security groups and their rules say what they are for.",
    family="network", types=(SG, INGRESS_RULE, EGRESS_RULE, SG_RULE), level=ADVISORY,
    severity=Severity.LOW,
    refs=Refs(checkov=("CKV_AWS_23",), trivy=("AWS-0099", "AWS-0124")),
    remediation="Set description= on the security group and on every rule (why it exists).")
def security_group_descriptions(args, cfg, report):
    p = args.props
    desc = str(get(p, "description", "")).strip().lower()
    if desc in _DEFAULT_DESCRIPTIONS:
        report("no description: set description= to say what this group or rule allows and why.")
    if args.resource_type == SG:
        for key in ("ingress", "egress"):
            for i, rule in enumerate(items(get(p, key))):
                if not str(get(rule, "description", "")).strip():
                    report(f"{key}[{i}] has no description: describe what the rule allows.")


@resource_rule(
    name="no-public-ingress-beyond-allow-list",
    description="No security group ingress (inline `ingress`, SecurityGroupRule, "
                "vpc.SecurityGroupIngressRule) is open to 0.0.0.0/0 or ::/0 on any port outside "
                "the environment's allow-list.",
    family="network", types=INGRESS_TYPES, level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_260", "CKV_AWS_24", "CKV_AWS_25", "CKV_AWS_277"),
              trivy=("AWS-0107",), cis=("5.4.3",)),
    config=schema(allowedPublicPorts={
        "type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 65535},
        "default": [],
        "description": "TCP/UDP ports that may be open to the internet (e.g. 443 on a public "
                       "load balancer's group). Empty: nothing is."}),
    remediation="Restrict the source to a VPC CIDR, a prefix list or a security group (nodes, "
                "the load balancer), or list the port in "
                "no-public-ingress-beyond-allow-list.allowedPublicPorts for this environment.")
def no_public_ingress_beyond_allow_list(args, cfg, report):
    allowed = {int(p) for p in cfg["allowedPublicPorts"]}
    for rule in ingress_rules(args):
        open_cidrs = [c for c in rule.cidrs if is_open_cidr(c)]
        if not open_cidrs:
            continue
        lo, hi = as_int(rule.from_port), as_int(rule.to_port)
        proto = str(rule.protocol).lower() if rule.protocol is not None else "-1"
        if proto in ("-1", "all") or lo in (None, -1):
            lo, hi = 0, 65535
        hi = lo if hi is None else hi
        if proto in ("icmp", "1", "icmpv6", "58"):
            report(f"ingress{rule.where} allows ICMP from {open_cidrs[0]}: restrict the "
                   "source.")
            continue
        if all(p in allowed for p in range(lo, hi + 1)):
            continue
        ports = f"port {lo}" if lo == hi else f"ports {lo}-{hi}"
        report(f"ingress{rule.where} opens {ports} ({proto}) to {open_cidrs[0]}, outside this "
               f"environment's allowed public ports ({', '.join(map(str, sorted(allowed))) or 'none'}"
               "): restrict the source to a CIDR, prefix list or security group.")


@resource_rule(
    name="flow-log-all-traffic",
    description="Flow logs capture ALL traffic, not only ACCEPT or only REJECT.",
    family="network", types=(FLOW_LOG,), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV2_AWS_11",), trivy=("AWS-0178",),
              other=("aws-docs:flow-logs-records",)),
    remediation="Set traffic_type='ALL' on the aws.ec2.FlowLog: rejected connections show "
                "scans and blocked exfiltration, accepted ones show what got through.")
def flow_log_all_traffic(args, cfg, report):
    traffic = str(get(args.props, "trafficType", "") or "").upper()
    if traffic != "ALL":
        report(f"flow log traffic_type is {traffic or 'unset'}: set traffic_type='ALL' so both "
               "accepted and rejected traffic is recorded.")
