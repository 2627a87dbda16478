"""Kueue: how teams share the GPU pools. The chart (pinned in components/data/charts.yaml) runs
the controller on the system nodes; this component adds, from the stack config:

- one **ResourceFlavor per GPU pool**, named like the pool: it selects the pool's nodes by the
  `trainyard.io/pool` label (whoever makes them, a managed node group or a Karpenter NodePool)
  and adds the pool's GPU toleration to the pods Kueue admits there;
- one **ClusterQueue per team**, named like the team, admitting only the team's namespace, all in
  one cohort (`trainyard`) so idle quota is borrowed and reclaimed; flavors in the order
  Spot -> on-demand -> reserved (`flavor_order`);
- one **Cohort** object holding the pool capacity no team is guaranteed, for anyone to borrow;
- the **WorkloadPriorityClasses** (`production`, `training`, `preemptible`);
- a **LocalQueue** `gpu` in every team namespace, pointing at the team's ClusterQueue.

How a team's `gpuQuota` becomes quota (`quota_plan`, pure, unit-tested):

1. The pools' capacity (max nodes x accelerators per node) is dealt out **a node's worth at a
   time, round-robin across teams, in flavor order**, never more than a pool holds, until every
   team holds its `gpuQuota` as nominal (guaranteed) quota. A team's nominal quota therefore sums to
   exactly its `gpuQuota`: guaranteed quota is a true cap. Should the teams ask for more than
   the pools can hold, the rest lands on the first flavor (oversubscribed; the advisory policy
   `queue-quota-fits-capacity` says by how much).
2. What no team is guaranteed stays with the cohort (the Cohort object's nominal quota), so every
   GPU of every pool is admissible: a pool nobody holds quota on (prod's Capacity Block) is still
   used, by borrowing.
3. A team may borrow everything the rest of the cohort holds in a flavor (its `borrowingLimit`
   says exactly that much) and lends all of its own idle quota (no `lendingLimit`). Borrowed
   quota is reclaimed by preemption (`reclaimWithinCohort: Any`) as soon as its owner's job
   fits in the owner's nominal quota: a preempted TrainJob loses at most one checkpoint interval.
4. cpu, memory, EFA devices and 2 MiB huge pages follow the accelerators: each flavor gets, per
   node's worth of accelerators (rounded up), that node's vCPUs, memory, EFA devices and the
   5120Mi of huge pages an EFA pod requests. The accelerators stay the binding resource; the
   others exist because Kueue refuses pods that request resources no ClusterQueue covers.

Trade-off of dealing in flavor order: guaranteed quota lands on the cheapest pools first, which
are also the least certain (a Spot pool may have no capacity); jobs pinned to a later pool run
there on borrowed quota, which its owner can reclaim.

The namespace ResourceQuota each team keeps (components/services/teams.py) is sized by `ceilings()`:
what the team's ClusterQueue can admit at most (nominal + borrowing limit), so a pod Kueue admits
is never refused by the quota (which would leave the job half-started until waitForPodsReady
evicts it, over and over).

Every Kueue object depends on the release (its CRDs and webhooks); the release waits for the
Kubeflow Trainer release (TrainJob and JobSet CRDs, which Kueue's integrations watch).
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.compute.addons import chart
from components.compute.catalog import Catalog, load_catalog
from components.config import SYSTEM_POOL_NAME, GpuPoolConfig, TeamConfig
from components.services import netpol
from components.services.k8s_names import (
    COHORT,
    EFA_RESOURCE,
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    HUGEPAGES_RESOURCE,
    LOCAL_QUEUE,
    POOL_LABEL,
    PRIORITY_CLASSES,
)
from components.services.monitoring import deep_merge, release_chart

KUEUE_CHART = "kueue"
KUEUE_NAMESPACE = "kueue-system"
API_VERSION = "kueue.x-k8s.io/v1beta2"
"""Kueue 0.20 serves only v1beta2 (v1beta1 is no longer served)."""
DATA = Path(__file__).resolve().parents[1] / "data" / "kueue"
WEBHOOK_PORT = 9443
VISIBILITY_PORT = 8082
"""Kueue's visibility API server (pending workloads), called by the Kubernetes API server."""
EFA_HUGEPAGES_MI = 5120
"""2 MiB huge pages an EFA training pod requests per node (k8s_names.EFA_HUGEPAGES), in MiB."""

TIERS = ("spot", "on-demand", "reserved")
"""Flavor order: Spot first (cheapest), on-demand second, reserved capacity last."""
PRIORITY_DESCRIPTIONS = {
    "production": "Jobs others depend on: preempts lower classes in its own queue.",
    "training": "Default of rendered TrainJobs.",
    "preemptible": "Experiments and sweeps: preempted first, also by other teams' borrowing "
                   "jobs.",
}


@dataclass(frozen=True)
class KueueArgs:
    provider: k8s.Provider
    """Kubernetes provider of the cluster (required)."""
    teams: Sequence[TeamConfig] = ()
    """Typed `trainyard:teams`: one ClusterQueue and LocalQueue each. Default none."""
    gpu_pools: Sequence[GpuPoolConfig] = ()
    """The stack's GPU pools: one ResourceFlavor each. Default none."""
    team_namespaces: Mapping[str, pulumi.Resource] = field(default_factory=dict)
    """Team name -> its Namespace resource (components/services/teams.py), for the LocalQueues."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Cluster, add-ons and system nodes: created first, deleted last. Default none."""
    integrations: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Releases whose CRDs Kueue's integrations watch (the Kubeflow Trainer release: TrainJob,
    JobSet): installed before Kueue starts. Default none."""
    namespace: str = KUEUE_NAMESPACE
    """Namespace of the controller. Default `kueue-system` (Kueue's own default; its
    managedJobsNamespaceSelector leaves it out)."""
    catalog: Optional[Catalog] = None
    """Instance catalog. Default: components/data/instances.yaml."""


# ----------------------------------------------------------------------------------------------
# Flavors
# ----------------------------------------------------------------------------------------------
def flavor_tier(pool: GpuPoolConfig) -> str:
    """`spot`, `on-demand` (no reservation) or `reserved` (an ODCR or a Capacity Block)."""
    if pool.capacity_type == "SPOT":
        return "spot"
    if pool.capacity_type == "CAPACITY_BLOCK" or pool.capacity_reservation is not None:
        return "reserved"
    return "on-demand"


def flavor_order(pools: Sequence[GpuPoolConfig]) -> tuple[GpuPoolConfig, ...]:
    """The pools in the order Kueue tries their flavors: Spot pools first, then on-demand pools
    without a reservation, then ODCR and Capacity Block pools; config order within a tier."""
    return tuple(sorted(pools, key=lambda p: TIERS.index(flavor_tier(p))))


@dataclass(frozen=True)
class Flavor:
    """What Kueue needs to know about one GPU pool."""

    name: str
    """ResourceFlavor name = the pool's name."""
    tier: str
    vendor: str
    resource: str
    """The accelerator resource its nodes advertise (nvidia.com/gpu, aws.amazon.com/neuron)."""
    per_node: int
    """Accelerators per node."""
    max_nodes: int
    vcpus: int
    """Smallest vCPU count among the pool's instance types."""
    memory_gib: int
    """Smallest memory among the pool's instance types."""
    efa_devices: int
    """EFA devices per node (the instance's maximum on EFA pools, else 0)."""

    @property
    def capacity(self) -> int:
        """Accelerators at the pool's maximum size."""
        return self.per_node * self.max_nodes

    def nodes_for(self, accelerators: int) -> int:
        return math.ceil(accelerators / self.per_node) if self.per_node else 0


def pool_flavor(pool: GpuPoolConfig, catalog: Optional[Catalog] = None) -> Optional[Flavor]:
    """The pool's flavor facts; None for a pool without accelerators."""
    catalog = catalog or load_catalog()
    specs = [catalog.get(t) for t in pool.instance_types]
    first = specs[0]
    if not first.vendor or not first.gpus or pool.purpose != "training":
        return None  # no accelerators, or an inference pool (serving: not queued)
    return Flavor(name=pool.name, tier=flavor_tier(pool), vendor=first.vendor,
                  resource=GPU_RESOURCE[first.vendor], per_node=first.gpus,
                  max_nodes=pool.max_size, vcpus=min(s.vcpus for s in specs),
                  memory_gib=min(s.memory_gib for s in specs),
                  efa_devices=first.max_efa if pool.efa else 0)


def flavors(pools: Sequence[GpuPoolConfig], catalog: Optional[Catalog] = None
            ) -> tuple[Flavor, ...]:
    """Flavors of the accelerated pools, in flavor order."""
    out = [pool_flavor(p, catalog) for p in flavor_order(pools)]
    return tuple(f for f in out if f is not None)


def covered_resources(fs: Sequence[Flavor]) -> tuple[str, ...]:
    """Resources the ClusterQueues keep quota on: cpu, memory, every accelerator resource of the
    stack, and EFA devices plus 2 MiB huge pages when an EFA pool exists."""
    out = ["cpu", "memory", *sorted({f.resource for f in fs})]
    if any(f.efa_devices for f in fs):
        out += [EFA_RESOURCE, HUGEPAGES_RESOURCE]
    return tuple(out)


def resource_flavor(f: Flavor) -> dict:
    return {
        "apiVersion": API_VERSION, "kind": "ResourceFlavor",
        "metadata": {"name": f.name, "labels": {POOL_LABEL: f.name}},
        "spec": {
            # The only label every node of the pool carries whichever provisioner made it.
            "nodeLabels": {POOL_LABEL: f.name},
            # Added to every pod Kueue admits on this flavor, so a job needs no toleration of
            # its own to land on the pool's tainted nodes.
            "tolerations": [{"key": GPU_TAINT_KEY[f.vendor], "operator": "Equal",
                             "value": "true", "effect": "NoSchedule"}],
        },
    }


# ----------------------------------------------------------------------------------------------
# Quota
# ----------------------------------------------------------------------------------------------
def deal_nominal(teams: Sequence[TeamConfig], fs: Sequence[Flavor]) -> dict[str, dict[str, int]]:
    """Team -> flavor -> nominal accelerators: each pool's capacity dealt a node's worth at a
    time, round-robin across the teams still short of their gpuQuota, flavors in order; a team
    near its quota takes only the accelerators it still needs (the rest of that node's worth
    stays for the next team). Whatever the pools cannot hold goes to the first flavor
    (oversubscribed), so every row sums to the team's gpuQuota."""
    need = {t.name: t.gpu_quota for t in teams}
    out = {t.name: {f.name: 0 for f in fs} for t in teams}
    order = [t.name for t in teams]
    turn = 0
    for f in fs:
        left = f.capacity
        while left > 0 and any(need[n] > 0 for n in order):
            name = order[turn % len(order)]
            turn += 1
            if need[name] <= 0:
                continue
            take = min(f.per_node, need[name], left)
            out[name][f.name] += take
            need[name] -= take
            left -= take
    if fs:
        for name in order:
            out[name][fs[0].name] += max(0, need[name])
    return out


@dataclass(frozen=True)
class QuotaPlan:
    """Every quota number of the stack's ClusterQueues and Cohort (see the module docstring)."""

    flavors: tuple[Flavor, ...]
    resources: tuple[str, ...]
    nominal: Mapping[str, Mapping[str, int]]
    """Team -> flavor -> nominal accelerators."""
    shared: Mapping[str, int]
    """Flavor -> accelerators no team is guaranteed (the Cohort object's nominal quota)."""

    def flavor(self, name: str) -> Flavor:
        return next(f for f in self.flavors if f.name == name)

    def amounts(self, f: Flavor, accelerators: int) -> dict[str, int]:
        """Per covered resource, in base units (cores, GiB, devices, MiB): what `accelerators`
        of flavor `f` come with."""
        nodes = f.nodes_for(accelerators)
        out = {r: 0 for r in self.resources}
        out.update(cpu=nodes * f.vcpus, memory=nodes * f.memory_gib)
        out[f.resource] = accelerators
        if EFA_RESOURCE in out and f.efa_devices:
            out[EFA_RESOURCE] = nodes * f.efa_devices
            out[HUGEPAGES_RESOURCE] = nodes * EFA_HUGEPAGES_MI
        return out

    def team_amounts(self, team: str, f: Flavor) -> dict[str, int]:
        return self.amounts(f, self.nominal[team][f.name])

    def shared_amounts(self, f: Flavor) -> dict[str, int]:
        return self.amounts(f, self.shared[f.name])

    def cohort_total(self, f: Flavor) -> dict[str, int]:
        """All nominal quota of flavor `f` in the cohort: every team's plus the shared pool."""
        total = self.shared_amounts(f)
        for team in self.nominal:
            for r, n in self.team_amounts(team, f).items():
                total[r] += n
        return total

    def borrowing_limit(self, team: str, f: Flavor) -> dict[str, int]:
        """Everything the rest of the cohort holds in flavor `f`."""
        total, own = self.cohort_total(f), self.team_amounts(team, f)
        return {r: max(0, total[r] - own[r]) for r in self.resources}

    def ceilings(self) -> dict[str, dict[str, int]]:
        """Team -> accelerator resource -> the most its ClusterQueue can admit at once
        (nominal + borrowing limit over every flavor): the floor of its ResourceQuota."""
        accel = sorted({f.resource for f in self.flavors})
        out: dict[str, dict[str, int]] = {}
        for team in self.nominal:
            out[team] = {r: 0 for r in accel}
            for f in self.flavors:
                own, lend = self.team_amounts(team, f), self.borrowing_limit(team, f)
                out[team][f.resource] += own[f.resource] + lend[f.resource]
        return out

    def oversubscribed(self) -> dict[str, int]:
        """Flavor -> accelerators of nominal quota beyond the pool's maximum (only > 0 listed)."""
        out = {}
        for f in self.flavors:
            held = sum(self.nominal[t][f.name] for t in self.nominal)
            if held > f.capacity:
                out[f.name] = held - f.capacity
        return out


def quota_plan(teams: Sequence[TeamConfig], pools: Sequence[GpuPoolConfig],
               catalog: Optional[Catalog] = None) -> QuotaPlan:
    fs = flavors(pools, catalog)
    nominal = deal_nominal(teams, fs)
    shared = {f.name: max(0, f.capacity - sum(nominal[t][f.name] for t in nominal)) for f in fs}
    return QuotaPlan(flavors=fs, resources=covered_resources(fs), nominal=nominal, shared=shared)


def quantity(resource: str, amount: int) -> str:
    """A Kubernetes quantity in the unit QuotaPlan.amounts uses for `resource`."""
    if resource == "memory":
        return f"{amount}Gi"
    if resource == HUGEPAGES_RESOURCE:
        return f"{amount}Mi"
    return str(amount)


def _resource_groups(plan: QuotaPlan, team: Optional[str]) -> list[dict]:
    if not plan.flavors:
        return []
    group_flavors = []
    for f in plan.flavors:
        own = plan.team_amounts(team, f) if team else plan.shared_amounts(f)
        limit = plan.borrowing_limit(team, f) if team else None
        resources = []
        for r in plan.resources:
            entry = {"name": r, "nominalQuota": quantity(r, own[r])}
            if limit is not None:
                entry["borrowingLimit"] = quantity(r, limit[r])
            resources.append(entry)
        group_flavors.append({"name": f.name, "resources": resources})
    return [{"coveredResources": list(plan.resources), "flavors": group_flavors}]


def namespace_selector(team: str) -> dict:
    """Only the team's own namespace; `kubernetes.io/metadata.name` is set by the API server and
    cannot be put on another namespace by hand (a team label could)."""
    return {"matchLabels": {netpol.NAMESPACE_NAME_LABEL: team}}


def cluster_queue(team: TeamConfig, plan: QuotaPlan) -> dict:
    return {
        "apiVersion": API_VERSION, "kind": "ClusterQueue",
        "metadata": {"name": team.name},
        "spec": {
            "cohortName": COHORT,
            "namespaceSelector": namespace_selector(team.name),
            # A large gang that does not fit yet does not hold back smaller jobs behind it.
            "queueingStrategy": "BestEffortFIFO",
            # Take the first flavor (in order) where the job fits, borrowing if need be; try
            # the next flavor rather than preempt anybody.
            "flavorFungibility": {"whenCanBorrow": "MayStopSearch",
                                  "whenCanPreempt": "TryNextFlavor"},
            "preemption": {
                # Lent quota comes back whatever the borrower's priority.
                "reclaimWithinCohort": "Any",
                # Inside the team's own quota, a higher class preempts a lower one.
                "withinClusterQueue": "LowerPriority",
                # A job that must borrow may preempt only `preemptible` jobs of other teams.
                "borrowWithinCohort": {"policy": "LowerPriority",
                                       "maxPriorityThreshold": PRIORITY_CLASSES["preemptible"]},
            },
            "resourceGroups": _resource_groups(plan, team.name),
        },
    }


def cohort(plan: QuotaPlan) -> dict:
    """The cohort every ClusterQueue joins; its own nominal quota is the capacity no team is
    guaranteed (a shared pool anyone may borrow)."""
    return {"apiVersion": API_VERSION, "kind": "Cohort", "metadata": {"name": COHORT},
            "spec": {"resourceGroups": _resource_groups(plan, None)}}


def local_queue(team: TeamConfig) -> dict:
    return {"apiVersion": API_VERSION, "kind": "LocalQueue",
            "metadata": {"name": LOCAL_QUEUE, "namespace": team.name},
            "spec": {"clusterQueue": team.name}}


def workload_priority_classes() -> dict[str, dict]:
    return {name: {"apiVersion": API_VERSION, "kind": "WorkloadPriorityClass",
                   "metadata": {"name": name}, "value": value,
                   "description": PRIORITY_DESCRIPTIONS.get(name, "")}
            for name, value in PRIORITY_CLASSES.items()}


# ----------------------------------------------------------------------------------------------
# Release values and the namespace
# ----------------------------------------------------------------------------------------------
def _load(name: str) -> Any:
    with (DATA / name).open() as f:
        return yaml.safe_load(f)


def manager_config() -> dict:
    """Kueue's Configuration (components/data/kueue/manager-config.yaml)."""
    return _load("manager-config.yaml")


def kueue_values() -> dict:
    """Values of the kueue release: the static file, the controller on the system nodes, and the
    Configuration as the YAML text the chart expects."""
    return deep_merge(_load("values.yaml"), {
        "controllerManager": {"nodeSelector": {POOL_LABEL: SYSTEM_POOL_NAME}},
        "managerConfig": {"controllerManagerConfigYaml": yaml.safe_dump(
            manager_config(), sort_keys=False)},
    })


def network_policies() -> dict[str, dict]:
    """kueue-system: default deny; the controller reaches the API server over HTTPS (its
    Service ClusterIP and the endpoint ENIs are private addresses, so nothing on the internet);
    the API server (from the control plane's ENIs) reaches the admission webhooks and the
    visibility API."""
    return {
        "default-deny": netpol.deny_all(),
        "allow-dns": netpol.allow_dns(),
        "allow-same-namespace": netpol.allow_same_namespace(),
        "allow-api-server": netpol.allow_egress_to_cidrs(netpol.PRIVATE_RANGES, [443]),
        "allow-webhooks": netpol.allow_ingress_on([WEBHOOK_PORT, VISIBILITY_PORT]),
    }


def namespace_labels() -> dict[str, str]:
    # The controller runs non-root without privileges; `restricted` is audited and warned (not
    # enforced) like kubeflow-system, so a chart hook the next version adds is not refused.
    return {"pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/audit": "restricted",
            "pod-security.kubernetes.io/warn": "restricted"}


# ----------------------------------------------------------------------------------------------
# Component
# ----------------------------------------------------------------------------------------------
class KueueObject(pulumi.CustomResource):
    """A Kueue custom resource from a whole object dict. `apiextensions.CustomResource` takes
    only `spec`; a WorkloadPriorityClass keeps `value` and `description` at the top level."""

    def __init__(self, name: str, obj: Mapping[str, Any],
                 opts: Optional[pulumi.ResourceOptions] = None):
        version = importlib.metadata.version("pulumi_kubernetes")
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(version=version))
        super().__init__(f"kubernetes:{obj['apiVersion']}:{obj['kind']}", name, dict(obj), opts)


class Kueue(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    release: k8s.helm.v3.Release
    flavors: dict[str, KueueObject]
    cluster_queues: dict[str, KueueObject]
    local_queues: dict[str, KueueObject]

    def __init__(self, name: str, args: KueueArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Kueue", name, None, opts)
        self._name, self._args = name, args
        self.plan = quota_plan(args.teams, args.gpu_pools, args.catalog or load_catalog())
        self.local_queue = LOCAL_QUEUE
        self._create_release()
        self._create_queues()
        self.register_outputs({
            "namespace": args.namespace,
            "flavorOrder": [f.name for f in self.plan.flavors],
            "clusterQueues": dict(self.cluster_queue_names),
            "localQueue": LOCAL_QUEUE,
        })

    def _opts(self, *depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, provider=self._args.provider,
                                      depends_on=[*self._args.depends_on, *depends_on])

    def _create_release(self) -> None:
        name, args = self._name, self._args
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.namespace, labels=namespace_labels()),
            opts=self._opts())
        for policy, spec in network_policies().items():
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=policy, namespace=args.namespace),
                spec=spec, opts=self._opts(self.namespace))
        pin = chart(KUEUE_CHART)
        chart_ref, repo = release_chart(pin)
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            # A fixed release name: the chart derives the webhook service and certificate
            # secret names from it, and Kueue's defaults expect `kueue-...`.
            name=pin.chart, chart=chart_ref, version=pin.version, repository_opts=repo,
            namespace=args.namespace, values=kueue_values(),
            max_history=5, timeout=900, atomic=True, cleanup_on_fail=True,
            opts=self._opts(self.namespace, *args.integrations))

    def _create_queues(self) -> None:
        name, args, plan = self._name, self._args, self.plan
        after = self._opts(self.release)
        self.flavors = {f.name: KueueObject(f"{name}-flavor-{f.name}", resource_flavor(f), after)
                        for f in plan.flavors}
        for cls, obj in workload_priority_classes().items():
            KueueObject(f"{name}-priority-{cls}", obj, after)
        shared = KueueObject(f"{name}-cohort", cohort(plan),
                             self._opts(self.release, *self.flavors.values()))
        self.cluster_queues, self.local_queues = {}, {}
        self.cluster_queue_names: dict[str, str] = {}
        for team in args.teams:
            cq = KueueObject(f"{name}-cq-{team.name}", cluster_queue(team, plan),
                             self._opts(self.release, shared, *self.flavors.values()))
            self.cluster_queues[team.name] = cq
            self.cluster_queue_names[team.name] = team.name
            ns = args.team_namespaces.get(team.name)
            self.local_queues[team.name] = KueueObject(
                f"{name}-lq-{team.name}", local_queue(team),
                self._opts(self.release, cq, *([ns] if ns is not None else [])))
