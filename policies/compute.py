"""EFA and compute rules: launch templates (IMDS, volumes, NICs), GPU node groups (taints, AMI,
spot diversification, instance families, capacity reservations), EFA pool correctness. Where it
makes sense, a rule judges Karpenter's EC2NodeClasses as launch templates and NodePools as node
groups; policies/karpenter.py reads them (and holds the checks only they need)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Optional

from pulumi_policy import Severity

from . import facts, karpenter
from .common import (
    ADVISORY,
    MANDATORY,
    Refs,
    Stack,
    UnknownValueError,
    as_int,
    get,
    items,
    peek,
    resource_rule,
    schema,
    short,
    stack_rule,
    truthy,
)

LT = "aws:ec2/launchTemplate:LaunchTemplate"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
PLACEMENT_GROUP = "aws:ec2/placementGroup:PlacementGroup"
SG = "aws:ec2/securityGroup:SecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS_RULE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
NODEPOOL = karpenter.NODEPOOL
NODECLASS = karpenter.NODECLASS

EFA_TYPES = ("efa", "efa-only")
INTERFACE_TYPES = ("efa", "efa-only", "interface")


def efa_interfaces(lt_props) -> list:
    return [ni for ni in items(get(lt_props, "networkInterfaces"))
            if get(ni, "interfaceType") in EFA_TYPES]


def reserved(lt_props, ng_props=None) -> bool:
    """Launches into an ODCR or a Capacity Block (no new placement group may be forced)."""
    crs = get(lt_props, "capacityReservationSpecification") or {}
    target = get(crs, "capacityReservationTarget") or {}
    return bool(get(target, "capacityReservationId") or
                get(target, "capacityReservationResourceGroupArn") or
                get(lt_props, "instanceMarketOptions.marketType") == "capacity-block" or
                (ng_props is not None and get(ng_props, "capacityType") == "CAPACITY_BLOCK"))


def node_group_types(ng_props, lt_props=None) -> list[str]:
    types = [str(t) for t in items(get(ng_props, "instanceTypes"))]
    if not types and lt_props is not None and get(lt_props, "instanceType"):
        types = [str(get(lt_props, "instanceType"))]
    return types


def accelerator_vendor(types: list[str], ami_type: Optional[str] = None) -> Optional[str]:
    vendors = {facts.vendor_of(t) for t in types} - {None}
    if vendors:
        return sorted(vendors)[0]
    if not types and ami_type:
        return facts.AMI_VENDOR.get(ami_type)
    return None


def launch_template_of(stack: Stack, ng, lts):
    found = stack.linked(ng, "launchTemplate", lts, keys=("id", "name"))
    return found[0] if found else None


# ----------------------------------------------------------------------------------------------
# Launch templates
# ----------------------------------------------------------------------------------------------
def _imds(args) -> tuple:
    """(metadata options, where); an EC2NodeClass's with the CRD's defaults filled in."""
    if args.resource_type == NODECLASS:
        return karpenter.metadata_options(args.props), "spec.metadataOptions"
    return get(args.props, "metadataOptions") or {}, "metadataOptions"


@resource_rule(
    name="launch-template-imdsv2",
    description="Launch templates and EC2NodeClasses require IMDSv2 (session tokens).",
    family="efa-compute", types=(LT, NODECLASS), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_79",), trivy=("AWS-0130",)),
    remediation="Set metadata_options.http_tokens='required' (and http_endpoint='enabled').")
def launch_template_imdsv2(args, cfg, report):
    md, where = _imds(args)
    if get(md, "httpEndpoint") == "disabled":
        return
    tokens = get(md, "httpTokens")
    if tokens != "required":
        fix = "it to 'required'" if args.resource_type == NODECLASS else \
            "metadata_options.http_tokens='required'"
        report(f"{where}.httpTokens is {tokens or 'unset (IMDSv1 allowed)'!s}: set {fix} so "
               "IMDSv1 is refused.")


@resource_rule(
    name="launch-template-imds-hop-limit",
    description="The IMDSv2 response hop limit is at most the environment's maximum.",
    family="efa-compute", types=(LT, NODECLASS), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_AWS_341",)),
    config=schema(maxHopLimit={
        "type": "integer", "minimum": 1, "maximum": 64, "default": 2,
        "description": "Largest allowed metadataOptions.httpPutResponseHopLimit. 1 keeps pods "
                       "off IMDS entirely; 2 lets containers reach it through one hop."}),
    remediation="Lower metadata_options.http_put_response_hop_limit (pods should use EKS Pod "
                "Identity, not the node role through IMDS).")
def launch_template_imds_hop_limit(args, cfg, report):
    md, where = _imds(args)
    hop = as_int(get(md, "httpPutResponseHopLimit"))
    limit = int(cfg["maxHopLimit"])
    if hop is not None and hop > limit:
        report(f"{where}.httpPutResponseHopLimit is {hop}, above this environment's "
               f"maximum {limit}: set it to {limit} or less.")


@resource_rule(
    name="launch-template-no-public-ip",
    description="Launch template network interfaces do not associate public IPs.",
    family="efa-compute", types=(LT,), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_88",), cis=("5.4.3",)),
    remediation="Remove associate_public_ip_address (or set it 'false'); nodes reach the "
                "internet through NAT.")
def launch_template_no_public_ip(args, cfg, report):
    for i, ni in enumerate(items(get(args.props, "networkInterfaces"))):
        if truthy(get(ni, "associatePublicIpAddress")):
            report(f"networkInterfaces[{i}].associatePublicIpAddress is true: nodes must stay "
                   "private; remove it or set it to 'false'.")


_SECRET_PATTERNS = [
    (re.compile(r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"), "an AWS access key id"),
    (re.compile(r"aws_secret_access_key\s*[=:]", re.I), "an AWS secret access key"),
    (re.compile(r"-----BEGIN (RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\b(password|passwd|secret|token|api[_-]?key)\s*[=:]\s*['\"]?[^\s'\"$]{6,}",
                re.I), "a literal password/token"),
    (re.compile(r"\bghp_[A-Za-z0-9]{36}\b"), "a GitHub token"),
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"), "a Hugging Face token"),
]


def _decode_user_data(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return value


@resource_rule(
    name="launch-template-no-secrets-in-user-data",
    description="Launch template user data carries no credentials.",
    family="efa-compute", types=(LT,), level=MANDATORY, severity=Severity.CRITICAL,
    refs=Refs(checkov=("CKV_AWS_46",), trivy=("AWS-0129",)),
    remediation="Remove the credential from user data; fetch it at boot from Secrets Manager or "
                "SSM Parameter Store with the node role, or give the pod a Pod Identity role.")
def launch_template_no_secrets_in_user_data(args, cfg, report):
    raw = get(args.props, "userData")
    if not isinstance(raw, str) or not raw:
        return
    text = _decode_user_data(raw)
    for pattern, what in _SECRET_PATTERNS:
        if pattern.search(text):
            report(f"userData contains {what}: move it to Secrets Manager / SSM and read it at "
                   "boot.")


@resource_rule(
    name="launch-template-encrypted-volumes",
    description="Every EBS volume a launch template or EC2NodeClass defines is encrypted.",
    family="efa-compute", types=(LT, NODECLASS), level=MANDATORY, severity=Severity.HIGH,
    # Neither Checkov (CKV_AWS_8: launch configurations and instances only) nor Trivy (AWS-0008:
    # launch configurations) checks launch-template volumes (docs/policies.md).
    refs=Refs(other=("pulumi-compliance:launchtemplate-disallow-unencrypted",)),
    remediation="Set block_device_mappings[].ebs.encrypted='true' (optionally with kms_key_id).")
def launch_template_encrypted_volumes(args, cfg, report):
    # An EC2NodeClass without blockDeviceMappings gets Karpenter's (encrypted) default.
    path = "spec.blockDeviceMappings" if args.resource_type == NODECLASS else "blockDeviceMappings"
    for i, bdm in enumerate(items(get(args.props, path))):
        ebs = get(bdm, "ebs")
        if ebs is None or get(ebs, "snapshotId") or get(ebs, "snapshotID"):
            continue
        if not truthy(get(ebs, "encrypted")):
            report(f"{path}[{i}] ({get(bdm, 'deviceName', '?')}) is not encrypted: "
                   "set ebs.encrypted to true.")


@resource_rule(
    name="launch-template-no-subnet",
    description="Launch templates for managed node groups set no subnet on their interfaces.",
    family="efa-compute", types=(LT,), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(other=("aws-docs:eks-launch-templates",)), gpu=True,
    remediation="Remove network_interfaces[].subnet_id; give the subnet (one, for EFA pools) to "
                "the node group's subnet_ids. EKS rejects launch templates that set one.")
def launch_template_no_subnet(args, cfg, report):
    for i, ni in enumerate(items(get(args.props, "networkInterfaces"))):
        if get(ni, "subnetId"):
            report(f"networkInterfaces[{i}].subnetId is set: EKS managed node groups reject it; "
                   "put the subnet in the node group's subnet_ids instead.")


@resource_rule(
    name="efa-interface-layout",
    description="EFA launch templates (EC2NodeClasses) have a valid NIC layout: a primary "
                "interface on card 0 device 0 that is not efa-only, valid interface types and "
                "device indices, unique card/device slots and one EFA interface per card at most.",
    family="efa-compute", types=(LT, NODECLASS), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("aws-docs:efa-start-nccl", "aws-docs:efa-only")), gpu=True,
    remediation="Card 0 device 0: 'interface' (ENA) or 'efa'; card 0 device 1: 'efa-only'; every "
                "other card n: device 0 'efa-only' (or the legacy layout: card 0 device 0 'efa', "
                "cards 1..N-1 device 1 'efa'; EC2NodeClass: current only). One per network card.")
def efa_interface_layout(args, cfg, report):
    nodeclass = args.resource_type == NODECLASS  # judged whenever it lists interfaces
    where = "spec.networkInterfaces" if nodeclass else "networkInterfaces"
    kinds = karpenter.NIC_TYPES if nodeclass else INTERFACE_TYPES
    nics = items(get(args.props, where))
    if not nics or not (nodeclass or any(get(n, "interfaceType") in EFA_TYPES for n in nics)):
        return
    slots: dict = {}
    efa_cards: dict = {}
    for i, ni in enumerate(nics):
        kind = get(ni, "interfaceType") or "interface"
        card = as_int(get(ni, "networkCardIndex"), 0)
        dev = as_int(get(ni, "deviceIndex"), 0)
        if kind not in kinds:
            report(f"{where}[{i}].interfaceType {kind!r} is not one of {', '.join(kinds)}.")
        if dev not in (0, 1):
            report(f"{where}[{i}].deviceIndex is {dev}: EFA layouts use device index 0 "
                   "or 1 on each network card.")
        if (card, dev) in slots:
            report(f"{where}[{i}] reuses network card {card} device {dev} "
                   f"(already {where}[{slots[(card, dev)]}]): give each interface its "
                   "own card/device slot.")
        slots.setdefault((card, dev), i)
        if kind in EFA_TYPES:
            if card in efa_cards:
                report(f"{where}[{i}] is a second EFA interface on network card {card} "
                       f"(first: {where}[{efa_cards[card]}]): one EFA interface per "
                       "network card.")
            efa_cards.setdefault(card, i)
    primary = slots.get((0, 0))
    ip_kinds = " or ".join(repr(k) for k in kinds if k != "efa-only")
    if primary is None:
        report(f"no primary interface on network card 0 device 0: add one of type {ip_kinds}.")
    elif (get(nics[primary], "interfaceType") or "interface") == "efa-only":
        report(f"{where}[{primary}] is the primary interface (card 0, device 0) and is "
               f"'efa-only', which has no IP: make it {ip_kinds}.")


# ----------------------------------------------------------------------------------------------
# EFA pools (node group + launch template + placement group + security group)
# ----------------------------------------------------------------------------------------------
def _efa_pools(stack: Stack):
    """(node group, launch template) pairs whose launch template attaches EFA interfaces."""
    lts = stack.of(LT)
    for ng in stack.of(NODE_GROUP):
        lt = launch_template_of(stack, ng, lts)
        if lt is not None and efa_interfaces(lt.props):
            yield ng, lt


@stack_rule(
    name="efa-interface-count",
    description="An EFA launch template (EC2NodeClass) attaches exactly as many EFA interfaces as "
                "every type of its node group (NodePool) supports, on network cards that exist.",
    family="efa-compute", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("aws-docs:efa-acc-inst-types",)), gpu=True,
    remediation="Attach one EFA interface (efa or efa-only) per network card, up to the type's "
                "EFA maximum (p4d: 4, p5: 32, p5en: 16, p6-b200: 8); keep every type of the pool "
                "at the same EFA count.")
def efa_interface_count(stack: Stack, cfg, report):
    lts = stack.of(LT)
    for ng in stack.of(NODE_GROUP):
        lt = launch_template_of(stack, ng, lts)
        efa = efa_interfaces(lt.props) if lt is not None else []
        for t in node_group_types(ng.props, lt.props) if efa else ():
            for problem in _efa_count(t, efa, f"node group {short(ng.urn)}",
                                      f"launch template {short(lt.urn)}"):
                report(problem, lt.urn)
    karpenter.check_efa_counts(stack, report, _efa_count)


def _efa_count(t: str, efa: list, pool: str, template: str) -> list[str]:
    """Why `template`'s EFA interfaces do not fit instance type `t` of `pool`."""
    spec = facts.lookup(t)
    if spec is None:
        return [f"{pool} uses {t}, which is not in the pack's instance facts "
                "(policies/facts.py): add it so EFA can be checked."]
    if spec.max_efa == 0:
        return [f"{t} ({pool}) does not support EFA, but {template} attaches {len(efa)} EFA "
                "interface(s): remove them or use an EFA-capable type."]
    out = []
    if len(efa) != spec.max_efa:
        out.append(f"{t} supports {spec.max_efa} EFA interface(s) but {template} attaches "
                   f"{len(efa)}: attach exactly {spec.max_efa}, one per network card "
                   f"0..{spec.max_efa - 1}.")
    bad = sorted({c for c in (as_int(get(n, "networkCardIndex"), 0) for n in efa)
                  if c >= spec.network_cards})
    if bad:
        out.append(f"{t} has {spec.network_cards} network card(s) but {template} uses card "
                   f"index {bad[0]}.")
    return out


@stack_rule(
    name="efa-pool-single-subnet",
    description="Every EFA node group (EFA NodePool) launches into exactly one subnet (one AZ).",
    family="efa-compute", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("aws-docs:efa-start-nccl",)), gpu=True,
    remediation="Give the EFA node group a single subnet_ids entry (EC2NodeClass: one "
                "subnetSelectorTerms id), the pool's one AZ; NCCL over EFA fails across subnets.")
def efa_pool_single_subnet(stack: Stack, cfg, report):
    for ng, _lt in _efa_pools(stack):
        subnets = items(get(ng.props, "subnetIds"))
        if len(subnets) != 1:
            report(f"EFA node group {short(ng.urn)} has {len(subnets)} subnets: an EFA pool "
                   "must live in exactly one subnet/AZ.", ng.urn)
    karpenter.check_subnets(stack, report)


@stack_rule(
    name="efa-placement-group",
    description="EFA pools launch into a `cluster` placement group, except pools on an ODCR or "
                "Capacity Block, which must not force one.",
    family="efa-compute", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("aws-docs:placement-groups", "aws-docs:capacity-blocks")), gpu=True,
    remediation="On-demand/spot EFA pools: set placement.group_name to an "
                "aws.ec2.PlacementGroup(strategy='cluster'). Reserved pools: remove "
                "placement.group_name (a group the reservation was not created with causes "
                "insufficient-capacity failures).")
def efa_placement_group(stack: Stack, cfg, report):
    pgs = stack.of(PLACEMENT_GROUP)
    for ng, lt in _efa_pools(stack):
        group = get(lt.props, "placement.groupName")
        if reserved(lt.props, ng.props):
            if group:
                report(f"launch template {short(lt.urn)} launches into a capacity reservation "
                       f"but forces placement group {group!r}: remove placement.group_name.",
                       lt.urn)
            continue
        if not group:
            report(f"EFA launch template {short(lt.urn)} (node group {short(ng.urn)}) has no "
                   "placement group: set placement.group_name to a 'cluster' placement group.",
                   lt.urn)
            continue
        linked = stack.linked(lt, "placement", pgs, keys=("name", "id"))
        if linked and get(linked[0].props, "strategy") != "cluster":
            report(f"placement group {short(linked[0].urn)} has strategy "
                   f"{get(linked[0].props, 'strategy')!r}: EFA pools need strategy 'cluster'.",
                   linked[0].urn)


def _all_protocols(value) -> bool:
    return str(value).lower() in ("-1", "all")


def _has_self_rule(stack: Stack, sg, direction: str) -> bool:
    inline = "ingress" if direction == "ingress" else "egress"
    for rule in items(get(sg.props, inline)):
        if _all_protocols(get(rule, "protocol")) and truthy(get(rule, "self")):
            return True
    rule_type = INGRESS_RULE if direction == "ingress" else EGRESS_RULE
    for rule in stack.of(rule_type):
        if not _all_protocols(get(rule.props, "ipProtocol")):
            continue
        if sg in stack.linked(rule, "securityGroupId", [sg]) and \
                sg in stack.linked(rule, "referencedSecurityGroupId", [sg]):
            return True
    for rule in stack.of(SG_RULE):
        if get(rule.props, "type") != direction or not _all_protocols(get(rule.props, "protocol")):
            continue
        if sg in stack.linked(rule, "securityGroupId", [sg]) and (
                truthy(get(rule.props, "self")) or
                sg in stack.linked(rule, "sourceSecurityGroupId", [sg])):
            return True
    return False


@stack_rule(
    name="efa-security-group-self-rules",
    description="The security group on EFA interfaces allows all traffic from itself (ingress) "
                "AND to itself (egress).",
    family="efa-compute", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("aws-docs:efa-start-security",)), gpu=True,
    remediation="Add aws.vpc.SecurityGroupIngressRule and SecurityGroupEgressRule with "
                "ip_protocol='-1' and referenced_security_group_id equal to the group's own id "
                "(the egress self rule is the one people miss).")
def efa_security_group_self_rules(stack: Stack, cfg, report):
    sgs = stack.of(SG)
    seen = set()
    for _ng, lt in _efa_pools(stack):
        try:
            groups = {str(g) for ni in efa_interfaces(lt.props)
                      for g in items(get(ni, "securityGroups"))}
            matched = [sg for sg in sgs if peek(sg, "id") in groups]
        except UnknownValueError:  # preview: the groups do not exist yet; follow dependencies
            groups = {"<unknown>"}
            matched = stack.linked(lt, "networkInterfaces", sgs)
        if not groups:
            report(f"EFA interfaces of launch template {short(lt.urn)} name no security group: "
                   "attach the pool's EFA security group to every EFA interface.", lt.urn)
            continue
        if not matched:
            report(f"the EFA interfaces of launch template {short(lt.urn)} use no security group "
                   "defined in this stack: attach an explicit EFA security group with self "
                   "ingress and egress rules.", lt.urn)
            continue
        gaps = {sg.urn: [d for d in ("ingress", "egress") if not _has_self_rule(stack, sg, d)]
                for sg in matched}
        if any(not missing for missing in gaps.values()):
            continue
        for sg in matched:
            missing = gaps[sg.urn]
            if sg.urn in seen:
                continue
            seen.add(sg.urn)
            report(f"security group {short(sg.urn)} on EFA interfaces lacks an all-protocol self "
                   f"{' and '.join(missing)} rule: add "
                   + " and ".join(f"SecurityGroup{d.capitalize()}Rule(ip_protocol='-1', "
                                  "referenced_security_group_id=<itself>)" for d in missing)
                   + ".", sg.urn)


# ----------------------------------------------------------------------------------------------
# GPU node groups
# ----------------------------------------------------------------------------------------------
@resource_rule(
    name="gpu-node-taint",
    description="GPU/accelerator node groups (NodePools) carry the vendor taint so non-GPU pods "
                "stay off.",
    family="efa-compute", types=(NODE_GROUP, NODEPOOL), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(other=("aws-docs:eks-ml-gpu-nodes",)), gpu=True,
    remediation="Add taints=[{key: 'nvidia.com/gpu' (Neuron: 'aws.amazon.com/neuron'), value: "
                "'true', effect: 'NO_SCHEDULE'}] to the node group (NodePool: NoSchedule).")
def gpu_node_taint(args, cfg, report):
    if args.resource_type == NODEPOOL:
        problem = karpenter.missing_taint(args)
        return report(problem) if problem else None
    types = node_group_types(args.props)
    vendor = accelerator_vendor(types, get(args.props, "amiType"))
    if vendor is None:
        return
    key = facts.GPU_TAINT_KEY[vendor]
    for taint in items(get(args.props, "taints")):
        if get(taint, "key") == key and get(taint, "effect") in ("NO_SCHEDULE", "NO_EXECUTE"):
            return
    report(f"accelerated node group ({', '.join(types) or get(args.props, 'amiType')}) has no "
           f"{key} taint: add taint key={key!r}, effect=NO_SCHEDULE.")


def ami_mismatch(ng_props, types: list[str]) -> Optional[str]:
    """Why the node group's AMI type does not fit its instance types (None when it does)."""
    ami = get(ng_props, "amiType")
    vendor = accelerator_vendor(types)
    if not types or ami == "CUSTOM":
        return None
    if ami is None:
        if vendor is not None:
            return (f"amiType is unset for accelerated types {types}: set it explicitly "
                    f"(e.g. AL2023_x86_64_{vendor.upper()}).")
        return None
    ami_vendor = facts.AMI_VENDOR.get(ami, "unknown")
    if ami_vendor == "unknown" or ami_vendor == vendor:
        return None
    want = f"a {vendor.upper()} AMI type" if vendor else "a standard (non-GPU) AMI type"
    return f"amiType {ami} does not match instance types {types}: use {want}."


@stack_rule(
    name="gpu-ami-type-match",
    description="A node group's AMI type (NodePool's EC2NodeClass AMI) carries the driver stack "
                "of its accelerators (NVIDIA AMI for NVIDIA GPUs, Neuron for Trainium/Inferentia).",
    family="efa-compute", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("aws-docs:eks-optimized-amis",)), gpu=True,
    remediation="Set ami_type to AL2023_x86_64_NVIDIA / BOTTLEROCKET_x86_64_NVIDIA for NVIDIA "
                "types, AL2023_x86_64_NEURON for Trainium/Inferentia (EC2NodeClass: an alias).")
def gpu_ami_type_match(stack: Stack, cfg, report):
    """A stack rule: Capacity Block pools name their instance type in the launch template."""
    lts = stack.of(LT)
    for ng in stack.of(NODE_GROUP):
        lt = launch_template_of(stack, ng, lts)
        problem = ami_mismatch(ng.props, node_group_types(ng.props, lt.props if lt else None))
        if problem:
            report(f"node group {short(ng.urn)}: {problem}", ng.urn)
    for urn, problem in karpenter.ami_mismatches(stack):
        report(problem, urn)


@resource_rule(
    name="node-ami-container-optimized",
    description="Node groups (EC2NodeClasses) run a current container-optimized OS (AL2023 or "
                "Bottlerocket).",
    family="efa-compute", types=(NODE_GROUP, NODECLASS), level=MANDATORY,
    severity=Severity.MEDIUM, refs=Refs(cis=("3.3.1",)),
    remediation="Use an AL2023_* or BOTTLEROCKET_* ami_type (alias al2023@/bottlerocket@).")
def node_ami_container_optimized(args, cfg, report):
    if args.resource_type == NODECLASS:
        problem = karpenter.ami_family_problem(args.props)
        return report(problem) if problem else None
    ami = get(args.props, "amiType")
    if ami and not (str(ami).startswith(("AL2023_", "BOTTLEROCKET_")) or ami == "CUSTOM"):
        report(f"amiType {ami} is not AL2023 or Bottlerocket: move the node group to an AL2023_* "
               "or BOTTLEROCKET_* AMI type.")


@resource_rule(
    name="spot-pool-diversified",
    description="Spot node groups (NodePools) list several instance types of one GPU/EFA shape.",
    family="efa-compute", types=(NODE_GROUP, NODEPOOL), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(other=("aws-docs:eks-managed-spot",)), gpu=True,
    config=schema(minInstanceTypes={
        "type": "integer", "minimum": 1, "default": 2,
        "description": "Fewest instance types a SPOT node group (Spot NodePool) may list."}),
    remediation="List at least two instance types with the same accelerator count and EFA count "
                "(e.g. g5.48xlarge + g6.48xlarge, p4d.24xlarge + p4de.24xlarge).")
def spot_pool_diversified(args, cfg, report):
    if args.resource_type == NODEPOOL:
        types, what = karpenter.spot_types(args), "Spot NodePool"
    else:
        spot = get(args.props, "capacityType") == "SPOT"
        types, what = node_group_types(args.props) if spot else None, "SPOT node group"
    if types is None:
        return
    need = int(cfg["minInstanceTypes"])
    if len(types) < need:
        report(f"{what} lists {len(types)} instance type(s) {types}: list at least "
               f"{need} of the same shape so Spot can draw from several pools.")
    specs = {t: facts.lookup(t) for t in types}
    shapes = {s.shape for s in specs.values() if s is not None}
    if len(shapes) > 1:
        detail = ", ".join(f"{t} ({s.gpus} GPUs, {s.max_efa} EFA)" for t, s in specs.items() if s)
        report(f"{what} mixes shapes: {detail}; every type needs the same accelerator "
               "and EFA count.")


@resource_rule(
    name="allowed-instance-types",
    description="Node groups and NodePools use only the instance families allowed in this "
                "environment (a GPU NodePool must restrict them).",
    family="efa-compute", types=(NODE_GROUP, LT, NODEPOOL), level=MANDATORY,
    severity=Severity.MEDIUM,
    refs=Refs(other=("trainyard:environment-instance-families",)), gpu=True,
    config=schema(allowedFamilies={
        "type": "array", "items": {"type": "string"},
        "default": sorted({facts.family(t) for t in facts.INSTANCES}),
        "description": "Instance families (e.g. p5, g6e, m6i) node groups may use."}),
    remediation="Use an allowed family, or add the family to this environment's policy config "
                "(policies/config/<env>.json) after review.")
def allowed_instance_types(args, cfg, report):
    allowed = set(cfg["allowedFamilies"])
    if args.resource_type == NODEPOOL:
        return karpenter.check_allowed_families(args, allowed, report)
    if args.resource_type == LT:
        types = [get(args.props, "instanceType")] if get(args.props, "instanceType") else []
    else:
        types = node_group_types(args.props)
    for t in types:
        if facts.family(str(t)) not in allowed:
            report(f"instance type {t} (family {facts.family(str(t))}) is not allowed in this "
                   f"environment (allowed: {', '.join(sorted(allowed))}).")


@stack_rule(
    name="gpu-capacity-not-spot-only",
    description="Where the environment requires it, not every GPU pool (node group or Karpenter "
                "NodePool) is Spot.",
    family="efa-compute", level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(other=("aws-docs:eks-managed-spot",)), gpu=True,
    config=schema(requireNonSpot={
        "type": "boolean", "default": False,
        "description": "Require at least one ON_DEMAND or CAPACITY_BLOCK GPU node group."}),
    remediation="Add an ON_DEMAND (optionally ODCR-backed) or CAPACITY_BLOCK GPU node group; "
                "Spot alone can be reclaimed all at once.")
def gpu_capacity_not_spot_only(stack: Stack, cfg, report):
    if not cfg["requireNonSpot"]:
        return
    lts = stack.of(LT)
    gpu = []
    for ng in stack.of(NODE_GROUP):
        lt = launch_template_of(stack, ng, lts)
        lt_props = lt.props if lt is not None else None
        if accelerator_vendor(node_group_types(ng.props, lt_props)) is not None:
            gpu.append(ng)
    # Karpenter NodePools count too: one with no capacity-type requirement launches on-demand
    # (Karpenter's default); one that allows on-demand or reserved is not Spot-only.
    pools = [p for p in karpenter.nodepools(stack) if p.vendor is not None]
    non_spot = [p for p in pools if not p.requirement(karpenter.CAPACITY)
                or p.requirement(karpenter.CAPACITY) & {"on-demand", "reserved"}]
    spot_only = [ng for ng in gpu if get(ng.props, "capacityType") == "SPOT"] + \
        [p.res for p in pools if p not in non_spot]
    if spot_only and len(spot_only) == len(gpu) + len(pools):
        report("every GPU pool is Spot (node groups with capacityType SPOT, NodePools whose "
               "karpenter.sh/capacity-type allows only spot): this environment requires "
               "on-demand or reserved GPU capacity as well (spot pools: "
               f"{', '.join(short(r.urn) for r in spot_only)}).", spot_only[0].urn)


@stack_rule(
    name="capacity-block-consistency",
    description="CAPACITY_BLOCK node groups use a launch template with market type "
                "capacity-block and a capacity reservation target, and vice versa.",
    family="efa-compute", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("aws-docs:capacity-blocks-eks",)), gpu=True,
    remediation="For a Capacity Block: node group capacity_type='CAPACITY_BLOCK', launch template "
                "instance_market_options.market_type='capacity-block' and "
                "capacity_reservation_specification.capacity_reservation_target."
                "capacity_reservation_id='cr-...'.")
def capacity_block_consistency(stack: Stack, cfg, report):
    lts = stack.of(LT)
    for ng in stack.of(NODE_GROUP):
        lt = launch_template_of(stack, ng, lts)
        is_block = get(ng.props, "capacityType") == "CAPACITY_BLOCK"
        lt_block = lt is not None and get(lt.props, "instanceMarketOptions.marketType") == \
            "capacity-block"
        if is_block:
            if lt is None:
                report(f"CAPACITY_BLOCK node group {short(ng.urn)} has no launch template in "
                       "this stack: a Capacity Block needs one with market type capacity-block.",
                       ng.urn)
                continue
            if not lt_block:
                report(f"launch template {short(lt.urn)} of CAPACITY_BLOCK node group "
                       f"{short(ng.urn)} lacks instance_market_options.market_type="
                       "'capacity-block'.", lt.urn)
            if not get(lt.props, "capacityReservationSpecification.capacityReservationTarget."
                                 "capacityReservationId"):
                report(f"launch template {short(lt.urn)} of CAPACITY_BLOCK node group "
                       f"{short(ng.urn)} names no capacity_reservation_target."
                       "capacity_reservation_id.", lt.urn)
        elif lt_block:
            report(f"node group {short(ng.urn)} uses capacity-block launch template "
                   f"{short(lt.urn)} but capacity_type is {get(ng.props, 'capacityType')}: set "
                   "capacity_type='CAPACITY_BLOCK'.", ng.urn)


@resource_rule(
    name="gpu-node-auto-repair",
    description="GPU node groups enable EKS node auto-repair (GPU XID errors, NVLink faults).",
    family="efa-compute", types=(NODE_GROUP,), level=ADVISORY, severity=Severity.LOW,
    refs=Refs(other=("aws-docs:eks-node-health",)), gpu=True,
    remediation="Set node_repair_config={'enabled': True} and install the "
                "eks-node-monitoring-agent add-on.")
def gpu_node_auto_repair(args, cfg, report):
    types = node_group_types(args.props)
    if accelerator_vendor(types, get(args.props, "amiType")) is None:
        return
    if not truthy(get(args.props, "nodeRepairConfig.enabled")):
        report("node auto-repair is off for this GPU node group: set node_repair_config."
               "enabled=True so failed GPUs are replaced automatically.")
