"""Typed stack configuration: one strict parse of every `trainyard:` key.

`load(raw, stack)` takes the stack file's `config:` mapping (keys like `trainyard:network`,
`aws:region`) with values already decoded from YAML, and returns a frozen `StackConfig` or raises
`ConfigError` listing every problem, each as `trainyard:<path>: <what is wrong>`: one problem per
bad value (rules that tie fields together judge only fields that parsed, see
config_reader.Reader.parsed).

Regions, availability zones and which instance types a region offers are checked against offline
data (components/data/regions.json, written by scripts/refresh_region_data.py from botocore and
moto); `trainyard preflight` checks the same things live against the account.

Nothing here touches Pulumi: `__main__.py` reads the engine's config and hands it over, and
`trainyard plan` calls the same function on the stack file before anything is synthesized.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import importlib.util
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from components import eks_versions, netmath
from components.catalog import Catalog, load_catalog
from components.config_reader import (
    REQUIRED,
    ConfigError,
    Reader,
    cidr_check,
    covers,
    kind,
    name_check,
    problem_path,
)
from components.k8s_names import PROVISIONERS

__all__ = ["ConfigError", "StackConfig", "load", "SUPPORTED_K8S_VERSIONS"]

NS = "trainyard"
ENVIRONMENTS = ("dev", "staging", "prod")
# Every version in the EKS calendar (components/eks_versions.py); whether one may be used on a
# given day (standard vs extended support) is decided by eks_versions.support_problem.
SUPPORTED_K8S_VERSIONS = tuple(sorted(eks_versions.CALENDAR, key=eks_versions.version_key))
CAPACITY_TYPES = ("ON_DEMAND", "SPOT", "CAPACITY_BLOCK")
AMI_TYPES = {
    "AL2023_x86_64_NVIDIA": "nvidia",
    "BOTTLEROCKET_x86_64_NVIDIA": "nvidia",
    "AL2023_x86_64_NEURON": "neuron",
}
DEFAULT_AMI = {"nvidia": "AL2023_x86_64_NVIDIA", "neuron": "AL2023_x86_64_NEURON"}
EFA_LAYOUTS = ("current", "legacy")
NAT_MODES = ("single", "perAz")
# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                      1827, 2192, 2557, 2922, 3288, 3653)
INTERFACE_ENDPOINTS = ("ec2", "ecr.api", "ecr.dkr", "sts", "logs", "eks", "eks-auth",
                       "elasticloadbalancing", "autoscaling", "ssm", "ssmmessages", "ec2messages",
                       "monitoring", "kms")
DEFAULT_INTERFACE_ENDPOINTS = ("ec2", "ecr.api", "ecr.dkr", "sts", "logs", "eks", "eks-auth",
                               "elasticloadbalancing", "autoscaling")
FSX_THROUGHPUTS = (125, 250, 500, 1000)
_AZ_RE = re.compile(r"^([a-z]+(?:-[a-z]+)+-\d+)([a-z])$")
_ROLE_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[\w+=,.@/-]+$")
_RESERVATION_RE = re.compile(r"^cr-[0-9a-f]{8,17}$")
_SECURITY_GROUP_RE = re.compile(r"^sg-[0-9a-f]{8,17}$")
_LABEL_NAME_RE = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_PREFIX_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_RESERVED_LABEL_DOMAINS = ("trainyard.io", "kubernetes.io", "k8s.io", "eks.amazonaws.com")
SYSTEM_POOL_NAME = "system"
"""POOL_LABEL value of the system node group; no GPU pool may take it."""
# S3 appends a 26-character suffix to a bucket_prefix (63 max), and storage adds the longest role,
# "-access-logs-" (13): 63 - 26 - 13 = 24 characters are left for the configured prefix.
_BUCKET_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,22}[a-z0-9]$")
_BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
REGIONS_PATH = Path(__file__).parent / "data" / "regions.json"
PREFLIGHT_HINT = "`trainyard preflight` checks live"


# ----------------------------------------------------------------------------------------------
# Offline region data
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegionFacts:
    """What the offline data says about one region (components/data/regions.json)."""

    name: str
    azs: Optional[frozenset[str]]
    """Zone names accounts see; None: a region known to botocore without offline zone data."""
    offered: Optional[Mapping[str, tuple[str, ...]]]
    """Instance type -> zone ids offering it (ids, not names: names map to zones per account)."""
    checked_types: frozenset[str]
    """Catalog types the data was extracted for; others cannot be judged offline."""
    source: str
    """`offline data from moto X.Y.Z, <extraction date>`."""

    def offers(self, instance_type: str) -> Optional[bool]:
        """Whether any zone of the region offers the type; None when the data cannot tell."""
        if self.offered is None or instance_type not in self.checked_types:
            return None
        return bool(self.offered.get(instance_type))


@functools.lru_cache(maxsize=1)
def region_data() -> dict:
    with REGIONS_PATH.open() as f:
        return json.load(f)


def data_source() -> str:
    data = region_data()
    return f"offline data from moto {data['sources']['moto']}, {data['extracted']}"


@functools.lru_cache(maxsize=1)
def _botocore_regions() -> tuple[Optional[str], frozenset[str]]:
    """The installed botocore's version and region names: it may know regions newer than the
    offline data. (None, empty) without botocore."""
    spec = importlib.util.find_spec("botocore")
    if spec is None or not spec.origin:
        return None, frozenset()
    from importlib import metadata

    try:
        with (Path(spec.origin).parent / "data" / "partitions.json").open() as f:
            partitions = json.load(f)["partitions"]
        version: Optional[str] = metadata.version("botocore")
    except (OSError, ValueError, KeyError, metadata.PackageNotFoundError):
        return None, frozenset()
    return version, frozenset(r for p in partitions for r in p.get("regions", {})
                              if not r.endswith("-global"))


def region_facts(region: str) -> tuple[Optional[RegionFacts], Optional[str]]:
    """(facts, None) for a known region, (None, why not) for a name that is not a region.

    A region the offline data lists without zones, or only the installed botocore knows (newer
    than the data), is accepted with no zone or offering checks."""
    data = region_data()
    checked = frozenset(data["instanceTypes"])
    if region in data["regions"]:
        entry = data["regions"][region]
        if entry is None:
            return RegionFacts(region, None, None, checked, data_source()), None
        return RegionFacts(region, frozenset(entry["azs"]),
                           {t: tuple(z) for t, z in entry["offered"].items()}, checked,
                           data_source()), None
    version, newer = _botocore_regions()
    if region in newer:
        return RegionFacts(region, None, None, checked, data_source()), None
    known = sorted(set(data["regions"]) | newer)
    close = difflib.get_close_matches(region, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "e.g. us-east-1"
    return None, (f"{region!r} is not an AWS region (not in the region list of botocore "
                  f"{version or data['sources']['botocore']}; {hint})")


# ----------------------------------------------------------------------------------------------
# Typed sections
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NetworkConfig:
    vpc_cidr: str
    """IPv4 CIDR of the VPC (required). A /16 leaves room for four /18 private subnets."""
    availability_zones: tuple[str, ...]
    """AZs to span, all in the stack's region; 2-6 of them (required)."""
    nat_gateways: str = "single"
    """`single` (one NAT in the first AZ: cheap, one failure domain) or `perAz` (one per AZ)."""
    private_subnet_prefix: Optional[int] = None
    """Prefix length of each private subnet. Default: the largest equal blocks that leave room
    for the public subnets (see netmath.default_private_prefix)."""
    public_subnet_prefix: int = 24
    """Prefix length of each public subnet (NAT gateways and load balancers only). Default /24."""
    flow_log_retention_days: int = 30
    """Retention of the VPC flow-log group; a CloudWatch-allowed value. Default 30."""
    interface_endpoints: tuple[str, ...] = DEFAULT_INTERFACE_ENDPOINTS
    """Interface VPC endpoints private nodes need; the S3 gateway endpoint is always created."""


@dataclass(frozen=True)
class SystemNodesConfig:
    instance_types: tuple[str, ...] = ("m6i.xlarge",)
    """On-demand CPU types for cluster add-ons. Default m6i.xlarge."""
    min_size: int = 2
    desired_size: int = 2
    max_size: int = 4


@dataclass(frozen=True)
class DeployerAccess:
    """Where `pulumi up` (and kubectl) reach the private API endpoint from. The EKS-created
    cluster security group admits only itself, so each entry becomes an ingress rule for TCP 443
    on it. Required when the endpoint is private-only; also needed with a public endpoint for
    callers inside the VPC (they resolve the endpoint to its private addresses)."""

    cidrs: tuple[str, ...] = ()
    """Networks of the deployer: a VPN / Direct Connect client range, a CI runner subnet in a
    connected VPC. Never 0.0.0.0/0."""
    security_group_ids: tuple[str, ...] = ()
    """Security groups of deployers inside the cluster's VPC (a self-hosted CI runner, an SSM
    bastion used for port forwarding)."""

    @property
    def declared(self) -> bool:
        return bool(self.cidrs or self.security_group_ids)


@dataclass(frozen=True)
class ClusterConfig:
    kubernetes_version: str = eks_versions.DEFAULT_VERSION
    """A version in the EKS calendar, in standard support on the day of the plan (or in extended
    support with support_type EXTENDED). Default: eks_versions.DEFAULT_VERSION."""
    support_type: str = "STANDARD"
    """EKS upgrade policy: STANDARD (EKS upgrades the control plane when standard support ends;
    config refuses such versions) or EXTENDED (stay, billed per cluster-hour). Default STANDARD."""
    endpoint_public_access: bool = True
    """Expose the API endpoint publicly (restricted to public_access_cidrs). Private access is
    always on. Prod may turn public access off entirely."""
    public_access_cidrs: tuple[str, ...] = ()
    """CIDRs allowed to reach the public endpoint; required when it is public."""
    deployer_access: DeployerAccess = field(default_factory=DeployerAccess)
    """Who may reach the private endpoint (TCP 443 on the cluster security group); required when
    endpointPublicAccess is false."""
    admin_role_arns: tuple[str, ...] = ()
    """IAM roles granted cluster admin through EKS access entries (authentication mode API)."""
    bootstrap_creator_admin: bool = True
    """Grant the identity that creates the cluster (the one running `pulumi up`) cluster-admin
    outside any access entry. Default: true for dev and staging, false for prod, whose admins come
    only from admin_role_arns (which must then name the deployer's role). Create-only in EKS:
    changing it replaces the cluster."""
    log_retention_days: int = 90
    """Retention of the control-plane log group. Default 90."""
    system_nodes: SystemNodesConfig = field(default_factory=SystemNodesConfig)


@dataclass(frozen=True)
class CapacityReservation:
    id: str
    """`cr-...`: an On-Demand Capacity Reservation or a Capacity Block."""
    availability_zone: str
    """The AZ the reservation was made in; the pool must live there."""
    starts_at: Optional[dt.datetime] = None
    """Capacity Blocks: when the block becomes active (UTC). A pool whose block starts after the
    plan is created at desired size 0: no instance can launch before the block is active."""


@dataclass(frozen=True)
class GpuPoolConfig:
    name: str
    """Pool name: used in logical names and node labels; unique per stack."""
    instance_types: tuple[str, ...]
    """One type for ON_DEMAND / reserved pools; two or more of the same shape for SPOT."""
    capacity_type: str
    """ON_DEMAND (optionally into an ODCR via `capacityReservation`), SPOT, or CAPACITY_BLOCK."""
    min_size: int
    desired_size: int
    max_size: int
    availability_zones: tuple[str, ...]
    """AZs the pool may use. Default: every stack AZ. EFA and reserved pools: exactly one."""
    efa: bool = False
    """Attach every EFA interface the instance type has. Default false."""
    efa_layout: str = "current"
    """`current` (primary ENA + efa-only elsewhere, AWS's present guidance) or `legacy` (every
    interface `efa`, as eksctl builds it). Changing it replaces nodes."""
    placement_group: bool = False
    """Launch into a `cluster` placement group. Default: on for EFA pools without a reservation;
    never allowed with a reservation (forcing one causes insufficient-capacity failures)."""
    capacity_reservation: Optional[CapacityReservation] = None
    ami_type: str = "AL2023_x86_64_NVIDIA"
    """EKS AMI type; the default follows the accelerator vendor."""
    root_volume_gib: int = 200
    http_put_response_hop_limit: int = 2
    """IMDSv2 hop limit; 2 lets containers reach IMDS through one hop, 1 blocks pods."""
    auto_repair: bool = True
    """EKS node auto-repair (needs the eks-node-monitoring-agent add-on). Managed node groups
    only: Karpenter pools do not use it (docs/operations.md "Capacity: managed node groups and
    Karpenter")."""
    labels: Mapping[str, str] = field(default_factory=dict)
    provisioner: str = "managed"
    """Who makes the pool's nodes (components/k8s_names.PROVISIONERS). `karpenter`: a Karpenter
    NodePool + EC2NodeClass (components/karpenter.py); nodes appear for pending pods and go away
    when empty, so the pool has no standing size (minSize and desiredSize 0). `managed`: an EKS
    managed node group (components/gpu_pool.py). Default when parsed from a stack file:
    `karpenter` for elastic pools (SPOT, or ON_DEMAND without a capacityReservation), `managed`
    for reserved pools (ODCR, CAPACITY_BLOCK), which are sized to their reservation and may not
    use Karpenter. Nodes carry the same labels and taints either way. Changing it replaces the
    pool's nodes."""

    @property
    def reserved(self) -> bool:
        return self.capacity_reservation is not None

    @property
    def karpenter(self) -> bool:
        return self.provisioner == "karpenter"


@dataclass(frozen=True)
class EfsConfig:
    enabled: bool = True
    throughput_mode: str = "elastic"
    """`elastic` (pay per use) or `bursting`."""
    backups: bool = True


@dataclass(frozen=True)
class FsxConfig:
    enabled: bool = False
    storage_capacity_gib: int = 1200
    """PERSISTENT_2: 1200 or a multiple of 2400 GiB."""
    per_unit_storage_throughput: int = 250
    """MB/s per TiB: 125, 250, 500 or 1000."""


@dataclass(frozen=True)
class StorageConfig:
    bucket_prefix: Optional[str] = None
    """Prefix for the S3 bucket names, 3-24 characters: each bucket is named
    `<prefix>-<role>-<26-character suffix from S3>`. Default: Pulumi auto-naming."""
    retain_on_delete: bool = False
    """Keep buckets, file systems and keys out of `pulumi destroy` (prod)."""
    checkpoint_noncurrent_days: int = 30
    """Expire noncurrent checkpoint object versions after this many days."""
    dataset_tiering_days: int = 30
    """Move dataset objects to Intelligent-Tiering after this many days; 0 = at once."""
    access_log_retention_days: int = 365
    """Expire S3 server access logs after this many days (1-3650). Default 365."""
    efs: EfsConfig = field(default_factory=EfsConfig)
    fsx: FsxConfig = field(default_factory=FsxConfig)


@dataclass(frozen=True)
class MonitoringConfig:
    enabled: bool = True
    prometheus_retention_days: int = 15
    prometheus_storage_gib: int = 100
    grafana_storage_gib: int = 10


@dataclass(frozen=True)
class KubeflowConfig:
    enabled: bool = True
    training_image: str = ""
    """Image the training runtimes and generated TrainJobs run: built from workloads/Dockerfile
    (torch, boto3, EFA/NCCL libraries and the workloads package) and pushed to your registry.
    Required when Kubeflow is enabled; pinned to a version tag or digest, never `:latest`."""


@dataclass(frozen=True)
class TeamConfig:
    name: str
    """Namespace name."""
    gpu_quota: int
    """Most GPUs the namespace may request at once."""
    admin_role_arns: tuple[str, ...] = ()


@dataclass(frozen=True)
class StackConfig:
    stack: str
    region: str
    environment: str
    tags: Mapping[str, str]
    """Tags on every taggable resource: environment, owner, cost-center (+ any extra)."""
    network: NetworkConfig
    cluster: ClusterConfig
    gpu_pools: tuple[GpuPoolConfig, ...]
    storage: StorageConfig
    monitoring: MonitoringConfig
    kubeflow: KubeflowConfig
    teams: tuple[TeamConfig, ...]

    def pool(self, name: str) -> GpuPoolConfig:
        for p in self.gpu_pools:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def efa_azs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.availability_zones[0] for p in self.gpu_pools if p.efa))


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------
def load(raw: Mapping[str, Any], stack: str, catalog: Optional[Catalog] = None,
         now: Optional[dt.datetime] = None) -> StackConfig:
    """Parse a stack file's `config:` mapping. Raises ConfigError with every problem found.

    `now` (default: the current time, UTC) decides which Kubernetes versions are still in support
    and whether a Capacity Block has started."""
    catalog = catalog or load_catalog()
    now = now or dt.datetime.now(dt.UTC)
    today = now.date()
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise ConfigError([f"config: expected a mapping of keys, got {kind(raw)}"])
    for key in raw:
        if not isinstance(key, str):
            problems.append(f"config: key {key!r} is not a string (config keys look like "
                            f"{NS}:network)")

    ours = {k[len(NS) + 1:]: v for k, v in raw.items()
            if isinstance(k, str) and k.startswith(NS + ":")}
    root = Reader(ours, NS + ":", problems)  # keys read as `trainyard:gpuPools[0].name`

    region, facts = _region(raw.get("aws:region"), problems)

    environment = root.str("environment", choices=ENVIRONMENTS)
    tags_r = root.child("tags")
    tags = {
        "environment": environment or "",
        "owner": tags_r.str("owner"),
        "cost-center": tags_r.str("costCenter"),
    }
    extra = tags_r.str_map("extra")
    tags_r.finish()
    tags.update(extra)

    network = _network(root.child("network", required=True), facts)
    cluster = _cluster(root.child("cluster"), catalog, environment, today, facts)
    pools = _pools(root, network, catalog, now, facts)
    storage = _storage(root.child("storage"))
    monitoring = _monitoring(root.child("monitoring"))
    kubeflow = _kubeflow(root.child("kubeflow"))
    teams = tuple(_team(r) for r in root.items("teams"))
    root.finish()

    _cross_checks(problems, network, cluster, pools, storage, teams, catalog)
    if problems:
        raise ConfigError(problems)
    return StackConfig(stack=stack, region=region, environment=environment, tags=tags,
                       network=network, cluster=cluster, gpu_pools=pools, storage=storage,
                       monitoring=monitoring, kubeflow=kubeflow, teams=teams)


def _region(value: Any, problems: list[str]) -> tuple[str, Optional[RegionFacts]]:
    """`aws:region`: the region name and its offline facts ("" and None when rejected)."""
    if value is None:
        problems.append("aws:region: is required (e.g. us-east-1)")
        return "", None
    if not isinstance(value, str):
        problems.append(f"aws:region: expected a string, got {kind(value)} {value!r}")
        return "", None
    facts, problem = region_facts(value)
    if problem:
        problems.append(f"aws:region: {problem}")
        return "", None
    return value, facts


def _az_check(facts: Optional[RegionFacts]) -> Callable[[str], Optional[str]]:
    """An availability zone name of the stack's region (only its shape when the region was
    rejected; no existence check where the offline data has no zones for the region)."""
    def check(value: str) -> Optional[str]:
        m = _AZ_RE.match(value)
        if not m:
            return "is not an availability zone name (e.g. us-east-1a)"
        if facts is None:
            return None
        if m.group(1) != facts.name:
            return f"is not in region {facts.name!r}"
        if facts.azs is not None and value not in facts.azs:
            return (f"is not an availability zone of {facts.name} "
                    f"({', '.join(sorted(facts.azs))}: {facts.source}; {PREFLIGHT_HINT})")
        return None
    return check


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


def _type_check(catalog: Catalog, facts: Optional[RegionFacts],
                accelerated: bool = False) -> Callable[[str], Optional[str]]:
    """A catalog instance type the region offers (offline data; no offering check without
    `facts`). `accelerated`: a GPU pool's type, which must have an accelerator."""
    def check(value: str) -> Optional[str]:
        if not catalog.knows(value):
            return "is not a known instance type"
        if accelerated and not catalog.get(value).is_accelerated:
            return "has no GPU or accelerator; use cluster.systemNodes for CPU nodes"
        if facts is not None and facts.offers(value) is False:
            return f"is not offered in {facts.name} ({facts.source}; {PREFLIGHT_HINT})"
        return None
    return check


def _sizes(r: Reader, lo: Optional[int], want: Optional[int], hi: Optional[int]) -> None:
    if None in (lo, want, hi):
        return
    if lo > hi:  # type: ignore[operator]
        r.error(f"minSize {lo} is greater than maxSize {hi}", "minSize")
    elif not lo <= want <= hi:  # type: ignore[operator]
        r.error(f"{want} must lie between minSize {lo} and maxSize {hi}", "desiredSize")


def _pools(root: Reader, network: NetworkConfig, catalog: Catalog, now: dt.datetime,
           facts: Optional[RegionFacts]) -> tuple[GpuPoolConfig, ...]:
    if root.raw.get("gpuPools") in (None, []):
        root.items("gpuPools")  # marks the key as read
        root.error("at least one GPU pool is required: trainyard is a GPU training platform, "
                   "and its training runtimes, team quotas and shared storage (EFS mount "
                   "targets go in the GPU pools' availability zones) are built around its pools",
                   "gpuPools")
        return ()
    # Pools live in the stack's AZs; until those parse, a pool's AZs are not judged against them.
    stack_azs = network.availability_zones if root.parsed("network.availabilityZones") else None
    return tuple(_pool(r, stack_azs, catalog, now, facts) for r in root.items("gpuPools"))


def _pool(r: Reader, stack_azs: Optional[tuple[str, ...]], catalog: Catalog, now: dt.datetime,
          facts: Optional[RegionFacts]) -> GpuPoolConfig:
    name = r.str("name", check=lambda v: name_check(v) or (
        "is reserved for the system node group" if v == SYSTEM_POOL_NAME else None))
    capacity = r.str("capacityType", "ON_DEMAND", choices=CAPACITY_TYPES)
    # A reservation (ODCR or Capacity Block) proves its type is offered where it was made, and
    # Capacity Block types are sold where the offline snapshot may not list them.
    reserved = r.raw.get("capacityReservation") is not None or \
        r.raw.get("capacityType") == "CAPACITY_BLOCK"
    types = r.str_list("instanceTypes", min_items=1,
                       check=_type_check(catalog, None if reserved else facts, accelerated=True))
    lo, want, hi = r.int("minSize", 0, min=0), r.int("desiredSize", None, min=0), \
        r.int("maxSize", min=1, max=1000)
    want = lo if want is None else want
    if r.parsed("minSize", "desiredSize", "maxSize"):
        _sizes(r, lo, want, hi)
    if stack_azs is None:
        azs = r.str_list("availabilityZones", (), min_items=1)
    else:
        azs = r.str_list("availabilityZones", stack_azs, min_items=1,
                         check=lambda v: None if v in stack_azs else
                         f"is not one of the stack's availability zones ({', '.join(stack_azs)})")
    def azs_ok() -> bool:  # asked per rule: once one rule rejects the list, later ones skip
        return r.parsed("availabilityZones") and (stack_azs is not None or
                                                  r.has("availabilityZones"))
    efa = r.bool("efa", False)
    layout = r.str("efaLayout", "current", choices=EFA_LAYOUTS)
    res_present = r.raw.get("capacityReservation") is not None
    res_r = r.child("capacityReservation")
    reservation = None
    if res_present and res_r.ok:
        reservation = CapacityReservation(
            id=res_r.str("id", check=lambda v: None if _RESERVATION_RE.match(v)
                         else "is not a capacity reservation id (cr-...)") or "",
            availability_zone=res_r.str("availabilityZone", check=_az_check(facts)) or "",
            starts_at=_timestamp(res_r, "startsAt"),
        )
    res_r.finish()

    types_ok = r.parsed("instanceTypes")
    specs = [catalog.get(t) for t in types] if types_ok else []
    vendors = {s.vendor for s in specs}
    vendor = next(iter(vendors)) if len(vendors) == 1 else None
    ami = r.str("amiType", DEFAULT_AMI.get(vendor or "nvidia"), choices=AMI_TYPES)
    default_pg = bool(efa and not res_present)
    pg = r.bool("placementGroup", default_pg)
    # Reserved capacity is sized to its reservation (a node group); elastic capacity follows
    # demand (Karpenter). Judged on the raw capacityType, like `reserved` above.
    provisioner = r.str("provisioner", "managed" if reserved else "karpenter",
                        choices=PROVISIONERS)

    # -- rules that tie fields together: each judges only fields that parsed ------------------
    if types_ok and len({s.shape for s in specs}) > 1:
        shapes = ", ".join(f"{s.name} ({s.gpus}x {s.gpu_model}, {s.max_efa} EFA)" for s in specs)
        r.error(f"mixes instance shapes ({shapes}); every type in a pool needs the same "
                "accelerator count and EFA interface count", "instanceTypes")
    if r.parsed("capacityType", "instanceTypes"):
        if capacity == "SPOT" and len(types) == 1:
            r.error(f"a SPOT pool needs at least 2 instance types of the same shape for "
                    f"diversification, got {list(types)}", "instanceTypes")
        if capacity != "SPOT" and len(types) > 1:
            r.error(f"{capacity} pools take exactly one instance type, got {list(types)}",
                    "instanceTypes")
    if efa and r.parsed("efa"):
        if r.parsed("instanceTypes"):
            for i, s in enumerate(specs):
                if not s.efa:
                    r.error(f"efa is true but {s.name!r} has no EFA support",
                            f"instanceTypes[{i}]")
        if azs_ok() and len(azs) != 1:
            r.error(f"an EFA pool must live in exactly one availability zone (NCCL over EFA "
                    f"fails across subnets), got {list(azs)}", "availabilityZones")
    if r.parsed("capacityType") and capacity == "CAPACITY_BLOCK" and not res_present:
        r.error("is required for a CAPACITY_BLOCK pool (the Capacity Block's cr- id and AZ)",
                "capacityReservation")
    if reservation is not None and reservation.starts_at is not None and \
            r.parsed("capacityType"):
        if capacity != "CAPACITY_BLOCK":
            r.error("is for Capacity Blocks (capacityType CAPACITY_BLOCK); an ODCR is active "
                    "once created", "capacityReservation.startsAt")
        elif reservation.starts_at > now and r.parsed("minSize") and lo > 0:
            r.error(f"{lo} must be 0: the Capacity Block starts "
                    f"{reservation.starts_at.isoformat()}, and no instance can launch before "
                    "then", "minSize")
    if r.parsed("capacityType") and capacity == "SPOT" and res_present:
        r.error("SPOT pools cannot target a capacity reservation", "capacityReservation")
    if res_present and azs_ok():
        if len(azs) != 1:
            r.error(f"a reserved pool must live in exactly its reservation's AZ, got {list(azs)}",
                    "availabilityZones")
        elif reservation is not None and r.parsed("capacityReservation.availabilityZone") and \
                azs[0] != reservation.availability_zone:
            r.error(f"{azs[0]!r} is not the reservation's availability zone "
                    f"{reservation.availability_zone!r}", "availabilityZones")
    if res_present and pg and r.parsed("placementGroup"):
        r.error("true is not allowed on a reserved pool: a placement group the reservation "
                "was not created with causes insufficient-capacity failures", "placementGroup")
    if pg and not efa and r.has("placementGroup") and r.parsed("placementGroup", "efa"):
        r.error("true needs efa: true (placement groups exist for EFA collectives)",
                "placementGroup")
    if vendor and ami and AMI_TYPES[ami] != vendor and r.parsed("amiType"):
        r.error(f"{ami!r} does not match the {vendor} accelerators of {list(types)}", "amiType")
    if layout != "current" and not efa and r.has("efaLayout") and r.parsed("efaLayout", "efa"):
        r.error("is set but efa is false", "efaLayout")
    if provisioner == "karpenter" and r.parsed("provisioner"):
        _karpenter_rules(r, reserved, lo, want, efa, layout, ami)

    pool = GpuPoolConfig(
        name=name or "", instance_types=types, capacity_type=capacity or "ON_DEMAND",
        min_size=lo, desired_size=want, max_size=hi, availability_zones=azs, efa=bool(efa),
        efa_layout=layout, placement_group=bool(pg), capacity_reservation=reservation,
        ami_type=ami or "AL2023_x86_64_NVIDIA",
        root_volume_gib=r.int("rootVolumeGiB", 200, min=50, max=16384),
        http_put_response_hop_limit=r.int("httpPutResponseHopLimit", 2, min=1, max=64),
        auto_repair=r.bool("autoRepair", True),
        labels=r.str_map("labels"),
        provisioner=provisioner or "managed",
    )
    for key, value in pool.labels.items():
        message = _node_label_problem(key, value)
        if message:
            r.error(message, f"labels.{key}")
    r.finish()
    return pool


def _karpenter_rules(r: Reader, reserved: bool, lo: Optional[int], want: Optional[int],
                     efa: Optional[bool], layout: Optional[str], ami: Optional[str]) -> None:
    """What a Karpenter pool cannot be. `reserved` is judged on the raw keys (a reservation
    proves the pool reserved even when its id was rejected)."""
    why = "" if r.has("provisioner") else \
        " (provisioner defaults to karpenter for SPOT and ON_DEMAND pools)"
    if reserved:
        r.error("'karpenter' is for elastic pools: a reserved pool (ODCR or Capacity Block) is "
                "sized to its reservation and stays a managed node group", "provisioner")
        return
    for key, value in (("minSize", lo), ("desiredSize", want)):
        if value and r.parsed(key) and (key == "minSize" or r.has(key)):
            r.error(f"{value} must be 0 for a Karpenter pool{why}: Karpenter keeps no standing "
                    "nodes, it launches them for pending pods and removes them when empty; set "
                    "provisioner: managed to keep standing nodes", key)
    if efa and layout == "legacy" and r.parsed("efa", "efaLayout"):
        r.error(f"'legacy' cannot be built by Karpenter{why}: an EC2NodeClass takes only "
                "`interface` and `efa-only` interfaces; use current, or provisioner: managed",
                "efaLayout")
    if ami and ami.startswith("BOTTLEROCKET") and r.parsed("amiType"):
        r.error(f"{ami!r} is not built by trainyard's Karpenter pools{why}, which use the "
                "EKS AL2023 AMIs; use an AL2023 amiType, or provisioner: managed", "amiType")


def _timestamp(r: Reader, name: str) -> Optional[dt.datetime]:
    """An ISO 8601 date or date-time (UTC unless it names a zone); YAML may already have parsed
    it into a date or datetime."""
    r._seen.add(name)
    value = r.raw.get(name)
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, dt.date):
        stamp = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            r.error(f"{value!r} is not an ISO 8601 date or time (e.g. 2026-12-01T11:30:00Z)", name)
            return None
    else:
        r.error(f"expected an ISO 8601 date or time, got {kind(value)} {value!r}", name)
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def _node_label_problem(key: str, value: str) -> Optional[str]:
    """Kubernetes label syntax, and no keys in domains the platform, EKS or the kubelet own
    (kubelet refuses to start with most `kubernetes.io` / `k8s.io` self-labels)."""
    prefix, _, name = key.rpartition("/")
    if not _LABEL_NAME_RE.match(name) or (prefix and not _LABEL_PREFIX_RE.match(prefix)):
        return f"{key!r} is not a valid Kubernetes label key"
    if prefix and any(prefix == d or prefix.endswith("." + d) for d in _RESERVED_LABEL_DOMAINS):
        return (f"{key!r} is in a reserved label domain "
                f"({', '.join(_RESERVED_LABEL_DOMAINS)}); the platform sets those labels")
    if value and not _LABEL_NAME_RE.match(value):
        return f"{value!r} is not a valid Kubernetes label value"
    return None


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


def _cross_checks(problems: list[str], network: NetworkConfig, cluster: ClusterConfig,
                  pools: tuple[GpuPoolConfig, ...], storage: StorageConfig,
                  teams: tuple[TeamConfig, ...], catalog: Catalog) -> None:
    """Rules across sections. Each runs only when every field it reads parsed: a value that was
    already rejected (or a stand-in default for it) never produces a second problem."""
    rejected = [problem_path(p) for p in problems]  # before this function adds any

    def parsed(*paths: str) -> bool:
        return not any(covers(bad, f"{NS}:{path}") for path in paths for bad in rejected)

    def pools_parsed(*fields: str) -> bool:
        return parsed("gpuPools") or (bool(pools) and all(
            parsed(*(f"gpuPools[{i}].{f}" for f in fields)) for i in range(len(pools))))

    def dupes(names):
        return sorted({n for n in names if n and list(names).count(n) > 1})

    for n in dupes([p.name for p in pools]):
        problems.append(f"{NS}:gpuPools: pool name {n!r} is used more than once")
    for n in dupes([t.name for t in teams]):
        problems.append(f"{NS}:teams: team name {n!r} is used more than once")
    # A TrainJob takes whole nodes, so a team whose quota is below one node of every pool could
    # never run one (trainyard job render checks the chosen pool too).
    node_gpus = {p.name: catalog.get(p.instance_types[0]).gpus for p in pools
                 if p.name and p.instance_types} if pools_parsed("name", "instanceTypes") else {}
    if node_gpus:
        smallest = min(node_gpus, key=lambda n: node_gpus[n])
        for i, t in enumerate(teams):
            if parsed(f"teams[{i}].gpuQuota") and t.gpu_quota < node_gpus[smallest]:
                problems.append(
                    f"{NS}:teams[{i}].gpuQuota: {t.gpu_quota} is below one node of every GPU "
                    f"pool (the smallest, {smallest!r}, has {node_gpus[smallest]} GPUs per "
                    f"node); TrainJobs take whole nodes, so team {t.name!r} could never run one")
    if storage.fsx.enabled and parsed("storage.fsx.enabled") and pools_parsed("efa") and \
            not any(p.efa for p in pools):
        problems.append(f"{NS}:storage.fsx.enabled: true needs an EFA GPU pool (FSx for Lustre "
                        "is placed in the EFA pool's availability zone)")
    if parsed("network.vpcCidr"):
        for c in cluster.public_access_cidrs:  # only the entries that parsed
            if ipaddress.ip_network(c).overlaps(ipaddress.ip_network(network.vpc_cidr)):
                problems.append(f"{NS}:cluster.publicAccessCidrs: {c!r} overlaps the VPC CIDR "
                                f"{network.vpc_cidr!r}; the public endpoint is for outside "
                                "callers")
    # Private subnets must hold the nodes (and pods) the pools may launch in them.
    if parsed("network", "cluster.systemNodes.maxSize") and pools_parsed(
            "maxSize", "instanceTypes", "efa", "efaLayout", "availabilityZones"):
        _subnet_capacity(problems, network, cluster, pools, catalog)


def _subnet_capacity(problems: list[str], network: NetworkConfig, cluster: ClusterConfig,
                     pools: tuple[GpuPoolConfig, ...], catalog: Catalog) -> None:
    try:
        plan = netmath.carve_subnets(network.vpc_cidr, network.availability_zones,
                                     network.private_subnet_prefix, network.public_subnet_prefix)
    except ValueError:
        return  # reported at network.vpcCidr
    short = []
    for az in network.availability_zones:
        need = netmath.ips_needed_in_az(az, pools, cluster.system_nodes, network, catalog)
        have = netmath.usable_addresses(plan.private[az])
        if need > have:
            short.append((az, need, have))
    if short:  # one setting is wrong, so one problem: the first short AZ, the others named
        az, need, have = short[0]
        others = ", ".join(f"{a} needs {n}" for a, n, _ in short[1:])
        problems.append(
            f"{NS}:network.privateSubnetPrefix: private subnet {plan.private[az]} in {az} "
            f"has {have} usable addresses but the pools may need {need}"
            f"{f' (also short: {others})' if others else ''}; use a larger VPC CIDR or a "
            "smaller prefix")
