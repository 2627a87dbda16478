"""`trainyard job render`: print (or submit) a Kubeflow TrainJob for a packaged workload on one
of the stack's GPU pools, built from typed Python (components/services/trainjob.py): the workload's entry
point and flags, the pool's facts (GPUs and EFA devices per node, huge pages, node count limits),
the team's shared claims and the checkpoint location from the DEPLOYED stack's outputs.

    pulumi stack output --json > outputs.json      # once per deploy, with the stack selected
    trainyard job render llm --stack prod --pool a100 --nodes 2 --team research \
        --outputs outputs.json > job.yaml
    trainyard job render llm --stack prod --pool a100 --nodes 2 --team research \
        --outputs outputs.json --submit                                 # kubeconfig context

Values that exist only once the stack is deployed come from `--outputs` (the JSON `pulumi stack
output --json` prints; '-' reads it from stdin): the checkpoints bucket and prefix, the pool's
training runtime, the team claims and the training service account. The checkpoint location
defaults to s3://<checkpointsBucket>/<checkpointPrefix><team>/<name>/; rendering the same job
again points at the same place, so the resubmitted job resumes. The offline plan cannot stand in
for the outputs: its bucket names are placeholders (trainyard/mocks.py), and a job is refused
rather than pointed at one. With `--checkpoint-dir` and no `--outputs`, the rest comes from the
stack config. Bad input exits 2 with one line naming the value.

The job goes on its team's Kueue queue (LocalQueue `gpu` in the team namespace, `--priority`
one of the WorkloadPriorityClasses, created suspended until Kueue admits it), and a job no
flavor could ever admit is refused here: more GPUs than the team's gpuQuota, more nodes than
the pool's maxSize, more GPUs per node than the pool's instance type has. So is a job whose
estimated training memory per GPU (the trainer's own estimate, workloads/common/memory.py; with
FSDP each rank's share over nodes x GPUs) exceeds the pool's GPU memory: the trainer would refuse
it on the cluster after Kueue admitted it. It carries the Spot
interruption budget (components/services/trainjob.py `BUDGET`); on a Spot pool, a preset whose estimated
step + save does not fit it gets a warning on stderr (docs/workloads.md "On the cluster").
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from components.config import image_check
from components.services import trainjob
from components.services.k8s_names import DEFAULT_PRIORITY, PRIORITY_CLASSES
from trainyard.errors import UsageError

# ----------------------------------------------------------------------------------------------
# The packaged workloads
# ----------------------------------------------------------------------------------------------
WORKLOADS: dict[str, trainjob.Workload] = {
    # Shards from S3 are cached on the node's NVMe (the runtime's node-cache emptyDir); the
    # held-out split is evaluated every 500 steps and at the end.
    "llm": trainjob.Workload(
        name="llm", module="workloads.llm.train",
        description="Llama-style pretraining with FSDP2/HSDP (workloads/llm)",
        defaults={"preset": "125m", "max_steps": 1000, "checkpoint_every": 100, "seed": 0,
                  "eval_every": 500, "cache_dir": f"{trainjob.NODE_CACHE_MOUNT}/data"},
        config_module="workloads.llm.config"),
    # Synthetic images unless the job passes --data (a throughput/smoke run out of the box);
    # a ResNet-50 checkpoint is ~0.2 GB and 500 steps take about a minute on A100-class GPUs.
    "vision": trainjob.Workload(
        name="vision", module="workloads.vision.train",
        description="ResNet image classification with DDP and mixed precision (workloads/vision)",
        defaults={"preset": "resnet50", "max_steps": 1000, "checkpoint_every": 500, "seed": 0},
        config_module="workloads.vision.config"),
}


def workload_presets(wl: trainjob.Workload) -> list[str]:
    """Preset names the workload's own config accepts (its torch-free config module)."""
    import importlib

    return list(importlib.import_module(wl.config_module).PRESETS)


def workload(name: str) -> trainjob.Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise KeyError(f"unknown workload {name!r} (known: {', '.join(sorted(WORKLOADS))})") \
            from None


OUTPUTS_HINT = ("run `pulumi stack output --json > outputs.json` and pass --outputs outputs.json, "
                "or give --checkpoint-dir")
"""How to get real values, said wherever a job would otherwise point at a placeholder."""
DEFAULT_PRESETS = ", ".join(f"{w.name} {w.defaults['preset']}" for w in WORKLOADS.values())


def add_parser(sub) -> None:
    p = sub.add_parser("job", help="render or submit Kubeflow TrainJobs for the packaged workloads",
                       description=__doc__.split("\n\n")[0])
    jsub = p.add_subparsers(dest="job_command", metavar="SUBCOMMAND",
                            parser_class=type(p))
    jsub.required = True
    r = jsub.add_parser(
        "render", help="print a TrainJob (YAML by default); --submit applies it",
        description="Print a Kubeflow TrainJob for a packaged workload on one of the stack's GPU "
                    "pools (or create it with --submit). Pool facts come from the stack config; "
                    "the checkpoints bucket, runtime, claims and service account from the "
                    "deployed stack's outputs (--outputs, the JSON of `pulumi stack output "
                    "--json`). A job that would point at a placeholder from the offline plan is "
                    "refused.")
    r.add_argument("workload", metavar="WORKLOAD",
                   help=f"packaged workload ({', '.join(sorted(WORKLOADS))})")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--stack", help="stack name: stacks/Pulumi.<NAME>.yaml")
    g.add_argument("--stack-file", type=Path, metavar="PATH", help="any stack config file")
    r.add_argument("--pool", required=True, help="GPU pool to run on")
    r.add_argument("--nodes", required=True, type=int, help="nodes (whole nodes of the pool)")
    r.add_argument("--team", help="team namespace (default: the stack's only team)")
    r.add_argument("--name", help="TrainJob name (default: <workload>-<pool>-<nodes>n)")
    r.add_argument("--gpus-per-node", type=int,
                   help="GPUs (= processes) per node (default: all of the node's; EFA pools "
                        "run whole nodes only)")
    r.add_argument("--image", help="training image, pinned to a version tag or digest (default: "
                                   "trainyard:kubeflow.trainingImage)")
    r.add_argument("--outputs", metavar="PATH",
                   help="the deployed stack's outputs: the JSON `pulumi stack output --json` "
                        "prints ('-' = stdin)")
    r.add_argument("--checkpoint-dir", metavar="DIR",
                   help="s3://bucket/prefix/ or a path under /shared or /fsx (default: the "
                        "deployed stack's checkpoints bucket, from --outputs)")
    w = r.add_argument_group("workload flags")
    w.add_argument("--preset", help=f"model size (default: {DEFAULT_PRESETS})")
    w.add_argument("--micro-batch-size", type=int, metavar="N",
                   help="llm: sequences per GPU per micro-step (default: the preset's)")
    w.add_argument("--batch-size", type=int, metavar="N",
                   help="vision: images per GPU per step (default: the preset's)")
    w.add_argument("--max-steps", type=int)
    w.add_argument("--checkpoint-every", type=int, metavar="K")
    w.add_argument("--seed", type=int)
    w.add_argument("--data", help="shard dir or s3://bucket/prefix (default: the workload's)")
    w.add_argument("--eval-every", type=int, metavar="N",
                   help="llm: held-out evaluation every N steps and at the end (default 500)")
    w.add_argument("--eval-batches", type=int, metavar="N",
                   help="llm: micro-batches per GPU per evaluation (0: none; default 20)")
    w.add_argument("--tensorboard-dir", metavar="DIR",
                   help="llm: TensorBoard event files, s3://bucket/prefix (uploaded at each "
                        "evaluation and checkpoint) or a path under a shared mount")
    r.add_argument("--priority", choices=list(PRIORITY_CLASSES), default=DEFAULT_PRIORITY,
                   help="Kueue WorkloadPriorityClass: who waits and who is preempted when the "
                        f"GPUs are short (default {DEFAULT_PRIORITY})")
    r.add_argument("--nccl-debug", choices=trainjob.NCCL_DEBUG_LEVELS, default="WARN",
                   help="NCCL_DEBUG for this job: INFO while validating a pool (the log shows "
                        "NET/Libfabric, or NET/Socket on a silent fallback to TCP). Default WARN")
    r.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    r.add_argument("--submit", action="store_true",
                   help="create the TrainJob with the Kubernetes API (kubeconfig)")
    r.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig for --submit "
                                                        "(default: $KUBECONFIG or ~/.kube/config)")
    r.add_argument("--context", help="kubeconfig context for --submit (default: current)")
    r.set_defaults(func=run)


# ----------------------------------------------------------------------------------------------
# The deployed stack's outputs
# ----------------------------------------------------------------------------------------------
def read_outputs(path: str) -> dict[str, Any]:
    """The JSON `pulumi stack output --json` prints, from a file or '-' (stdin)."""
    where = f"--outputs {path}"
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file; {OUTPUTS_HINT}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{where}: cannot read: {e}") from None
    try:
        outputs = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{where}: not JSON ({e}); expected what `pulumi stack output --json` "
                         "prints") from None
    if not isinstance(outputs, dict):
        raise UsageError(f"{where}: expected a JSON object of stack outputs (what `pulumi stack "
                         f"output --json` prints), got {type(outputs).__name__}")
    if isinstance(outputs.get("resources"), list) and "project" in outputs:
        raise UsageError(f"{where}: this is an offline plan (`trainyard plan --json`), whose "
                         f"values are placeholders; {OUTPUTS_HINT}")
    return outputs


def deployed_value(outputs: dict[str, Any], key: str, where: str) -> Any:
    """An output the job will use; UsageError if it is missing, masked or a placeholder."""
    if key not in outputs or outputs[key] in (None, ""):
        raise UsageError(f"{where}: no `{key}` output (is this the trainyard stack's `pulumi "
                         "stack output --json`?)")
    value = outputs[key]
    _refuse_placeholders(value, f"{where}: {key}")
    return value


def _refuse_placeholders(value: Any, where: str) -> None:
    from trainyard.mocks import placeholder_reason
    from trainyard.synth import SECRET

    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_placeholders(v, f"{where}.{k}")
        return
    if value == SECRET:
        raise UsageError(f"{where} is a secret ({SECRET}); the job cannot use it")
    reason = placeholder_reason(value)
    if reason:
        raise UsageError(f"{where} {value!r} is a placeholder from the offline plan ({reason}); "
                         f"{OUTPUTS_HINT}")


@dataclass(frozen=True)
class Deployed:
    """What a TrainJob takes from the deployed stack (`pulumi stack output --json`) besides the
    checkpoint location (`default_checkpoint_dir`)."""

    runtime: str
    """The pool's ClusterTrainingRuntime (`trainingRuntimes[pool]`)."""
    claims: dict[str, str]
    """Claim name -> mount path (`sharedClaimName` at /shared, `fsxClaimName` at /fsx)."""
    service_account: Optional[str]


def deployed(outputs: dict[str, Any], where: str, facts: trainjob.PoolFacts) -> Deployed:
    runtimes = deployed_value(outputs, "trainingRuntimes", where)
    if not isinstance(runtimes, dict):
        raise UsageError(f"{where}: `trainingRuntimes` must map pool names to runtime names")
    if facts.name not in runtimes:
        raise UsageError(f"--pool {facts.name}: the deployed stack has no runtime for it "
                         f"(trainingRuntimes: {', '.join(sorted(runtimes)) or 'none'}); deploy "
                         "the stack config first (`pulumi up`)")
    expected = trainjob.runtime_name(facts)
    if runtimes[facts.name] != expected:
        raise UsageError(f"--pool {facts.name}: the deployed runtime is "
                         f"{runtimes[facts.name]!r} but the stack config gives {expected!r}: the "
                         "config changed since the last deploy; deploy it first (`pulumi up`)")
    claims = {}
    for key, mount in (("sharedClaimName", trainjob.SHARED_MOUNT),
                       ("fsxClaimName", trainjob.FSX_MOUNT)):
        if outputs.get(key):
            claims[str(deployed_value(outputs, key, where))] = mount
    account = outputs.get("trainingServiceAccount")
    if account:
        _refuse_placeholders(account, f"{where}: trainingServiceAccount")
    return Deployed(runtime=str(runtimes[facts.name]), claims=claims,
                    service_account=str(account) if account else None)


# ----------------------------------------------------------------------------------------------
# Resolving the request (every check names the bad value)
# ----------------------------------------------------------------------------------------------
def default_checkpoint_dir(outputs: dict[str, Any], namespace: str, name: str,
                           where: str = "--outputs") -> str:
    if not outputs.get("checkpointsBucket"):
        raise UsageError(f"{where}: no `checkpointsBucket` output; pass --checkpoint-dir")
    bucket = deployed_value(outputs, "checkpointsBucket", where)
    prefix = outputs.get("checkpointPrefix") or ""
    _refuse_placeholders(prefix, f"{where}: checkpointPrefix")
    prefix = str(prefix).strip("/")
    parts = [p for p in (prefix, namespace, name) if p]
    return f"s3://{bucket}/{'/'.join(parts)}/"


def check_checkpoint_dir(value: str, claims: dict[str, str],
                         flag: str = "--checkpoint-dir") -> str:
    if value.startswith("s3://"):
        if len(value) <= len("s3://") or value[len("s3://")] == "/":
            raise UsageError(f"{flag} {value}: no bucket in the s3:// URL")
        return value
    mounts = sorted(claims.values())
    if not value.startswith("/") or not any(value == m or value.startswith(m + "/")
                                            for m in mounts):
        where = ", ".join(mounts) or "none: the stack has no EFS or FSx"
        raise UsageError(f"{flag} {value}: a pod's own disk goes with the pod; use s3://... "
                         f"or a path under a shared mount ({where})"
                         if flag != "--checkpoint-dir" else
                         f"{flag} {value}: every node must see the same checkpoints; "
                         f"use s3://... or a path under a shared mount ({where})")
    return value


def build_request(args, config, outputs: Optional[dict[str, Any]] = None) -> trainjob.JobRequest:
    """Resolve CLI args against the stack config and, when given, the deployed stack's outputs
    (`pulumi stack output --json`). Without outputs the checkpoint location must be given."""
    try:
        wl = workload(args.workload)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None

    pools = {p.name: p for p in config.gpu_pools}
    if args.pool not in pools:
        raise UsageError(f"--pool {args.pool}: unknown pool in stack {config.stack!r} "
                         f"(known: {', '.join(pools) or 'none'})")
    if pools[args.pool].purpose != "training":
        raise UsageError(f"--pool {args.pool}: an {pools[args.pool].purpose} pool (it serves "
                         "models and has no training runtime); pick a training pool")
    facts = trainjob.pool_facts(pools[args.pool])
    if not trainjob.supports_runtime(facts):
        raise UsageError(f"--pool {args.pool}: a {facts.vendor} pool; trainyard has torch "
                         "runtimes for NVIDIA pools only")

    if args.nodes < 1:
        raise UsageError(f"--nodes {args.nodes}: must be at least 1")
    if args.nodes > facts.max_nodes:
        raise UsageError(f"--nodes {args.nodes}: pool {facts.name!r} allows at most "
                         f"{facts.max_nodes} nodes (maxSize): no flavor could ever admit it")

    gpus = facts.gpus if args.gpus_per_node is None else args.gpus_per_node
    if gpus < 1:
        raise UsageError(f"--gpus-per-node {gpus}: must be at least 1")
    if gpus > facts.gpus:
        raise UsageError(f"--gpus-per-node {gpus}: {'/'.join(facts.instance_types)} has "
                         f"{facts.gpus} GPUs per node (pool {facts.name!r})")
    if facts.efa and gpus != facts.gpus:
        raise UsageError(f"--gpus-per-node {gpus}: EFA pool {facts.name!r} runs whole nodes "
                         f"({facts.gpus} GPUs): its EFA devices and huge pages are per node")

    teams = {t.name: t for t in config.teams}
    if args.team is None:
        if len(teams) != 1:
            raise UsageError(f"--team is required: stack {config.stack!r} has teams "
                             f"{', '.join(teams) or '(none)'}")
        team = next(iter(teams.values()))
    elif args.team not in teams:
        raise UsageError(f"--team {args.team}: unknown team in stack {config.stack!r} "
                         f"(known: {', '.join(teams) or 'none'})")
    else:
        team = teams[args.team]
    total = args.nodes * gpus
    # Kueue admits a job whole or not at all against the team's ClusterQueue, whose nominal
    # quota is gpuQuota: a job above it would wait in the queue forever.
    if gpus > team.gpu_quota:
        raise UsageError(f"--pool {facts.name}: one node takes {gpus} GPUs but team "
                         f"{team.name!r} has a GPU quota of {team.gpu_quota}")
    if total > team.gpu_quota:
        raise UsageError(f"--nodes {args.nodes}: {args.nodes} nodes x {gpus} GPUs = {total} "
                         f"exceeds the GPU quota of team {team.name!r} ({team.gpu_quota}): "
                         "Kueue would never admit it")

    name = args.name or f"{wl.name}-{facts.name}-{args.nodes}n"
    if not trainjob.NAME_RE.match(name):
        raise UsageError(f"--name {name}: not a valid TrainJob name (lowercase letters, digits "
                         "and '-', starting with a letter, at most 63 characters)")

    image = args.image or config.kubeflow.training_image
    if args.image is not None:
        problem = image_check(args.image)
        if problem:
            raise UsageError(f"--image {args.image}: {problem}")

    where = f"--outputs {args.outputs}"
    live = deployed(outputs, where, facts) if outputs is not None else None
    claims = live.claims if live else \
        trainjob.claims_for(config.storage.efs.enabled, config.storage.fsx.enabled)
    if args.checkpoint_dir:
        checkpoint = check_checkpoint_dir(args.checkpoint_dir, claims)
    elif outputs is None:
        # The offline plan's bucket is a placeholder: never point a real job at it.
        raise UsageError("--checkpoint-dir defaults to the deployed stack's checkpoints bucket, "
                         f"which the offline plan only has a placeholder for; {OUTPUTS_HINT}")
    else:
        checkpoint = default_checkpoint_dir(outputs, team.name, name, where)

    workload_args: dict[str, Any] = {}
    if args.preset is not None:
        presets = workload_presets(wl)
        if args.preset not in presets:
            raise UsageError(f"--preset {args.preset}: unknown preset "
                             f"(known: {', '.join(presets)})")
        workload_args["preset"] = args.preset
    for flag in ("max_steps", "checkpoint_every", "seed", *BATCH_FIELDS):
        value = getattr(args, flag)
        if value is not None:
            if value < (0 if flag == "seed" else 1):
                raise UsageError(f"--{flag.replace('_', '-')} {value}: must be "
                                 f"{'>= 0' if flag == 'seed' else '>= 1'}")
            if flag in BATCH_FIELDS and flag != batch_field(wl):
                raise UsageError(f"--{flag.replace('_', '-')} {value}: workload {wl.name} takes "
                                 f"--{batch_field(wl).replace('_', '-')}")
            workload_args[flag] = value
    if args.data:
        workload_args["data"] = args.data
    for flag in EVAL_FIELDS:
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag not in _config_fields(wl):
            raise UsageError(f"--{flag.replace('_', '-')} {value}: workload {wl.name} has no "
                             "such setting")
        if flag != "tensorboard_dir" and value < 0:
            raise UsageError(f"--{flag.replace('_', '-')} {value}: must be >= 0")
        if flag == "tensorboard_dir":
            value = check_checkpoint_dir(value, claims, "--tensorboard-dir")
        workload_args[flag] = value

    req = trainjob.JobRequest(
        name=name, namespace=team.name, workload=wl, pool=facts, nodes=args.nodes,
        gpus_per_node=gpus, image=image, checkpoint_dir=checkpoint,
        workload_args=workload_args, shared_claims=claims, nccl_debug=args.nccl_debug,
        labels={"trainyard.io/stack": config.stack},
        runtime=live.runtime if live else None,
        service_account=live.service_account if live else None,
        priority=args.priority)
    check_gpu_memory(req)
    return req


# ----------------------------------------------------------------------------------------------
# Will it fit the pool's GPUs? (the trainer's own estimate, before Kueue admits the job)
# ----------------------------------------------------------------------------------------------
EVAL_FIELDS = ("eval_every", "eval_batches", "tensorboard_dir")
"""llm's evaluation and TensorBoard flags, passed through when given."""
BATCH_FIELDS = ("micro_batch_size", "batch_size")
"""Per-GPU batch flags: llm's --micro-batch-size, vision's --batch-size."""
GIB = 2**30


def _config_fields(wl: trainjob.Workload) -> set[str]:
    import importlib

    return importlib.import_module(wl.config_module).FIELDS


def batch_field(wl: trainjob.Workload) -> str:
    return next(f for f in BATCH_FIELDS if f in _config_fields(wl))


def workload_config(req: trainjob.JobRequest, **over):
    """The workload's own TrainConfig for what the job passes that sizes a step (preset and
    per-GPU batch), as the trainer will build it; `over` replaces fields."""
    import importlib

    module = importlib.import_module(req.workload.config_module)
    given = {**req.workload.defaults, **req.workload_args}
    keep = {k: given[k] for k in ("preset", *BATCH_FIELDS) if k in given and k in module.FIELDS}
    return module.TrainConfig(**{**keep, **over})


def _estimate(cfg, world: int, local: int):
    """The workload's estimate for `world` ranks, `local` per node (HSDP shards over a node:
    the LLM config takes the node's share; others shard over every rank or not at all)."""
    import inspect

    if "local_world_size" in inspect.signature(cfg.memory_estimate).parameters:
        return cfg.memory_estimate(world, True, local_world_size=local)
    return cfg.memory_estimate(world, True)


def _gib_per_gpu(cfg, world: int, local: Optional[int] = None) -> Optional[float]:
    estimate = _estimate(cfg, world, local or world)
    return None if estimate is None else estimate.total / GIB


def check_gpu_memory(req: trainjob.JobRequest) -> None:
    """UsageError (one line: the preset, the estimate per GPU, the pool's GPU memory and what
    would fit) when the trainer's memory estimate for one rank exceeds the pool's GPU memory.
    The estimate is `memory_estimate(world, cuda=True)` with world = nodes x GPUs per node (FSDP
    shards weights, gradients and optimizer states over every rank; DDP does not). The trainer
    compares it with the GPU's free memory, which is a little below the catalog's size: a job
    that passes here may still be refused there, one refused here would be refused there."""
    have = req.pool.gpu_memory_gib
    world, local = req.nodes * req.gpus_per_node, req.gpus_per_node
    cfg = workload_config(req)
    need = _gib_per_gpu(cfg, world, local) if have else None
    if need is None or need <= have:
        return
    field = batch_field(req.workload)
    batch = getattr(cfg, "batch_size" if field == "micro_batch_size" else "batch")  # resolved
    fixes = []
    smaller = batch // 2
    while smaller >= 1 and \
            _gib_per_gpu(workload_config(req, **{field: smaller}), world, local) > have:
        smaller //= 2
    if smaller >= 1:
        fixes.append(f"--{field.replace('_', '-')} {smaller}")
    presets = workload_presets(req.workload)  # PRESETS are in size order, smallest first
    fits = [p for p in presets[:presets.index(cfg.preset)]
            if _gib_per_gpu(workload_config(req, preset=p, **{field: None}), world, local) <= have]
    if fits:
        fixes.append(f"--preset {fits[-1]}")
    estimate = _estimate(cfg, world, local)
    sharded = world > 1 and estimate.total < cfg.memory_estimate(1, True).total  # FSDP, not DDP
    hsdp = sharded and req.nodes > 1 and estimate.total > _estimate(cfg, world, world).total
    ranks = (f"sharded over each node's {local} GPUs (HSDP)" if hsdp else
             f"sharded over {world} GPUs" if sharded else f"{world} GPU{'s' if world > 1 else ''}")
    raise UsageError(
        f"--preset {cfg.preset}: needs about {need:.1f} GiB per GPU ({estimate.describe()}; "
        f"--{field.replace('_', '-')} {batch}, {ranks}) but pool {req.pool.name!r} "
        f"({'/'.join(req.pool.instance_types)}) has {have} GiB per GPU: the trainer would "
        "refuse it on the cluster after Kueue admits it; "
        + (f"use {' or '.join(fixes)}" if fixes else "use more nodes or a larger-GPU pool"))


def budget_warning(req: trainjob.JobRequest) -> Optional[str]:
    """One line when the save a SIGTERM triggers is estimated not to fit the interruption
    budget on a Spot pool (the job still runs: it then resumes from its last periodic
    checkpoint, losing up to --checkpoint-every steps). None when it fits or is not estimated."""
    if req.pool.capacity_type != "SPOT" or not req.pool.peak_tflops:
        return None
    cfg = workload_config(req)
    preset = cfg.preset
    nbytes, flops = cfg.checkpoint_bytes(req.nodes), cfg.step_flops()
    if nbytes is None or flops is None:
        return None
    step_s = trainjob.step_seconds(flops, req.pool.peak_tflops)
    save_s = trainjob.save_seconds(nbytes)
    budget = trainjob.BUDGET
    # The trainer acts on SIGTERM at the end of the step after the one it arrived in (its
    # ranks agree on stopping without a GPU sync): up to two steps, then the save.
    if budget.fits(2 * step_s, save_s):
        return None
    return (f"warning: --preset {preset} on Spot pool {req.pool.name!r}: finishing up to two "
            f"steps (~{2 * step_s:.0f}s) and saving {nbytes / 1e9:.1f} GB per node (~{save_s:.0f}s) "
            f"may not fit the {budget.shutdown_timeout_s}s torchrun waits after SIGTERM; an "
            "interruption then costs up to --checkpoint-every steps (use more nodes or a "
            "reserved pool)")


# ----------------------------------------------------------------------------------------------
# Output and submission
# ----------------------------------------------------------------------------------------------
def dump(obj: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=2) + "\n"
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100)


class SubmitError(Exception):
    """The cluster refused the TrainJob (the request itself was well-formed)."""


def connect(kubeconfig: Optional[str], context: Optional[str]):
    """A CustomObjectsApi from the kubeconfig; inside a pod with no kubeconfig (a notebook), the
    pod's service account (in-cluster configuration); UsageError when neither is usable."""
    import os

    from kubernetes import client
    from kubernetes import config as kube_config

    default = os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config"))
    if kubeconfig is None and context is None and not os.path.exists(default) \
            and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException as e:
            raise UsageError(f"--submit: no kubeconfig and no usable in-cluster service "
                             f"account: {e}") from None
        return client.CustomObjectsApi()
    try:
        api_client = kube_config.new_client_from_config(config_file=kubeconfig, context=context)
    except Exception as e:  # ConfigException, FileNotFoundError, bad YAML, unknown context
        where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"--submit: no usable kubeconfig ({where}): {reason}") from None
    return client.CustomObjectsApi(api_client)


def submit(api, job: dict) -> None:
    from kubernetes import client

    meta = job["metadata"]
    try:
        api.create_namespaced_custom_object(
            group=trainjob.TRAINER_GROUP, version=trainjob.TRAINER_VERSION,
            namespace=meta["namespace"], plural=trainjob.TRAINJOB_PLURAL, body=job)
    except client.ApiException as e:
        raise SubmitError(f"the API server refused TrainJob {meta['namespace']}/{meta['name']}: "
                          f"{e.status} {e.reason}") from None
    except Exception as e:  # connection refused, TLS, DNS
        raise SubmitError(f"cannot reach the cluster: {e}") from None


def run(args) -> int:
    from trainyard.plan import stack_of
    from trainyard.synth import load_config

    stack, stack_file = stack_of(args)
    config = load_config(stack, stack_file)
    outputs = read_outputs(args.outputs) if args.outputs is not None else None
    req = build_request(args, config, outputs)
    job = trainjob.train_job(req)
    trainjob.validate_train_job(job)  # a failure here is a bug in trainjob, not bad input
    warning = budget_warning(req)
    if warning:
        print(warning, file=sys.stderr)
    api = connect(args.kubeconfig, args.context) if args.submit else None
    sys.stdout.write(dump(job, args.output))
    if api is not None:
        try:
            submit(api, job)
        except SubmitError as e:
            print(f"error: --submit: {e}", file=sys.stderr)
            return 1
        print(f"submitted TrainJob {req.namespace}/{req.name} (runtime "
              f"{trainjob.runtime_ref(req)})", file=sys.stderr)
    return 0
