"""k8s-pods-schedulable: the pure scheduling pieces (quantities, requests, tolerations, node
affinity, allocatable), the chart/add-on facts table, and the committed stacks."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from policy_fixtures import R, helm  # first: it imports fixtures_schedulability itself

from fixtures_schedulability import deployment, gpu_spec, monitoring_addon, pools  # isort: skip
from policies import by_name, facts
from policies.chart_pods import ADDONS, CHARTS, UNKNOWN, Setting, Workload, chart_name, render
from policies.scheduling import (
    EFA_HUGEPAGES,
    GIB,
    MIB,
    NodeShape,
    Taint,
    allocatable,
    kube_reserved_cpu,
    kube_reserved_memory,
    match_expression,
    match_term,
    max_pods_bound,
    parse_quantity,
    pod_requests,
    resource_misfit,
    selector_mismatch,
    taint_of,
    tolerates,
    untolerated,
)
from trainyard.check import PolicyConfig, run_checks

RULE = by_name()["k8s-pods-schedulable"]
ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------
# Quantities
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,value", [
    ("1", 1), ("0.5", Fraction(1, 2)), ("500m", Fraction(1, 2)), ("1500m", Fraction(3, 2)),
    ("100Mi", 100 * 2**20), ("5120Mi", 5 * 2**30), ("1034Gi", 1034 * 2**30), ("1Ti", 2**40),
    ("1Ki", 1024), ("1k", 1000), ("2M", 2 * 10**6), ("1G", 10**9), ("1e3", 1000),
    ("1.5Gi", 3 * 2**29), ("100u", Fraction(1, 10**4)), (8, 8), (0.25, Fraction(1, 4)),
])
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["", "Gi", "1Gb", "1 Gi", "one", "1.2.3", True, None])
def test_parse_quantity_rejects(bad):
    with pytest.raises(ValueError):
        parse_quantity(bad)


@given(n=st.integers(0, 10**6))
def test_quantity_suffixes_scale(n):
    assert parse_quantity(f"{n}Mi") == n * 2**20
    assert parse_quantity(f"{n}Gi") == parse_quantity(f"{n * 1024}Mi")
    assert parse_quantity(f"{n}m") * 1000 == n
    assert parse_quantity(f"{n}k") == parse_quantity(str(n * 1000)) == n * 1000


# ----------------------------------------------------------------------------------------------
# Pod requests
# ----------------------------------------------------------------------------------------------
def _c(requests=None, limits=None, **kw):
    return {"name": "c", "resources": {"requests": requests or {}, "limits": limits or {}}, **kw}


def test_limits_without_requests_count_as_requests():
    spec = {"containers": [_c({"cpu": "1"}, {"cpu": "2", "nvidia.com/gpu": "8"})]}
    assert pod_requests(spec) == {"cpu": 1, "nvidia.com/gpu": 8}


def test_containers_sum_and_init_containers_take_the_max():
    spec = {"containers": [_c({"cpu": "1", "memory": "1Gi"}), _c({"cpu": "500m"})],
            "initContainers": [_c({"cpu": "4"}), _c({"memory": "512Mi"})]}
    assert pod_requests(spec) == {"cpu": 4, "memory": GIB}


def test_native_sidecars_add_to_the_pod_and_to_later_init_containers():
    sidecar = _c({"cpu": "100m", "memory": "32Mi"}, restartPolicy="Always")
    spec = {"containers": [_c({"cpu": "2"})], "initContainers": [sidecar, _c({"cpu": "3"})],
            "overhead": {"memory": "10Mi"}}
    assert pod_requests(spec) == {"cpu": Fraction(31, 10), "memory": 42 * MIB}


@given(st.lists(st.integers(0, 64), min_size=1, max_size=5),
       st.lists(st.integers(0, 64), max_size=5))
def test_requests_are_at_least_every_container(regular, init):
    spec = {"containers": [_c({"cpu": str(c)}) for c in regular],
            "initContainers": [_c({"cpu": str(c)}) for c in init]}
    total = pod_requests(spec).get("cpu", 0)
    assert total == max([sum(regular)] + init)


# ----------------------------------------------------------------------------------------------
# Taints and tolerations
# ----------------------------------------------------------------------------------------------
GPU = Taint("nvidia.com/gpu", "true", "NoSchedule")


@pytest.mark.parametrize("toleration,ok", [
    ({"operator": "Exists"}, True),
    ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),
    ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
    ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, False),
    ({"key": "nvidia.com/gpu", "value": "true"}, True),  # operator defaults to Equal
    ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "false"}, False),
    ({"key": "nvidia.com/gpu", "operator": "Equal"}, False),
    ({"key": "CriticalAddonsOnly", "operator": "Exists"}, False),
    ({"effect": "NoSchedule", "operator": "Exists"}, True),
    ({"effect": "NoExecute", "operator": "Exists"}, False),
])
def test_toleration_semantics(toleration, ok):
    assert tolerates(toleration, GPU) is ok


def test_eks_taint_effects_and_prefer_no_schedule_never_blocks():
    assert taint_of({"key": "k", "value": "v", "effect": "NO_EXECUTE"}) == Taint("k", "v",
                                                                                 "NoExecute")
    soft = taint_of({"key": "k", "effect": "PREFER_NO_SCHEDULE"})
    assert untolerated([], [soft]) is None
    assert untolerated([], [soft, GPU]) == GPU


@given(key=st.text("abc./-", min_size=1, max_size=8), value=st.text("xyz", max_size=3),
       effect=st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule"]))
def test_exists_with_empty_key_tolerates_every_taint(key, value, effect):
    taint = Taint(key, value, effect)
    assert tolerates({"operator": "Exists"}, taint)
    assert tolerates({"key": key, "operator": "Equal", "value": value}, taint)
    assert not tolerates({"key": key + "x", "operator": "Exists"}, taint)


# ----------------------------------------------------------------------------------------------
# nodeSelector and node affinity
# ----------------------------------------------------------------------------------------------
NODE = {"trainyard.io/pool": frozenset(["a100"]), "gpus": frozenset(["8"]),
        "node.kubernetes.io/instance-type": frozenset(["p4d.24xlarge"])}


@pytest.mark.parametrize("expr,ok", [
    ({"key": "trainyard.io/pool", "operator": "In", "values": ["a100", "h100"]}, True),
    ({"key": "trainyard.io/pool", "operator": "In", "values": ["h100"]}, False),
    ({"key": "trainyard.io/pool", "operator": "NotIn", "values": ["h100"]}, True),
    ({"key": "missing", "operator": "NotIn", "values": ["x"]}, True),
    ({"key": "missing", "operator": "In", "values": ["x"]}, False),
    ({"key": "gpus", "operator": "Exists"}, True),
    ({"key": "gpus", "operator": "DoesNotExist"}, False),
    ({"key": "missing", "operator": "DoesNotExist"}, True),
    ({"key": "gpus", "operator": "Gt", "values": ["4"]}, True),
    ({"key": "gpus", "operator": "Lt", "values": ["4"]}, False),
    ({"key": "trainyard.io/pool", "operator": "Gt", "values": ["4"]}, False),
])
def test_match_expression(expr, ok):
    assert match_expression(expr, NODE) is ok


def test_terms_or_expressions_and():
    yes = {"key": "gpus", "operator": "Exists"}
    no = {"key": "missing", "operator": "Exists"}
    assert match_term({"matchExpressions": [yes, yes]}, NODE)
    assert not match_term({"matchExpressions": [yes, no]}, NODE)
    assert not match_term({}, NODE)  # an empty term matches nothing
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [no]}, {"matchExpressions": [yes]}]}}}
    assert selector_mismatch({"affinity": affinity}, NODE) is None
    affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"].pop()
    assert selector_mismatch({"affinity": affinity}, NODE) == "required node affinity"
    assert selector_mismatch({"nodeSelector": {"trainyard.io/pool": "h100"}}, NODE) == \
        "nodeSelector trainyard.io/pool=h100"


def test_open_labels_any_versus_all():
    """A Karpenter requirement `capacity-type In [spot, on-demand]` leaves the label open: a
    Deployment asking for spot can get it ("any"), a DaemonSet must match both ("all")."""
    labels = {"karpenter.sh/capacity-type": frozenset(["spot", "on-demand"])}
    spot = {"nodeSelector": {"karpenter.sh/capacity-type": "spot"}}
    assert selector_mismatch(spot, labels, "any") is None
    assert selector_mismatch(spot, labels, "all") is not None


# ----------------------------------------------------------------------------------------------
# Allocatable
# ----------------------------------------------------------------------------------------------
def test_kube_reserved_cpu_follows_the_eks_formula():
    assert kube_reserved_cpu(1) == Fraction(6, 100)
    assert kube_reserved_cpu(2) == Fraction(7, 100)
    assert kube_reserved_cpu(4) == Fraction(8, 100)
    assert kube_reserved_cpu(96) == Fraction(8, 100) + 92 * Fraction(25, 10000)
    assert kube_reserved_memory(110) == (255 + 1210) * MIB
    assert (max_pods_bound(8), max_pods_bound(96), max_pods_bound(96, karpenter=True)) == \
        (110, 250, 737)


def _shape(t: str, efa: int | None = None) -> NodeShape:
    f = facts.INSTANCES[t]
    return NodeShape(t, f.vcpus, f.memory_gib, f.gpus, f.vendor,
                     f.max_efa if efa is None else efa, max_pods_bound(f.vcpus))


@pytest.mark.parametrize("instance", sorted(facts.INSTANCES))
def test_allocatable_is_below_capacity(instance):
    f = facts.INSTANCES[instance]
    alloc = allocatable(_shape(instance))
    assert 0 < alloc["cpu"] < f.vcpus
    assert 0 < alloc["memory"] < f.memory_gib * GIB
    gpu = "aws.amazon.com/neuron" if f.vendor == "neuron" else "nvidia.com/gpu"
    assert alloc[gpu] == f.gpus
    assert alloc["vpc.amazonaws.com/efa"] == f.max_efa
    assert alloc["hugepages-2Mi"] == (EFA_HUGEPAGES if f.max_efa else 0)


def test_efa_and_hugepages_follow_the_attached_interfaces():
    attached = allocatable(_shape("p5.48xlarge", efa=16))
    none = allocatable(_shape("p5.48xlarge", efa=0))
    assert attached["vpc.amazonaws.com/efa"] == 16 and none["vpc.amazonaws.com/efa"] == 0
    assert attached["memory"] == none["memory"] - EFA_HUGEPAGES  # huge pages leave memory
    assert attached["hugepages-2Mi"] >= parse_quantity("5120Mi")


def test_resource_misfit_messages():
    shape = _shape("g5.12xlarge", efa=0)
    assert resource_misfit({"nvidia.com/gpu": Fraction(8)}, shape) == (
        True, "requests 8 nvidia.com/gpu, a g5.12xlarge node has 4")
    known, reason = resource_misfit({"memory": parse_quantity("190Gi")}, shape)
    assert known and reason.startswith("requests 190.0 GiB memory, a g5.12xlarge node has")
    assert resource_misfit({"example.com/fpga": Fraction(1)}, shape)[0] is False
    assert resource_misfit({"cpu": Fraction(1), "ephemeral-storage": Fraction(10**12)},
                           shape) == (True, "")


def test_jobspec_runtime_sizes_fit_their_nodes():
    """components/services/trainjob.py sizes a runtime at 90% of the allocatable memory less 2 GiB, the
    huge pages an EFA node pre-allocates taken out first: every type fits, with and without EFA
    (g5/g6 8x-24x EFA pools included, which the old sizing overfilled)."""
    from components.services.trainjob import EFA_PREALLOCATED_GIB

    for t, f in facts.INSTANCES.items():
        for efa in sorted({0, f.max_efa}):
            usable = f.memory_gib - (EFA_PREALLOCATED_GIB if efa else 0)
            requests = {"cpu": Fraction(f.vcpus - max(2, f.vcpus // 16)),
                        "memory": Fraction(int(usable * 0.9 - 2) * GIB),
                        "hugepages-2Mi": Fraction(5120 * MIB if efa else 0)}
            assert resource_misfit(requests, _shape(t, efa)) == (True, ""), (t, efa)


# ----------------------------------------------------------------------------------------------
# The chart / add-on facts table
# ----------------------------------------------------------------------------------------------
def test_render_merges_values_like_helm():
    w = Workload("w", "DaemonSet", "all", tolerations=Setting("t", [{"operator": "Exists"}]),
                 affinity=Setting("a", {"x": 1, "nodeAffinity": {"k": 1}}),
                 node_selector=Setting("ns", {"kubernetes.io/os": "linux"}))
    spec, unknown = render(w, {"t": [], "a": {"nodeAffinity": None, "y": 2},
                               "ns": {"pool": "p"}})
    assert not unknown
    assert spec["tolerations"] == []  # lists replace
    assert spec["affinity"] == {"x": 1, "y": 2}  # maps merge, null deletes
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "p"}


def test_render_unknown_default_and_switches():
    w = Workload("w", "DaemonSet", "all", tolerations=Setting("t", UNKNOWN),
                 enabled=Setting("on", True))
    assert render(w, {})[1] == ["t"]
    assert render(w, {"t": []})[1] == []
    assert render(w, {"on": False}) == (None, [])
    efs = ADDONS["aws-ebs-csi-driver"][0]
    assert render(efs, {})[0]["tolerations"] == [{"operator": "Exists"}]  # tolerateAllTaints
    assert {"operator": "Exists"} not in render(efs, {"node": {"tolerateAllTaints": False}})[0][
        "tolerations"]


def test_efa_plugin_default_instance_list_is_not_assumed():
    standard, privileged = CHARTS["aws-efa-k8s-device-plugin"]
    assert render(standard, {})[1] == ["supportedInstanceLabels.values"]
    values = {"supportedInstanceLabels": {"keys": ["trainyard.io/accelerator"],
                                          "values": ["nvidia"]},
              "privilegedSupportedInstanceLabels": {"values": []}}
    spec, unknown = render(standard, values)
    assert not unknown and spec["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "trainyard.io/accelerator", "operator": "In",
                               "values": ["nvidia"]}]}]
    assert render(privileged, values) == (None, [])


def test_every_chart_the_platform_pins_is_in_the_table():
    charts = yaml.safe_load((ROOT / "components/data/charts.yaml").read_text())["charts"]
    assert {chart_name(c["chart"]) for c in charts.values()} <= set(CHARTS)
    for workloads in list(CHARTS.values()) + list(ADDONS.values()):
        for w in workloads:
            assert w.kind in ("DaemonSet", "Deployment", "StatefulSet", "Job"), w
            assert (w.meant_for is not None) == (w.kind == "DaemonSet"), w.name


def test_every_addon_of_the_committed_stacks_is_in_the_table(any_plan):
    addons = {r["inputs"]["addonName"] for r in any_plan["resources"]
              if r["type"] == "aws:eks/addon:Addon"}
    assert addons <= set(ADDONS)


# ----------------------------------------------------------------------------------------------
# The committed stacks
# ----------------------------------------------------------------------------------------------
def _run(plan: dict):
    return run_checks(plan, PolicyConfig(), [RULE])


def _monitoring_addon(plan: dict) -> dict:
    return next(r for r in plan["resources"] if r["type"] == "aws:eks/addon:Addon"
                and r["inputs"]["addonName"] == "eks-node-monitoring-agent")


def _gpu_pools(plan: dict) -> dict:
    """NVIDIA pools (node groups and Karpenter NodePools): pool name -> their taints."""
    out = {}
    for r in plan["resources"]:
        i = r["inputs"]
        if r["type"] == "kubernetes:karpenter.sh/v1:NodePool":
            template = i["spec"]["template"]
            types = next((q["values"] for q in template["spec"]["requirements"]
                          if q["key"] == "node.kubernetes.io/instance-type"), [])
            if any(facts.vendor_of(t) == "nvidia" for t in types):
                out[template["metadata"]["labels"]["trainyard.io/pool"]] = [
                    taint_of(t) for t in template["spec"].get("taints") or []]
            continue
        if r["type"] != "aws:eks/nodeGroup:NodeGroup":
            continue
        types = i.get("instanceTypes") or []
        if i.get("amiType", "").endswith("NVIDIA") or any(facts.vendor_of(t) == "nvidia"
                                                         for t in types):
            out[i["labels"]["trainyard.io/pool"]] = [taint_of(t) for t in i.get("taints") or []]
    return out


def _dcgm_pools(report) -> set:
    return {v["message"].split(" cannot run on pool ")[1].split(":")[0]
            for v in report.violations if v["message"].startswith("DaemonSet dcgm-server")}


def test_dcgm_server_verdict_agrees_with_the_addon_configuration(any_plan):
    """dcgm-server has no tolerations unless configurationValues give some: the rule reports it on
    exactly the GPU pools whose taints dcgmAgent.tolerations leave untolerated."""
    gpu = _gpu_pools(any_plan)
    assert gpu, "every committed stack has a GPU pool"
    raw = _monitoring_addon(any_plan)["inputs"].get("configurationValues")
    tolerations = ((json.loads(raw) if raw else {}).get("dcgmAgent") or {}).get("tolerations") \
        or []
    expected = {p for p, taints in gpu.items() if untolerated(tolerations, taints)}
    report = _run(any_plan)
    assert not report.errors and not report.cannot_judge, (report.errors, report.cannot_judge)
    assert _dcgm_pools(report) == expected
    for v in report.violations:
        assert v["urn"] == _monitoring_addon(any_plan)["urn"] or \
            not v["message"].startswith("DaemonSet dcgm-server")


def test_without_dcgm_tolerations_every_gpu_pool_is_reported(any_plan):
    addon = _monitoring_addon(any_plan)
    config = json.loads(addon["inputs"].get("configurationValues") or "{}")
    config.pop("dcgmAgent", None)
    addon["inputs"]["configurationValues"] = json.dumps(config)
    report = _run(any_plan)
    assert _dcgm_pools(report) == {p for p, taints in _gpu_pools(any_plan).items() if taints}
    assert all("dcgmAgent.tolerations" in v["message"] for v in report.violations
               if v["message"].startswith("DaemonSet dcgm-server"))


def test_committed_stacks_have_no_other_unschedulable_pods(any_plan):
    report = _run(any_plan)
    others = [v for v in report.violations if not v["message"].startswith("DaemonSet dcgm-server")]
    assert not others, others


# ----------------------------------------------------------------------------------------------
# What cannot be judged is never a pass
# ----------------------------------------------------------------------------------------------
UNKNOWN_STRING = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's unknown-string sentinel


def _fixture_plan(*extra) -> dict:
    return {"project": "trainyard", "stack": "test", "resources": pools() + list(extra)}


def test_unknown_scheduling_fields_cannot_be_judged_but_other_unknowns_do_not_matter():
    spec = gpu_spec(gpus=4, nodeSelector={"trainyard.io/pool": "eval"})
    spec["containers"][0]["image"] = UNKNOWN_STRING  # e.g. an ECR repository the stack creates
    report = _run(_fixture_plan(deployment("train", spec)))
    assert not report.violations and not report.cannot_judge and not report.errors
    spec["nodeSelector"]["trainyard.io/pool"] = UNKNOWN_STRING
    report = _run(_fixture_plan(deployment("train", spec)))
    assert report.cannot_judge and not report.errors


def test_unknown_charts_and_addons_cannot_be_judged():
    chart = helm("mystery", "mystery-chart", "1.0.0", "https://example.com/charts")
    addon = R("aws:eks/addon:Addon", "cw", {"clusterName": "c",
                                             "addonName": "amazon-cloudwatch-observability"})
    report = _run(_fixture_plan(chart, addon, monitoring_addon(None)))
    assert report.cannot_judge and "mystery-chart" in report.cannot_judge[0]["message"]
    # what could be judged is still reported
    assert any("dcgm-server" in v["message"] for v in report.violations)


def test_efa_plugin_without_an_instance_list_cannot_be_judged():
    r = helm("efa", "aws-efa-k8s-device-plugin", "0.5.26", "https://aws.github.io/eks-charts")
    r["inputs"]["values"] = {"tolerations": [{"operator": "Exists"}]}
    report = _run(_fixture_plan(r))
    assert not report.violations
    assert "supportedInstanceLabels.values" in report.cannot_judge[0]["message"]


def test_yaml_configuration_values_are_read_too():
    addon = monitoring_addon(None)
    addon["inputs"]["configurationValues"] = "dcgmAgent:\n  tolerations:\n  - operator: Exists\n"
    report = _run(_fixture_plan(addon))
    assert not report.violations and not report.cannot_judge
    addon["inputs"]["configurationValues"] = "not a map"
    assert "not a JSON or YAML map" in _run(_fixture_plan(addon)).cannot_judge[0]["message"]
