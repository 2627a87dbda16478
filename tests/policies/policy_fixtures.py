"""Small plan-resource builders and, for every policy, violating and compliant fixtures.

Each fixture is a list of plan resources (the `trainyard plan --json` shape), optionally with a
policy config; violating fixtures name the resource whose URN the violation must carry.
Resource ids follow the plan contract: a reference holds the referenced resource's mock id.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Optional

TAGS = {"environment": "dev", "owner": "ml-platform", "cost-center": "ml-research"}


def urn(typ: str, name: str) -> str:
    return f"urn:pulumi:dev::trainyard::{typ}::{name}"


def R(typ: str, name: str, inputs: Optional[dict] = None, outputs: Optional[dict] = None,
      rid: Optional[str] = None, tags: bool = False) -> dict:
    inputs = dict(inputs or {})
    if tags:
        inputs.setdefault("tags", dict(TAGS))
    return {"urn": urn(typ, name), "type": typ, "name": name, "parent": None,
            "id": rid or f"{name}-id", "inputs": inputs, "outputs": dict(outputs or {})}


def rid(name: str) -> str:
    return f"{name}-id"


@dataclass
class Case:
    resources: list
    expect: Optional[str] = None
    """Logical name of the resource the violation must point at (violating fixtures)."""
    config: dict = field(default_factory=dict)
    """Policy properties for the policy under test."""
    label: str = ""


# ----------------------------------------------------------------------------------------------
# Types
# ----------------------------------------------------------------------------------------------
VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"
SG = "aws:ec2/securityGroup:SecurityGroup"
DSG = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
IN = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
OUT = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
LT = "aws:ec2/launchTemplate:LaunchTemplate"
NG = "aws:eks/nodeGroup:NodeGroup"
PG = "aws:ec2/placementGroup:PlacementGroup"
NAT = "aws:ec2/natGateway:NatGateway"
VPCE = "aws:ec2/vpcEndpoint:VpcEndpoint"
CLUSTER = "aws:eks/cluster:Cluster"
ADDON = "aws:eks/addon:Addon"
BUCKET = "aws:s3/bucket:Bucket"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
VERS = "aws:s3/bucketVersioning:BucketVersioning"
PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
OWN = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
BPOL = "aws:s3/bucketPolicy:BucketPolicy"
BLOG = "aws:s3/bucketLogging:BucketLogging"
LIFE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
EFS = "aws:efs/fileSystem:FileSystem"
EFS_AP = "aws:efs/accessPoint:AccessPoint"
EFS_BP = "aws:efs/backupPolicy:BackupPolicy"
FSX = "aws:fsx/lustreFileSystem:LustreFileSystem"
LOGS = "aws:cloudwatch/logGroup:LogGroup"
KMS = "aws:kms/key:Key"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ATTACH = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
ECR = "aws:ecr/repository:Repository"
NS = "kubernetes:core/v1:Namespace"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
QUOTA = "kubernetes:core/v1:ResourceQuota"
CRB = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
CROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
CM = "kubernetes:core/v1:ConfigMap"
DS = "kubernetes:apps/v1:DaemonSet"
HELM = "kubernetes:helm.sh/v3:Release"
CTR = "kubernetes:trainer.kubeflow.org/v1alpha1:ClusterTrainingRuntime"


# ----------------------------------------------------------------------------------------------
# Compliant building blocks
# ----------------------------------------------------------------------------------------------
def lt_props(instance: Optional[str] = None, efa: int = 0, **over) -> dict:
    """A compliant launch template; `efa` EFA interfaces in AWS's current layout."""
    nics = []
    if efa:
        nics.append({"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface",
                     "securityGroups": [rid("efa-sg")]})
        nics.append({"networkCardIndex": 0, "deviceIndex": 1, "interfaceType": "efa-only",
                     "securityGroups": [rid("efa-sg")]})
        for card in range(1, efa):
            nics.append({"networkCardIndex": card, "deviceIndex": 0, "interfaceType": "efa-only",
                         "securityGroups": [rid("efa-sg")]})
    props = {
        "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 2,
                            "httpEndpoint": "enabled"},
        "blockDeviceMappings": [{"deviceName": "/dev/xvda",
                                 "ebs": {"encrypted": "true", "volumeSize": 200}}],
        "tags": dict(TAGS),
    }
    if nics:
        props["networkInterfaces"] = nics
        props["placement"] = {"groupName": "pool-pg-name"}
    if instance:
        props["instanceType"] = instance
    props.update(over)
    return props


def ng_props(types=("p4d.24xlarge",), capacity="ON_DEMAND", subnets=("private-a",),
             lt: Optional[str] = "lt", **over) -> dict:
    props = {
        "clusterName": "cluster-name", "nodeRoleArn": "arn:aws:iam::123456789012:role/node",
        "instanceTypes": list(types), "capacityType": capacity,
        "scalingConfig": {"minSize": 0, "desiredSize": 1, "maxSize": 2},
        "subnetIds": [rid(s) for s in subnets], "amiType": "AL2023_x86_64_NVIDIA",
        "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}],
        "nodeRepairConfig": {"enabled": True}, "tags": dict(TAGS),
    }
    if lt:
        props["launchTemplate"] = {"id": rid(lt), "version": "1"}
    props.update(over)
    return props


def efa_sg(ingress: bool = True, egress: bool = True) -> list:
    out = [R(SG, "efa-sg", {"description": "EFA self traffic", "vpcId": rid("vpc")}, tags=True)]
    if ingress:
        out.append(R(IN, "efa-self-in", {"securityGroupId": rid("efa-sg"), "ipProtocol": "-1",
                                         "referencedSecurityGroupId": rid("efa-sg"),
                                         "description": "self"}))
    if egress:
        out.append(R(OUT, "efa-self-out", {"securityGroupId": rid("efa-sg"), "ipProtocol": "-1",
                                           "referencedSecurityGroupId": rid("efa-sg"),
                                           "description": "self"}))
    return out


def efa_pool(instance="p4d.24xlarge", efa=4, pg_strategy: Optional[str] = "cluster",
             lt_over: Optional[dict] = None, ng_over: Optional[dict] = None,
             subnets=("private-a",)) -> list:
    res = efa_sg()
    if pg_strategy:
        res.append(R(PG, "pool-pg", {"strategy": pg_strategy, "tags": dict(TAGS)},
                     outputs={"name": "pool-pg-name"}, rid="pool-pg-name"))
    lt = lt_props(efa=efa, **(lt_over or {}))
    if not pg_strategy:
        lt.pop("placement", None)
    res.append(R(LT, "lt", lt))
    ng = ng_props(types=(instance,), subnets=subnets)
    ng.update(ng_over or {})
    res.append(R(NG, "pool", ng))
    return res


def cluster_props(**over) -> dict:
    props = {
        "version": "1.36", "roleArn": "arn:aws:iam::123456789012:role/cluster",
        "enabledClusterLogTypes": ["api", "audit", "authenticator", "controllerManager",
                                   "scheduler"],
        "encryptionConfig": {"provider": {"keyArn": "arn:aws:kms:us-east-1:1:key/k"},
                             "resources": ["secrets"]},
        "vpcConfig": {"endpointPrivateAccess": True, "endpointPublicAccess": False,
                      "subnetIds": [rid("private-a")]},
        "accessConfig": {"authenticationMode": "API",
                         "bootstrapClusterCreatorAdminPermissions": False},
        "tags": dict(TAGS),
    }
    props.update(over)
    return props


def tls_policy(bucket: str, extra: Optional[list] = None) -> str:
    arn = f"arn:aws:s3:::{bucket}"
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        *(extra or [])]})


def bucket_set(name: str = "checkpoints", purpose: str = "checkpoints", drop: tuple = (),
               over: Optional[dict] = None, log_target: str = "access-logs") -> list:
    """A bucket and every sibling that makes it compliant; `drop` leaves siblings out and `over`
    replaces a sibling's inputs (keyed by sibling kind)."""
    over = over or {}
    b = rid(name)
    siblings = {
        "sse": (SSE, {"bucket": b, "rules": [{"applyServerSideEncryptionByDefault": {
            "sseAlgorithm": "aws:kms", "kmsMasterKeyId": "arn:aws:kms:us-east-1:1:key/k"},
            "bucketKeyEnabled": True}]}),
        "versioning": (VERS, {"bucket": b, "versioningConfiguration": {"status": "Enabled"}}),
        "pab": (PAB, {"bucket": b, "blockPublicAcls": True, "blockPublicPolicy": True,
                      "ignorePublicAcls": True, "restrictPublicBuckets": True}),
        "ownership": (OWN, {"bucket": b, "rule": {"objectOwnership": "BucketOwnerEnforced"}}),
        "policy": (BPOL, {"bucket": b, "policy": tls_policy(b)}),
        "logging": (BLOG, {"bucket": b, "targetBucket": rid(log_target),
                           "targetPrefix": f"{name}/"}),
        "lifecycle": (LIFE, {"bucket": b, "rules": [
            {"id": "abort", "status": "Enabled", "filter": {},
             "abortIncompleteMultipartUpload": {"daysAfterInitiation": 7}},
            {"id": "old-versions", "status": "Enabled", "filter": {},
             "noncurrentVersionExpiration": {"noncurrentDays": 30}}]}),
    }
    out = [R(BUCKET, name, {"tags": {**TAGS, "trainyard.io/purpose": purpose}},
             outputs={"bucket": b, "arn": f"arn:aws:s3:::{b}"})]
    for kind, (typ, props) in siblings.items():
        if kind in drop:
            continue
        out.append(R(typ, f"{name}-{kind}", over.get(kind, props)))
    return out


def log_bucket() -> list:
    """The access-log target: SSE-S3 (log delivery cannot use KMS), no logging of its own."""
    return bucket_set("access-logs", "access-logs", drop=("logging",),
                      over={"sse": {"bucket": rid("access-logs"), "rules": [
                          {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]}})


def storage(drop: tuple = (), over: Optional[dict] = None, name="checkpoints",
            purpose="checkpoints") -> list:
    return bucket_set(name, purpose, drop, over) + log_bucket()


def doc(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def ns(name: str, level: Optional[str] = "restricted", team: bool = False) -> dict:
    labels = {}
    if level:
        labels["pod-security.kubernetes.io/enforce"] = level
    if team:
        labels["trainyard.io/team"] = name
    return R(NS, f"ns-{name}", {"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": name, "labels": labels}},
             rid=name)


def netpol(namespace: str) -> dict:
    return R(NETPOL, f"netpol-{namespace}", {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}},
        rid=f"{namespace}/default-deny")


def helm(name: str, chart: str, version: Optional[str], repo: Optional[str],
         namespace: Optional[str] = "kube-system") -> dict:
    props = {"chart": chart, "namespace": namespace}
    if version is not None:
        props["version"] = version
    if repo is not None:
        props["repositoryOpts"] = {"repo": repo}
    return R(HELM, name, props)


def pod_template(image="public.ecr.aws/x/trainer:1.2.3", privileged=False, volumes=None) -> dict:
    return {"spec": {"containers": [{"name": "main", "image": image,
                                     "securityContext": {"privileged": privileged}}],
                     "volumes": volumes or []}}


def daemonset(name="agent", namespace="monitoring", **kw) -> dict:
    return R(DS, name, {"apiVersion": "apps/v1", "kind": "DaemonSet",
                        "metadata": {"name": name, "namespace": namespace},
                        "spec": {"selector": {}, "template": pod_template(**kw)}})


def user_data(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SUBNETS = [
    R(SUBNET, "private-a", {"vpcId": rid("vpc"), "cidrBlock": "10.0.0.0/18",
                            "mapPublicIpOnLaunch": False,
                            "tags": {**TAGS, "trainyard.io/tier": "private"}}),
    R(SUBNET, "public-a", {"vpcId": rid("vpc"), "cidrBlock": "10.0.192.0/24",
                           "mapPublicIpOnLaunch": False,
                           "tags": {**TAGS, "trainyard.io/tier": "public",
                                    "kubernetes.io/role/elb": "1"}}),
]


# ----------------------------------------------------------------------------------------------
# Fixtures per policy: {"policy": {"bad": [Case...], "good": [Case...]}}
# ----------------------------------------------------------------------------------------------
def _nat(n: int) -> list:
    return [R(NAT, f"nat-{i}", {"subnetId": rid("public-a"), "tags": dict(TAGS)})
            for i in range(n)]


def _cb_pool(market: Optional[str], capacity: str, target: bool = True) -> list:
    lt = lt_props(efa=32)
    lt.pop("placement")
    if market:
        lt["instanceMarketOptions"] = {"marketType": market}
    if target:
        lt["capacityReservationSpecification"] = {
            "capacityReservationTarget": {"capacityReservationId": "cr-0a1b2c3d4e5f60718"}}
    return efa_sg() + [R(LT, "lt", lt),
                       R(NG, "pool", ng_props(types=("p5.48xlarge",), capacity=capacity))]


VPC_RES = R(VPC, "vpc", {"cidrBlock": "10.0.0.0/16", "tags": dict(TAGS)})
ADDONS = [R(ADDON, f"addon-{n}", {"clusterName": "cluster-name", "addonName": n})
          for n in ("vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent",
                    "eks-node-monitoring-agent")]
CLUSTER_RES = R(CLUSTER, "cluster", cluster_props(), outputs={"name": "cluster-name"},
                rid="cluster-name")
KEY_POLICY = doc({"Sid": "Account", "Effect": "Allow",
                  "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*",
                  "Resource": "*"})
POD_TRUST = doc({"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
                 "Action": ["sts:AssumeRole", "sts:TagSession"]})
OIDC = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/ABC"


def _role(name: str, trust: str, **kw) -> dict:
    return R(ROLE, name, {"assumeRolePolicy": trust, **kw}, tags=True)


FIXTURES: dict[str, dict[str, list[Case]]] = {
    # -- network ---------------------------------------------------------------------------
    "vpc-flow-logs": {
        "bad": [Case([VPC_RES], "vpc")],
        "good": [Case([VPC_RES, R(FLOW_LOG, "fl", {"vpcId": rid("vpc"), "trafficType": "ALL"})])],
    },
    "default-security-group-closed": {
        "bad": [Case([VPC_RES], "vpc", label="unmanaged"),
                Case([VPC_RES, R(DSG, "dsg", {"vpcId": rid("vpc"), "ingress": [
                    {"protocol": "-1", "fromPort": 0, "toPort": 0, "self": True}]})], "dsg",
                     label="rules left")],
        "good": [Case([VPC_RES, R(DSG, "dsg", {"vpcId": rid("vpc")})])],
    },
    "subnet-no-auto-public-ip": {
        "bad": [Case([R(SUBNET, "private-a", {"mapPublicIpOnLaunch": True,
                                              "tags": {"trainyard.io/tier": "private"}})],
                     "private-a")],
        "good": [Case(SUBNETS), Case([R(SUBNET, "public-b", {
            "mapPublicIpOnLaunch": True, "tags": {"trainyard.io/tier": "public"}})])],
    },
    "no-admin-ports-from-internet": {
        "bad": [Case([R(IN, "ssh", {"securityGroupId": "sg-1", "cidrIpv4": "0.0.0.0/0",
                                    "ipProtocol": "tcp", "fromPort": 22, "toPort": 22})], "ssh"),
                Case([R(SG, "rdp", {"description": "x", "ingress": [
                    {"protocol": "tcp", "fromPort": 3000, "toPort": 4000,
                     "ipv6CidrBlocks": ["::/0"]}]})], "rdp", label="inline ipv6 range"),
                Case([R(NG, "ng", ng_props(remoteAccess={"ec2SshKey": "key"}))], "ng",
                     label="node group ssh")],
        "good": [Case([R(IN, "ssh", {"securityGroupId": "sg-1", "cidrIpv4": "10.0.0.0/8",
                                     "ipProtocol": "tcp", "fromPort": 22, "toPort": 22}),
                       R(IN, "https", {"securityGroupId": "sg-1", "cidrIpv4": "0.0.0.0/0",
                                       "ipProtocol": "tcp", "fromPort": 443, "toPort": 443})])],
    },
    "no-all-ports-from-internet": {
        "bad": [Case([R(IN, "all", {"securityGroupId": "sg-1", "cidrIpv4": "0.0.0.0/0",
                                    "ipProtocol": "-1"})], "all")],
        "good": [Case([R(IN, "https", {"securityGroupId": "sg-1", "cidrIpv4": "0.0.0.0/0",
                                       "ipProtocol": "tcp", "fromPort": 443, "toPort": 443}),
                       R(IN, "self", {"securityGroupId": "sg-1", "ipProtocol": "-1",
                                      "referencedSecurityGroupId": "sg-1"})])],
    },
    "security-group-descriptions": {
        "bad": [Case([R(SG, "sg", {"description": "Managed by Pulumi"})], "sg"),
                Case([R(IN, "rule", {"securityGroupId": "sg-1", "ipProtocol": "-1"})], "rule")],
        "good": [Case([R(SG, "sg", {"description": "EFA self traffic"}),
                       R(IN, "rule", {"securityGroupId": "sg-1", "ipProtocol": "-1",
                                      "description": "self"})])],
    },
    # -- EFA and compute ---------------------------------------------------------------------
    "launch-template-imdsv2": {
        "bad": [Case([R(LT, "lt", lt_props(metadataOptions={"httpTokens": "optional"}))], "lt"),
                Case([R(LT, "lt", lt_props(metadataOptions={}))], "lt", label="unset")],
        "good": [Case([R(LT, "lt", lt_props())])],
    },
    "launch-template-imds-hop-limit": {
        "bad": [Case([R(LT, "lt", lt_props(metadataOptions={
            "httpTokens": "required", "httpPutResponseHopLimit": 3.0}))], "lt"),
                Case([R(LT, "lt", lt_props())], "lt", config={"maxHopLimit": 1},
                     label="stricter environment")],
        "good": [Case([R(LT, "lt", lt_props())])],
    },
    "launch-template-no-public-ip": {
        "bad": [Case([R(LT, "lt", lt_props(networkInterfaces=[
            {"deviceIndex": 0, "associatePublicIpAddress": "true"}]))], "lt")],
        "good": [Case([R(LT, "lt", lt_props(networkInterfaces=[
            {"deviceIndex": 0, "associatePublicIpAddress": "false"}]))])],
    },
    "launch-template-no-secrets-in-user-data": {
        "bad": [Case([R(LT, "lt", lt_props(userData=user_data(
            "#!/bin/bash\nexport AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n")))], "lt"),
                Case([R(LT, "lt", lt_props(userData=user_data(
                    "HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz0123456789")))], "lt", label="hf")],
        "good": [Case([R(LT, "lt", lt_props(userData=user_data(
            "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  instance:\n"
            "    localStorage:\n      strategy: RAID0\n")))])],
    },
    "launch-template-encrypted-volumes": {
        "bad": [Case([R(LT, "lt", lt_props(blockDeviceMappings=[
            {"deviceName": "/dev/xvda", "ebs": {"encrypted": "false", "volumeSize": 200}}]))],
                     "lt")],
        "good": [Case([R(LT, "lt", lt_props())])],
    },
    "launch-template-no-subnet": {
        "bad": [Case([R(LT, "lt", lt_props(networkInterfaces=[
            {"deviceIndex": 0, "subnetId": "subnet-1"}]))], "lt")],
        "good": [Case([R(LT, "lt", lt_props(efa=4))])],
    },
    "efa-interface-layout": {
        "bad": [Case([R(LT, "lt", lt_props(networkInterfaces=[
            {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "efa-only"}]))], "lt",
                     label="primary efa-only"),
                Case([R(LT, "lt", lt_props(networkInterfaces=[
                    {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "efa"},
                    {"networkCardIndex": 0, "deviceIndex": 1, "interfaceType": "efa-only"}]))],
                     "lt", label="two EFA on one card"),
                Case([R(LT, "lt", lt_props(networkInterfaces=[
                    {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"},
                    {"networkCardIndex": 1, "deviceIndex": 2, "interfaceType": "efa"}]))],
                     "lt", label="bad device index")],
        "good": [Case([R(LT, "lt", lt_props(efa=4))], label="current"),
                 Case([R(LT, "lt", lt_props(networkInterfaces=[
                     {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "efa"},
                     {"networkCardIndex": 1, "deviceIndex": 1, "interfaceType": "efa"}]))],
                      label="legacy")],
    },
    "efa-interface-count": {
        "bad": [Case(efa_pool(efa=3), "lt", label="p4d with 3"),
                Case(efa_pool(instance="g5.2xlarge", efa=1), "lt", label="type without EFA")],
        "good": [Case(efa_pool()), Case(efa_pool(instance="p5.48xlarge", efa=32))],
    },
    "efa-pool-single-subnet": {
        "bad": [Case(efa_pool(subnets=("private-a", "private-b")), "pool")],
        "good": [Case(efa_pool())],
    },
    "efa-placement-group": {
        "bad": [Case(efa_pool(pg_strategy=None), "lt", label="no group"),
                Case(efa_pool(pg_strategy="spread"), "pool-pg", label="spread"),
                Case(efa_pool(lt_over={"capacityReservationSpecification": {
                    "capacityReservationTarget": {"capacityReservationId": "cr-0123456789abcdef0"}
                }}), "lt", label="reserved with group")],
        "good": [Case(efa_pool()),
                 Case(_cb_pool("capacity-block", "CAPACITY_BLOCK"), label="capacity block")],
    },
    "efa-security-group-self-rules": {
        "bad": [Case([r for r in efa_pool() if r["name"] != "efa-self-out"], "efa-sg",
                     label="egress missing"),
                Case([r for r in efa_pool() if r["name"] != "efa-self-in"], "efa-sg",
                     label="ingress missing")],
        "good": [Case(efa_pool())],
    },
    "gpu-node-taint": {
        "bad": [Case([R(NG, "ng", ng_props(taints=[]))], "ng"),
                Case([R(NG, "ng", ng_props(types=("trn1.32xlarge",),
                                           amiType="AL2023_x86_64_NEURON"))], "ng",
                     label="neuron with nvidia taint"),
                Case([R(LT, "lt", lt_props(instance="p5.48xlarge")),
                      R(NG, "ng", ng_props(types=(), taints=[]))], "ng",
                     label="type in the launch template")],
        "good": [Case([R(NG, "ng", ng_props())]),
                 Case([R(NG, "sys", ng_props(types=("m6i.xlarge",), taints=[],
                                             amiType="AL2023_x86_64_STANDARD"))],
                      label="cpu")],
    },
    "gpu-ami-type-match": {
        "bad": [Case([R(NG, "ng", ng_props(amiType="AL2023_x86_64_STANDARD"))], "ng"),
                Case([R(NG, "ng", ng_props(types=("trn1.32xlarge",)))], "ng", label="neuron"),
                Case([R(NG, "ng", ng_props(amiType=None))], "ng", label="unset"),
                Case([R(LT, "lt", lt_props(instance="p5.48xlarge")),
                      R(NG, "ng", ng_props(types=(), amiType="AL2023_x86_64_STANDARD"))], "ng",
                     label="type in the launch template")],
        "good": [Case([R(NG, "ng", ng_props())]),
                 Case([R(LT, "lt", lt_props(instance="p5.48xlarge")),
                       R(NG, "ng", ng_props(types=()))], label="capacity block style"),
                 Case([R(NG, "ng", ng_props(amiType="BOTTLEROCKET_x86_64_NVIDIA"))])],
    },
    "node-ami-container-optimized": {
        "bad": [Case([R(NG, "ng", ng_props(amiType="AL2_x86_64_GPU"))], "ng")],
        "good": [Case([R(NG, "ng", ng_props())])],
    },
    "spot-pool-diversified": {
        "bad": [Case([R(NG, "ng", ng_props(types=("g5.48xlarge",), capacity="SPOT"))], "ng"),
                Case([R(NG, "ng", ng_props(types=("g5.48xlarge", "g5.12xlarge"),
                                           capacity="SPOT"))], "ng", label="mixed shapes")],
        "good": [Case([R(NG, "ng", ng_props(types=("g5.48xlarge", "g6.48xlarge"),
                                            capacity="SPOT"))])],
    },
    "allowed-instance-types": {
        "bad": [Case([R(NG, "ng", ng_props(types=("p5.48xlarge",)))], "ng",
                     config={"allowedFamilies": ["g5", "g6"]})],
        "good": [Case([R(NG, "ng", ng_props(types=("g5.48xlarge",)))],
                      config={"allowedFamilies": ["g5", "g6"]}),
                 Case([R(NG, "ng", ng_props(types=("p5.48xlarge",)))], label="default")],
    },
    "gpu-capacity-not-spot-only": {
        "bad": [Case([R(NG, "ng", ng_props(types=("g5.48xlarge", "g6.48xlarge"),
                                           capacity="SPOT"))], "ng",
                     config={"requireNonSpot": True})],
        "good": [Case([R(NG, "spot", ng_props(types=("g5.48xlarge", "g6.48xlarge"),
                                              capacity="SPOT")),
                       R(NG, "od", ng_props())], config={"requireNonSpot": True}),
                 Case([R(NG, "spot", ng_props(types=("g5.48xlarge", "g6.48xlarge"),
                                              capacity="SPOT"))], label="not required")],
    },
    "capacity-block-consistency": {
        "bad": [Case(_cb_pool(None, "CAPACITY_BLOCK"), "lt", label="market type missing"),
                Case(_cb_pool("capacity-block", "CAPACITY_BLOCK", target=False), "lt",
                     label="no target"),
                Case(_cb_pool("capacity-block", "ON_DEMAND"), "pool", label="capacity type")],
        "good": [Case(_cb_pool("capacity-block", "CAPACITY_BLOCK")), Case(efa_pool())],
    },
    "gpu-node-auto-repair": {
        "bad": [Case([R(NG, "ng", ng_props(nodeRepairConfig=None))], "ng")],
        "good": [Case([R(NG, "ng", ng_props())])],
    },
    # -- cluster -----------------------------------------------------------------------------
    "eks-secrets-encryption": {
        "bad": [Case([R(CLUSTER, "c", cluster_props(encryptionConfig=None))], "c")],
        "good": [Case([R(CLUSTER, "c", cluster_props())])],
    },
    "eks-control-plane-logging": {
        "bad": [Case([R(CLUSTER, "c", cluster_props(enabledClusterLogTypes=["api"]))], "c"),
                Case([R(CLUSTER, "c", cluster_props(enabledClusterLogTypes=None))], "c",
                     label="logging off")],
        "good": [Case([R(CLUSTER, "c", cluster_props())]),
                 Case([R(CLUSTER, "c", cluster_props(enabledClusterLogTypes=["audit"]))],
                      config={"requiredLogTypes": ["audit"]}, label="configured")],
    },
    "eks-endpoint-access": {
        "bad": [Case([R(CLUSTER, "c", cluster_props(vpcConfig={
            "endpointPrivateAccess": True, "endpointPublicAccess": True,
            "publicAccessCidrs": ["203.0.113.0/24"]}))], "c", label="public not allowed"),
                Case([R(CLUSTER, "c", cluster_props(vpcConfig={
                    "endpointPrivateAccess": True, "endpointPublicAccess": True,
                    "publicAccessCidrs": ["0.0.0.0/0"]}))], "c",
                     config={"allowPublicEndpoint": True,
                             "allowedPublicCidrs": ["0.0.0.0/0"]}, label="open"),
                Case([R(CLUSTER, "c", cluster_props(vpcConfig={
                    "endpointPrivateAccess": True, "endpointPublicAccess": True,
                    "publicAccessCidrs": ["198.51.100.0/24"]}))], "c",
                     config={"allowPublicEndpoint": True,
                             "allowedPublicCidrs": ["203.0.113.0/24"]}, label="outside list"),
                Case([R(CLUSTER, "c", cluster_props(vpcConfig={
                    "endpointPrivateAccess": False, "endpointPublicAccess": False}))], "c",
                     label="private access off")],
        "good": [Case([R(CLUSTER, "c", cluster_props())]),
                 Case([R(CLUSTER, "c", cluster_props(vpcConfig={
                     "endpointPrivateAccess": True, "endpointPublicAccess": True,
                     "publicAccessCidrs": ["203.0.113.0/25"]}))],
                      config={"allowPublicEndpoint": True,
                              "allowedPublicCidrs": ["203.0.113.0/24"]}, label="allowed")],
    },
    "eks-access-entries": {
        "bad": [Case([R(CLUSTER, "c", cluster_props(accessConfig={
            "authenticationMode": "CONFIG_MAP"}))], "c"),
                Case([R(CLUSTER, "c", cluster_props(accessConfig=None))], "c", label="unset")],
        "good": [Case([R(CLUSTER, "c", cluster_props())])],
    },
    "eks-no-bootstrap-admin": {
        "bad": [Case([R(CLUSTER, "c", cluster_props(accessConfig={
            "authenticationMode": "API"}))], "c")],
        "good": [Case([R(CLUSTER, "c", cluster_props())])],
    },
    "eks-required-addons": {
        "bad": [Case([CLUSTER_RES] + ADDONS[:2], "cluster"),
                Case([CLUSTER_RES, R(NG, "ng", ng_props())] + ADDONS[:4], "cluster",
                     label="auto-repair needs monitoring agent")],
        "good": [Case([CLUSTER_RES, R(NG, "ng", ng_props())] + ADDONS)],
    },
    "eks-private-nodes": {
        "bad": [Case(SUBNETS + [R(NG, "ng", ng_props(subnets=("public-a",)))], "ng")],
        "good": [Case(SUBNETS + [R(NG, "ng", ng_props())])],
    },
    # -- storage -----------------------------------------------------------------------------
    "s3-public-access-block": {
        "bad": [Case(storage(drop=("pab",)), "checkpoints"),
                Case(storage(over={"pab": {"bucket": rid("checkpoints"), "blockPublicAcls": True,
                                           "blockPublicPolicy": False, "ignorePublicAcls": True,
                                           "restrictPublicBuckets": True}}),
                     "checkpoints-pab", label="one setting off")],
        "good": [Case(storage())],
    },
    "s3-encryption": {
        "bad": [Case(storage(drop=("sse",)), "checkpoints"),
                Case(storage(over={"sse": {"bucket": rid("checkpoints"), "rules": [
                    {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]}}),
                     "checkpoints", label="SSE-S3 where KMS is required")],
        "good": [Case(storage()),
                 Case(storage(over={"sse": {"bucket": rid("checkpoints"), "rules": [
                     {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]}}),
                      config={"requireKms": False}, label="SSE-S3 allowed")],
    },
    "s3-versioning": {
        "bad": [Case(storage(drop=("versioning",)), "checkpoints"),
                Case(storage(over={"versioning": {"bucket": rid("checkpoints"),
                                                  "versioningConfiguration": {
                                                      "status": "Suspended"}}}),
                     "checkpoints", label="suspended")],
        "good": [Case(storage())],
    },
    "s3-access-logging": {
        "bad": [Case(storage(drop=("logging",)), "checkpoints")],
        "good": [Case(storage())],
    },
    "s3-acls-disabled": {
        "bad": [Case(storage(drop=("ownership",)), "checkpoints"),
                Case(storage(over={"ownership": {"bucket": rid("checkpoints"), "rule": {
                    "objectOwnership": "ObjectWriter"}}}), "checkpoints-ownership",
                     label="ObjectWriter")],
        "good": [Case(storage())],
    },
    "s3-lifecycle": {
        "bad": [Case(storage(drop=("lifecycle",)), "checkpoints"),
                Case(storage(over={"lifecycle": {"bucket": rid("checkpoints"), "rules": [
                    {"id": "x", "status": "Enabled", "expiration": {"days": 30}}]}}),
                     "checkpoints", label="no abort")],
        "good": [Case(storage())],
    },
    "s3-tls-only": {
        "bad": [Case(storage(drop=("policy",)), "checkpoints")],
        "good": [Case(storage())],
    },
    "checkpoint-bucket-protection": {
        "bad": [Case(storage(over={"lifecycle": {"bucket": rid("checkpoints"), "rules": [
            {"id": "abort", "status": "Enabled",
             "abortIncompleteMultipartUpload": {"daysAfterInitiation": 7}}]}}), "checkpoints"),
                Case(storage(drop=("versioning",)), "checkpoints", label="unversioned")],
        "good": [Case(storage()),
                 Case(storage(name="datasets", purpose="datasets", drop=("versioning",)),
                      label="not a checkpoint bucket")],
    },
    "efs-encrypted": {
        "bad": [Case([R(EFS, "fs", {"encrypted": False, "tags": TAGS})], "fs"),
                Case([R(EFS, "fs", {"encrypted": True, "tags": TAGS})], "fs", label="no CMK")],
        "good": [Case([R(EFS, "fs", {"encrypted": True, "kmsKeyId": "arn:aws:kms:k"})])],
    },
    "efs-access-point-posix": {
        "bad": [Case([R(EFS_AP, "ap", {"fileSystemId": rid("fs")})], "ap"),
                Case([R(EFS_AP, "ap", {"fileSystemId": rid("fs"),
                                       "posixUser": {"uid": 1000, "gid": 1000},
                                       "rootDirectory": {"path": "/"}})], "ap", label="root")],
        "good": [Case([R(EFS_AP, "ap", {"fileSystemId": rid("fs"),
                                        "posixUser": {"uid": 1000.0, "gid": 1000.0},
                                        "rootDirectory": {"path": "/research", "creationInfo": {
                                            "ownerUid": 1000, "ownerGid": 1000,
                                            "permissions": "0750"}}})])],
    },
    "efs-backup": {
        "bad": [Case([R(EFS, "fs", {"encrypted": True})], "fs"),
                Case([R(EFS, "fs", {"encrypted": True}),
                      R(EFS_BP, "fs-backup", {"fileSystemId": rid("fs"),
                                              "backupPolicy": {"status": "DISABLED"}})],
                     "fs-backup", label="disabled")],
        "good": [Case([R(EFS, "fs", {"encrypted": True}),
                       R(EFS_BP, "fs-backup", {"fileSystemId": rid("fs"),
                                               "backupPolicy": {"status": "ENABLED"}})]),
                 Case([R(EFS, "fs", {"encrypted": True})], config={"requireBackup": False},
                      label="dev")],
    },
    "fsx-lustre-cmk": {
        "bad": [Case([R(FSX, "fsx", {"deploymentType": "PERSISTENT_2", "storageCapacity": 2400})],
                     "fsx")],
        "good": [Case([R(FSX, "fsx", {"deploymentType": "PERSISTENT_2", "storageCapacity": 2400,
                                      "kmsKeyId": "arn:aws:kms:k"})])],
    },
    "log-group-kms": {
        "bad": [Case([R(LOGS, "lg", {"retentionInDays": 365})], "lg")],
        "good": [Case([R(LOGS, "lg", {"retentionInDays": 365, "kmsKeyId": "arn:aws:kms:k"})])],
    },
    "log-group-retention": {
        "bad": [Case([R(LOGS, "lg", {"kmsKeyId": "k"})], "lg", label="unset"),
                Case([R(LOGS, "lg", {"kmsKeyId": "k", "retentionInDays": 30.0})], "lg",
                     label="too short")],
        "good": [Case([R(LOGS, "lg", {"kmsKeyId": "k", "retentionInDays": 400})]),
                 Case([R(LOGS, "lg", {"kmsKeyId": "k", "retentionInDays": 14})],
                      config={"minRetentionDays": 7}, label="dev")],
    },
    # -- IAM ---------------------------------------------------------------------------------
    "iam-no-admin-access": {
        "bad": [Case([R(ATTACH, "att", {"role": "r", "policyArn":
                                        "arn:aws:iam::aws:policy/AdministratorAccess"})], "att"),
                Case([R(ROLE_POLICY, "rp", {"role": "r", "policy": doc(
                    {"Effect": "Allow", "Action": "*", "Resource": "*"})})], "rp",
                     label="inline")],
        "good": [Case([R(ATTACH, "att", {"role": "r", "policyArn":
                                         "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy"})])],
    },
    "iam-no-wildcard-actions": {
        "bad": [Case([R(ROLE_POLICY, "rp", {"role": "r", "policy": doc(
            {"Effect": "Allow", "Action": ["*"], "Resource": "arn:aws:s3:::b/*"})})], "rp")],
        "good": [Case([R(ROLE_POLICY, "rp", {"role": "r", "policy": doc(
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
             "Resource": "arn:aws:s3:::b/*"})})])],
    },
    "iam-no-wildcard-resources": {
        "bad": [Case([R(ROLE_POLICY, "rp", {"role": "r", "policy": doc(
            {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": "*"})})], "rp")],
        "good": [Case([R(ROLE_POLICY, "rp", {"role": "r", "policy": doc(
            {"Effect": "Allow", "Action": ["ec2:DescribeInstances", "ecr:GetAuthorizationToken"],
             "Resource": "*"})})])],
    },
    "iam-no-ecr-write-for-nodes": {
        "bad": [Case([R(ATTACH, "att", {"role": "node", "policyArn":
                                        "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPowerUser"
                                        })], "att")],
        "good": [Case([R(ATTACH, "att", {"role": "node", "policyArn":
                                         "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly"
                                         })])],
    },
    "no-wildcard-principal": {
        "bad": [Case([R(BPOL, "bp", {"bucket": "b", "policy": doc(
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::b/*"})})], "bp"),
                Case([R(KMS, "key", {"enableKeyRotation": True, "policy": doc(
                    {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*",
                     "Resource": "*"})})], "key", label="kms")],
        "good": [Case([R(BPOL, "bp", {"bucket": "b", "policy": tls_policy("b")}),
                       R(KMS, "key", {"enableKeyRotation": True, "policy": KEY_POLICY})])],
    },
    "irsa-trust-scoped": {
        "bad": [Case([_role("irsa", doc({"Effect": "Allow", "Principal": {"Federated": OIDC},
                                         "Action": "sts:AssumeRoleWithWebIdentity"}))], "irsa")],
        "good": [Case([_role("irsa", doc({
            "Effect": "Allow", "Principal": {"Federated": OIDC},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {f"{ISSUER}:sub": "system:serviceaccount:a:b",
                                           f"{ISSUER}:aud": "sts.amazonaws.com"}}}))])],
    },
    "pod-identity-trust-policy": {
        "bad": [Case([_role("pod", doc({"Effect": "Allow",
                                        "Principal": {"Service": "pods.eks.amazonaws.com"},
                                        "Action": "sts:AssumeRole"}))], "pod")],
        "good": [Case([_role("pod", POD_TRUST)])],
    },
    "kms-key-rotation": {
        "bad": [Case([R(KMS, "key", {"policy": KEY_POLICY})], "key")],
        "good": [Case([R(KMS, "key", {"enableKeyRotation": True, "policy": KEY_POLICY}),
                       R(KMS, "signing", {"customerMasterKeySpec": "RSA_2048",
                                          "keyUsage": "SIGN_VERIFY"})])],
    },
    # -- Kubernetes --------------------------------------------------------------------------
    "k8s-namespace-pod-security": {
        "bad": [Case([ns("research", level=None)], "ns-research"),
                Case([ns("research", level="privileged")], "ns-research", label="privileged")],
        "good": [Case([ns("research"), ns("monitoring", level="privileged")])],
    },
    "k8s-namespace-network-policy": {
        "bad": [Case([ns("research"), ns("applied"), netpol("applied")], "ns-research")],
        "good": [Case([ns("research"), netpol("research"), ns("kube-system")])],
    },
    "team-gpu-quota": {
        "bad": [Case([ns("research", team=True)], "ns-research"),
                Case([ns("research", team=True), R(QUOTA, "quota", {
                    "metadata": {"name": "q", "namespace": "research"},
                    "spec": {"hard": {"requests.cpu": "100"}}})], "ns-research",
                     label="quota without GPUs")],
        "good": [Case([ns("research", team=True), ns("monitoring"), R(QUOTA, "quota", {
            "metadata": {"name": "q", "namespace": "research"},
            "spec": {"hard": {"requests.nvidia.com/gpu": "16"}}})])],
    },
    "k8s-no-default-namespace": {
        "bad": [Case([R(CM, "cm", {"metadata": {"name": "x"}, "data": {}})], "cm"),
                Case([helm("plugin", "nvidia-device-plugin", "0.18.2",
                           "https://nvidia.github.io/k8s-device-plugin", namespace=None)],
                     "plugin", label="helm")],
        "good": [Case([R(CM, "cm", {"metadata": {"name": "x", "namespace": "research"}}),
                       ns("research"), R(CROLE, "cr", {"metadata": {"name": "x"}, "rules": []}),
                       R(CTR, "rt", {"metadata": {"name": "torch-distributed"}, "spec": {}})])],
    },
    "k8s-no-cluster-admin-binding": {
        "bad": [Case([R(CRB, "crb", {"metadata": {"name": "ci"}, "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": "cluster-admin"}, "subjects": []})], "crb")],
        "good": [Case([R(CRB, "crb", {"metadata": {"name": "viewers"}, "roleRef": {
            "kind": "ClusterRole", "name": "view"}})]),
                 Case([R(CRB, "crb", {"metadata": {"name": "break-glass"}, "roleRef": {
                     "kind": "ClusterRole", "name": "cluster-admin"}})],
                      config={"allowedBindings": ["break-glass"]}, label="allowed")],
    },
    "k8s-rbac-no-wildcards": {
        "bad": [Case([R(CROLE, "cr", {"metadata": {"name": "x"}, "rules": [
            {"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]})], "cr")],
        "good": [Case([R(CROLE, "cr", {"metadata": {"name": "x"}, "rules": [
            {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
             "verbs": ["get", "list", "create"]}]})])],
    },
    "k8s-no-infiniband-hostpath": {
        "bad": [Case([daemonset(volumes=[{"name": "ib", "hostPath":
                                          {"path": "/dev/infiniband"}}])], "agent")],
        "good": [Case([daemonset(volumes=[{"name": "shm", "emptyDir": {"medium": "Memory"}}])])],
    },
    "k8s-no-privileged-containers": {
        "bad": [Case([daemonset(privileged=True)], "agent")],
        "good": [Case([daemonset()])],
    },
    # -- supply chain ------------------------------------------------------------------------
    "helm-chart-pinned": {
        "bad": [Case([helm("dcgm", "dcgm-exporter", None,
                           "https://nvidia.github.io/dcgm-exporter/helm-charts")], "dcgm"),
                Case([helm("dcgm", "dcgm-exporter", "^4.8",
                           "https://nvidia.github.io/dcgm-exporter/helm-charts")], "dcgm",
                     label="range")],
        "good": [Case([helm("dcgm", "dcgm-exporter", "4.8.1",
                            "https://nvidia.github.io/dcgm-exporter/helm-charts")])],
    },
    "helm-known-bad-versions": {
        "bad": [Case([helm("nvdp", "nvidia-device-plugin", "0.19.1",
                           "https://nvidia.github.io/k8s-device-plugin")], "nvdp"),
                Case([helm("efa", "aws-efa-k8s-device-plugin", "v0.5.6",
                           "https://aws.github.io/eks-charts")], "efa", label="old EFA plugin")],
        "good": [Case([helm("nvdp", "nvidia-device-plugin", "0.18.2",
                            "https://nvidia.github.io/k8s-device-plugin"),
                       helm("efa", "aws-efa-k8s-device-plugin", "v0.5.26",
                            "https://aws.github.io/eks-charts"),
                       helm("trainer", "oci://ghcr.io/kubeflow/charts/kubeflow-trainer", "2.3.0",
                            None)])],
    },
    "helm-trusted-repositories": {
        "bad": [Case([helm("x", "x", "1.0.0", "http://charts.example.com")], "x"),
                Case([helm("x", "x", "1.0.0", "https://charts.example.com")], "x",
                     label="not allowed"),
                Case([helm("x", "x", "1.0.0", None)], "x", label="no repo")],
        "good": [Case([helm("trainer", "oci://ghcr.io/kubeflow/charts/kubeflow-trainer", "2.3.0",
                            None),
                       helm("kps", "kube-prometheus-stack", "82.1.0",
                            "https://prometheus-community.github.io/helm-charts")])],
    },
    "container-image-pinned": {
        "bad": [Case([daemonset(image="public.ecr.aws/hpc-cloud/nccl-tests:latest")], "agent"),
                Case([R(CTR, "rt", {"metadata": {"name": "torch"}, "spec": {"template": {
                    "spec": {"replicatedJobs": [{"template": {"spec": {"template":
                                                 pod_template(image="pytorch/pytorch")}}}]}}}})],
                     "rt", label="untagged, nested")],
        "good": [Case([daemonset(image="nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3-4.1.3-ubuntu22.04"),
                       daemonset(name="b", image="repo/img@sha256:" + "a" * 64)])],
    },
    "ecr-scan-and-immutable-tags": {
        "bad": [Case([R(ECR, "repo", {"imageTagMutability": "MUTABLE"})], "repo")],
        "good": [Case([R(ECR, "repo", {"imageTagMutability": "IMMUTABLE",
                                       "imageScanningConfiguration": {"scanOnPush": True}})])],
    },
    # -- tagging and cost --------------------------------------------------------------------
    "required-tags": {
        "bad": [Case([R(VPC, "vpc", {"cidrBlock": "10.0.0.0/16",
                                     "tags": {"environment": "dev"}})], "vpc"),
                Case([R(IN, "rule", {"securityGroupId": "sg-1", "ipProtocol": "-1"})], "rule",
                     label="untagged rule")],
        "good": [Case([VPC_RES, R("aws:ec2/routeTableAssociation:RouteTableAssociation", "rta",
                                  {"subnetId": "s", "routeTableId": "r"})]),
                 Case([dict(R(VPC, "vpc2", {"cidrBlock": "10.0.0.0/16"}), provider="tagged"),
                       R("pulumi:providers:aws", "tagged", {
                           "region": "us-east-1",
                           "defaultTags": json.dumps({"tags": TAGS})})],
                      label="provider default tags")],
    },
    "gpu-budget": {
        "bad": [Case([R(NG, "ng", ng_props())], "ng", config={"maxGpus": 8},
                     label="GPU count"),
                Case([R(NG, "ng", ng_props())], "ng",
                     config={"maxGpus": 100, "maxOnDemandUsdPerHour": 40}, label="dollars")],
        "good": [Case([R(NG, "ng", ng_props()),
                       R(NG, "spot", ng_props(types=("g5.48xlarge", "g6.48xlarge"),
                                              capacity="SPOT"))],
                      config={"maxGpus": 32, "maxOnDemandUsdPerHour": 50})],
    },
    "nat-gateway-count": {
        "bad": [Case(_nat(3), "nat-0", config={"maxNatGateways": 1})],
        "good": [Case(_nat(1), config={"maxNatGateways": 1})],
    },
    "s3-gateway-endpoint": {
        "bad": [Case([VPC_RES] + _nat(1), "vpc")],
        "good": [Case([VPC_RES] + _nat(1) + [R(VPCE, "s3", {
            "vpcId": rid("vpc"), "serviceName": "com.amazonaws.us-east-1.s3",
            "vpcEndpointType": "Gateway"})])],
    },
}

# Families with many fixtures keep them in their own files (they import the helpers above).
from fixtures_readiness import READINESS_FIXTURES  # noqa: E402
from fixtures_schedulability import SCHEDULABILITY_FIXTURES  # noqa: E402

FIXTURES.update(READINESS_FIXTURES)
FIXTURES.update(SCHEDULABILITY_FIXTURES)
from fixtures_kueue import KUEUE_FIXTURES  # noqa: E402

FIXTURES.update(KUEUE_FIXTURES)
from fixtures_karpenter import KARPENTER_EXTRA_CASES, KARPENTER_FIXTURES  # noqa: E402

FIXTURES.update(KARPENTER_FIXTURES)
for _name, _cases in KARPENTER_EXTRA_CASES.items():
    for _kind, _more in _cases.items():
        FIXTURES[_name][_kind] = FIXTURES[_name][_kind] + _more
from fixtures_supply_chain import SUPPLY_CHAIN_EXTRA_CASES, SUPPLY_CHAIN_FIXTURES  # noqa: E402

FIXTURES.update(SUPPLY_CHAIN_FIXTURES)
for _name, _cases in SUPPLY_CHAIN_EXTRA_CASES.items():
    for _kind, _more in _cases.items():
        FIXTURES[_name][_kind] = FIXTURES[_name][_kind] + _more
from fixtures_aws_depth import AWS_DEPTH_EXTRA_CASES, AWS_DEPTH_FIXTURES  # noqa: E402

FIXTURES.update(AWS_DEPTH_FIXTURES)
for _name, _cases in AWS_DEPTH_EXTRA_CASES.items():
    for _kind, _more in _cases.items():
        FIXTURES[_name][_kind] = FIXTURES[_name][_kind] + _more
from fixtures_serving import SERVING_FIXTURES  # noqa: E402

FIXTURES.update(SERVING_FIXTURES)
from fixtures_pods import POD_FIXTURES  # noqa: E402

FIXTURES.update(POD_FIXTURES)
from fixtures_notebooks import NOTEBOOK_FIXTURES  # noqa: E402

FIXTURES.update(NOTEBOOK_FIXTURES)
