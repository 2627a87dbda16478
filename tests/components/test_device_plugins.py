"""Device plugins: pinned chart versions (never a known-bad one), values that use only keys the
upstream charts have, and scheduling: the EFA plugin can land only on EFA nodes, the NVIDIA
plugin on every NVIDIA AL2023 GPU node."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from components.compute.addons import ChartPin, chart, chart_problem, parse_charts, version_tuple
from components.compute.device_plugins import efa_plugin_values, nvidia_plugin_values
from components.services.k8s_names import ACCELERATOR_LABEL, EFA_LABEL, POOL_LABEL
from tests.conftest import resources

RELEASE = "kubernetes:helm.sh/v3:Release"
NG = "aws:eks/nodeGroup:NodeGroup"


# -- pins --------------------------------------------------------------------------------------
def test_chart_pins():
    nvidia, efa = chart("nvidia-device-plugin"), chart("aws-efa-k8s-device-plugin")
    assert (nvidia.chart, nvidia.version, nvidia.repo) == (
        "nvidia-device-plugin", "0.18.2", "https://nvidia.github.io/k8s-device-plugin")
    assert not (0, 19, 0) <= version_tuple(nvidia.version) <= (0, 19, 2)
    assert (efa.chart, efa.version, efa.repo) == (
        "aws-efa-k8s-device-plugin", "0.5.26", "https://aws.github.io/eks-charts")
    # Chart, not plugin, versions: chart 0.5.20 is the oldest known to ship plugin >= v0.5.10
    # (p6-b200); chart 0.5.10 shipped an older plugin.
    assert efa.minimum == "0.5.20"
    assert version_tuple(efa.version) >= version_tuple(efa.minimum)


def test_nvidia_avoid_list_is_the_mofed_default_range():
    """0.19.0 (#1550) switched MOFED on by default, injecting every uverbs device (EFA's too)
    into GPU containers; 0.19.3 (#1837) switched it back off. Exactly the releases between."""
    from policies.supply_chain import DEFAULT_BAD_VERSIONS

    nvidia = chart("nvidia-device-plugin")
    assert nvidia.avoid == ("0.19.0", "0.19.1", "0.19.2")
    assert DEFAULT_BAD_VERSIONS["nvidia-device-plugin"] == list(nvidia.avoid)
    assert "0.19.3" not in nvidia.avoid


@pytest.mark.parametrize("version", ["0.19.0", "0.19.1", "0.19.2"])
def test_known_bad_nvidia_versions_refused(version):
    raw = {"nvidia-device-plugin": {"chart": "nvidia-device-plugin", "repo": "r",
                                    "version": version, "avoid": ["0.19.0", "0.19.1", "0.19.2"]}}
    with pytest.raises(ValueError, match="known-bad"):
        parse_charts(raw)


def test_old_efa_plugin_and_loose_pins_refused():
    assert "older than the minimum" in chart_problem(
        "efa", ChartPin("c", "r", "0.5.9", minimum="0.5.10"))
    assert "exact" in chart_problem("x", ChartPin("c", "r", "0.18"))


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_releases_in_plan(plan_for, stack):
    releases = {r["inputs"]["chart"]: r["inputs"] for r in resources(plan_for(stack), RELEASE)}
    for name in ("nvidia-device-plugin", "aws-efa-k8s-device-plugin"):
        pin = chart(name)
        r = releases[name]
        assert (r["version"], r["repositoryOpts"]["repo"]) == (pin.version, pin.repo)
        assert r["namespace"] == "kube-system"


def test_dev_has_no_efa_plugin(plan_for):
    charts = {r["inputs"]["chart"] for r in resources(plan_for("dev"), RELEASE)}
    assert "nvidia-device-plugin" in charts and "aws-efa-k8s-device-plugin" not in charts


# -- scheduling --------------------------------------------------------------------------------
_EFFECT = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute",
           "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


def _expr_ok(expr, labels):
    op, key = expr["operator"], expr["key"]
    if op == "In":
        return labels.get(key) in expr["values"]
    if op == "NotIn":
        return labels.get(key) not in expr["values"]
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    raise AssertionError(op)


def _tolerated(taint, tolerations):
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint["effect"]:
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t["key"] == taint["key"]):
            return True
        if t.get("key") == taint["key"] and t.get("value") == taint.get("value"):
            return True
    return False


def schedulable(pod, labels, taints):
    """kube-scheduler's filters for a DaemonSet pod: nodeSelector, required node affinity,
    NoSchedule/NoExecute taints."""
    if any(labels.get(k) != v for k, v in pod.get("nodeSelector", {}).items()):
        return False
    terms = (pod.get("affinity", {}).get("nodeAffinity", {})
             .get("requiredDuringSchedulingIgnoredDuringExecution", {})
             .get("nodeSelectorTerms"))
    if terms is not None and not any(all(_expr_ok(e, labels) for e in t["matchExpressions"])
                                     for t in terms):
        return False
    return all(_tolerated(t, pod.get("tolerations", []))
               for t in taints if t["effect"] in ("NoSchedule", "NoExecute"))


def efa_pod(values):
    """The EFA chart's (single) DaemonSet pod spec, as templates/daemonset.yaml renders it: the
    values' nodeSelector; a required node-affinity term per `supportedInstanceLabels` key (`In`
    its values), the last one also excluding EKS Auto Mode nodes; CriticalAddonsOnly plus the
    values' tolerations."""
    labels = values["supportedInstanceLabels"]
    terms = [{"matchExpressions": [{"key": k, "operator": "In", "values": labels["values"]}]}
             for k in labels["keys"]]
    terms[-1]["matchExpressions"].append(
        {"key": "eks.amazonaws.com/compute-type", "operator": "NotIn", "values": ["auto"]})
    return {"nodeSelector": values.get("nodeSelector", {}),
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": terms}}},
            "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                            *values.get("tolerations", [])]}


def nodes(plan):
    """(pool, labels, taints) of every node group in the plan."""
    out = []
    for ng in resources(plan, NG):
        i = ng["inputs"]
        taints = [{"key": t["key"], "value": t.get("value"), "effect": _EFFECT[t["effect"]]}
                  for t in i.get("taints", [])]
        out.append((i["labels"][POOL_LABEL], i["labels"], taints))
    return out


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_efa_plugin_only_on_efa_nodes(plan_for, stack):
    plan = plan_for(stack)
    efa_pools = {n for n, p in plan["outputs"]["gpuPools"].items() if p["efa"]}
    releases = {r["inputs"]["chart"]: r["inputs"]["values"] for r in resources(plan, RELEASE)}
    values = releases.get("aws-efa-k8s-device-plugin")
    if values is None:
        assert not efa_pools
        return
    for pool, labels, taints in nodes(plan):
        assert schedulable(efa_pod(values), labels, taints) == (pool in efa_pools), pool


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_nvidia_plugin_on_every_gpu_node(plan_for, stack):
    plan = plan_for(stack)
    values = next(r["inputs"]["values"] for r in resources(plan, RELEASE)
                  if r["inputs"]["chart"] == "nvidia-device-plugin")
    for pool, labels, taints in nodes(plan):
        assert schedulable(values, labels, taints) == (pool != "system"), pool


def test_nvidia_plugin_skips_bottlerocket_and_neuron():
    values = nvidia_plugin_values()
    taint = [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    base = {ACCELERATOR_LABEL: "nvidia", "trainyard.io/ami-family": "al2023"}
    assert schedulable(values, base, taint)
    assert not schedulable(values, {**base, "trainyard.io/ami-family": "bottlerocket"}, taint)
    assert not schedulable(values, {**base, ACCELERATOR_LABEL: "neuron"}, [])


def test_neuron_efa_nodes_get_the_plugin_only_when_a_neuron_pool_has_efa():
    trn = {ACCELERATOR_LABEL: "neuron", EFA_LABEL: "true"}
    taint = [{"key": "aws.amazon.com/neuron", "value": "true", "effect": "NoSchedule"}]
    assert schedulable(efa_pod(efa_plugin_values({"nvidia", "neuron"})), trn, taint)
    assert not schedulable(efa_pod(efa_plugin_values({"nvidia"})), trn, taint)


# -- values use only keys the charts have ----------------------------------------------------
CHART_KEYS = yaml.safe_load(
    (Path(__file__).parent / "data" / "chart_value_keys.yaml").read_text())


def unknown_keys(values: dict, known: list[str], prefix: str = "") -> list[str]:
    """Key paths of `values` that are neither a recorded key path nor below one."""
    out = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path in known:
            continue
        if isinstance(value, dict) and any(k.startswith(path + ".") for k in known):
            out += unknown_keys(value, known, path + ".")
        else:
            out.append(path)
    return out


def test_unknown_keys():
    known = ["a.b", "c"]
    assert unknown_keys({"a": {"b": 1, "x": 2}, "c": {"any": 1}, "d": 0}, known) == ["a.x", "d"]


@pytest.mark.parametrize("vendors", [{"nvidia"}, {"neuron"}, {"nvidia", "neuron"}])
def test_efa_values_use_only_keys_the_chart_has(vendors):
    known = CHART_KEYS["aws-efa-k8s-device-plugin"]["keys"]
    assert unknown_keys(efa_plugin_values(vendors), known) == []
    # What the fork / draft eks-charts#1244 added: the released chart would ignore it.
    assert "privilegedSupportedInstanceLabels" not in known


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_efa_values_in_the_plan_use_only_keys_the_chart_has(plan_for, stack):
    values = next(r["inputs"]["values"] for r in resources(plan_for(stack), RELEASE)
                  if r["inputs"]["chart"] == "aws-efa-k8s-device-plugin")
    assert unknown_keys(values, CHART_KEYS["aws-efa-k8s-device-plugin"]["keys"]) == []


label_values = st.sampled_from(["true", "false", "nvidia", "neuron", "", "yes"])


@given(st.dictionaries(st.sampled_from([EFA_LABEL, ACCELERATOR_LABEL, POOL_LABEL, "other"]),
                       label_values),
       st.lists(st.sampled_from(["nvidia.com/gpu", "aws.amazon.com/neuron", "aws.amazon.com/efa",
                                 "CriticalAddonsOnly"]), unique=True))
def test_efa_plugin_never_lands_without_efa_label(labels, taint_keys):
    taints = [{"key": k, "value": "true", "effect": "NoSchedule"} for k in taint_keys]
    if schedulable(efa_pod(efa_plugin_values({"nvidia", "neuron"})), labels, taints):
        assert labels.get(EFA_LABEL) == "true"
