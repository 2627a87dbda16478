"""The typed stack configuration: the frozen dataclasses `components.config.load` returns, and
the constants (choices, defaults) their fields and the section parsers share.

Every config key, its default and its rules are in the docstrings below; the parsing lives in
components/config/__init__.py (`load`), components/config/sections.py, components/config/pools.py and
components/config/checks.py. This module imports none of them, so each can import it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

from components.compute import eks_versions

NS = "trainyard"
ENVIRONMENTS = ("dev", "staging", "prod")
# Every version in the EKS calendar (components/compute/eks_versions.py); whether one may be used on a
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
SYSTEM_POOL_NAME = "system"
"""POOL_LABEL value of the system node group; no GPU pool may take it."""


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
    NodePool + EC2NodeClass (components/compute/karpenter.py); nodes appear for pending pods and go away
    when empty, so the pool has no standing size (minSize and desiredSize 0). `managed`: an EKS
    managed node group (components/compute/gpu_pool.py). Default when parsed from a stack file:
    `karpenter` for elastic pools (SPOT, or ON_DEMAND without a capacityReservation), `managed`
    for reserved pools (ODCR, CAPACITY_BLOCK), which are sized to their reservation and may not
    use Karpenter. Nodes carry the same labels and taints either way. Changing it replaces the
    pool's nodes."""

    purpose: str = "training"
    """`training` (TrainJobs: a training runtime and Kueue quota) or `inference` (model
    serving: no runtime, no queue quota; the serving layer places predictors there)."""

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
class RegistryConfig:
    """`trainyard:registry`: the stack's ECR repositories (components/services/registry.py)."""

    enabled: bool = True
    """Create the repositories. Default true."""
    repositories: Mapping[str, str] = field(default_factory=lambda: {
        "train": "trainyard-train", "serve": "trainyard-serve"})
    """Role -> ECR repository name. The role is part of the logical name (keep it stable); the
    name is fixed, not auto-named, because image references in config (`kubeflow.
    trainingImage`) name it. Default train: trainyard-train, serve: trainyard-serve. Stacks that
    share an account need distinct names."""
    scanning: str = "basic"
    """`basic` (each repository scans on push, free) or `enhanced` (Amazon Inspector scans the
    whole registry on push and continuously as new CVEs appear, billed per image). Default
    basic. Enhanced is a registry-wide (account and region) setting: one stack per account and
    region may own it."""
    keep_untagged: int = 10
    """Lifecycle: untagged images kept per repository (older ones expire), 1-1000. Default 10."""


@dataclass(frozen=True)
class SecretsConfig:
    """`trainyard:secrets`: AWS Secrets Manager + External Secrets Operator
    (components/services/secrets.py, docs/secrets.md)."""

    enabled: bool = True
    """Install the External Secrets Operator and keep the platform's credentials in Secrets
    Manager. Default true. Off: Grafana's password is a Pulumi-generated Kubernetes Secret."""
    prefix: str = ""
    """Name prefix of the stack's secrets in Secrets Manager (`<prefix>/grafana-admin`).
    Default `trainyard/<stack>`."""
    grafana_admin_password: str = "generated"
    """`generated`: a RandomPassword written to Secrets Manager by the stack (ciphertext in the
    Pulumi state, "[secret]" in plans). `operator`: the stack creates the empty secret and an
    operator puts the value once (`aws secretsmanager put-secret-value`), so the state never
    holds it. Default generated."""
    recovery_window_days: int = 30
    """Days a deleted secret can be restored (7-30, or 0 to delete at once). Default 30."""


@dataclass(frozen=True)
class NotebookAuth:
    kind: str = "dummy"
    """`oidc` (any OpenID Connect provider: GenericOAuthenticator), `github` (GitHubOAuthenticator)
    or `dummy` (any name, no password: dev only)."""
    client_id: str = ""
    client_secret_name: str = ""
    """Secrets Manager secret holding the OAuth client secret (External Secrets copies it)."""
    callback_url: str = ""
    authorize_url: str = ""
    token_url: str = ""
    userdata_url: str = ""
    groups_claim: str = "groups"
    """OIDC: the userinfo claim listing the user's groups; a group named like a team lets its
    members use that team's profiles."""
    organization: str = ""
    """GitHub: the organization whose teams (`org:team`, team = trainyard team) may log in."""
    admin_users: tuple[str, ...] = ()


@dataclass(frozen=True)
class NotebooksConfig:
    """`trainyard:notebooks` (components/config/notebooks.py). Absent: no notebooks."""

    enabled: bool = False
    image: str = ""
    """Notebook image: the training image's `notebook` stage (workloads/Dockerfile)."""
    auth: NotebookAuth = field(default_factory=NotebookAuth)
    gpu_pool: str = ""
    """Pool for one-GPU notebooks (an evaluation/inference-class pool); empty: CPU only."""
    full_node_pool: str = ""
    """Pool whose whole node a notebook may take (empty: no such profile)."""
    max_users: int = 10
    """Most servers running at once (JupyterHub's active_server_limit); the cost estimate
    prices GPU notebooks at this many."""
    cull_idle_minutes: int = 60
    gpu_cull_idle_minutes: int = 20
    """GPU notebooks shut themselves down sooner: idle GPUs are the expensive kind."""
    cpu: str = "2"
    memory: str = "8Gi"
    home_gib: int = 10
    public: bool = False
    """Expose the hub through an internet-facing load balancer (policy config must allow it).
    Default: a ClusterIP service, reached through `kubectl port-forward` or an internal
    ingress."""


@dataclass(frozen=True)
class HpoConfig:
    """`trainyard:hpo` (components/config/hpo.py): hyperparameter searches on this stack. Absent:
    no searches (`trainyard hpo render` refuses)."""

    enabled: bool = False
    pools: tuple[str, ...] = ()
    """Training pools searches may run trials on (default: every training pool)."""
    max_gpu_hours: int = 100
    """Most GPU-hours one search may budget (a spec's budget.gpu_hours above it is refused)."""
    max_concurrent_trials: int = 4
    max_trials: int = 64


@dataclass(frozen=True)
class BudgetLimit:
    name: str
    """The pool or team."""
    monthly_usd: int
    pools: tuple[str, ...] = ()
    """A team's pools (pool budgets: empty)."""


@dataclass(frozen=True)
class BudgetsConfig:
    """`trainyard:budgets` (components/config/budgets.py). Absent: no budgets."""

    enabled: bool = False
    monthly_usd: int = 0
    """The stack's monthly budget in USD (0: no stack-wide budget, only pools and teams)."""
    alert_at_percent: tuple[int, ...] = (80, 100)
    """Actual-spend thresholds; a forecast alert at 100 % is added to every budget."""
    emails: tuple[str, ...] = ()
    sns_topic_arn: str = ""
    pools: tuple[BudgetLimit, ...] = ()
    teams: tuple[BudgetLimit, ...] = ()
    activate_tags: bool = False
    """Activate the cost-allocation tags in billing from the stack (payer or standalone
    accounts only; AWS refuses it in a member account, where the payer activates them)."""


SERVING_RUNTIMES = ("huggingface-vllm", "huggingface-cpu", "triton")
"""Model runtimes (components/data/serving/runtimes.yaml): KServe's Hugging Face server with the vLLM
backend on a GPU, the same server with the Transformers backend on CPU, and Triton (ONNX)."""
SERVING_SIGNALS = ("requests-in-flight", "queue-depth", "cpu")
"""What KEDA scales a model on: requests the server is working on, requests waiting for a slot
(both from the server's own metrics through Prometheus), or CPU utilisation in percent."""
LB_SCHEMES = ("internal", "internet-facing")


@dataclass(frozen=True)
class ServingIngressConfig:
    """The one Application Load Balancer in front of every served model."""

    scheme: str = "internal"
    """`internal` (private addresses only) or `internet-facing` (also needs the policy config's
    allowance, policies/serving.py). Default internal."""
    certificate_arn: str = ""
    """ACM certificate of the HTTPS listener; must cover `*.<domain>`. Required with models."""
    domain: str = ""
    """DNS suffix: model `m` answers at `m.<domain>` (host-based listener rules; point a wildcard
    record at the ALB). Required with models."""
    allowed_cidrs: tuple[str, ...] = ()
    """Client networks the ALB's security group admits. Default: the VPC (internal);
    required for internet-facing, never 0.0.0.0/0."""


@dataclass(frozen=True)
class ServingAutoscaling:
    signal: str = "requests-in-flight"
    """One of SERVING_SIGNALS; `cpu` only for the CPU runtime. Default requests-in-flight."""
    target: int = 8
    """Per replica: requests in flight or waiting, or CPU percent. Default 8 (cpu: 70)."""


@dataclass(frozen=True)
class ServingResources:
    cpu: str
    """CPU request and limit, Kubernetes quantity (e.g. "4")."""
    memory: str
    """Memory request and limit (e.g. "24Gi")."""
    gpus: int
    """GPUs per replica (request = limit); 0 for the CPU runtime."""


@dataclass(frozen=True)
class TrafficSplit:
    """A/B: two exports behind one host name, weighted at the load balancer."""

    a: str
    """Source of variant a (the incumbent), like `source`."""
    b: str
    """Source of variant b (the candidate)."""
    weight_a: int
    weight_b: int
    """Percent of requests to each; they sum to 100."""


@dataclass(frozen=True)
class ServedModelConfig:
    name: str
    """DNS label, 1-24 characters: the InferenceService, the served model name, the host."""
    runtime: str
    """One of SERVING_RUNTIMES."""
    source: str = ""
    """Key prefix of the export in the checkpoints bucket, under `models/` (e.g.
    `models/llm-125m/2026-11-20/`). Empty when `traffic` names the sources."""
    pool: str = ""
    """GPU pool (trainyard:gpuPools) the replicas run on; required for GPU runtimes. Empty:
    the system nodes (CPU runtime only)."""
    min_replicas: int = 1
    max_replicas: int = 2
    autoscaling: ServingAutoscaling = field(default_factory=ServingAutoscaling)
    resources: Optional[ServingResources] = None
    """Per replica. Default per runtime (components/config/serving.py DEFAULT_RESOURCES)."""
    traffic: Optional[TrafficSplit] = None
    latency_slo_ms: int = 200
    """p99 target the alerts and review use. Default 200 ms."""

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.traffic.a, self.traffic.b) if self.traffic else (self.source,)


@dataclass(frozen=True)
class ServingConfig:
    enabled: bool = False
    """Install KServe, KEDA, cert-manager and the AWS Load Balancer Controller. Default false."""
    namespace: str = "serving"
    """Namespace of the served models. Default `serving`."""
    ingress: ServingIngressConfig = field(default_factory=ServingIngressConfig)
    models: tuple[ServedModelConfig, ...] = ()


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
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    secrets: SecretsConfig = field(default_factory=SecretsConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    """`trainyard:serving` (components/config/serving.py). Default: off."""
    budgets: BudgetsConfig = field(default_factory=BudgetsConfig)
    notebooks: NotebooksConfig = field(default_factory=NotebooksConfig)
    hpo: HpoConfig = field(default_factory=HpoConfig)

    def pool(self, name: str) -> GpuPoolConfig:
        for p in self.gpu_pools:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def efa_azs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.availability_zones[0] for p in self.gpu_pools if p.efa))

