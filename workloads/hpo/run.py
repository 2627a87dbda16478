"""The in-cluster search controller: one Kubernetes Job in the team's namespace (rendered by
`trainyard hpo render`) that runs the search with each trial as a TrainJob on the team's Kueue
queue, reads each trial's metrics file on the team's EFS claim, deletes the TrainJobs the pruner
prunes, and keeps the study in SQLite on the same claim, so a restarted controller (the Job's
next pod) resumes it and re-attaches to the trials still running.

    python -m workloads.hpo.run --spec /etc/hpo/spec.yaml --template /etc/hpo/trial.yaml \\
        --namespace research                                 # what the controller Job runs

    kubectl -n research logs -f job/hpo-<name>               # progress: started/pruned/complete
    kubectl -n research get trainjobs -l trainyard.io/hpo-study=<name>

GPU-hours are counted from the moment Kueue admits a trial (the TrainJob's `Suspended` condition
turning False) to the moment it ends, times the trial's nodes x GPUs per node. Needs `optuna`,
`kubernetes` and PyYAML in the training image. Exit codes: 0 done (also when the budget ran
out), 1 trials kept failing, 2 bad spec or template.
"""

from __future__ import annotations

import calendar
import sys
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from workloads.common.cli import ArgumentParser
from workloads.hpo import jobs
from workloads.hpo.search import Search, TrialRun, table
from workloads.hpo.spec import Spec, SpecError, load

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"


def _epoch(stamp: str) -> Optional[float]:
    try:
        return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def condition(obj: dict, kind: str) -> Optional[dict]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return c
    return None


def job_status(obj: Optional[dict]) -> Optional[str]:
    """None while running (or queued); "complete"; "failed: ..." (also when it is gone)."""
    if obj is None:
        return "failed: its TrainJob was deleted"
    done = condition(obj, "Complete")
    if done and done.get("status") == "True":
        return "complete"
    failed = condition(obj, "Failed")
    if failed and failed.get("status") == "True":
        return f"failed: {failed.get('reason', 'Failed')}: {failed.get('message', '')}".rstrip()
    return None


def admitted_at(obj: Optional[dict]) -> Optional[float]:
    """When Kueue let the TrainJob run (its `Suspended` condition turned False), or None while
    it waits in the queue."""
    if obj is None or (obj.get("spec") or {}).get("suspend", False):
        return None
    c = condition(obj, "Suspended")
    if c and c.get("status") == "False":
        return _epoch(c.get("lastTransitionTime"))
    return None


class ClusterTrials:
    """Trials as TrainJobs in `namespace`, through `api` (a kubernetes CustomObjectsApi)."""

    def __init__(self, spec: Spec, template: dict, namespace: str, api: Any,
                 clock=time.time) -> None:
        if spec.cluster is None:
            raise SpecError("spec", ["cluster: required to run trials on the cluster"])
        self.spec, self.template, self.namespace, self.api = spec, template, namespace, api
        self.clock = clock
        trainer = template["spec"]["trainer"]
        self.gpus_per_trial = int(trainer.get("numNodes", 1)) * \
            int(trainer.get("numProcPerNode", 1))
        self.objects: dict[int, Optional[dict]] = {}
        self.first_seen_running: dict[int, float] = {}

    def paths(self, number: int) -> tuple[str, str]:
        return jobs.trial_paths(self.spec.cluster, self.spec.name, number)

    def _get(self, name: str) -> Optional[dict]:
        from kubernetes.client import ApiException

        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                         name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def launch(self, run: TrialRun) -> None:
        from kubernetes.client import ApiException

        Path(run.flags["metrics_file"]).parent.mkdir(parents=True, exist_ok=True)
        body = jobs.trial_job(self.template, self.spec.name, run.number, run.flags)
        run.handle = body["metadata"]["name"]
        try:
            self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        except ApiException as e:
            if e.status != 409:  # 409: a previous controller created it just before it died
                raise
        self.objects[run.number] = body

    def status(self, run: TrialRun) -> Optional[str]:
        try:
            obj = self._get(run.handle)
        except Exception as e:  # the API server briefly unreachable: look again next time
            print(f"warning: trial {run.number}: cannot read TrainJob {run.handle}: "
                  f"{str(e).splitlines()[0]}", file=sys.stderr, flush=True)
            return None
        self.objects[run.number] = obj
        return job_status(obj)

    def running_since(self, run: TrialRun) -> Optional[float]:
        obj = self.objects.get(run.number)
        since = admitted_at(obj)
        if since is None and obj is not None and not (obj.get("spec") or {}).get("suspend"):
            # Unsuspended but no condition yet: count from when this controller first saw it.
            since = self.first_seen_running.setdefault(run.number, self.clock())
        return since

    def stop(self, run: TrialRun, why: str) -> None:
        from kubernetes.client import ApiException

        try:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                     run.handle,
                                                     propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise

    def reattach(self, run: TrialRun) -> bool:
        run.handle = jobs.trial_name(self.spec.name, run.number)
        obj = self._get(run.handle)
        self.objects[run.number] = obj
        return obj is not None


def connect():
    """In the cluster, the pod's service account; elsewhere, the kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def main(args: Optional[list[str]] = None) -> int:
    p = ArgumentParser(prog="python -m workloads.hpo.run",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", required=True, help="the search spec (YAML)")
    p.add_argument("--template", required=True,
                   help="the trial TrainJob template `trainyard hpo render` built (YAML)")
    p.add_argument("--namespace", required=True, help="the team namespace trials run in")
    p.add_argument("--poll", type=float, default=15.0, help="seconds between looks (default 15)")
    a = p.parse_args(args)
    try:
        spec = load(a.spec)
        if spec.cluster is None:
            raise SpecError(a.spec, ["cluster: required to run trials on the cluster"])
        template = yaml.safe_load(Path(a.template).read_text())
        if not isinstance(template, dict) or template.get("kind") != "TrainJob":
            raise SpecError(a.template, [".: not a TrainJob"])
    except SpecError as e:
        for line in e.lines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: --template {a.template}: {e.strerror}", file=sys.stderr)
        return 2
    Path(jobs.study_dir(spec.cluster, spec.name)).mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{jobs.study_db(spec.cluster, spec.name)}"
    trials = ClusterTrials(spec, template, a.namespace, connect())
    s = Search(spec, trials, storage, say=lambda line: print(line, flush=True), poll_s=a.poll)
    s.run()
    print(table(s.study, spec, s.gpu_hours()), flush=True)
    return 1 if s.stopped and "failed" in s.stopped else 0


if __name__ == "__main__":
    sys.exit(main())
