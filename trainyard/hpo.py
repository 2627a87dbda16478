"""`trainyard hpo render`: the objects that run a hyperparameter search (workloads/hpo) on the
cluster, from a small YAML spec (docs/hpo.md): the controller Job, its ConfigMap (the spec and
the trial TrainJob template), its ServiceAccount and Role (TrainJobs in its namespace, nothing
else), then, as YAML comments, the budget priced at the pool's $/GPU-hour and one example trial.

    trainyard hpo render --stack prod --spec examples/hpo/llm-eval-spot.yaml --team research \\
        > hpo.yaml
    kubectl apply -f hpo.yaml && kubectl -n research logs -f job/hpo-<name>

The trial template is a TrainJob built like `trainyard job render` builds one (the same checks:
the pool exists and runs torch, nodes and GPUs fit it, the team's quota, the trainer's memory
estimate at the largest batch searched) and validated against kubeflow-trainer-api; the
controller only renames it per trial and sets the trial's flags. The budget is checked against
the stack: max_concurrent trials x GPUs per trial must fit the team's GPU quota (else trials
would queue behind each other forever), and the stack must have EFS (the study and every
trial's metrics live on the team's `/shared` claim). `trainyard cost` cannot know how many
trials a search runs; the rendered header prices its ceiling instead: budget.gpu_hours x the
pool's $/GPU-hour. Bad input exits 2 with one line per problem.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from components.services import trainjob
from components.services.hpo import ROLE as ROLE
from components.services.hpo import SERVICE_ACCOUNT as SERVICE_ACCOUNT
from components.services.k8s_names import DEFAULT_PRIORITY, POOL_LABEL
from trainyard.errors import UsageError

SPEC_MOUNT = "/etc/hpo"
CONTROLLER_UID = 1000
"""The EFS access point makes every NFS call as uid/gid 1000 anyway (components/storage/efs.py)."""
CONTROLLER_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"},
                        "limits": {"cpu": "1", "memory": "1Gi"}}
BACKOFF_LIMIT = 3
"""Controller pods that may fail before the Job gives up; each new one resumes the study."""
KEEP_FINISHED_S = 7 * 24 * 3600
"""The finished controller Job (and its log: the results table) is kept a week."""
EXAMPLE = "example"


def add_parser(sub) -> None:
    p = sub.add_parser("hpo", help="render a hyperparameter search (Optuna + Hyperband, "
                                   "TrainJob trials) for the cluster",
                       description=__doc__.split("\n\n")[0])
    hsub = p.add_subparsers(dest="hpo_command", metavar="SUBCOMMAND", parser_class=type(p))
    hsub.required = True
    r = hsub.add_parser("render", help="print the controller Job, ConfigMap and RBAC (YAML)",
                        description="Print what runs a search spec on the cluster: the "
                                    "controller Job, its ConfigMap and RBAC, with the budget's "
                                    "price and one example trial TrainJob as comments.")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--stack", help="stack name: stacks/Pulumi.<NAME>.yaml")
    g.add_argument("--stack-file", type=Path, metavar="PATH", help="any stack config file")
    r.add_argument("--spec", required=True, type=Path, help="the search spec (YAML)")
    r.add_argument("--team", help="team namespace (default: the stack's only team)")
    r.add_argument("--outputs", metavar="PATH",
                   help="the deployed stack's outputs (`pulumi stack output --json`): the "
                        "trials then use the deployed runtime and service account")
    r.set_defaults(func=run)


# ----------------------------------------------------------------------------------------------
# The trial template (trainyard job render's request and builder)
# ----------------------------------------------------------------------------------------------
def _largest(spec, field: str) -> Optional[int]:
    """The largest value of a batch flag the search can give a trial (fixed or searched)."""
    if field in spec.flags:
        return int(spec.flags[field])
    for p in spec.space:
        if p.name == field:
            return int(max(p.choices) if p.kind == "categorical" else p.high)
    return None


def job_args(spec, args, checkpoint_dir: str) -> argparse.Namespace:
    """What `trainyard job render` would be given for trial 0 (its checks apply unchanged)."""
    c, f = spec.cluster, spec.flags
    return argparse.Namespace(
        workload=spec.workload, pool=c.pool, nodes=c.nodes, team=args.team,
        name=trial_name(spec.name, 0), gpus_per_node=c.gpus_per_node, image=c.image,
        outputs=args.outputs, checkpoint_dir=checkpoint_dir, preset=f.get("preset"),
        micro_batch_size=_largest(spec, "micro_batch_size") if spec.workload == "llm" else None,
        batch_size=_largest(spec, "batch_size") if spec.workload == "vision" else None,
        max_steps=spec.budget.max_steps, checkpoint_every=f.get("checkpoint_every"),
        seed=f.get("seed"), data=f.get("data"), priority=c.priority or DEFAULT_PRIORITY,
        nccl_debug="WARN")


def trial_name(name: str, number: int) -> str:
    from workloads.hpo.jobs import trial_name as name_of

    return name_of(name, number)


def template(spec, req: trainjob.JobRequest, metrics_file: str) -> dict:
    """The trial TrainJob the controller copies: the job render's request with every base flag
    and the search's own (--max-steps, --eval-every), its metrics file on the EFS claim."""
    from workloads.hpo.jobs import STUDY_LABEL, set_args

    workload_args = {**spec.flags, "max_steps": spec.budget.max_steps,
                     "eval_every": spec.objective.eval_every}
    req = dataclasses.replace(req, workload_args=workload_args,
                              labels={**req.labels, STUDY_LABEL: spec.name})
    job = trainjob.train_job(req)
    trainer = job["spec"]["trainer"]
    trainer["args"] = set_args(trainer["args"], {"metrics_file": metrics_file})
    return job


def example_params(spec) -> dict[str, Any]:
    """A point in the middle of the search space (what a trial's flags look like)."""
    out: dict[str, Any] = {}
    for p in spec.space:
        if p.kind == "categorical":
            out[p.name] = p.choices[len(p.choices) // 2]
        elif p.log:
            mid = (p.low * p.high) ** 0.5
            out[p.name] = round(mid) if p.kind == "int" else float(f"{mid:.3g}")
        else:
            mid = (p.low + p.high) / 2
            out[p.name] = round(mid) if p.kind == "int" else float(f"{mid:.3g}")
    return out


# ----------------------------------------------------------------------------------------------
# The controller's objects
# ----------------------------------------------------------------------------------------------
def config_map(name: str, namespace: str, spec_text: str, trial: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"spec.yaml": spec_text, "trial.yaml": dump(trial)}}


def controller_job(name: str, namespace: str, study: str, image: str, claim: str,
                   system_selector: dict[str, str]) -> dict:
    """The controller: a Job whose pod runs `python -m workloads.hpo.run` in the training image,
    non-root, on the system nodes (it needs no GPU), with the spec and the team's EFS claim."""
    from workloads.hpo.jobs import STUDY_LABEL

    container = {
        "name": "controller", "image": image,
        "command": ["python", "-m", "workloads.hpo.run", "--spec", f"{SPEC_MOUNT}/spec.yaml",
                    "--template", f"{SPEC_MOUNT}/trial.yaml", "--namespace", namespace],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                {"name": "HOME", "value": "/tmp"}],
        "resources": CONTROLLER_RESOURCES,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
                         {"name": "shared", "mountPath": trainjob.SHARED_MOUNT},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": True,
        "restartPolicy": "Never",
        "nodeSelector": dict(system_selector),
        "securityContext": {"runAsNonRoot": True, "runAsUser": CONTROLLER_UID,
                            "runAsGroup": CONTROLLER_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "spec", "configMap": {"name": name}},
                    {"name": "shared", "persistentVolumeClaim": {"claimName": claim}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    labels = {STUDY_LABEL: study, "app.kubernetes.io/name": "trainyard-hpo"}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"backoffLimit": BACKOFF_LIMIT, "ttlSecondsAfterFinished": KEEP_FINISHED_S,
                     "template": {"metadata": {"labels": labels}, "spec": pod}}}


# ----------------------------------------------------------------------------------------------
# Price of the budget
# ----------------------------------------------------------------------------------------------
def usd_per_gpu_hour(pool) -> tuple[float, str]:
    """The pool's $/GPU-hour on `trainyard cost`'s basis: the mean over its instance types of the
    catalog's on-demand price per GPU, or the assumed Spot price on a Spot pool."""
    from components.compute.catalog import load_catalog
    from trainyard.cost_spot import assumed_spot

    catalog = load_catalog()
    spot = assumed_spot(catalog)
    prices, basis = [], "on-demand list price"
    for name in pool.instance_types:
        s = catalog.get(name)
        per_node = s.price_per_hour
        if pool.capacity_type == "SPOT":
            per_node, _, basis = spot(name, per_node)
        prices.append(per_node / s.gpus)
    return sum(prices) / len(prices), f"{basis}, {catalog.price_date}"


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Rendered:
    objects: list[dict]
    """ServiceAccount, Role, RoleBinding, ConfigMap, Job: what `kubectl apply` creates."""
    trial: dict
    """An example trial TrainJob (the controller makes these; not applied)."""
    header: list[str]
    """Budget and price lines."""


def render(args, config) -> Rendered:
    from trainyard import job as job_render
    from workloads.hpo import jobs
    from workloads.hpo.search import trial_flags
    from workloads.hpo.spec import SpecError, load

    try:
        spec = load(args.spec)
    except SpecError as e:
        from components.config import ConfigError

        raise ConfigError(e.lines()) from None
    if spec.cluster is None:
        raise UsageError(f"{args.spec}: cluster: required to render for the cluster (pool, "
                         "nodes, gpus_per_node, dir)")
    c = spec.cluster
    _within_stack_ceilings(args.spec, spec, config)
    ckpt, metrics = jobs.trial_paths(c, spec.name, 0)
    outputs = job_render.read_outputs(args.outputs) if args.outputs else None
    try:
        req = job_render.build_request(job_args(spec, args, ckpt), config, outputs)
    except UsageError as e:
        raise UsageError(f"{args.spec}: cluster: {e}") from None
    claims = dict(req.shared_claims)
    claim = next((k for k, v in claims.items() if v == trainjob.SHARED_MOUNT), None)
    if claim is None:
        raise UsageError(f"{args.spec}: cluster.dir {c.dir}: stack {config.stack!r} has no EFS "
                         "claim at /shared (storage.efs.enabled): the study and the trials' "
                         "metrics live there")
    team = next(t for t in config.teams if t.name == req.namespace)
    per_trial = req.nodes * req.gpus_per_node
    b = spec.budget
    if b.max_concurrent * per_trial > team.gpu_quota:
        raise UsageError(f"{args.spec}: budget.max_concurrent {b.max_concurrent}: "
                         f"{b.max_concurrent} trials x {per_trial} GPUs = "
                         f"{b.max_concurrent * per_trial} exceeds team {team.name!r}'s GPU "
                         f"quota of {team.gpu_quota}")

    trial_template = template(spec, req, metrics)
    trainjob.validate_train_job(trial_template)  # a failure here is a bug, not bad input
    example = jobs.trial_job(trial_template, spec.name, 0,
                             trial_flags(spec, example_params(spec), ckpt, metrics))
    trainjob.validate_train_job(example)

    from components.config.types import SYSTEM_POOL_NAME

    name = f"hpo-{spec.name}"
    # The `hpo` service account and its Role come with the stack (components/services/hpo.py).
    objects = [config_map(name, req.namespace, Path(args.spec).read_text(), trial_template),
               controller_job(name, req.namespace, spec.name, req.image, claim,
                              {POOL_LABEL: SYSTEM_POOL_NAME})]
    pool = next(p for p in config.gpu_pools if p.name == req.pool.name)
    usd, basis = usd_per_gpu_hour(pool)
    header = [
        f"trainyard hpo render: study {spec.name} ({spec.workload}, {spec.objective.metric} "
        f"{spec.objective.direction}d) in namespace {req.namespace}, stack {config.stack}",
        f"trials: up to {b.max_trials}, {b.max_concurrent} at a time, each {req.nodes} node(s) "
        f"x {req.gpus_per_node} GPU(s) on pool {req.pool.name}: {b.max_concurrent * per_trial} "
        f"of the team's {team.gpu_quota} GPUs; {b.min_steps}..{b.max_steps} steps (Hyperband, "
        f"eta {b.reduction_factor})",
        f"budget: {b.gpu_hours:g} GPU-hours x ${usd:.2f}/GPU-hour ({pool.name}: {basis}) = "
        f"at most ${b.gpu_hours * usd:,.2f}; the controller stops the search when it is spent",
        f"runs as service account {SERVICE_ACCOUNT} (Role {ROLE}: TrainJobs in "
        f"{req.namespace} only), created by the stack (trainyard:hpo)",
        f"study: {jobs.study_db(c, spec.name)}; trial metrics and checkpoints: "
        f"{jobs.study_dir(c, spec.name)}/trial-NNN/"
        + (f" (checkpoints under {c.checkpoints})" if c.checkpoints else ""),
    ]
    return Rendered(objects, example, header)


def _within_stack_ceilings(path, spec, config) -> None:
    """The spec's budget and pool against the stack's `trainyard:hpo` (every problem at once)."""
    from components.config import ConfigError

    h = config.hpo
    if not h.enabled:
        raise UsageError(f"stack {config.stack!r} has no trainyard:hpo section: add it (it "
                         "creates the search controller's service account and sets the "
                         "budget ceilings; docs/hpo.md)")
    b, problems = spec.budget, []
    for key, value, ceiling, name in (
            ("budget.gpu_hours", b.gpu_hours, h.max_gpu_hours, "maxGpuHours"),
            ("budget.max_concurrent", b.max_concurrent, h.max_concurrent_trials,
             "maxConcurrentTrials"),
            ("budget.max_trials", b.max_trials, h.max_trials, "maxTrials")):
        if value > ceiling:
            problems.append(f"{path}: {key} {value:g} exceeds the stack's trainyard:hpo.{name} "
                            f"{ceiling}")
    known = {p.name for p in config.gpu_pools}  # an unknown pool: job render's error names it
    if spec.cluster.pool in known and spec.cluster.pool not in h.pools:
        problems.append(f"{path}: cluster.pool {spec.cluster.pool!r} is not one of the pools "
                        f"trainyard:hpo.pools allows ({', '.join(h.pools)})")
    if problems:
        raise ConfigError(problems)


class _Dumper(yaml.SafeDumper):
    """Block scalars for multi-line strings (the ConfigMap's files stay readable), no aliases."""

    def ignore_aliases(self, data) -> bool:
        return True


def _str(dumper, value: str):
    style = "|" if "\n" in value and not any(line != line.rstrip()
                                              for line in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=100)


def text(r: Rendered) -> str:
    out = [f"# {line}" for line in r.header]
    out.append("---")
    out.append("\n---\n".join(dump(o).rstrip() for o in r.objects))
    out.append("# Example trial (the controller creates one like it per trial; not applied):")
    out += [f"#   {line}" for line in dump(r.trial).splitlines()]
    return "\n".join(out) + "\n"


def run(args) -> int:
    from trainyard.plan import stack_of
    from trainyard.synth import load_config

    stack, stack_file = stack_of(args)
    config = load_config(stack, stack_file)
    sys.stdout.write(text(render(args, config)))
    return 0
