"""Trial TrainJobs, from a template: `trainyard hpo render` builds one TrainJob with the platform's
typed builders (components/services/trainjob.py: the team's queue, the pool's runtime, resources,
tolerations, the shared claims) and validates it; the controller copies it for each trial and
changes only its name, its labels and the trial's flags. The training image carries workloads/
and nothing from components/, so this is the part of job building the controller runs.

    python -c "from workloads.hpo.jobs import set_args; print(set_args(['--lr', '1'], \\
        {'lr': 0.1, 'seed': 3}))"
"""

from __future__ import annotations

import copy
from typing import Any

from workloads.hpo.spec import Cluster, flag

STUDY_LABEL = "trainyard.io/hpo-study"
TRIAL_LABEL = "trainyard.io/hpo-trial"
TRIAL_DIGITS = 3


def study_dir(cluster: Cluster, name: str) -> str:
    """On the team's EFS claim: the study database and every trial's metrics."""
    return f"{cluster.dir}/{name}"


def study_db(cluster: Cluster, name: str) -> str:
    return f"{study_dir(cluster, name)}/study.db"


def trial_name(name: str, number: int) -> str:
    """TrainJob name of trial `number` (the spec's name is at most 40 characters)."""
    return f"{name}-t{number:0{TRIAL_DIGITS}d}"


def trial_paths(cluster: Cluster, name: str, number: int) -> tuple[str, str]:
    """(checkpoint dir, metrics file) of a trial on the cluster. The metrics file is on EFS,
    where the controller reads it; checkpoints go to S3 when the spec says so."""
    trial = f"trial-{number:0{TRIAL_DIGITS}d}"
    base = f"{study_dir(cluster, name)}/{trial}"
    if cluster.checkpoints:
        ckpt = f"{cluster.checkpoints.rstrip('/')}/{name}/{trial}/"
    else:
        ckpt = f"{base}/ckpt"
    return ckpt, f"{base}/metrics.jsonl"


def set_args(args: list[str], flags: dict[str, Any]) -> list[str]:
    """`args` with each `--flag value` pair of `flags` replaced, or appended when absent."""
    out = list(args)
    for name, value in flags.items():
        f = flag(name)
        if f in out:
            i = out.index(f)
            if i + 1 >= len(out):
                raise ValueError(f"{f} ends the template's args without a value")
            out[i + 1] = str(value)
        else:
            out += [f, str(value)]
    return out


def trial_job(template: dict, study: str, number: int, flags: dict[str, Any]) -> dict:
    """The TrainJob of trial `number`: the template under the trial's name and labels, with
    the trial's flags (searched values, --max-steps, --eval-every, its checkpoint dir and
    metrics file) in the trainer's args."""
    job = copy.deepcopy(template)
    name = trial_name(study, number)
    meta = job["metadata"]
    meta["name"] = name
    meta.setdefault("labels", {}).update({STUDY_LABEL: study, TRIAL_LABEL: str(number)})
    trainer = job["spec"]["trainer"]
    trainer["args"] = set_args(trainer.get("args") or [], flags)
    for env in trainer.get("env") or []:
        if env.get("name") == "TRAINYARD_JOB":
            env["value"] = name
    return job
