"""Kubeflow Trainer v2 objects built from typed Python: one ClusterTrainingRuntime per GPU pool
(installed by components/services/kubeflow.py) and the TrainJobs `trainyard job render` prints (the CLI,
trainyard/job.py, imports them from here: components/ never imports trainyard/). Pure
functions, no Pulumi, no cluster.

Split of responsibilities (docs/monitoring.md, "Training jobs"):

- The **runtime** (`torch-efa-<pool>` on EFA pools, `torch-<pool>` elsewhere) carries everything
  that follows from the pool: node selector and GPU toleration, default per-node resources (all
  GPUs, every EFA device, 5120Mi of 2 MiB huge pages on EFA pools), a memory-backed /dev/shm,
  the NCCL/libfabric environment from AWS_FACTS.md, the training service account, the
  throughput-exporter sidecar, and how the job survives an interruption: the grace period and
  torchrun timeout of the Spot budget (`interruption_budget`), `restartPolicy: Never`, a
  podFailurePolicy that fails the Job at once on exit 75 or an eviction, and a JobSet rule that
  restarts every node for it without counting against maxRestarts.
- The **TrainJob** carries the run: its team's Kueue queue and priority (labels; created
  suspended), node count, processes per node, the resources per node again (explicit, so the
  job states what it takes), image, the launcher command line, and in a runtime patch the
  pool's toleration, the budget, the do-not-disrupt annotation and the team's shared claims.

Both are validated against kubeflow-trainer-api's models for the chart's version (2.3.0):
`validate_runtime` / `validate_train_job` parse the dict and fail if the model drops a field
(the generated models ignore unknown fields silently, so a typo would otherwise pass).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from components.compute.catalog import Catalog, load_catalog
from components.config import GpuPoolConfig
from components.services.k8s_names import (
    DEFAULT_PRIORITY,
    DO_NOT_DISRUPT,
    EFA_HUGEPAGES,
    EFA_LABEL,
    EFA_RESOURCE,
    FSX_CLAIM,
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    HUGEPAGES_RESOURCE,
    LOCAL_QUEUE,
    POOL_LABEL,
    PRIORITY_CLASSES,
    PRIORITY_LABEL,
    QUEUE_LABEL,
    SHARED_CLAIM,
    SPOT_NOTICE_SECONDS,
    TRAINING_SERVICE_ACCOUNT,
)

TRAINER_CHART_VERSION = "2.3.0"
"""kubeflow-trainer chart version; kubeflow-trainer-api in pyproject.toml must match it."""
TRAINER_GROUP = "trainer.kubeflow.org"
TRAINER_VERSION = "v1alpha1"
TRAINER_API = f"{TRAINER_GROUP}/{TRAINER_VERSION}"
RUNTIME_KIND = "ClusterTrainingRuntime"
TRAINJOB_PLURAL = "trainjobs"

NODE_JOB = "node"
"""Replicated job and container name the Trainer's torch plugin fills in (`trainer` step)."""
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
PATCH_MANAGER = "trainyard.io/job-render"
"""`manager` of the runtime patch a rendered TrainJob carries (tolerations, grace period,
do-not-disrupt annotation, shared mounts, service account)."""

WORKLOAD_LABEL = "trainyard.io/workload"
METRICS_LABEL = "trainyard.io/train-metrics"
"""Pod label (value "true") the monitoring PodMonitor selects training pods by."""

SHM_MOUNT = "/dev/shm"
NODE_CACHE_VOLUME = "node-cache"
NODE_CACHE_MOUNT = "/var/cache/trainyard"
"""Node-local cache (the LLM job's --cache-dir for S3 data shards): an emptyDir, which
the kubelet keeps on the instance-store NVMe RAID0 where the pool's types have local NVMe
(nodeadm `localStorage: RAID0`, Karpenter `instanceStorePolicy: RAID0`), else on the root
volume. Emptied when the pod goes, as a cache should be."""
SHARED_MOUNT = "/shared"
FSX_MOUNT = "/fsx"

MAX_RESTARTS = {"SPOT": 10, "ON_DEMAND": 3, "CAPACITY_BLOCK": 3}
"""JobSet restarts after a crash before the TrainJob fails; each restart resumes from the newest
checkpoint. Interruptions do not count (`PREEMPTED_RULE`); Spot pools still get more, because a
Spot node can also vanish without a drain (the notice missed), failing the pod like a crash."""
LAUNCHER = ("python", "-m", "workloads.common.launch")
"""torchrun with a truthful exit code: 75 when the workers stopped for a preemption and saved
(workloads/common/launch.py), which the Job's podFailurePolicy matches."""
PREEMPTED_EXIT_CODE = 75
"""workloads.common.cli.EXIT_PREEMPTED (components/ does not import workloads/)."""
PREEMPTED_RULE = "Preempted"
"""JobSet failurePolicy rule: a Job failed by its podFailurePolicy (exit 75 or an evicted pod)
restarts the whole JobSet without counting against maxRestarts."""

EXPORTER_FILE = Path("data") / "monitoring" / "train-metrics-exporter.yaml"
"""The exporter's data, beside the `components` package that installs it (wherever that was
imported from: the project's checkout for the CLI, see trainyard/project.py)."""

# NCCL / libfabric environment (AWS_FACTS.md "Huge pages and NCCL"). Deliberately NOT set, with
# libfabric >= 1.18 and aws-ofi-nccl >= 1.7: FI_EFA_USE_DEVICE_RDMA, FI_PROVIDER=efa,
# NCCL_PROTO=simple (all auto-detected, and forcing them hurts or breaks newer instances), and
# never RDMAV_FORK_SAFE. No /dev/infiniband hostPath either: the EFA device plugin mounts the
# devices it allocates, and a hostPath would bypass its accounting.
FORBIDDEN_ENV = ("FI_EFA_USE_DEVICE_RDMA", "FI_PROVIDER", "NCCL_PROTO", "RDMAV_FORK_SAFE")
NCCL_DEBUG_LEVELS = ("WARN", "INFO")


def nccl_env(efa: bool, nccl_debug: str = "WARN") -> dict[str, str]:
    """Environment of the training container. `nccl_debug` INFO while validating a pool: the log
    then shows `NET/Libfabric`/`NET/OFI` when EFA is used and `NET/Socket` on a silent fallback."""
    if nccl_debug not in NCCL_DEBUG_LEVELS:
        raise ValueError(f"nccl_debug must be one of {NCCL_DEBUG_LEVELS}, got {nccl_debug!r}")
    env = {
        # Keep NCCL's TCP bootstrap off the container bridge, loopback and veth pairs.
        "NCCL_SOCKET_IFNAME": "^docker,lo,veth",
        "NCCL_DEBUG": nccl_debug,
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
        "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",
        # The flight recorder the timeout dump writes out; 0 would leave nothing to dump.
        "TORCH_NCCL_TRACE_BUFFER_SIZE": "2000",
        "PYTHONUNBUFFERED": "1",
    }
    # EFA pools need nothing more: aws-ofi-nccl selects the efa provider and GPUDirect RDMA by
    # itself and loads its tuner. If forks fail with ENOMEM, add FI_EFA_USE_HUGE_PAGE=0 to the job.
    return env


# ----------------------------------------------------------------------------------------------
# Spot interruption budget
# ----------------------------------------------------------------------------------------------
DRAIN_MARGIN_SECONDS = 20
"""Budgeted (not measured) time from EC2's interruption notice to SIGTERM in the training
container: EventBridge delivers the Spot Interruption Warning to the SQS interruption queue,
Karpenter reads it, taints the node and evicts the pods (with managed node groups, capacity
rebalancing drains the node), the kubelet signals the container. Each hop is seconds."""
EXIT_MARGIN_SECONDS = 10
"""Between torchrun's shutdown timeout and the pod's grace period: torchrun SIGKILLs workers
that outlive its timeout, then exits with a code the podFailurePolicy can read, before the
kubelet kills it."""
SAVE_OVERHEAD_SECONDS = 10
"""Fixed part of a save on SIGTERM, budgeted: DCP's save plan (a collective), the
device-to-host copy, the manifest and the `latest` marker (a few S3 requests)."""
SAVE_BYTES_PER_SECOND = 250e6
"""Rate one node is assumed to write its share of a checkpoint at (to S3 or a shared file
system): 2 Gb/s, below the 5 Gb/s EC2 allows a single flow outside a cluster placement group
("Amazon EC2 instance network bandwidth"). An assumption until the cluster measures it: the
`preempted` metrics event's `save_s`."""


@dataclass(frozen=True)
class InterruptionBudget:
    """How the 2-minute Spot notice is spent (docs/operations.md "Spot interruptions"):

        notice ─ drain margin ─► SIGTERM to torchrun ─ shutdown timeout ─► SIGKILL to workers
                                                     ─ exit margin ─► end of grace period

    The workers must finish their step and save within `shutdown_timeout_s`."""

    notice_s: int
    """Notice before EC2 reclaims the instance (SPOT_NOTICE_SECONDS)."""
    drain_margin_s: int
    """Notice -> SIGTERM in the container (DRAIN_MARGIN_SECONDS)."""
    exit_margin_s: int
    """torchrun's shutdown timeout -> end of the pod's grace period (EXIT_MARGIN_SECONDS)."""

    @property
    def grace_s(self) -> int:
        """The pod's terminationGracePeriodSeconds: all that is left when SIGTERM arrives
        (a longer grace buys nothing on Spot: the instance is gone at the end of the notice)."""
        return self.notice_s - self.drain_margin_s

    @property
    def shutdown_timeout_s(self) -> int:
        """torchrun's --shutdown-timeout: how long it waits for the workers after SIGTERM."""
        return self.grace_s - self.exit_margin_s

    def slack_s(self, step_s: float, save_s: float) -> float:
        """notice − drain margin − exit margin − (rest of the step) − save: >= 0 when the
        checkpoint on SIGTERM completes before torchrun gives up on the workers."""
        return self.shutdown_timeout_s - step_s - save_s

    def fits(self, step_s: float, save_s: float) -> bool:
        return self.slack_s(step_s, save_s) >= 0


def interruption_budget(notice_s: int = SPOT_NOTICE_SECONDS,
                        drain_margin_s: int = DRAIN_MARGIN_SECONDS,
                        exit_margin_s: int = EXIT_MARGIN_SECONDS) -> InterruptionBudget:
    """The budget for a notice; ValueError when the margins leave the workers no time."""
    budget = InterruptionBudget(notice_s, drain_margin_s, exit_margin_s)
    if min(drain_margin_s, exit_margin_s) < 0 or budget.shutdown_timeout_s <= 0:
        raise ValueError(f"a {notice_s}s notice less {drain_margin_s}s to drain and "
                         f"{exit_margin_s}s to exit leaves no time to save")
    return budget


BUDGET = interruption_budget()
"""The budget every runtime and rendered TrainJob carries: grace 100 s, torchrun 90 s. Reserved
and on-demand pools get the same (their disruptions come with no shorter notice)."""


STEP_MFU_FLOOR = 0.2
"""MFU the step-time estimate assumes: below the 35-50% plain PyTorch reaches on one H100
(shared/design/WORKLOAD_ANCHORS.md), so the estimate errs long."""


def step_seconds(flops_per_gpu: float, peak_tflops: float, mfu: float = STEP_MFU_FLOOR) -> float:
    """Upper estimate of one optimizer step: the rest of the step a SIGTERM interrupts."""
    if peak_tflops <= 0 or not 0 < mfu <= 1:
        raise ValueError("peak_tflops must be > 0 and mfu in (0, 1]")
    return flops_per_gpu / (peak_tflops * 1e12 * mfu)


def save_seconds(bytes_per_node: float, bytes_per_s: float = SAVE_BYTES_PER_SECOND,
                 overhead_s: float = SAVE_OVERHEAD_SECONDS) -> float:
    """Estimated time to save one node's share of a checkpoint (FSDP: the checkpoint over the
    nodes; DDP: every node may write any replicated tensor, so count all of it)."""
    if bytes_per_node < 0 or bytes_per_s <= 0:
        raise ValueError("checkpoint size must be >= 0 and the write rate > 0")
    return overhead_s + bytes_per_node / bytes_per_s


# ----------------------------------------------------------------------------------------------
# Pool facts
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolFacts:
    """What a training job needs to know about a GPU pool (from the config and the catalog)."""

    name: str
    instance_types: tuple[str, ...]
    vendor: str
    """`nvidia` or `neuron`."""
    gpu_model: str
    gpus: int
    """Accelerators per node."""
    efa_devices: int
    """EFA interfaces attached per node: the instance's maximum on EFA pools, else 0."""
    vcpus: int
    """Smallest vCPU count among the pool's instance types."""
    memory_gib: int
    """Smallest memory among the pool's instance types."""
    max_nodes: int
    capacity_type: str
    gpu_memory_gib: int = 0
    """Memory per accelerator, the smallest among the pool's types (catalog)."""
    peak_tflops: float = 0.0
    """Dense BF16 peak per accelerator, the lowest among the pool's types (catalog): what
    step-time estimates divide by."""

    @property
    def efa(self) -> bool:
        return self.efa_devices > 0

    @property
    def gpu_resource(self) -> str:
        return GPU_RESOURCE[self.vendor]


def pool_facts(pool: GpuPoolConfig, catalog: Optional[Catalog] = None) -> PoolFacts:
    catalog = catalog or load_catalog()
    specs = [catalog.get(t) for t in pool.instance_types]
    first = specs[0]
    return PoolFacts(
        name=pool.name, instance_types=tuple(pool.instance_types), vendor=first.vendor or "nvidia",
        gpu_model=first.gpu_model or "", gpus=first.gpus,
        efa_devices=first.max_efa if pool.efa else 0,
        vcpus=min(s.vcpus for s in specs), memory_gib=min(s.memory_gib for s in specs),
        max_nodes=pool.max_size, capacity_type=pool.capacity_type,
        gpu_memory_gib=min((s.accelerator.memory_gib for s in specs if s.accelerator),
                           default=0),
        peak_tflops=min((s.accelerator.bf16_tflops for s in specs if s.accelerator),
                        default=0.0))


def runtime_name(facts: PoolFacts) -> str:
    """`torch-efa-<pool>` on EFA pools, `torch-<pool>` elsewhere (pool names are DNS labels).
    The chart's own runtimes are named `<framework>-distributed`; a pool named `distributed`
    without EFA would collide with `torch-distributed`, so avoid that pool name."""
    return f"torch-efa-{facts.name}" if facts.efa else f"torch-{facts.name}"


def supports_runtime(facts: PoolFacts) -> bool:
    """Only NVIDIA pools get a torch runtime; Trainium needs torch-neuronx and its own env."""
    return facts.vendor == "nvidia"


EFA_PREALLOCATED_GIB = 5128 * 2 / 1024
"""Huge pages an EFA instance pre-allocates (5128 x 2 MiB, AWS_FACTS "Huge pages and NCCL")."""


def node_resources(facts: PoolFacts, gpus: Optional[int] = None) -> dict[str, dict[str, str]]:
    """Per-node requests/limits. GPUs, EFA devices and huge pages are extended resources
    (requests == limits); CPU and memory requests leave room for the DaemonSets and kubelet
    reservations, scaled down for a partial node. Memory is also capped at the request (a leak
    OOM-kills the training container, not the node's agents; /dev/shm counts against it); CPU
    has no limit, which would only throttle data loading and NCCL's progress threads."""
    gpus = facts.gpus if gpus is None else gpus
    limits = {facts.gpu_resource: str(gpus)}
    if facts.efa:
        limits[EFA_RESOURCE] = str(facts.efa_devices)
        limits[HUGEPAGES_RESOURCE] = EFA_HUGEPAGES
    share = gpus / facts.gpus if facts.gpus else 1.0
    cpu = max(1, int((facts.vcpus - max(2, facts.vcpus // 16)) * share))
    # EFA nodes pre-allocate their huge pages at boot: that memory is not allocatable.
    usable = facts.memory_gib - (EFA_PREALLOCATED_GIB if facts.efa else 0)
    memory = max(1, int((usable * 0.9 - 2) * share))
    return {"requests": {**limits, "cpu": str(cpu), "memory": f"{memory}Gi"},
            "limits": {**limits, "memory": f"{memory}Gi"}}


def pool_tolerations(facts: PoolFacts) -> list[dict[str, str]]:
    """What a pod needs to run on the pool's nodes: the GPU taint every GPU pool carries
    (components/compute/gpu_pool.py node_taints; Karpenter's NodePools carry the same)."""
    return [{"key": GPU_TAINT_KEY[facts.vendor], "operator": "Exists", "effect": "NoSchedule"}]


def pod_failure_policy() -> dict:
    """The Job's podFailurePolicy: a pod that exited 75 (stopped and saved) or was evicted
    (`DisruptionTarget`: a drain, a Spot interruption, scheduler preemption) fails the Job with
    reason PodFailurePolicy at once, which `PREEMPTED_RULE` restarts without counting."""
    return {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": NODE_JOB, "operator": "In",
                                              "values": [PREEMPTED_EXIT_CODE]}},
        {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget",
                                                   "status": "True"}]},
    ]}


def shm_size(facts: PoolFacts) -> str:
    """Size of the memory-backed /dev/shm: an eighth of node memory, 1-64 GiB (NCCL's intra-node
    transports and DataLoader workers live there; it counts against the pod's memory)."""
    return f"{min(64, max(1, facts.memory_gib // 8))}Gi"


# ----------------------------------------------------------------------------------------------
# ClusterTrainingRuntime
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def exporter() -> dict:
    """The training-throughput exporter sidecar's data (image, port, script)."""
    from components.services import k8s_names

    with (Path(k8s_names.__file__).resolve().parents[1] / EXPORTER_FILE).open() as f:
        return yaml.safe_load(f)


def metrics_file_path() -> str:
    e = exporter()
    return f"{e['metrics_dir']}/{e['metrics_file']}"


def _env_list(env: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in env.items()]


def _exporter_sidecar() -> dict:
    e = exporter()
    return {
        "name": "train-metrics",
        "image": e["image"],
        "restartPolicy": "Always",  # a native sidecar: it never holds a finished pod open
        "command": ["python3", "-c", e["script"]],
        "env": _env_list({"TRAIN_METRICS_FILE": metrics_file_path(),
                          "TRAIN_METRICS_PORT": str(e["port"]),
                          "PYTHONDONTWRITEBYTECODE": "1"}),
        "ports": [{"name": e["port_name"], "containerPort": int(e["port"]), "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                      "limits": {"memory": "64Mi"}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "train-metrics", "mountPath": e["metrics_dir"],
                          "readOnly": True}],
    }


TRAINING_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""The training container's securityContext: Pod Security `restricted` except running as
non-root (the AWS DLC base image runs as root; a non-root image can add runAsNonRoot). EFA needs
no capability: the EFA device plugin hands /dev/infiniband over, and memory registration is
bounded by the node's memlock limit, not by IPC_LOCK (which `baseline` would refuse anyway)."""


def cluster_training_runtime(facts: PoolFacts, image: str, nccl_debug: str = "WARN") -> dict:
    """The ClusterTrainingRuntime for one NVIDIA pool (a plain dict, as the API takes it)."""
    if not supports_runtime(facts):
        raise ValueError(f"pool {facts.name!r} has {facts.vendor} accelerators; trainyard builds "
                         "torch runtimes for NVIDIA pools only")
    name = runtime_name(facts)
    node_selector = {POOL_LABEL: facts.name}
    if facts.efa:
        node_selector[EFA_LABEL] = "true"
    labels = {"trainer.kubeflow.org/framework": "torch", POOL_LABEL: facts.name,
              EFA_LABEL: "true" if facts.efa else "false"}
    env = nccl_env(facts.efa, nccl_debug)
    # torchrun's --shutdown-timeout, from the environment: torch 2.13 reads it (added by
    # pytorch/pytorch#172596); a torch without the option waits a fixed 30 s.
    env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] = str(BUDGET.shutdown_timeout_s)
    container = {
        "name": NODE_JOB,
        "image": image,
        "env": _env_list(env),
        "resources": node_resources(facts),
        "securityContext": TRAINING_SECURITY_CONTEXT,
        "volumeMounts": [
            {"name": "dshm", "mountPath": SHM_MOUNT},
            {"name": "train-metrics", "mountPath": exporter()["metrics_dir"]},
            {"name": NODE_CACHE_VOLUME, "mountPath": NODE_CACHE_MOUNT},
        ],
    }
    pod_spec = {
        "serviceAccountName": TRAINING_SERVICE_ACCOUNT,
        "nodeSelector": node_selector,
        "tolerations": pool_tolerations(facts),
        # Never: a failed pod is replaced by the Job (podFailurePolicy needs it), not restarted
        # in place by the kubelet while the other nodes wait in a half-dead collective.
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": BUDGET.grace_s,
        "initContainers": [_exporter_sidecar()],
        "containers": [container],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(facts)}},
            {"name": "train-metrics", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": NODE_CACHE_VOLUME, "emptyDir": {}},
        ],
    }
    return {
        "apiVersion": TRAINER_API,
        "kind": RUNTIME_KIND,
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},
            "template": {"spec": {
                "failurePolicy": {
                    "maxRestarts": MAX_RESTARTS.get(facts.capacity_type, 3),
                    "rules": [{"name": PREEMPTED_RULE,
                               "action": "RestartJobSetAndIgnoreMaxRestarts",
                               "onJobFailureReasons": ["PodFailurePolicy"]}],
                },
                "replicatedJobs": [{
                    "name": NODE_JOB,
                    "template": {
                        "metadata": {"labels": {ANCESTOR_LABEL: "trainer"}},
                        "spec": {
                            # Any pod failing fails the Job, and JobSet restarts every node
                            # together: the ranks of a torch job live and die as one.
                            "backoffLimit": 0,
                            "podFailurePolicy": pod_failure_policy(),
                            "template": {
                                "metadata": {
                                    "labels": {POOL_LABEL: facts.name, METRICS_LABEL: "true"},
                                    # Karpenter never consolidates a node under training;
                                    # a Spot interruption still drains it.
                                    "annotations": {DO_NOT_DISRUPT: "true"},
                                },
                                "spec": pod_spec,
                            },
                        },
                    },
                }],
            }},
        },
    }


# ----------------------------------------------------------------------------------------------
# Workloads and TrainJobs
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """A packaged training entry point `trainyard job render` knows how to launch."""

    name: str
    module: str
    """`python -m` module torchrun runs."""
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Default workload flags (`preset`, `max_steps`, ...), overridable per job."""
    config_module: str = ""
    """Module whose `PRESETS` dict names the presets `--preset` accepts (imported on use)."""


@dataclass(frozen=True)
class JobRequest:
    """One TrainJob, resolved: every field is final (CLI defaults already applied)."""

    name: str
    """TrainJob name (DNS-1035 label)."""
    namespace: str
    """Team namespace."""
    workload: Workload
    pool: PoolFacts
    nodes: int
    gpus_per_node: int
    image: str
    checkpoint_dir: str
    """`s3://bucket/prefix/` or a path under a shared mount."""
    workload_args: Mapping[str, Any] = field(default_factory=dict)
    """Workload flags beyond the checkpoint/metrics ones (preset, max_steps, seed, ...)."""
    shared_claims: Mapping[str, str] = field(default_factory=dict)
    """Claim name -> mount path, e.g. {"shared-efs": "/shared"}."""
    nccl_debug: str = "WARN"
    labels: Mapping[str, str] = field(default_factory=dict)
    runtime: Optional[str] = None
    """The deployed ClusterTrainingRuntime (stack output `trainingRuntimes[pool]`). Default:
    `runtime_name(pool)`, the name the stack config gives it."""
    service_account: Optional[str] = None
    """The deployed training service account (stack output `trainingServiceAccount`), stated in
    the job's runtime patch. Default: none, the runtime's own (TRAINING_SERVICE_ACCOUNT)."""
    priority: str = DEFAULT_PRIORITY
    """Kueue WorkloadPriorityClass (k8s_names.PRIORITY_CLASSES). Default `training`."""
    queue: str = LOCAL_QUEUE
    """The LocalQueue in the team namespace that admits the job (k8s_names.LOCAL_QUEUE)."""

    def __post_init__(self) -> None:
        if self.priority not in PRIORITY_CLASSES:
            raise ValueError(f"priority {self.priority!r} is not one of "
                             f"{', '.join(PRIORITY_CLASSES)}")


def runtime_ref(req: JobRequest) -> str:
    """The ClusterTrainingRuntime the TrainJob runs on."""
    return req.runtime or runtime_name(req.pool)


NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def claims_for(efs: bool, fsx: bool) -> dict[str, str]:
    """Team claims a job mounts: the EFS claim at /shared, FSx for Lustre at /fsx."""
    claims = {}
    if efs:
        claims[SHARED_CLAIM] = SHARED_MOUNT
    if fsx:
        claims[FSX_CLAIM] = FSX_MOUNT
    return claims


def workload_argv(req: JobRequest) -> list[str]:
    args = dict(req.workload.defaults)
    args.update(req.workload_args)
    args["checkpoint_dir"] = req.checkpoint_dir
    args["metrics_file"] = metrics_file_path()
    argv = []
    for key, value in args.items():
        if value is None:
            continue
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def train_job(req: JobRequest) -> dict:
    """The TrainJob for `req` (a plain dict), on its team's Kueue queue.

    Kueue admits it (all nodes at once, or none) against the team's ClusterQueue: the queue and
    priority labels say where, `suspend: true` keeps it from starting before admission (Kueue's
    webhook sets the same; stating it means no pod starts where Kueue is absent). The pod patch
    states what the runtime already gives, so the job says what it takes: the pool's
    tolerations, the interruption budget (grace period; torchrun's shutdown timeout in the env)
    and the do-not-disrupt annotation."""
    volumes = [{"name": claim.replace("_", "-"), "persistentVolumeClaim": {"claimName": claim}}
               for claim in req.shared_claims]
    mounts = [{"name": claim.replace("_", "-"), "mountPath": path}
              for claim, path in req.shared_claims.items()]
    env = {"TRAINYARD_JOB": req.name, "TRAINYARD_POOL": req.pool.name,
           "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(BUDGET.shutdown_timeout_s)}
    if req.nccl_debug != "WARN":
        env["NCCL_DEBUG"] = nccl_env(req.pool.efa, req.nccl_debug)["NCCL_DEBUG"]
    spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": TRAINER_GROUP, "kind": RUNTIME_KIND,
                       "name": runtime_ref(req)},
        "suspend": True,
        "trainer": {
            "numNodes": req.nodes,
            "numProcPerNode": req.gpus_per_node,
            "image": req.image,
            # torchrun (run by the launcher, which only changes its exit code) takes node
            # count, rank and rendezvous from the PET_* variables the Trainer's torch plugin
            # sets; --nproc-per-node repeats numProcPerNode for readers.
            "command": [*LAUNCHER, "--nproc-per-node", str(req.gpus_per_node),
                        "-m", req.workload.module],
            "args": workload_argv(req),
            "env": _env_list(env),
            "resourcesPerNode": node_resources(req.pool, req.gpus_per_node),
        },
    }
    pod_patch: dict[str, Any] = {"tolerations": pool_tolerations(req.pool),
                                 "terminationGracePeriodSeconds": BUDGET.grace_s}
    if req.service_account:
        pod_patch["serviceAccountName"] = req.service_account
    if volumes:
        pod_patch["volumes"] = volumes
        pod_patch["containers"] = [{"name": NODE_JOB, "volumeMounts": mounts}]
    spec["runtimePatches"] = [{
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
            "name": NODE_JOB,
            "template": {"spec": {"template": {
                "metadata": {"annotations": {DO_NOT_DISRUPT: "true"}},
                "spec": pod_patch,
            }}},
        }]}}},
    }]
    labels = {WORKLOAD_LABEL: req.workload.name, POOL_LABEL: req.pool.name, **req.labels,
              QUEUE_LABEL: req.queue, PRIORITY_LABEL: req.priority}
    return {"apiVersion": TRAINER_API, "kind": "TrainJob",
            "metadata": {"name": req.name, "namespace": req.namespace, "labels": labels},
            "spec": spec}


# ----------------------------------------------------------------------------------------------
# Validation against kubeflow-trainer-api's models
# ----------------------------------------------------------------------------------------------
def _dropped(sent: Any, kept: Any, path: str = "") -> list[str]:
    """Paths present in `sent` that the model's round trip lost (unknown fields)."""
    out: list[str] = []
    if isinstance(sent, Mapping):
        if not isinstance(kept, Mapping):
            return [path or "."]
        for key, value in sent.items():
            where = f"{path}.{key}" if path else key
            if key not in kept:
                out.append(where)
            else:
                out += _dropped(value, kept[key], where)
    elif isinstance(sent, Sequence) and not isinstance(sent, str):
        if not isinstance(kept, Sequence) or len(kept) != len(sent):
            return [path]
        for i, (a, b) in enumerate(zip(sent, kept, strict=True)):
            out += _dropped(a, b, f"{path}[{i}]")
    return out


def _validate(obj: Mapping, model: Any, kind: str) -> None:
    try:
        parsed = model.from_dict(dict(obj))
    except Exception as e:  # pydantic.ValidationError and the models' own ValueErrors
        raise ValueError(f"{kind} does not match kubeflow-trainer-api {TRAINER_CHART_VERSION}: "
                         f"{e}") from None
    lost = _dropped(obj, parsed.to_dict())
    if lost:
        raise ValueError(f"{kind} has fields kubeflow-trainer-api {TRAINER_CHART_VERSION} does "
                         f"not know: {', '.join(lost)}")


def validate_runtime(obj: Mapping) -> None:
    from kubeflow_trainer_api.models import TrainerV1alpha1ClusterTrainingRuntime

    _validate(obj, TrainerV1alpha1ClusterTrainingRuntime, "ClusterTrainingRuntime")


def validate_train_job(obj: Mapping) -> None:
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    _validate(obj, TrainerV1alpha1TrainJob, "TrainJob")
