"""Kueue: flavor order, the quota split, the objects, the release values, and every Kueue object
of every committed stack validated against the pinned CRDs' schemas (tests/components/data/crds,
kueue-README.md)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from components.compute.addons import chart
from components.config import CapacityReservation, GpuPoolConfig, TeamConfig
from components.services.k8s_names import (
    COHORT,
    EFA_RESOURCE,
    HUGEPAGES_RESOURCE,
    LOCAL_QUEUE,
    POOL_LABEL,
    PRIORITY_CLASSES,
)
from components.services.kueue import (
    API_VERSION,
    KUEUE_CHART,
    Flavor,
    cluster_queue,
    cohort,
    covered_resources,
    deal_nominal,
    flavor_order,
    flavor_tier,
    kueue_values,
    local_queue,
    manager_config,
    quota_plan,
    resource_flavor,
    workload_priority_classes,
)
from tests.conftest import STACKS, resources
from trainyard.synth import load_config

CRDS = Path(__file__).parent / "data" / "crds"
CHART_KEYS = yaml.safe_load((Path(__file__).parent / "data" / "chart_value_keys.yaml").read_text())
KUEUE_TYPE = re.compile(r"^kubernetes:kueue\.x-k8s\.io/v1beta2:(\w+)$")


def pool(name, types=("p4d.24xlarge",), capacity="ON_DEMAND", max_size=4, efa=False,
         reservation=None):
    return GpuPoolConfig(name=name, instance_types=tuple(types), capacity_type=capacity,
                         min_size=0, desired_size=0, max_size=max_size,
                         availability_zones=("us-east-1a",), efa=efa,
                         capacity_reservation=reservation)


def team(name, quota):
    return TeamConfig(name=name, gpu_quota=quota)


ODCR = CapacityReservation(id="cr-0123456789abcdef0", availability_zone="us-east-1a")
SPOT_A = pool("spot-a", ("g5.48xlarge", "g6.48xlarge"), "SPOT", max_size=8, efa=True)
SPOT_B = pool("spot-b", ("g5.12xlarge", "g6.12xlarge"), "SPOT", max_size=6)
ON_DEMAND = pool("a100", efa=True, max_size=16)
ON_DEMAND_ODCR = pool("odcr", reservation=ODCR)
BLOCK = pool("h100", ("p5.48xlarge",), "CAPACITY_BLOCK", max_size=4, efa=True, reservation=ODCR)


# ----------------------------------------------------------------------------------------------
# Flavor order
# ----------------------------------------------------------------------------------------------
def test_flavor_order_is_spot_then_on_demand_then_reserved():
    pools = [BLOCK, ON_DEMAND_ODCR, ON_DEMAND, SPOT_A, SPOT_B]
    assert [p.name for p in flavor_order(pools)] == ["spot-a", "spot-b", "a100", "h100", "odcr"]
    assert [flavor_tier(p) for p in (SPOT_A, ON_DEMAND, ON_DEMAND_ODCR, BLOCK)] == \
        ["spot", "on-demand", "reserved", "reserved"]


def test_flavor_order_keeps_config_order_within_a_tier():
    a, b, c = pool("b1", capacity="SPOT", types=("g5.xlarge", "g6.xlarge")), \
        pool("b2"), pool("b3", capacity="SPOT", types=("g5.xlarge", "g6.xlarge"))
    assert [p.name for p in flavor_order([b, a, c])] == ["b1", "b3", "b2"]
    assert flavor_order([]) == ()


def test_flavor_selects_the_pool_label_and_tolerates_the_gpu_taint():
    plan = quota_plan([team("t", 8)], [SPOT_A, pool("trn", ("trn1.32xlarge",))])
    rf = resource_flavor(plan.flavor("spot-a"))
    assert rf["apiVersion"] == API_VERSION and rf["metadata"]["name"] == "spot-a"
    # Nothing provisioner-specific (eks.amazonaws.com/..., karpenter.sh/...) in the selector.
    assert rf["spec"]["nodeLabels"] == {POOL_LABEL: "spot-a"}
    assert rf["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal",
                                          "value": "true", "effect": "NoSchedule"}]
    trn = resource_flavor(plan.flavor("trn"))
    assert trn["spec"]["tolerations"][0]["key"] == "aws.amazon.com/neuron"


def test_covered_resources():
    efa = quota_plan([], [SPOT_A]).flavors
    plain = quota_plan([], [SPOT_B]).flavors
    assert covered_resources(efa) == ("cpu", "memory", "nvidia.com/gpu", EFA_RESOURCE,
                                      HUGEPAGES_RESOURCE)
    assert covered_resources(plain) == ("cpu", "memory", "nvidia.com/gpu")
    both = quota_plan([], [SPOT_B, pool("trn", ("trn1.32xlarge",))]).flavors
    assert covered_resources(both) == ("cpu", "memory", "aws.amazon.com/neuron",
                                       "nvidia.com/gpu")


# ----------------------------------------------------------------------------------------------
# The quota split
# ----------------------------------------------------------------------------------------------
PROD_LIKE = [ON_DEMAND, BLOCK, SPOT_A, SPOT_B]  # flavor order: spot-a, spot-b, a100, h100


def test_prod_like_split_deals_nodes_round_robin_in_flavor_order():
    plan = quota_plan([team("research", 64), team("applied", 32)], PROD_LIKE)
    assert [f.name for f in plan.flavors] == ["spot-a", "spot-b", "a100", "h100"]
    # spot-a (8 nodes x 8): R, A, R, A, ... -> 32 each, applied done; spot-b (6 x 4) all to
    # research (24), then one a100 node (8): research has its 64.
    assert plan.nominal == {"research": {"spot-a": 32, "spot-b": 24, "a100": 8, "h100": 0},
                            "applied": {"spot-a": 32, "spot-b": 0, "a100": 0, "h100": 0}}
    # What nobody is guaranteed stays with the cohort: a100 15 nodes, all of the Capacity Block.
    assert plan.shared == {"spot-a": 0, "spot-b": 0, "a100": 120, "h100": 32}
    assert plan.oversubscribed() == {}


def test_a_partial_node_and_the_rotation_carry_across_flavors():
    fs = quota_plan([], [pool("p", max_size=1), pool("q", max_size=3)]).flavors
    got = deal_nominal([team("a", 12), team("b", 4)], fs)
    # p: one node (8) to a; q: b (needs 4 of 8), a (4 more), nobody left.
    assert got == {"a": {"p": 8, "q": 4}, "b": {"p": 0, "q": 4}}


def test_more_quota_than_the_pools_hold_oversubscribes_the_first_flavor():
    plan = quota_plan([team("a", 40), team("b", 40)], [SPOT_B, ON_DEMAND_ODCR])
    # spot-b 24 + odcr 32 = 56 for 80 asked: 24 over, on spot-b (first in order).
    assert sum(plan.nominal["a"].values()) == 40 and sum(plan.nominal["b"].values()) == 40
    assert plan.oversubscribed() == {"spot-b": 24}
    assert plan.shared == {"spot-b": 0, "odcr": 0}


@settings(max_examples=60, deadline=None)
@given(quotas=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=5),
       sizes=st.lists(st.tuples(st.sampled_from([1, 4, 8]), st.integers(0, 20)), min_size=1,
                      max_size=5))
def test_split_properties(quotas, sizes):
    fs = tuple(Flavor(name=f"f{i}", tier="spot", vendor="nvidia", resource="nvidia.com/gpu",
                      per_node=g, max_nodes=n, vcpus=8, memory_gib=32, efa_devices=0)
               for i, (g, n) in enumerate(sizes))
    teams = [team(f"t{i}", q) for i, q in enumerate(quotas)]
    got = deal_nominal(teams, fs)
    # A team's guaranteed quota is exactly its gpuQuota.
    assert all(sum(got[t.name].values()) == t.gpu_quota for t in teams)
    if sum(quotas) <= sum(f.capacity for f in fs):
        # No pool promises more than it can hold.
        assert all(sum(got[t][f.name] for t in got) <= f.capacity for f in fs)


def test_borrowing_limit_and_ceiling_reach_exactly_the_cohort():
    plan = quota_plan([team("research", 64), team("applied", 32)], PROD_LIKE)
    a100 = plan.flavor("a100")
    total = plan.cohort_total(a100)
    assert total["nvidia.com/gpu"] == 128 and total["cpu"] == 16 * 96
    own, lend = plan.team_amounts("research", a100), plan.borrowing_limit("research", a100)
    assert own["nvidia.com/gpu"] == 8 and lend["nvidia.com/gpu"] == 120
    assert {r: own[r] + lend[r] for r in own} == total
    # One a100 node's worth: 96 vCPUs, 1152 GiB, 4 EFA devices, 5120Mi of huge pages.
    assert own == {"cpu": 96, "memory": 1152, "nvidia.com/gpu": 8, EFA_RESOURCE: 4,
                   HUGEPAGES_RESOURCE: 5120}
    # Every team may reach the whole platform by borrowing: the ResourceQuota floor.
    assert plan.ceilings() == {"research": {"nvidia.com/gpu": 248},
                               "applied": {"nvidia.com/gpu": 248}}


def test_non_gpu_resources_follow_whole_nodes():
    plan = quota_plan([team("a", 4)], [pool("p", max_size=2)])  # half a p4d node
    amounts = plan.team_amounts("a", plan.flavor("p"))
    assert amounts["nvidia.com/gpu"] == 4 and amounts["cpu"] == 96  # the whole node's vCPUs


# ----------------------------------------------------------------------------------------------
# Objects
# ----------------------------------------------------------------------------------------------
def test_cluster_queue_shape():
    plan = quota_plan([team("research", 64), team("applied", 32)], PROD_LIKE)
    cq = cluster_queue(team("research", 64), plan)
    spec = cq["spec"]
    assert cq["metadata"]["name"] == "research" and spec["cohortName"] == COHORT
    assert spec["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name":
                                                         "research"}}
    assert spec["preemption"]["reclaimWithinCohort"] == "Any"
    assert spec["preemption"]["withinClusterQueue"] == "LowerPriority"
    assert spec["preemption"]["borrowWithinCohort"]["maxPriorityThreshold"] == \
        PRIORITY_CLASSES["preemptible"]
    (group,) = spec["resourceGroups"]
    assert [f["name"] for f in group["flavors"]] == ["spot-a", "spot-b", "a100", "h100"]
    for f in group["flavors"]:  # Kueue: each flavor lists the covered resources, in order
        assert [r["name"] for r in f["resources"]] == group["coveredResources"]
    gpus = {f["name"]: next(r for r in f["resources"] if r["name"] == "nvidia.com/gpu")
            for f in group["flavors"]}
    assert sum(int(g["nominalQuota"]) for g in gpus.values()) == 64
    assert gpus["h100"] == {"name": "nvidia.com/gpu", "nominalQuota": "0",
                            "borrowingLimit": "32"}
    mem = next(r for r in group["flavors"][2]["resources"] if r["name"] == "memory")
    assert mem["nominalQuota"] == "1152Gi"
    # The cohort's own quota has no limits (a root cohort may not set them).
    for f in cohort(plan)["spec"]["resourceGroups"][0]["flavors"]:
        assert all(set(r) == {"name", "nominalQuota"} for r in f["resources"])


def test_local_queue_and_priority_classes():
    assert local_queue(team("research", 8)) == {
        "apiVersion": API_VERSION, "kind": "LocalQueue",
        "metadata": {"name": LOCAL_QUEUE, "namespace": "research"},
        "spec": {"clusterQueue": "research"}}
    classes = workload_priority_classes()
    assert {n: c["value"] for n, c in classes.items()} == PRIORITY_CLASSES


def test_no_teams_no_pools():
    plan = quota_plan([], [])
    assert plan.flavors == () and plan.ceilings() == {}
    assert cohort(plan)["spec"]["resourceGroups"] == []


# ----------------------------------------------------------------------------------------------
# Release
# ----------------------------------------------------------------------------------------------
def test_chart_pin_supports_trainer_2_3():
    pin = chart(KUEUE_CHART)
    assert (pin.repo, pin.version) == ("oci://registry.k8s.io/kueue/charts", "0.20.0")
    assert chart("kubeflow-trainer").version == "2.3.0"  # Kueue 0.20 is the first for it


def test_values_put_the_controller_on_system_nodes_and_use_known_keys():
    from tests.components.test_device_plugins import unknown_keys

    values = kueue_values()
    assert values["controllerManager"]["nodeSelector"] == {POOL_LABEL: "system"}
    assert "tolerations" not in values["controllerManager"]
    assert unknown_keys(values, CHART_KEYS["kueue"]["keys"]) == []
    config = yaml.safe_load(values["managerConfig"]["controllerManagerConfigYaml"])
    assert config == manager_config()


# Field paths of config.kueue.x-k8s.io/v1beta2 Configuration this platform may set, read from
# kubernetes-sigs/kueue apis/config/v1beta2/configuration_types.go (0.1x line; the 0.20 notes
# rename none of them). A typo'd key would be silently ignored by Kueue.
CONFIG_FIELDS = {
    "apiVersion", "kind", "namespace", "manageJobsWithoutQueueName",
    "managedJobsNamespaceSelector", "internalCertManagement", "clientConnection", "featureGates",
    "health.healthProbeBindAddress", "metrics.bindAddress", "webhook.port",
    "leaderElection.leaderElect", "leaderElection.resourceName", "controller",
    "waitForPodsReady.timeout", "waitForPodsReady.blockAdmission",
    "waitForPodsReady.recoveryTimeout", "waitForPodsReady.requeuingStrategy.timestamp",
    "waitForPodsReady.requeuingStrategy.backoffLimitCount",
    "waitForPodsReady.requeuingStrategy.backoffBaseSeconds",
    "waitForPodsReady.requeuingStrategy.backoffMaxSeconds",
    "integrations.frameworks", "resources.excludeResourcePrefixes", "objectRetentionPolicies",
}


def test_manager_config_uses_known_fields():
    from tests.components.test_device_plugins import unknown_keys

    assert unknown_keys(manager_config(), sorted(CONFIG_FIELDS)) == []


def test_manager_config():
    config = manager_config()
    assert config["apiVersion"] == "config.kueue.x-k8s.io/v1beta2"
    assert config["manageJobsWithoutQueueName"] is False
    assert "trainer.kubeflow.org/trainjob" in config["integrations"]["frameworks"]
    wait = config["waitForPodsReady"]
    assert wait["timeout"] == "15m" and wait["blockAdmission"] is False
    assert wait["requeuingStrategy"]["backoffBaseSeconds"] > 0
    assert "enable" not in wait  # v1beta2 config: presence enables it


# ----------------------------------------------------------------------------------------------
# Every Kueue object of every committed stack against the CRD schemas
# ----------------------------------------------------------------------------------------------
def strict(schema):
    """Closed objects, as `kubectl apply --validate=strict` treats a structural schema."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and \
                    "additionalProperties" not in node and \
                    not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(schema)
    return schema


def _validators() -> dict[str, jsonschema.Draft7Validator]:
    out = {}
    for path in sorted(CRDS.glob("kueue-*.json")):
        doc = json.loads(path.read_text())
        assert doc["apiVersion"] == API_VERSION and "commit" in doc["$comment"]
        out[doc["kind"]] = jsonschema.Draft7Validator(strict(doc["openAPIV3Schema"]))
    return out


VALIDATORS = _validators()


def cel_problems(obj: dict) -> list[str]:
    """The CRDs' x-kubernetes-validations (CEL) that can apply to our objects, by hand."""
    out, spec = [], obj.get("spec") or {}
    for group in spec.get("resourceGroups") or []:
        if any(len(f["resources"]) != len(group["coveredResources"]) for f in group["flavors"]):
            out.append("flavors must have the same number of resources as the coveredResources")
        # Kueue's webhook: the same resources in the same order as coveredResources.
        if any([r["name"] for r in f["resources"]] != group["coveredResources"]
               for f in group["flavors"]):
            out.append("flavor resources differ from coveredResources")
        if obj["kind"] == "ClusterQueue" and "cohortName" not in spec and any(
                "borrowingLimit" in r for f in group["flavors"] for r in f["resources"]):
            out.append("borrowingLimit must be nil when cohort is empty")
        if obj["kind"] == "Cohort" and any("borrowingLimit" in r or "lendingLimit" in r
                                           for f in group["flavors"] for r in f["resources"]):
            out.append("a root Cohort may not set borrowing or lending limits")
    pre = spec.get("preemption") or {}
    if pre.get("reclaimWithinCohort", "Never") == "Never" and \
            (pre.get("borrowWithinCohort") or {}).get("policy", "Never") != "Never":
        out.append("reclaimWithinCohort=Never and borrowWithinCohort.Policy!=Never")
    for t in spec.get("tolerations") or []:
        if "key" not in t and t.get("operator") != "Exists":
            out.append("operator must be Exists when 'key' is empty")
        if t.get("operator", "Equal") not in ("Equal", "Exists"):
            out.append("supported toleration operators: Equal, Exists")
        if t.get("operator") == "Exists" and "value" in t:
            out.append("a value must be empty when 'operator' is 'Exists'")
        if t.get("effect", "NoSchedule") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            out.append("unsupported taint effect")
    return out


def kueue_objects(plan: dict) -> list[tuple[dict, dict]]:
    out = []
    for r in plan["resources"]:
        m = KUEUE_TYPE.match(r["type"])
        if m:
            out.append((r, dict(r["inputs"])))
    return out


def problems(obj: dict) -> list[str]:
    v = VALIDATORS.get(obj.get("kind"))
    if v is None:
        return [f"no schema for {obj.get('kind')}"]
    errs = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(obj)]
    return errs + cel_problems(obj)


@pytest.mark.parametrize("stack", STACKS)
def test_every_kueue_object_of_the_plan_validates(plan_for, stack):
    plan = plan_for(stack)
    objs = kueue_objects(plan)
    kinds = {o["kind"] for _, o in objs}
    assert kinds == {"ResourceFlavor", "ClusterQueue", "Cohort", "LocalQueue",
                     "WorkloadPriorityClass"}
    for r, obj in objs:
        assert r["type"] == f"kubernetes:{obj['apiVersion']}:{obj['kind']}"
        assert problems(obj) == [], r["name"]


def test_schemas_have_teeth():
    plan = quota_plan([team("a", 8)], [SPOT_A])
    cq = cluster_queue(team("a", 8), plan)
    assert problems(cq) == []
    typo = copy.deepcopy(cq)
    typo["spec"]["cohort"] = typo["spec"].pop("cohortName")  # the v1beta1 name
    assert any("cohort" in p for p in problems(typo))
    bad_enum = copy.deepcopy(cq)
    bad_enum["spec"]["preemption"]["reclaimWithinCohort"] = "Always"
    assert problems(bad_enum)
    bad_qty = copy.deepcopy(cq)
    bad_qty["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["nominalQuota"] = "8 GPUs"
    assert problems(bad_qty)
    short = copy.deepcopy(cq)
    short["spec"]["resourceGroups"][0]["flavors"][0]["resources"].pop()
    assert "flavors must have the same number of resources as the coveredResources" in \
        problems(short)
    wpc = workload_priority_classes()["training"]
    assert problems({**wpc, "value": "100"}) and problems({k: v for k, v in wpc.items()
                                                           if k != "value"})


@pytest.mark.parametrize("stack", STACKS)
def test_plan_wiring(plan_for, stack):
    cfg = load_config(stack)
    plan = plan_for(stack)
    objs = kueue_objects(plan)
    by_kind: dict[str, dict[str, tuple]] = {}
    for r, o in objs:
        meta = o["metadata"]
        by_kind.setdefault(o["kind"], {})[(meta.get("namespace"), meta["name"])] = (r, o)
    # A flavor per GPU pool, a ClusterQueue and a LocalQueue per team.
    assert set(by_kind["ResourceFlavor"]) == {(None, p.name) for p in cfg.gpu_pools
                                               if p.purpose == "training"}  # not inference
    assert set(by_kind["ClusterQueue"]) == {(None, t.name) for t in cfg.teams}
    assert set(by_kind["LocalQueue"]) == {(t.name, LOCAL_QUEUE) for t in cfg.teams}
    release = next(r for r in resources(plan, "kubernetes:helm.sh/v3:Release")
                   if r["name"].endswith("kueue-release"))
    trainer = next(r for r in resources(plan, "kubernetes:helm.sh/v3:Release")
                   if r["name"].endswith("kubeflow-trainer"))
    assert trainer["urn"] in release["dependencies"]  # TrainJob/JobSet CRDs first
    for r, _ in objs:  # Kueue's CRDs and webhooks first
        assert release["urn"] in r["dependencies"], r["name"]
    # The ResourceQuota never refuses what the ClusterQueue admits.
    ceilings = quota_plan(cfg.teams, cfg.gpu_pools).ceilings()
    for q in resources(plan, "kubernetes:core/v1:ResourceQuota"):
        ns = q["inputs"]["metadata"]["namespace"]
        for res, n in ceilings[ns].items():
            assert int(q["inputs"]["spec"]["hard"][f"requests.{res}"]) >= n
    out = plan["outputs"]
    assert out["localQueue"] == LOCAL_QUEUE
    assert out["clusterQueues"] == {t.name: t.name for t in cfg.teams}


def test_prod_cohort_holds_what_no_team_is_guaranteed(plan_for):
    plan = plan_for("prod")
    (coh,) = [o for _, o in kueue_objects(plan) if o["kind"] == "Cohort"]
    gpus = {f["name"]: next(int(r["nominalQuota"]) for r in f["resources"]
                            if r["name"] == "nvidia.com/gpu")
            for f in coh["spec"]["resourceGroups"][0]["flavors"]}
    cqs = [o for _, o in kueue_objects(plan) if o["kind"] == "ClusterQueue"]
    held = sum(int(r["nominalQuota"]) for cq in cqs
               for f in cq["spec"]["resourceGroups"][0]["flavors"] for r in f["resources"]
               if r["name"] == "nvidia.com/gpu")
    assert held == sum(t.gpu_quota for t in load_config("prod").teams)
    assert sum(gpus.values()) + held == 248  # every GPU of every pool is admissible


def test_resource_quota_never_below_the_queue_ceiling():
    from components.services.teams import quota_hard

    t = team("research", 64)
    assert quota_hard(t, ["nvidia.com/gpu"], {"nvidia.com/gpu": 248}) == {
        "requests.nvidia.com/gpu": "248"}
    assert quota_hard(t, ["nvidia.com/gpu"]) == {"requests.nvidia.com/gpu": "64"}  # no Kueue
