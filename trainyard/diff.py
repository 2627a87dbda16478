"""Plan diff: what a change does to one stack, computed from two offline plans.

Pure functions over plan dicts (the `trainyard plan --json` contract); no I/O, no Pulumi.
Resources are matched by URN. For each resource the diff says whether it is created, deleted,
updated in place, replaced (destroyed and created again), or updated in a way that replaces its
nodes (a managed node group rolling to a new launch-template version).

Replacement semantics are data, not code: `REPLACE_ON` lists, per resource type, the input
properties whose change forces Pulumi to replace the resource (the provider's `forceNew`
fields, as the AWS provider behind pulumi-aws v7 declares them); `ROLLS_NODES` lists node-group
properties that update the resource but replace every node; `STATEFUL` names the types whose
deletion loses data. docs/review.md says where each rule comes from and how sure it is.

Offline ids are placeholders that depend only on type and logical name, so a replaced resource
keeps its mock id here although the real one would get a new id. `diff_stack` therefore follows
references: a resource whose inputs hold the id or ARN of a replaced resource is updated to the
new value, and replaced in turn when that input is itself a replacing property (a VPC CIDR change
replaces the VPC, which replaces every subnet, which replaces the NAT gateways...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

from trainyard.plan import planned_pools

# ----------------------------------------------------------------------------------------------
# Rules (data)
# ----------------------------------------------------------------------------------------------
ANY, SET, REMOVED, DECREASE, NEW_VPC = "any", "set", "removed", "decrease", "new-vpc"
"""When a matching change replaces: `any` change; `set`: changing or removing a value that was
set (adding one where there was none is an in-place update); `removed`: only removing the whole
value; `decrease`: a numeric decrease; `new-vpc`: only when the property references resources
that are replaced into another VPC (updatable within a VPC, but the resource cannot move to
another one: see `in_new_vpc`)."""

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
VPC = "aws:ec2/vpc:Vpc"
VPC_ID = "vpcId"
"""The input by which a resource names its VPC (subnets, security groups, route tables...)."""

_S3_SIBLING = ("bucket", "expectedBucketOwner")
REPLACE_ON: dict[str, tuple[Any, ...]] = {
    # -- network ---------------------------------------------------------------------------
    "aws:ec2/vpc:Vpc": ("cidrBlock", "instanceTenancy", "ipv4IpamPoolId", "ipv4NetmaskLength"),
    "aws:ec2/subnet:Subnet": ("availabilityZone", "availabilityZoneId", "cidrBlock", "vpcId",
                              "outpostArn"),
    "aws:ec2/eip:Eip": ("address", "customerOwnedIpv4Pool", "domain", "networkBorderGroup",
                        "publicIpv4Pool"),
    "aws:ec2/natGateway:NatGateway": ("allocationId", "connectivityType", "privateIp",
                                      "subnetId"),
    "aws:ec2/routeTable:RouteTable": ("vpcId",),
    "aws:ec2/route:Route": ("routeTableId", "destinationCidrBlock", "destinationIpv6CidrBlock",
                            "destinationPrefixListId"),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": ("subnetId", "gatewayId"),
    "aws:ec2/vpcEndpoint:VpcEndpoint": ("serviceName", "vpcEndpointType", "vpcId",
                                        "serviceRegion"),
    "aws:ec2/securityGroup:SecurityGroup": ("name", "namePrefix", "vpcId", "description"),
    "aws:ec2/securityGroupRule:SecurityGroupRule": (
        "type", "securityGroupId", "protocol", "fromPort", "toPort", "cidrBlocks",
        "ipv6CidrBlocks", "prefixListIds", "self", "sourceSecurityGroupId"),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": ("securityGroupId",),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": ("securityGroupId",),
    "aws:ec2/flowLog:FlowLog": (
        "vpcId", "subnetId", "eniId", "transitGatewayId", "trafficType", "logDestination",
        "logDestinationType", "iamRoleArn", "maxAggregationInterval",
        "logFormat", "destinationOptions", "deliverCrossAccountRole"),
    # -- compute ---------------------------------------------------------------------------
    # Any other launch-template change makes a new template *version* (see diff_stack).
    LAUNCH_TEMPLATE: ("name", "namePrefix"),
    "aws:ec2/placementGroup:PlacementGroup": ("name", "strategy", "partitionCount",
                                              "spreadLevel"),
    NODE_GROUP: ("amiType", "capacityType", "clusterName", "diskSize", "instanceTypes",
                 "nodeGroupName", "nodeGroupNamePrefix", "nodeRoleArn", "remoteAccess",
                 "subnetIds", "launchTemplate.id", "launchTemplate.name"),
    # -- cluster ---------------------------------------------------------------------------
    # vpcConfig.subnetIds / securityGroupIds are updatable since AWS provider 5.25 (Nov 2023),
    # but only within the cluster's VPC: EKS cannot move a cluster to another VPC, so pointing
    # them at subnets or security groups of a new VPC replaces the cluster.
    # Envelope encryption can be added to a running cluster but never removed.
    "aws:eks/cluster:Cluster": (("vpcConfig.subnetIds", NEW_VPC),
                                ("vpcConfig.securityGroupIds", NEW_VPC),
                                "name", "roleArn", "bootstrapSelfManagedAddons",
                                "accessConfig.bootstrapClusterCreatorAdminPermissions",
                                "kubernetesNetworkConfig.serviceIpv4Cidr",
                                "kubernetesNetworkConfig.ipFamily", "remoteNetworkConfig",
                                "outpostConfig.controlPlaneInstanceType",
                                "outpostConfig.controlPlanePlacement",
                                ("encryptionConfig", REMOVED)),
    "aws:eks/addon:Addon": ("addonName", "clusterName"),
    "aws:eks/accessEntry:AccessEntry": ("clusterName", "principalArn", "type"),
    "aws:eks/accessPolicyAssociation:AccessPolicyAssociation": (
        "clusterName", "principalArn", "policyArn", "accessScope"),
    "aws:eks/podIdentityAssociation:PodIdentityAssociation": (
        "clusterName", "namespace", "serviceAccount"),
    "aws:iam/role:Role": ("name", "namePrefix", "path"),
    "aws:iam/rolePolicy:RolePolicy": ("name", "namePrefix", "role"),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ("role", "policyArn"),
    "aws:iam/policy:Policy": ("name", "namePrefix", "path", "description"),
    "aws:iam/instanceProfile:InstanceProfile": ("name", "namePrefix", "path"),
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": ("url",),
    "aws:kms/key:Key": ("customerMasterKeySpec", "keyUsage", "multiRegion", "customKeyStoreId",
                        "xksKeyId"),
    "aws:kms/alias:Alias": ("name", "namePrefix"),
    "aws:cloudwatch/logGroup:LogGroup": ("name", "namePrefix", "logGroupClass"),
    # -- storage ---------------------------------------------------------------------------
    "aws:s3/bucket:Bucket": ("bucket", "bucketPrefix", "objectLockEnabled"),
    "aws:s3/bucketVersioning:BucketVersioning": _S3_SIBLING + ("mfa",),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
        _S3_SIBLING,
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": ("bucket",),
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": ("bucket",),
    "aws:s3/bucketPolicy:BucketPolicy": ("bucket",),
    "aws:s3/bucketLogging:BucketLogging": _S3_SIBLING,
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": _S3_SIBLING,
    "aws:efs/fileSystem:FileSystem": ("availabilityZoneName", "creationToken", "encrypted",
                                      "kmsKeyId", "performanceMode"),
    "aws:efs/mountTarget:MountTarget": ("fileSystemId", "subnetId", "ipAddress",
                                        "ipAddressType", "ipv6Address"),
    "aws:efs/accessPoint:AccessPoint": ("fileSystemId", "posixUser", "rootDirectory"),
    "aws:efs/backupPolicy:BackupPolicy": ("fileSystemId",),
    # perUnitStorageThroughput and fileSystemTypeVersion are forceNew in the provider sources
    # read for this table; newer providers may update them in place (preview decides).
    "aws:fsx/lustreFileSystem:LustreFileSystem": (
        "deploymentType", "subnetIds", "securityGroupIds", "kmsKeyId", "storageType",
        "driveCacheType", "importPath", "exportPath", "importedFileChunkSize", "efaEnabled",
        "perUnitStorageThroughput", "fileSystemTypeVersion", "copyTagsToBackups", "backupId",
        ("storageCapacity", DECREASE)),
    "aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation": (
        "fileSystemId", "fileSystemPath", "dataRepositoryPath", "batchImportMetaDataOnCreate"),
    "aws:ecr/repository:Repository": ("name", "encryptionConfigurations"),
    # -- everything else -------------------------------------------------------------------
    "kubernetes:*": ("metadata.name", "metadata.namespace"),
    "kubernetes:helm.sh/v3:Release": ("name", "namespace"),
    "random:*": ("*",),  # random resources regenerate on any input change
}

ROLLS_NODES: dict[str, tuple[str, ...]] = {
    # The node group is updated in place, but EKS replaces every node (rolling update).
    NODE_GROUP: ("launchTemplate.version", "releaseVersion", "version"),
}
"""A change to any input of a launch template makes a new template version, which rolls the
nodes of every node group launched from it (EFA NICs cannot be hot-attached, AMIs cannot be
swapped under a running node)."""

STATEFUL: dict[str, str] = {
    "aws:s3/bucket:Bucket": "every object in the bucket",
    "aws:s3/bucketV2:BucketV2": "every object in the bucket",
    "aws:efs/fileSystem:FileSystem": "every file on the file system",
    "aws:fsx/lustreFileSystem:LustreFileSystem": "every file not yet exported to S3",
    "aws:kms/key:Key": "everything encrypted with the key (after the key's deletion window)",
    "aws:eks/cluster:Cluster": "the cluster and every workload and volume claim on it",
    "aws:cloudwatch/logGroup:LogGroup": "the log history",
    "aws:ecr/repository:Repository": "every image in the repository",
}
"""Types whose deletion or replacement destroys data: flagged loudly unless retainOnDelete."""

CREATE, DELETE, UPDATE, REPLACE, SAME = "create", "delete", "update", "replace", "same"


# ----------------------------------------------------------------------------------------------
# Property-level diff
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    path: str
    """`scalingConfig.maxSize`, `networkInterfaces[3]`, `tags.owner`."""
    old: Any
    new: Any
    kind: str
    """`changed`, `added` (absent in the base) or `removed` (absent in the head)."""

    def to_json(self) -> dict:
        return {"path": self.path, "kind": self.kind, "old": self.old, "new": self.new}


_MISSING = object()


def property_changes(old: Any, new: Any, path: str = "") -> list[Change]:
    """Leaf-level differences between two input trees. A key absent and a key set to null are
    the same (unknown values are null in an offline plan)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Change] = []
        for key in sorted(set(old) | set(new)):
            o, n = old.get(key), new.get(key)
            sub = f"{path}.{key}" if path else str(key)
            if o is None and n is None:
                continue
            if o is None:
                out.append(Change(sub, None, n, "added"))
            elif n is None:
                out.append(Change(sub, o, None, "removed"))
            else:
                out.extend(property_changes(o, n, sub))
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            sub = f"{path}[{i}]"
            if i >= len(old):
                out.append(Change(sub, None, new[i], "added"))
            elif i >= len(new):
                out.append(Change(sub, old[i], None, "removed"))
            else:
                out.extend(property_changes(old[i], new[i], sub))
        return out
    if old != new or (type(old) is not type(new) and not _same_number(old, new)):
        return [Change(path, old, new, "changed")]
    return []


def _same_number(a: Any, b: Any) -> bool:
    return (isinstance(a, (int, float)) and isinstance(b, (int, float))
            and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


_INDEX = re.compile(r"\[\d+\]")


def _schema_path(path: str) -> str:
    """`networkInterfaces[3].interfaceType` -> `networkInterfaces.interfaceType`."""
    return _INDEX.sub("", path)


def _matches(path: str, rule: str) -> bool:
    if rule == "*":
        return True
    p = _schema_path(path)
    return p == rule or p.startswith(rule + ".")


def rules_for(type_: str, table: dict[str, tuple]) -> list[tuple[str, str]]:
    """The (property path, mode) rules of `type_`: its own entry, else its package wildcard."""
    entry = table.get(type_)
    if entry is None:
        entry = table.get(type_.split(":")[0] + ":*", ())
    return [(r, ANY) if isinstance(r, str) else (r[0], r[1]) for r in entry]


def replacing(type_: str, change: Change, new_vpc: bool = False) -> bool:
    """Whether `change` to a resource of `type_` forces its replacement. `new_vpc`: the change
    points the property at a resource that is replaced into another VPC."""
    for rule, mode in rules_for(type_, REPLACE_ON):
        if not _matches(change.path, rule):
            continue
        if mode == NEW_VPC:
            if new_vpc:
                return True
            continue
        if mode == ANY:
            return True
        if mode == SET and change.kind != "added":
            return True
        if mode == REMOVED and change.kind == "removed" and _schema_path(change.path) == rule:
            return True
        if mode == DECREASE and isinstance(change.old, (int, float)) and \
                isinstance(change.new, (int, float)) and change.new < change.old:
            return True
    return False


def rolls_nodes(type_: str, change: Change) -> bool:
    return any(_matches(change.path, rule) for rule, _ in rules_for(type_, ROLLS_NODES))


# ----------------------------------------------------------------------------------------------
# Resource-level diff
# ----------------------------------------------------------------------------------------------
@dataclass
class ResourceDiff:
    urn: str
    type: str
    name: str
    action: str
    """create, delete, update or replace (resources with no change are not listed)."""
    changes: list[Change] = field(default_factory=list)
    replace_paths: list[str] = field(default_factory=list)
    """The changed properties that force the replacement."""
    reasons: list[str] = field(default_factory=list)
    """Human explanations: cascades through references, node rolls, options."""
    rolls_nodes: bool = False
    """The nodes of this node group are replaced (a rolling update, or the group is new)."""
    stateful: Optional[str] = None
    """What is lost if this resource is deleted (STATEFUL), for stateful types."""
    retain_on_delete: bool = False
    """Base resource's retainOnDelete: a delete or replace leaves the old one in AWS."""
    protect: bool = False
    capacity_block: bool = False
    """A node group on a Capacity Block (either side): EKS can only update or roll it at
    desired size 0, because the block has no spare instance to surge into."""

    @property
    def data_loss_risk(self) -> bool:
        return bool(self.stateful) and self.action in (DELETE, REPLACE) and \
            not self.retain_on_delete

    def to_json(self) -> dict:
        return {"urn": self.urn, "type": self.type, "name": self.name, "action": self.action,
                "replace_paths": self.replace_paths, "rolls_nodes": self.rolls_nodes,
                "reasons": self.reasons, "stateful": self.stateful is not None,
                "data_loss_risk": self.data_loss_risk, "retain_on_delete": self.retain_on_delete,
                "protect": self.protect, "capacity_block": self.capacity_block,
                "changes": [c.to_json() for c in self.changes]}


@dataclass
class StackDiff:
    resources: list[ResourceDiff]

    def count(self, action: str) -> int:
        return sum(1 for r in self.resources if r.action == action)

    @property
    def rolled(self) -> list[ResourceDiff]:
        return [r for r in self.resources if r.rolls_nodes and r.action == UPDATE]

    def summary(self) -> dict:
        return {"added": self.count(CREATE), "changed": self.count(UPDATE),
                "replaced": self.count(REPLACE), "removed": self.count(DELETE),
                "nodes_rolled": len(self.rolled),
                "data_loss_risks": sum(1 for r in self.resources if r.data_loss_risk)}


def _custom(plan: Optional[dict]) -> dict[str, dict]:
    if not plan:
        return {}
    return {r["urn"]: r for r in plan.get("resources", []) if r.get("custom", True)}


def _refs(value: Any, tokens: dict[str, str], path: str = "") -> Iterable[tuple[str, str]]:
    """(input path, referenced urn) for every leaf equal to (or embedding) a token."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _refs(v, tokens, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _refs(v, tokens, f"{path}[{i}]")
    elif isinstance(value, str) and value:
        if value in tokens:
            yield path, tokens[value]
        elif len(value) > 40 and ("arn:" in value or "{" in value):  # policy documents
            for tok, urn in tokens.items():
                if tok in value:
                    yield path, urn


def _tokens(res: dict) -> list[str]:
    """Values by which other resources reference `res`: its id and ARN. Short ids (component
    placeholders, `none`) are ignored: they could match unrelated strings."""
    vals = [res.get("id"), (res.get("outputs") or {}).get("arn")]
    return [v for v in vals if isinstance(v, str) and len(v) >= 8]


def diff_stack(base: Optional[dict], head: Optional[dict]) -> StackDiff:
    """Diff two plans of the same stack. Either may be None (stack added or removed)."""
    old, new = _custom(base), _custom(head)
    out: dict[str, ResourceDiff] = {}

    for urn in sorted(set(old) | set(new)):
        o, n = old.get(urn), new.get(urn)
        ref = n or o
        rd = ResourceDiff(urn=urn, type=ref["type"], name=ref["name"], action=SAME,
                          stateful=STATEFUL.get(ref["type"]),
                          retain_on_delete=bool((o or n).get("retainOnDelete")),
                          protect=bool((o or n).get("protect")),
                          capacity_block=ref["type"] == NODE_GROUP and any(
                              (r.get("inputs") or {}).get("capacityType") == "CAPACITY_BLOCK"
                              for r in (o, n) if r))
        if o is None:
            rd.action = CREATE
            rd.rolls_nodes = ref["type"] == NODE_GROUP
        elif n is None:
            rd.action = DELETE
        else:
            rd.changes = property_changes(o.get("inputs") or {}, n.get("inputs") or {})
            rd.replace_paths = [c.path for c in rd.changes if replacing(rd.type, c)]
            for opt in ("protect", "retainOnDelete"):
                if bool(o.get(opt)) != bool(n.get(opt)):
                    rd.reasons.append(f"resource option {opt}: {bool(o.get(opt))} → "
                                      f"{bool(n.get(opt))}")
            if rd.replace_paths:
                rd.action = REPLACE
            elif rd.changes or rd.reasons:
                rd.action = UPDATE
            if rd.action == UPDATE and any(rolls_nodes(rd.type, c) for c in rd.changes):
                rd.rolls_nodes = True
                rd.reasons.append("EKS replaces every node of the group (rolling update)")
        out[urn] = rd

    _cascade(out, old, new)
    _roll_from_launch_templates(out, new)
    for rd in out.values():
        if rd.action == REPLACE and rd.type == NODE_GROUP:
            rd.rolls_nodes = True
    return StackDiff([rd for rd in out.values() if rd.action != SAME])


def in_new_vpc(rd: ResourceDiff) -> bool:
    """A replaced resource ends up in another VPC when it is the VPC, or when its own `vpcId`
    changes (the replacing property): the seed of the `new-vpc` rule. `_cascade` extends it to
    every resource replaced through a reference to one that is in a new VPC (a subnet's NAT
    gateway, a cluster on moved subnets, that cluster's node groups...)."""
    return rd.action == REPLACE and (
        rd.type == VPC or any(_schema_path(p) == VPC_ID for p in rd.replace_paths))


def _cascade(out: dict[str, ResourceDiff], old: dict, new: dict) -> None:
    """Propagate replacements through references until nothing changes. A resource referenced
    while it is replaced is judged again once it turns out to move to a new VPC (`new-vpc`)."""
    done: set[str] = set()
    moved: set[str] = {u for u, rd in out.items() if in_new_vpc(rd)}
    done_moved: set[str] = set()
    while True:
        replaced = {u for u, rd in out.items() if rd.action == REPLACE}
        fresh = sorted((replaced - done) | (moved - done_moved))
        if not fresh:
            return
        done.update(fresh)
        done_moved.update(u for u in fresh if u in moved)
        tokens = {tok: u for u in fresh for tok in _tokens(old[u])}
        for urn, rd in out.items():
            if urn not in new or urn not in old:
                continue
            for path, target in _refs(new[urn].get("inputs") or {}, tokens):
                if target == urn:
                    continue
                who = out[target].name
                new_vpc = target in moved
                change = Change(path, "(old id)", f"(new id of {who})", "changed")
                updated = f"`{path}` is updated to the new id of {who} (replaced)"
                replaced_by = f"`{path}` references {who}, which is replaced"
                if replacing(rd.type, change, new_vpc=new_vpc):
                    rd.action = REPLACE
                    if path not in rd.replace_paths:
                        rd.replace_paths.append(path)
                    rd.reasons = [r for r in rd.reasons
                                  if r != updated and not r.startswith(replaced_by)]
                    rd.reasons.append(replaced_by + (" into a new VPC" if new_vpc else ""))
                    if new_vpc or in_new_vpc(rd):
                        moved.add(urn)
                else:
                    if rd.action == SAME:
                        rd.action = UPDATE
                    if updated not in rd.reasons:
                        rd.reasons.append(updated)


def _roll_from_launch_templates(out: dict[str, ResourceDiff], new: dict) -> None:
    changed_lts = {new[u]["id"]: rd for u, rd in out.items()
                   if rd.type == LAUNCH_TEMPLATE and rd.action == UPDATE and u in new}
    for urn, rd in out.items():
        if rd.type != NODE_GROUP or urn not in new or rd.action not in (SAME, UPDATE):
            continue
        lt_id = ((new[urn].get("inputs") or {}).get("launchTemplate") or {}).get("id")
        lt = changed_lts.get(lt_id)
        if lt is None:
            continue
        rd.action = UPDATE
        rd.rolls_nodes = True
        rd.reasons.append(f"launch template {lt.name} changes (new version): EKS replaces "
                          "every node of the group (rolling update)")


# ----------------------------------------------------------------------------------------------
# Capacity
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Capacity:
    nodes: int = 0
    gpus: int = 0
    efa_interfaces: int = 0
    bf16_tflops: float = 0.0
    unknown_types: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"nodes": self.nodes, "gpus": self.gpus, "efa_interfaces": self.efa_interfaces,
                "bf16_pflops": round(self.bf16_tflops / 1000, 3),
                "unknown_instance_types": list(self.unknown_types)}


def capacity(plan: Optional[dict], catalog) -> Capacity:
    """GPU capacity at every node group's max size: GPUs and bf16 peak from the catalog (first
    instance type of the group: a pool's types share a shape), EFA interfaces from the group's
    launch template."""
    if not plan:
        return Capacity()
    nodes = gpus = efa = 0
    tflops = 0.0
    unknown: list[str] = []
    for pool in planned_pools(plan):
        n, types = pool.max_size, pool.instance_types
        nodes += n
        efa += n * pool.efa_per_node
        if types and catalog.knows(types[0]):
            spec = catalog.get(types[0])
            gpus += n * spec.gpus
            tflops += n * spec.bf16_tflops_total
        elif types:
            unknown.append(types[0])
    return Capacity(nodes, gpus, efa, tflops, tuple(sorted(set(unknown))))


PROVISIONER_NAMES = {"managed": "managed node group", "karpenter": "Karpenter NodePool"}


def provisioner_changes(base: Optional[dict], head: Optional[dict]) -> list[tuple[str, str, str]]:
    """(pool label, base provisioner, head provisioner) for every pool that both plans have,
    made by a different provisioner (a node group became a NodePool, or back)."""
    if not base or not head:
        return []
    before = {p.label: p.provisioner for p in planned_pools(base)}
    after = {p.label: p.provisioner for p in planned_pools(head)}
    return [(label, before[label], after[label]) for label in sorted(before.keys() & after.keys())
            if before[label] != after[label]]


def capacity_delta(base: Capacity, head: Capacity) -> dict:
    return {"nodes": head.nodes - base.nodes, "gpus": head.gpus - base.gpus,
            "efa_interfaces": head.efa_interfaces - base.efa_interfaces,
            "bf16_pflops": round((head.bf16_tflops - base.bf16_tflops) / 1000, 3)}


# ----------------------------------------------------------------------------------------------
# Policy delta
# ----------------------------------------------------------------------------------------------
def policy_delta(base: list[dict], head: list[dict]) -> dict:
    """Violations introduced (in head, not base) and fixed (in base, not head), matched on
    (policy, urn). Both lists are `trainyard check --json` violations."""
    def keyed(vs):
        out: dict[tuple, dict] = {}
        for v in vs:
            out.setdefault((v.get("policy"), v.get("urn")), v)
        return out

    b, h = keyed(base), keyed(head)
    order = lambda v: (v.get("level") != "mandatory", v.get("policy") or "", v.get("urn") or "")  # noqa: E731
    return {"introduced": sorted((h[k] for k in h.keys() - b.keys()), key=order),
            "fixed": sorted((b[k] for k in b.keys() - h.keys()), key=order),
            "unchanged": len(b.keys() & h.keys()),
            "base_total": len(b), "head_total": len(h)}


def short_value(value: Any, limit: int = 60) -> str:
    """A value as a reviewer reads it: JSON, long strings cut in the middle."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False) if value is not None else "—"
    if len(text) > limit:
        text = text[: limit // 2 - 1] + "…" + text[-(limit // 2 - 1):]
    return text
