"""Parsers of the stack sections other than GPU pools: network, cluster, storage, monitoring,
kubeflow and teams. Each reads one section through a config_reader.Reader and returns its typed
dataclass (components/config/types.py), recording problems instead of raising.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Optional

from components.compute import eks_versions
from components.compute.catalog import Catalog
from components.config.checks import RegionFacts, _az_check, _sizes, _type_check
from components.config.reader import REQUIRED, Reader, cidr_check
from components.config.types import (
    DEFAULT_INTERFACE_ENDPOINTS,
    FSX_THROUGHPUTS,
    INTERFACE_ENDPOINTS,
    LOG_RETENTION_DAYS,
    NAT_MODES,
    ClusterConfig,
    DeployerAccess,
    EfsConfig,
    FsxConfig,
    KubeflowConfig,
    MonitoringConfig,
    NetworkConfig,
    StorageConfig,
    SystemNodesConfig,
    TeamConfig,
)
from components.network import netmath

_ROLE_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[\w+=,.@/-]+$")
_SECURITY_GROUP_RE = re.compile(r"^sg-[0-9a-f]{8,17}$")
# S3 appends a 26-character suffix to a bucket_prefix (63 max), and storage adds the longest role,
# "-access-logs-" (13): 63 - 26 - 13 = 24 characters are left for the configured prefix.
_BUCKET_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,22}[a-z0-9]$")
_BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")


# ----------------------------------------------------------------------------------------------
# Network and cluster
# ----------------------------------------------------------------------------------------------
def _network(r: Reader, facts: Optional[RegionFacts]) -> NetworkConfig:
    n = NetworkConfig(
        vpc_cidr=r.str("vpcCidr", check=_vpc_cidr_check) or "",
        availability_zones=r.str_list("availabilityZones", min_items=2, check=_az_check(facts)),
        nat_gateways=r.str("natGateways", "single", choices=NAT_MODES),
        private_subnet_prefix=r.int("privateSubnetPrefix", None, min=16, max=26),
        public_subnet_prefix=r.int("publicSubnetPrefix", 24, min=16, max=28),
        flow_log_retention_days=_retention(r, "flowLogRetentionDays", 30),
        interface_endpoints=r.str_list(
            "interfaceEndpoints", DEFAULT_INTERFACE_ENDPOINTS,
            check=lambda v: None if v in INTERFACE_ENDPOINTS else
            f"is not a supported endpoint ({', '.join(INTERFACE_ENDPOINTS)})"),
    )
    if r.parsed("availabilityZones") and len(n.availability_zones) > 6:
        r.error(f"at most 6 availability zones, got {len(n.availability_zones)}", "availabilityZones")
    r.finish()
    if r.parsed("vpcCidr", "availabilityZones", "privateSubnetPrefix", "publicSubnetPrefix"):
        try:
            netmath.carve_subnets(n.vpc_cidr, n.availability_zones, n.private_subnet_prefix,
                                  n.public_subnet_prefix)
        except ValueError as e:
            r.error(f"{n.vpc_cidr!r} cannot hold the subnets: {e}", "vpcCidr")
    return n


def _vpc_cidr_check(value: str) -> Optional[str]:
    problem = cidr_check(value)
    if problem:
        return problem
    if not 16 <= ipaddress.ip_network(value).prefixlen <= 28:
        return "is not a VPC size AWS allows (/16 to /28)"
    return None


def _retention(r: Reader, name: str, default: int) -> int:
    value = r.int(name, default)
    if value is not None and value not in LOG_RETENTION_DAYS:
        r.error(f"{value} is not a CloudWatch Logs retention period "
                f"({', '.join(map(str, LOG_RETENTION_DAYS[:12]))}, ...)", name)
    return value


def _deployer_access(r: Reader) -> DeployerAccess:
    def cidr(value: str) -> Optional[str]:
        problem = cidr_check(value)
        if problem:
            return problem
        if ipaddress.ip_network(value, strict=False).prefixlen == 0:
            return "opens the private endpoint to every network; name the deployer's network"
        return None

    access = DeployerAccess(
        cidrs=r.str_list("cidrs", (), check=cidr),
        security_group_ids=r.str_list("securityGroupIds", (), check=lambda v: None
                                      if _SECURITY_GROUP_RE.match(v)
                                      else "is not a security group id (sg-...)"))
    r.finish()
    return access


def _cluster(r: Reader, catalog: Catalog, environment: Optional[str], today: dt.date,
             facts: Optional[RegionFacts]) -> ClusterConfig:
    s = r.child("systemNodes")
    system = SystemNodesConfig(
        instance_types=s.str_list("instanceTypes", ("m6i.xlarge",), min_items=1,
                                  check=_type_check(catalog, facts)),
        min_size=s.int("minSize", 2, min=1),
        desired_size=s.int("desiredSize", 2, min=1),
        max_size=s.int("maxSize", 4, min=1, max=100),
    )
    if s.parsed("minSize", "desiredSize", "maxSize"):
        _sizes(s, system.min_size, system.desired_size, system.max_size)
    s.finish()
    support_type = r.str("supportType", "STANDARD", choices=eks_versions.SUPPORT_TYPES)
    # A rejected supportType leaves only the checks that hold for either support type.
    version = r.str("kubernetesVersion", eks_versions.DEFAULT_VERSION,
                    check=lambda v: eks_versions.support_problem(
                        v, support_type if r.parsed("supportType") else "EXTENDED", today))
    deployer = _deployer_access(r.child("deployerAccess"))
    c = ClusterConfig(
        kubernetes_version=version,
        support_type=support_type or "STANDARD",
        endpoint_public_access=r.bool("endpointPublicAccess", True),
        public_access_cidrs=r.str_list("publicAccessCidrs", (), check=_public_cidr_check),
        deployer_access=deployer,
        admin_role_arns=r.str_list("adminRoleArns", (), check=_role_arn_check),
        bootstrap_creator_admin=r.bool("bootstrapCreatorAdmin", environment != "prod"),
        log_retention_days=_retention(r, "logRetentionDays", 90),
        system_nodes=system,
    )
    if r.parsed("endpointPublicAccess", "publicAccessCidrs") and \
            c.endpoint_public_access is True and not c.public_access_cidrs:
        r.error("is required when endpointPublicAccess is true (name the CIDRs allowed to reach "
                "the API)" if not r.has("publicAccessCidrs") else
                "is empty, which EKS reads as 0.0.0.0/0 (the whole internet); name the CIDRs "
                "allowed to reach the API, or set endpointPublicAccess: false",
                "publicAccessCidrs")
    if r.parsed("endpointPublicAccess", "deployerAccess") and \
            c.endpoint_public_access is False and not deployer.declared:
        r.error("is required when endpointPublicAccess is false: name the CIDRs or security "
                "groups `pulumi up` runs from (docs/operations.md \"First deploy\"); nothing else "
                "can reach a private-only endpoint", "deployerAccess")
    if r.parsed("bootstrapCreatorAdmin", "adminRoleArns") and \
            c.bootstrap_creator_admin is False and not c.admin_role_arns:
        r.error("is required when bootstrapCreatorAdmin is false: name at least the role `pulumi "
                "up` runs as, or nothing can create the Kubernetes objects", "adminRoleArns")
    r.finish()
    return c


def _role_arn_check(value: str) -> Optional[str]:
    return None if _ROLE_ARN_RE.match(value) else "is not an IAM role ARN"


def _public_cidr_check(value: str) -> Optional[str]:
    problem = cidr_check(value)
    if problem:
        return problem
    if ipaddress.ip_network(value).prefixlen == 0:
        return ("opens the API endpoint to the whole internet; name the networks that need it "
                "(an office or VPN egress range), or set endpointPublicAccess: false")
    return None



# ----------------------------------------------------------------------------------------------
# Storage, monitoring, kubeflow, teams
# ----------------------------------------------------------------------------------------------
def _storage(r: Reader) -> StorageConfig:
    e, f = r.child("efs"), r.child("fsx")
    efs = EfsConfig(enabled=e.bool("enabled", True),
                    throughput_mode=e.str("throughputMode", "elastic",
                                          choices=("elastic", "bursting")),
                    backups=e.bool("backups", True))
    e.finish()
    fsx = FsxConfig(enabled=f.bool("enabled", False),
                    storage_capacity_gib=f.int("storageCapacityGiB", 1200, min=1200),
                    per_unit_storage_throughput=f.int("perUnitStorageThroughput", 250))
    if f.parsed("perUnitStorageThroughput") and \
            fsx.per_unit_storage_throughput not in FSX_THROUGHPUTS:
        f.error(f"{fsx.per_unit_storage_throughput} is not one of "
                f"{', '.join(map(str, FSX_THROUGHPUTS))}", "perUnitStorageThroughput")
    cap = fsx.storage_capacity_gib
    if f.parsed("storageCapacityGiB") and cap != 1200 and cap % 2400:
        f.error(f"{cap} is not allowed for PERSISTENT_2 (1200 or a multiple of 2400 GiB)",
                "storageCapacityGiB")
    f.finish()
    s = StorageConfig(
        bucket_prefix=r.str("bucketPrefix", None, check=lambda v: None
                            if _BUCKET_PREFIX_RE.match(v) and "--" not in v
                            and not v.startswith(_BUCKET_RESERVED_PREFIXES) else
                            "is not a valid bucket name prefix (3-24 lowercase letters, digits "
                            "or single '-', starting and ending with a letter or digit, not "
                            "starting with xn--, sthree- or amzn-s3-demo-)"),
        retain_on_delete=r.bool("retainOnDelete", False),
        checkpoint_noncurrent_days=r.int("checkpointNoncurrentDays", 30, min=1, max=3650),
        dataset_tiering_days=r.int("datasetTieringDays", 30, min=0, max=3650),
        access_log_retention_days=r.int("accessLogRetentionDays", 365, min=1, max=3650),
        efs=efs, fsx=fsx)
    r.finish()
    return s


def _monitoring(r: Reader) -> MonitoringConfig:
    m = MonitoringConfig(
        enabled=r.bool("enabled", True),
        prometheus_retention_days=r.int("prometheusRetentionDays", 15, min=1, max=365),
        prometheus_storage_gib=r.int("prometheusStorageGiB", 100, min=10, max=16384),
        grafana_storage_gib=r.int("grafanaStorageGiB", 10, min=1, max=1024))
    r.finish()
    return m


def image_check(value: str) -> Optional[str]:
    """A container image pinned to a version tag or a digest."""
    if "@sha256:" in value:
        return None if re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", value) else "has a malformed digest"
    name, _, tag = value.rpartition(":")
    if not name or "/" in tag or not re.fullmatch(r"[\w][\w.-]{0,127}", tag):
        return "needs a version tag or digest (e.g. registry/trainyard-train:0.1.0)"
    if tag == "latest":
        return "uses the moving tag :latest; pin a version tag or digest"
    return None


def _kubeflow(r: Reader) -> KubeflowConfig:
    enabled = r.bool("enabled", True)
    image = r.str("trainingImage", REQUIRED if enabled else "", check=image_check)
    r.finish()
    return KubeflowConfig(enabled=enabled, training_image=image or "")


def _team(r: Reader) -> TeamConfig:
    t = TeamConfig(
        name=r.str("name", check=lambda v: None if re.match(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", v)
                   and v not in ("default", "kube-system", "kube-public", "kube-node-lease")
                   else "is not a usable namespace name") or "",
        gpu_quota=r.int("gpuQuota", min=0, max=100000),
        admin_role_arns=r.str_list("adminRoleArns", (), check=_role_arn_check))
    r.finish()
    return t
