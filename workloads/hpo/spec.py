"""The search spec: one small YAML file naming the workload, its base flags, the search space, the
objective and the budget. Parsed once, strictly: every problem is collected with its key path
(``search.lr.low: ...``) and reported together, one line each; flag names are checked against the
workload's own config fields and values against its own validation (``TrainConfig``).

    name: llm-tiny                 # study name: a DNS label (trial TrainJobs are <name>-tNNN)
    workload: llm                  # llm | vision
    flags: {preset: tiny, eval_batches: 4}          # every trial (field or --flag names)
    search:
      lr: {type: float, low: 1.0e-5, high: 1.0e-1, log: true}
      warmup_steps: {type: int, low: 0, high: 20}
      micro_batch_size: {type: categorical, choices: [4, 8, 16]}
    objective: {metric: eval_loss, eval_every: 10}  # direction follows the metric
    budget: {max_trials: 8, max_concurrent: 2, gpu_hours: 0.1, max_steps: 90, min_steps: 10,
             reduction_factor: 3}
    seed: 0                        # the sampler's seed
    cluster: {pool: eval-spot, nodes: 1, gpus_per_node: 1, dir: /shared/hpo}   # cluster runs

    python -c "from workloads.hpo.spec import load; print(load('examples/hpo/llm-tiny.yaml'))"

Torch-free and Optuna-free: `trainyard hpo render` and the controller both parse it.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

Scalar = Union[int, float, str]

WORKLOADS = {"llm": "workloads.llm.config", "vision": "workloads.vision.config"}
"""Workload -> its torch-free config module (``TrainConfig``, ``FIELDS``)."""
METRICS = {
    "llm": {"eval_loss": "minimize", "eval_perplexity": "minimize"},
    "vision": {"eval_loss": "minimize", "eval_top1": "maximize", "eval_top5": "maximize"},
}
"""What each workload's ``eval`` records carry, and which way is better."""
RESERVED = {
    "max_steps": "budget.max_steps sets it (Hyperband's max resource)",
    "eval_every": "objective.eval_every sets it",
    "checkpoint_dir": "each trial gets its own",
    "metrics_file": "each trial gets its own (the search reads it)",
}
"""Fields the search sets per trial; a spec may not."""
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
TOP_KEYS = ("name", "workload", "flags", "search", "objective", "budget", "seed", "cluster")


class SpecError(ValueError):
    """Every problem of a spec, each ``key.path: message``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.source, self.problems = source, problems

    def lines(self) -> list[str]:
        return [f"{self.source}: {p}" for p in self.problems]


@dataclass(frozen=True)
class Param:
    """One searched flag."""

    name: str
    """The workload config field (``lr``); the trial gets ``--lr VALUE``."""
    kind: str
    """float | int | categorical."""
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    """Sample on a log scale (float and int; low must be > 0)."""
    step: Optional[int] = None
    """int only: the grid step (default 1)."""
    choices: tuple[Scalar, ...] = ()
    """categorical only."""


@dataclass(frozen=True)
class Objective:
    metric: str
    """A field of the workload's ``eval`` records (METRICS)."""
    direction: str
    """minimize | maximize, from the metric."""
    eval_every: int
    """Steps between evaluations, i.e. between the values a trial reports to the pruner."""


@dataclass(frozen=True)
class Budget:
    max_trials: int
    """Trials started in all (a restarted controller counts the ones before it)."""
    max_concurrent: int
    """Trials running at once."""
    gpu_hours: float
    """Spent = sum over trials of GPUs x hours running; the search stops when it is spent."""
    max_steps: int
    """Every trial's --max-steps: Hyperband's max resource."""
    min_steps: int
    """Hyperband's min resource: the first rung, where the first trials are stopped."""
    reduction_factor: int = 3
    """Hyperband's eta: a rung keeps about 1/eta of the trials that reach it."""


@dataclass(frozen=True)
class Cluster:
    """Where trials run as TrainJobs (`trainyard hpo render`); unused by the local runner."""

    pool: str
    nodes: int = 1
    gpus_per_node: Optional[int] = None
    """Default: all of the pool's GPUs per node."""
    dir: str = "/shared/hpo"
    """Under the team's shared EFS claim (/shared): the study database, each trial's metrics
    and (unless ``checkpoints``) checkpoints, in <dir>/<name>/."""
    checkpoints: Optional[str] = None
    """s3://bucket/prefix/ for trial checkpoints (<prefix><name>/trial-NNN/; default: on EFS)."""
    image: Optional[str] = None
    """Training image (default: the stack's trainingImage)."""
    priority: Optional[str] = None
    """Kueue WorkloadPriorityClass of the trials (default: `trainyard job render`'s)."""


@dataclass(frozen=True)
class Spec:
    name: str
    workload: str
    flags: dict[str, Scalar]
    space: tuple[Param, ...]
    objective: Objective
    budget: Budget
    seed: int = 0
    cluster: Optional[Cluster] = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    """The YAML as read (the controller's ConfigMap carries it verbatim)."""


def field_name(key: str) -> str:
    """``--weight-decay``, ``weight-decay`` and ``weight_decay`` all name field weight_decay."""
    return key.lstrip("-").replace("-", "_")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Reader:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(self, raw: dict, key: str, path: str, required: bool = True) -> dict:
        value = raw.get(key)
        if value is None:
            if required:
                self.error(path, "required")
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, got {type(value).__name__}")
            return {}
        return value

    def known(self, raw: dict, keys: tuple[str, ...], path: str) -> None:
        for k in raw:
            if k not in keys:
                self.error(f"{path}{k}", f"unknown key (known: {', '.join(keys)})")

    def integer(self, raw: dict, key: str, path: str, default: Optional[int] = None,
                minimum: int = 0) -> Optional[int]:
        value = raw.get(key, default)
        if value is None:
            self.error(path, "required")
        elif isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"must be an integer, got {value!r}")
        elif value < minimum:
            self.error(path, f"must be >= {minimum}, got {value}")
        else:
            return value
        return None

    def number(self, value: Any, path: str) -> Optional[float]:
        """A float; YAML 1.1 reads ``1e-5`` (no dot) as a string, so numeric strings count."""
        if isinstance(value, bool):
            self.error(path, f"must be a number, got {value!r}")
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.error(path, f"must be a number, got {value!r}")
            return None
        if not math.isfinite(number):
            self.error(path, f"must be finite, got {value!r}")
            return None
        return number


def config_module(workload: str):
    return importlib.import_module(WORKLOADS[workload])


def check_values(workload: str, values: dict[str, Scalar]) -> Optional[str]:
    """The workload's own validation of these field values (``TrainConfig.__post_init__``);
    its message (``--lr: must be > 0, got -1.0``) or None."""
    from workloads.common.cli import ConfigError

    try:
        config_module(workload).TrainConfig(**values)
    except ConfigError as e:
        return str(e)
    except TypeError as e:  # a value of the wrong type where the config compares it
        return str(e)
    return None


def _flags(r: _Reader, raw: dict, workload: Optional[str]) -> dict[str, Scalar]:
    flags = r.mapping(raw, "flags", "flags", required=False)
    out: dict[str, Scalar] = {}
    fields = config_module(workload).FIELDS if workload else set()
    for key, value in flags.items():
        path, name = f"flags.{key}", field_name(str(key))
        if workload and name not in fields:
            r.error(path, f"not a flag of workload {workload} "
                          f"(python -m workloads.{workload}.train --help)")
        elif name in RESERVED:
            r.error(path, f"set by the search: {RESERVED[name]}")
        elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
            r.error(path, f"must be a number or a string, got {value!r}" + (
                " (boolean flags cannot be passed as `--flag VALUE` to a TrainJob)"
                if isinstance(value, bool) else ""))
        else:
            out[name] = value
    if workload and out:
        problem = check_values(workload, out)
        if problem:
            r.error("flags", problem)
    return out


def _param(r: _Reader, key: str, raw: Any, workload: Optional[str],
           flags: dict[str, Scalar]) -> Optional[Param]:
    path, name = f"search.{key}", field_name(str(key))
    if workload and name not in config_module(workload).FIELDS:
        r.error(path, f"not a flag of workload {workload}")
        return None
    if name in RESERVED:
        r.error(path, f"set by the search: {RESERVED[name]}")
        return None
    if name in flags:
        r.error(path, "also given in flags: a flag is either fixed or searched")
        return None
    if not isinstance(raw, dict):
        r.error(path, "must be a mapping with `type` (float, int or categorical)")
        return None
    kind = raw.get("type")
    keys = {"float": ("type", "low", "high", "log"), "int": ("type", "low", "high", "log",
                                                              "step"),
            "categorical": ("type", "choices")}
    if kind not in keys:
        r.error(f"{path}.type", f"must be float, int or categorical, got {kind!r}")
        return None
    before = len(r.problems)
    r.known(raw, keys[kind], f"{path}.")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        r.error(f"{path}.log", f"must be true or false, got {log!r}")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            r.error(f"{path}.choices", "must be a non-empty list")
            return None
        if any(isinstance(c, bool) or not isinstance(c, (int, float, str)) for c in choices):
            r.error(f"{path}.choices", "must hold numbers or strings")
            return None
        if len(set(choices)) != len(choices):
            r.error(f"{path}.choices", "repeats a value")
        param = Param(name, kind, choices=tuple(choices))
        bounds: list[Scalar] = list(choices)
    elif kind == "float":
        low, high = (r.number(raw.get(k), f"{path}.{k}") for k in ("low", "high"))
        if low is None or high is None:
            return None
        param = Param(name, kind, low, high, log=bool(log))
        bounds = [low, high]
    else:
        low = r.integer(raw, "low", f"{path}.low", minimum=-(2**31))
        high = r.integer(raw, "high", f"{path}.high", minimum=-(2**31))
        step = r.integer(raw, "step", f"{path}.step", default=1, minimum=1)
        if low is None or high is None or step is None:
            return None
        if log and step != 1:
            r.error(f"{path}.step", "a log-scale int has step 1")
        param = Param(name, kind, low, high, log=bool(log), step=step)
        bounds = [low, high]
    if kind != "categorical":
        if param.low >= param.high and not (kind == "int" and param.low == param.high):
            r.error(f"{path}.high", f"must be above low ({param.low:g}), got {param.high:g}")
        if param.log and param.low <= 0:
            r.error(f"{path}.low", f"must be > 0 on a log scale, got {param.low:g}")
    if workload and len(r.problems) == before:
        for value in bounds:
            problem = check_values(workload, {**flags, name: value})
            if problem:
                r.error(path, f"{value!r}: {problem}")
                break
    return param if len(r.problems) == before else None


def parse(raw: Any, source: str = "spec") -> Spec:
    """A Spec from the YAML's object; SpecError naming every bad key."""
    r = _Reader()
    if not isinstance(raw, dict):
        raise SpecError(source, [f".: must be a mapping, got {type(raw).__name__}"])
    r.known(raw, TOP_KEYS, "")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        r.error("name", f"must be a DNS label of at most 40 characters (lowercase letters, "
                        f"digits, '-'), got {name!r}")
    workload = raw.get("workload")
    if workload not in WORKLOADS:
        r.error("workload", f"must be one of {', '.join(WORKLOADS)}, got {workload!r}")
        workload = None
    flags = _flags(r, raw, workload)
    search = r.mapping(raw, "search", "search")
    if isinstance(raw.get("search"), dict) and not search:
        r.error("search", "names no flag to search")
    space = [p for key, value in search.items()
             if (p := _param(r, str(key), value, workload, flags)) is not None]

    obj = r.mapping(raw, "objective", "objective")
    r.known(obj, ("metric", "eval_every"), "objective.")
    metric = obj.get("metric")
    metrics = METRICS.get(workload or "", {})
    if workload and metric not in metrics:
        r.error("objective.metric", f"must be one of {', '.join(metrics)} (the fields of "
                                    f"{workload}'s eval records), got {metric!r}")
    eval_every = r.integer(obj, "eval_every", "objective.eval_every", minimum=1)
    if workload == "llm" and field_name("eval_batches") in flags and \
            flags["eval_batches"] == 0:
        r.error("flags.eval_batches", "0 turns evaluation off: the search needs eval records")

    b = r.mapping(raw, "budget", "budget")
    r.known(b, ("max_trials", "max_concurrent", "gpu_hours", "max_steps", "min_steps",
                "reduction_factor"), "budget.")
    max_trials = r.integer(b, "max_trials", "budget.max_trials", minimum=1)
    concurrent = r.integer(b, "max_concurrent", "budget.max_concurrent", default=1, minimum=1)
    gpu_hours = r.number(b.get("gpu_hours"), "budget.gpu_hours") if "gpu_hours" in b else None
    if "gpu_hours" not in b:
        r.error("budget.gpu_hours", "required")
    elif gpu_hours is not None and gpu_hours <= 0:
        r.error("budget.gpu_hours", f"must be > 0, got {gpu_hours:g}")
    max_steps = r.integer(b, "max_steps", "budget.max_steps", minimum=1)
    min_steps = r.integer(b, "min_steps", "budget.min_steps", minimum=1)
    eta = r.integer(b, "reduction_factor", "budget.reduction_factor", default=3, minimum=2)
    if max_trials and concurrent and concurrent > max_trials:
        r.error("budget.max_concurrent", f"{concurrent} is more than max_trials {max_trials}")
    if max_steps and min_steps and min_steps > max_steps:
        r.error("budget.min_steps", f"{min_steps} is more than max_steps {max_steps}")
    if eval_every and min_steps and min_steps % eval_every:
        r.error("objective.eval_every", f"{eval_every} does not divide budget.min_steps "
                                        f"{min_steps}: every rung must fall on an evaluation")
    if eval_every and max_steps and eval_every > max_steps:
        r.error("objective.eval_every", f"{eval_every} is more than budget.max_steps")
    seed = r.integer(raw, "seed", "seed", default=0)
    cluster = _cluster(r, raw)
    if r.problems:
        raise SpecError(source, r.problems)
    return Spec(name=name, workload=workload, flags=flags, space=tuple(space),
                objective=Objective(metric, metrics[metric], eval_every),
                budget=Budget(max_trials, concurrent, gpu_hours, max_steps, min_steps, eta),
                seed=seed, cluster=cluster, raw=raw)


def _cluster(r: _Reader, raw: dict) -> Optional[Cluster]:
    c = r.mapping(raw, "cluster", "cluster", required=False)
    if not c:
        return None
    r.known(c, ("pool", "nodes", "gpus_per_node", "dir", "checkpoints", "image", "priority"),
            "cluster.")
    pool = c.get("pool")
    if not isinstance(pool, str) or not pool:
        r.error("cluster.pool", "required: the GPU pool trials run on")
    nodes = r.integer(c, "nodes", "cluster.nodes", default=1, minimum=1)
    gpus = r.integer(c, "gpus_per_node", "cluster.gpus_per_node", minimum=1) \
        if "gpus_per_node" in c else None
    where = c.get("dir", "/shared/hpo")
    if not isinstance(where, str) or not (where == "/shared" or where.startswith("/shared/")):
        r.error("cluster.dir", f"must be under /shared (the team's EFS claim, which the "
                               f"controller and every trial mount), got {where!r}")
    ckpt = c.get("checkpoints")
    if ckpt is not None and (not isinstance(ckpt, str) or not re.match(r"^s3://[^/]+", ckpt)):
        r.error("cluster.checkpoints", f"must be an s3://bucket/prefix/ URL, got {ckpt!r}")
    for key in ("image", "priority"):
        if key in c and not isinstance(c[key], str):
            r.error(f"cluster.{key}", f"must be a string, got {c[key]!r}")
    if r.problems:
        return None
    return Cluster(pool=pool, nodes=nodes, gpus_per_node=gpus, dir=where.rstrip("/"),
                   checkpoints=ckpt, image=c.get("image"), priority=c.get("priority"))


def load(path: Union[str, Path]) -> Spec:
    """Read and parse a spec file; SpecError (one problem: unreadable or not YAML) otherwise."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(source, [f".: cannot read: {e.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise SpecError(source, [f".: not YAML{line}: {getattr(e, 'problem', e)}"]) from None
    return parse(raw, source)
