"""Pulumi mocks that synthesize realistic, deterministic outputs offline.

Every physical id, ARN, endpoint and auto-generated name is derived from a hash of the resource's
type and logical name, so the same program gives byte-identical plans. Provider-computed values
are placeholders in the right format (vpc-..., arn:aws:..., https://<id>.gr7.<region>.eks...),
never real. Invokes the program uses are answered from the instance catalog; an invoke with no
answer fails loudly instead of returning nothing (a silent empty answer would blind policies).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from typing import Any, Optional

import pulumi

from components.compute.catalog import Catalog, load_catalog

ACCOUNT_ID = "123456789012"
"""The account every mock ARN, ECR URL and owner id carries."""
SECRET_SIG = "4dabf18193072939515e22adb298388d"
AUTONAME_HEX = 7
"""Pulumi auto-naming appends '-' and 7 hex characters; the mocks derive them from a hash."""
BUCKET_PREFIX_HEX = 20
"""The mocks complete a `bucketPrefix` with 20 hex characters; S3 itself appends 26 digits."""


def _h(*parts: str, n: int = 17) -> str:
    return hashlib.sha256("::".join(parts).encode()).hexdigest()[:n]


def unwrap_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            return unwrap_secrets(value.get("value"))
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


class TrainyardMocks(pulumi.runtime.Mocks):
    def __init__(self, region: str, catalog: Catalog | None = None):
        self.region = region
        self.catalog = catalog or load_catalog()
        self.partition = "aws-us-gov" if region.startswith("us-gov-") else "aws"

    # -- helpers ---------------------------------------------------------------------------
    def arn(self, service: str, resource: str, region: bool = True, account: bool = True) -> str:
        return (f"arn:{self.partition}:{service}:{self.region if region else ''}:"
                f"{ACCOUNT_ID if account else ''}:{resource}")

    @staticmethod
    def physical_name(name: str, typ: str, max_len: int = 63) -> str:
        """Pulumi auto-naming: logical name + '-' + 7 hex characters."""
        return f"{name[: max_len - 1 - AUTONAME_HEX]}-{_h(typ, name, n=AUTONAME_HEX)}"

    # -- resources -------------------------------------------------------------------------
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        typ, name = args.typ, args.name
        inputs = unwrap_secrets(args.inputs)  # builds new dicts/lists; leaves are immutable
        if not args.custom:
            return "", inputs  # component resources have no physical id
        handler = _HANDLERS.get(typ) or _HANDLERS.get(typ.split(":")[0] + ":*")
        if handler is None:
            rid = f"{typ.split(':')[-1].lower()}-{_h(typ, name)}"
            return rid, {**inputs, "arn": self.arn(typ.split(":")[1].split("/")[0], rid)}
        rid, extra = handler(self, name, typ, inputs)
        return rid, {**inputs, **extra}

    # -- invokes ---------------------------------------------------------------------------
    def call(self, args: pulumi.runtime.MockCallArgs):
        fn = _INVOKES.get(args.token)
        if fn is None:
            raise NotImplementedError(
                f"the offline mocks have no answer for invoke {args.token!r}; add one to "
                "trainyard/mocks.py")
        return fn(self, dict(args.args))


# ----------------------------------------------------------------------------------------------
# Recognising what the mocks made up (so nothing real is ever built on a placeholder)
# ----------------------------------------------------------------------------------------------
_BUCKET_PREFIX_FILL = re.compile(rf"^.*-[0-9a-f]{{{BUCKET_PREFIX_HEX}}}$")
_AUTONAME = re.compile(rf"^(?P<name>.+)-(?P<suffix>[0-9a-f]{{{AUTONAME_HEX}}})$")


def placeholder_reason(value: Any) -> Optional[str]:
    """Why `value` is a value these mocks generate (None when it is not one), judged by how
    they generate it:

    - every mock ARN, ECR URL and owner id carries the account ACCOUNT_ID;
    - a bucket named from a `bucketPrefix` (which ends in '-') gets 20 hex characters where S3
      appends 26 digits, so a real name never has '-' right before its last 20 characters;
    - an auto-named resource gets '-' and the first 7 hex characters of a hash of its type and
      logical name; a real auto-name has random ones (1 chance in 16^7 to coincide).
    """
    if not isinstance(value, str) or not value:
        return None
    if ACCOUNT_ID in value:
        return f"it carries the offline mocks' account id {ACCOUNT_ID}"
    if _BUCKET_PREFIX_FILL.match(value):
        return (f"it ends in the {BUCKET_PREFIX_HEX} hex characters the offline mocks append to "
                "a bucketPrefix (S3 appends 26 digits)")
    m = _AUTONAME.match(value)
    if m:
        name, suffix = m.group("name"), m.group("suffix")
        for typ in (*_HANDLERS, "aws:s3/bucketV2:BucketV2"):
            if _h(typ, name, n=AUTONAME_HEX) == suffix:
                return (f"it is the offline mocks' auto-name for {name!r} (a hash, where Pulumi "
                        "appends random characters)")
    return None


# ----------------------------------------------------------------------------------------------
# Per-type outputs. Each returns (physical id, extra output properties).
# ----------------------------------------------------------------------------------------------
_HANDLERS: dict[str, Callable[..., tuple[str, dict]]] = {}


def handles(*types: str):
    def register(fn):
        for t in types:
            _HANDLERS[t] = fn
        return fn
    return register


_EC2_PREFIX = {
    "aws:ec2/vpc:Vpc": "vpc", "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/internetGateway:InternetGateway": "igw", "aws:ec2/natGateway:NatGateway": "nat",
    "aws:ec2/eip:Eip": "eipalloc", "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "rtbassoc",
    "aws:ec2/route:Route": "r", "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce",
    "aws:ec2/securityGroup:SecurityGroup": "sg",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": "sg",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "sgr",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "sgr",
    "aws:ec2/securityGroupRule:SecurityGroupRule": "sgrule",
    "aws:ec2/launchTemplate:LaunchTemplate": "lt", "aws:ec2/flowLog:FlowLog": "fl",
    "aws:ec2/networkAcl:NetworkAcl": "acl",
    "aws:ec2/defaultNetworkAcl:DefaultNetworkAcl": "acl",
    "aws:ec2/vpcEndpointRouteTableAssociation:VpcEndpointRouteTableAssociation": "a",
}


@handles(*_EC2_PREFIX)
def _ec2(m: TrainyardMocks, name, typ, inputs):
    prefix = _EC2_PREFIX[typ]
    rid = f"{prefix}-{_h(typ, name)}"
    kind = typ.split(":")[-1]
    out: dict[str, Any] = {"arn": m.arn("ec2", f"{kind.lower()}/{rid}"), "ownerId": ACCOUNT_ID}
    if kind == "Vpc":
        out.update(defaultSecurityGroupId=f"sg-{_h(typ, name, 'dsg')}",
                   mainRouteTableId=f"rtb-{_h(typ, name, 'main')}",
                   defaultNetworkAclId=f"acl-{_h(typ, name, 'acl')}")
    elif kind == "Subnet":
        az = inputs.get("availabilityZone", "")
        out["availabilityZoneId"] = f"use1-az{ord(az[-1]) - 96}" if az else ""
    elif kind == "LaunchTemplate":
        out.update(latestVersion=1, defaultVersion=1,
                   name=inputs.get("name") or m.physical_name(name, typ, 128))
    elif kind == "Eip":
        digest = int(_h(typ, name, n=4), 16)
        out.update(publicIp=f"198.51.100.{digest % 254 + 1}", allocationId=rid)
    elif kind in ("SecurityGroup",):
        out["name"] = inputs.get("name") or m.physical_name(name, typ, 255)
    elif kind == "NatGateway":
        out["privateIp"] = "10.0.0.10"
    elif kind == "VpcEndpoint":
        out["dnsEntries"] = [{"dnsName": f"{rid}.{inputs.get('serviceName', '')}",
                              "hostedZoneId": "Z7HUB22UULQXV"}]
    return rid, out


@handles("aws:ec2/placementGroup:PlacementGroup")
def _placement_group(m, name, typ, inputs):
    pg = inputs.get("name") or m.physical_name(name, typ, 255)
    return pg, {"name": pg, "placementGroupId": f"pg-{_h(typ, name)}",
                "arn": m.arn("ec2", f"placement-group/{pg}")}


@handles("aws:kms/key:Key")
def _kms_key(m, name, typ, inputs):
    h = _h(typ, name, n=32)
    kid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
    return kid, {"keyId": kid, "arn": m.arn("kms", f"key/{kid}")}


@handles("aws:kms/alias:Alias")
def _kms_alias(m, name, typ, inputs):
    alias = inputs.get("name") or f"alias/{m.physical_name(name, typ)}"
    return alias, {"name": alias, "arn": m.arn("kms", alias),
                   "targetKeyArn": m.arn("kms", f"key/{inputs.get('targetKeyId', '')}")}


@handles("aws:kms/grant:Grant")
def _kms_grant(m, name, typ, inputs):
    grant = _h(typ, name, n=64)
    return f"{inputs.get('keyId', '')}:{grant}", {"grantId": grant,
                                                   "grantToken": _h(typ, name, "token", n=64)}


@handles("aws:cloudwatch/logGroup:LogGroup")
def _log_group(m, name, typ, inputs):
    lg = inputs.get("name") or m.physical_name(name, typ, 512)
    return lg, {"name": lg, "arn": m.arn("logs", f"log-group:{lg}")}


@handles("aws:iam/role:Role")
def _iam_role(m, name, typ, inputs):
    role = inputs.get("name") or m.physical_name(name, typ, 64)
    return role, {"name": role, "arn": m.arn("iam", f"role/{role}", region=False),
                  "uniqueId": "AROA" + _h(typ, name, n=17).upper()}


@handles("aws:iam/policy:Policy")
def _iam_policy(m, name, typ, inputs):
    pol = inputs.get("name") or m.physical_name(name, typ, 128)
    arn = m.arn("iam", f"policy/{pol}", region=False)
    return arn, {"name": pol, "arn": arn, "policyId": "ANPA" + _h(typ, name).upper()}


@handles("aws:iam/instanceProfile:InstanceProfile")
def _instance_profile(m, name, typ, inputs):
    ip = inputs.get("name") or m.physical_name(name, typ, 128)
    return ip, {"name": ip, "arn": m.arn("iam", f"instance-profile/{ip}", region=False)}


@handles("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "aws:iam/rolePolicy:RolePolicy")
def _iam_attachment(m, name, typ, inputs):
    return f"{inputs.get('role', '')}-{_h(typ, name, n=8)}", {}


@handles("aws:sqs/queue:Queue")
def _sqs_queue(m, name, typ, inputs):
    q = inputs.get("name") or m.physical_name(name, typ, 80)
    url = f"https://sqs.{m.region}.amazonaws.com/{ACCOUNT_ID}/{q}"  # the provider's id
    return url, {"name": q, "arn": m.arn("sqs", q), "url": url}


@handles("aws:cloudwatch/eventRule:EventRule")
def _event_rule(m, name, typ, inputs):
    rule = inputs.get("name") or m.physical_name(name, typ, 64)
    return rule, {"name": rule, "arn": m.arn("events", f"rule/{rule}")}


@handles("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
def _oidc(m, name, typ, inputs):
    url = str(inputs.get("url", "")).removeprefix("https://")
    arn = m.arn("iam", f"oidc-provider/{url}", region=False)
    return arn, {"arn": arn}


@handles("aws:eks/cluster:Cluster")
def _eks_cluster(m, name, typ, inputs):
    cluster = inputs.get("name") or m.physical_name(name, typ, 100)
    oidc = _h(typ, name, "oidc", n=32).upper()
    vpc = dict(inputs.get("vpcConfig") or {})
    vpc.update(clusterSecurityGroupId=f"sg-{_h(typ, name, 'csg')}", vpcId=vpc.get("vpcId", ""))
    ca = base64.b64encode(f"mock-ca-for-{cluster}".encode()).decode()
    return cluster, {
        "name": cluster, "arn": m.arn("eks", f"cluster/{cluster}"), "status": "ACTIVE",
        "endpoint": f"https://{_h(typ, name, 'ep', n=32).upper()}.gr7.{m.region}.eks.amazonaws.com",
        "certificateAuthority": {"data": ca}, "platformVersion": "eks.10",
        "version": inputs.get("version", ""), "vpcConfig": vpc,
        "identities": [{"oidcs": [{"issuer": f"https://oidc.eks.{m.region}.amazonaws.com/id/{oidc}"}]}],
    }


@handles("aws:eks/nodeGroup:NodeGroup")
def _eks_nodegroup(m, name, typ, inputs):
    ng = inputs.get("nodeGroupName") or m.physical_name(name, typ, 63)
    cluster = inputs.get("clusterName", "")
    return f"{cluster}:{ng}", {
        "nodeGroupName": ng, "status": "ACTIVE",
        "arn": m.arn("eks", f"nodegroup/{cluster}/{ng}/{_h(typ, name, n=8)}"),
        "resources": [{"autoscalingGroups": [{"name": f"eks-{ng}-{_h(typ, name, 'asg', n=8)}"}],
                       "remoteAccessSecurityGroupId": ""}],
    }


@handles("aws:eks/addon:Addon")
def _eks_addon(m, name, typ, inputs):
    cluster, addon = inputs.get("clusterName", ""), inputs.get("addonName", name)
    return f"{cluster}:{addon}", {"arn": m.arn("eks", f"addon/{cluster}/{addon}/{_h(typ, name, n=8)}")}


@handles("aws:eks/accessEntry:AccessEntry", "aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
def _eks_access(m, name, typ, inputs):
    cluster = inputs.get("clusterName", "")
    principal = inputs.get("principalArn", "")
    return f"{cluster}:{principal}", {"accessEntryArn": m.arn("eks", f"access-entry/{cluster}/{_h(typ, name, n=8)}")}


@handles("aws:eks/podIdentityAssociation:PodIdentityAssociation")
def _pod_identity(m, name, typ, inputs):
    aid = f"a-{_h(typ, name)}"
    cluster = inputs.get("clusterName", "")
    return aid, {"associationId": aid,
                 "associationArn": m.arn("eks", f"podidentityassociation/{cluster}/{aid}")}


@handles("aws:s3/bucket:Bucket")
def _s3_bucket(m, name, typ, inputs):
    bucket = inputs.get("bucket") or (
        f"{inputs['bucketPrefix']}{_h(typ, name, n=BUCKET_PREFIX_HEX)}"
        if inputs.get("bucketPrefix") else m.physical_name(name, typ))
    return bucket, {"bucket": bucket, "arn": f"arn:{m.partition}:s3:::{bucket}",
                    "bucketDomainName": f"{bucket}.s3.amazonaws.com",
                    "bucketRegionalDomainName": f"{bucket}.s3.{m.region}.amazonaws.com",
                    "region": m.region, "hostedZoneId": "Z3AQBSTGFYJSTF"}


@handles("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
         "aws:s3/bucketVersioning:BucketVersioning",
         "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
         "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
         "aws:s3/bucketPolicy:BucketPolicy", "aws:s3/bucketLogging:BucketLogging",
         "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
def _s3_sibling(m, name, typ, inputs):
    return str(inputs.get("bucket", name)), {}


@handles("aws:efs/fileSystem:FileSystem")
def _efs(m, name, typ, inputs):
    fs = f"fs-{_h(typ, name)}"
    return fs, {"arn": m.arn("elasticfilesystem", f"file-system/{fs}"),
                "dnsName": f"{fs}.efs.{m.region}.amazonaws.com", "ownerId": ACCOUNT_ID}


@handles("aws:efs/mountTarget:MountTarget")
def _efs_mt(m, name, typ, inputs):
    mt = f"fsmt-{_h(typ, name)}"
    return mt, {"dnsName": f"{inputs.get('fileSystemId', '')}.efs.{m.region}.amazonaws.com",
                "networkInterfaceId": f"eni-{_h(typ, name, 'eni')}", "ipAddress": "10.0.0.20"}


@handles("aws:efs/accessPoint:AccessPoint")
def _efs_ap(m, name, typ, inputs):
    ap = f"fsap-{_h(typ, name)}"
    return ap, {"arn": m.arn("elasticfilesystem", f"access-point/{ap}")}


@handles("aws:efs/backupPolicy:BackupPolicy")
def _efs_backup(m, name, typ, inputs):
    return str(inputs.get("fileSystemId", name)), {}


@handles("aws:fsx/lustreFileSystem:LustreFileSystem")
def _fsx(m, name, typ, inputs):
    fs = f"fs-{_h(typ, name)}"
    return fs, {"arn": m.arn("fsx", f"file-system/{fs}"),
                "dnsName": f"{fs}.fsx.{m.region}.amazonaws.com", "mountName": _h(typ, name, n=8)}


@handles("aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation")
def _fsx_dra(m, name, typ, inputs):
    dra = f"dra-{_h(typ, name)}"
    return dra, {"arn": m.arn("fsx", f"association/{inputs.get('fileSystemId', '')}/{dra}")}


@handles("aws:ecr/repository:Repository")
def _ecr(m, name, typ, inputs):
    repo = inputs.get("name") or m.physical_name(name, typ)
    return repo, {"name": repo, "arn": m.arn("ecr", f"repository/{repo}"),
                  "repositoryUrl": f"{ACCOUNT_ID}.dkr.ecr.{m.region}.amazonaws.com/{repo}"}


@handles("kubernetes:*")
def _k8s(m, name, typ, inputs):
    meta = dict(inputs.get("metadata") or {})
    if typ == "kubernetes:helm.sh/v3:Release":
        rel = inputs.get("name") or m.physical_name(name, typ, 53)
        ns = inputs.get("namespace") or "default"
        return f"{ns}/{rel}", {"name": rel, "status": {"name": rel, "namespace": ns,
                                                        "status": "deployed", "revision": 1,
                                                        "chart": inputs.get("chart", ""),
                                                        "version": inputs.get("version", "")}}
    meta.setdefault("name", m.physical_name(name, typ, 63))
    ns = meta.get("namespace")
    return (f"{ns}/{meta['name']}" if ns else meta["name"]), {"metadata": meta}


@handles("pulumi:providers:kubernetes", "pulumi:providers:aws")
def _provider(m, name, typ, inputs):
    return _h(typ, name, n=32), {}


@handles("random:index/randomPassword:RandomPassword")
def _random_password(m, name, typ, inputs):
    length = int(inputs.get("length", 32))
    return "none", {"result": _h(typ, name, "pw", n=64)[:length], "bcryptHash": "$2a$10$mock"}


# ----------------------------------------------------------------------------------------------
# Invokes
# ----------------------------------------------------------------------------------------------
_INVOKES: dict[str, Callable[[TrainyardMocks, dict], dict]] = {}


def invoke(token: str):
    def register(fn):
        _INVOKES[token] = fn
        return fn
    return register


@invoke("aws:index/getCallerIdentity:getCallerIdentity")
def _caller(m, args):
    return {"accountId": ACCOUNT_ID, "arn": f"arn:{m.partition}:iam::{ACCOUNT_ID}:user/offline",
            "userId": "AIDAOFFLINEPLANNER", "id": ACCOUNT_ID}


@invoke("aws:index/getRegion:getRegion")
def _region(m, args):
    return {"name": m.region, "region": m.region, "id": m.region,
            "description": m.region, "endpoint": f"ec2.{m.region}.amazonaws.com"}


@invoke("aws:index/getPartition:getPartition")
def _partition(m, args):
    return {"partition": m.partition, "dnsSuffix": "amazonaws.com", "id": m.partition,
            "reverseDnsPrefix": "com.amazonaws"}


@invoke("aws:index/getAvailabilityZones:getAvailabilityZones")
def _azs(m, args):
    names = [f"{m.region}{c}" for c in "abcdef"]
    return {"names": names, "zoneIds": [f"use1-az{i + 1}" for i in range(len(names))],
            "id": m.region, "groupNames": [m.region]}


@invoke("aws:ssm/getParameter:getParameter")
def _ssm(m, args):
    name = args.get("name", "")
    if "/aws/service/" not in name:
        raise NotImplementedError(f"the offline mocks only answer public AWS SSM parameters, "
                                  f"not {name!r}")
    return {"name": name, "value": f"ami-{_h('ami', name)}", "type": "String", "version": 1,
            "arn": m.arn("ssm", f"parameter{name}", account=False), "id": name,
            "insecureValue": f"ami-{_h('ami', name)}"}


@invoke("aws:ec2/getInstanceType:getInstanceType")
def _instance_type(m, args):
    spec = m.catalog.get(args["instanceType"])
    out = {"instanceType": spec.name, "id": spec.name, "defaultVcpus": spec.vcpus,
           "memorySize": spec.memory_gib * 1024, "maximumNetworkCards": spec.network_cards,
           "efaSupported": spec.efa, "efaMaximumInterfaces": spec.max_efa,
           "gpuses": [], "instanceStorageSupported": spec.nvme_count > 0,
           "totalInstanceStorage": spec.nvme_count * spec.nvme_size_gb}
    if spec.accelerator:
        out["gpuses"] = [{"count": spec.gpus, "name": spec.accelerator.model.split("-")[0],
                          "manufacturer": "NVIDIA" if spec.vendor == "nvidia" else "AWS",
                          "memorySize": spec.accelerator.memory_gib * 1024}]
    return out
