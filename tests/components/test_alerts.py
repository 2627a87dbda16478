"""Alert and recording rules (components/data/alerts/*.yaml): promtool validates every file, each
rule names only provided metrics, and `promtool test rules` shows the important alerts fire on
synthetic series (and stay quiet where they should) and the recording rules record what they
claim."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from components.config import MonitoringConfig
from components.services import monitoring as m

ALERT_FILES = sorted(m.ALERTS_DIR.glob("*.yaml"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (`apt-get install prometheus`; .ci/run "
                             "installs it in CI)")


# The idle-cost thresholds of cost.yaml (documented there and in docs/monitoring.md).
IDLE_UTIL_PERCENT = 5
"""A GPU is idle while DCGM_FI_DEV_GPU_UTIL stays below this."""
IDLE_WINDOW = "1h"
"""... for this long."""


def all_rules():
    for path in ALERT_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield path.name, rule


def rules():
    """Alerting rules only."""
    return ((f, r) for f, r in all_rules() if "alert" in r)


def rule_name(rule):
    return rule.get("alert") or rule["record"]


def test_there_are_alert_files():
    assert {p.name for p in ALERT_FILES} == {"gpu.yaml", "efa.yaml", "nodes.yaml",
                                              "training.yaml", "cost.yaml", "serving.yaml"}


@needs_promtool
@pytest.mark.parametrize("path", ALERT_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path):
    out = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_rules_are_alerts_with_severity_and_text():
    names = []
    for _file, rule in rules():
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        names.append(rule["alert"])
    assert len(names) == len(set(names))


def test_recording_rules_are_trainyard_level_metric_operation():
    """Recording rules follow Prometheus's `level:metric:operations`, in trainyard's namespace,
    only in cost.yaml, each recorded once."""
    records = [(f, r) for f, r in all_rules() if "alert" not in r]
    assert records
    for file, rule in records:
        assert file == "cost.yaml", f"{file}: {rule}"
        assert re.fullmatch(r"trainyard:[a-z0-9_]+:[a-z0-9_]+", rule["record"])
        assert set(rule) <= {"record", "expr", "labels"}
    names = [r["record"] for _, r in records]
    assert len(names) == len(set(names)) and set(names) == m.recorded_metrics()


def test_rules_reference_only_provided_metrics():
    known = m.known_metrics() | m.recorded_metrics()
    for file, rule in all_rules():
        names = m.promql_metric_names(rule["expr"])
        assert names and not names - known, f"{file} {rule_name(rule)}: {sorted(names - known)}"


def test_idle_cost_rules_use_the_documented_thresholds():
    spec = m.alert_rule_files()["cost"]
    (idle,) = [r["expr"] for g in spec["groups"] for r in g["rules"]
               if r.get("record") == "trainyard:gpu_idle_allocated:count"]
    assert f"DCGM_FI_DEV_GPU_UTIL{{exported_pod!=\"\"}}[{IDLE_WINDOW}]) < {IDLE_UTIL_PERCENT}" in idle
    assert f"offset {IDLE_WINDOW}" in idle
    (gpu_idle,) = [r["expr"] for g in m.alert_rule_files()["gpu"]["groups"] for r in g["rules"]
                   if r.get("alert") == "GpuAllocatedButIdle"]
    assert gpu_idle.endswith(f"< {IDLE_UTIL_PERCENT}"), "one idle threshold for both alerts"
    text = (m.ALERTS_DIR / "cost.yaml").read_text()
    assert f"IDLE_UTIL_PERCENT = {IDLE_UTIL_PERCENT} " in text and \
        f"IDLE_WINDOW = {IDLE_WINDOW} " in text
    assert f"below {IDLE_UTIL_PERCENT}% utilisation for the last hour" in " ".join(text.split())


def test_alerts_cover_what_the_issue_asks_for():
    names = {rule["alert"] for _, rule in rules()}
    assert {"GpuXidError", "GpuXidFatal", "GpuFallenOffBus", "GpuMissingFromNode",
            "GpuTemperatureHigh", "GpuNodeNotReady", "GpuAllocatedButIdle", "EfaReceiveDrops",
            "EfaRdmaErrors", "EfaPortDown", "TeamGpusIdle"} <= names
    assert {"trainyard:gpu_allocated:count", "trainyard:gpu_idle_allocated:count",
            "trainyard:gpu_allocated_hours:sum24h",
            "trainyard:gpu_idle_allocated_hours:sum24h"} <= m.recorded_metrics()


# ----------------------------------------------------------------------------------------------
# promtool test rules
# ----------------------------------------------------------------------------------------------
def alert(name, t, *labels):
    """An alert_rule_test: `name` evaluated at `t` expecting one alert per labels dict."""
    return {"eval_time": t, "alertname": name, "exp_alerts": [{"exp_labels": lb} for lb in labels]}


def recorded(name, t, *samples):
    """A promql_expr_test: the recorded series `name` at `t` are these (labels, value)."""
    return {"expr": name, "eval_time": t,
            "exp_samples": [{"labels": name + "{" + ", ".join(f'{k}="{v}"' for k, v in lb.items())
                             + "}", "value": v} for lb, v in samples]}


def series(name, values, **labels):
    return {"series": name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}",
            "values": values}


def gpu_pod(namespace, pod, node, gpus, phases):
    """kube-state-metrics series of a pod requesting `gpus` GPUs on `node` ("" until
    scheduled); `phases`: phase -> promtool values (1 while the pod is in it)."""
    out = [series("kube_pod_status_phase", values, namespace=namespace, pod=pod, phase=phase)
           for phase, values in phases.items()]
    out.append(series("kube_pod_container_resource_requests", f"{gpus}x300",
                      namespace=namespace, pod=pod, container="node", node=node,
                      resource="nvidia_com_gpu", unit="integer"))
    out.append(series("kube_pod_container_resource_requests", "4x300", namespace=namespace,
                      pod=pod, container="node", node=node, resource="cpu", unit="core"))
    return out


def pool_node(node, pool):
    return series("kube_node_labels", "1x300", node=node, label_trainyard_io_pool=pool,
                  label_trainyard_io_accelerator="nvidia")


def dcgm_util(node, gpu, values, namespace=None, pod=None):
    pod_labels = {"exported_namespace": namespace, "exported_pod": pod,
                  "exported_container": "node"} if pod else {}
    return series("DCGM_FI_DEV_GPU_UTIL", values, gpu=str(gpu), node=node,
                  namespace="monitoring", pod="dcgm-exporter-abcde", **pod_labels)


ALLOCATED = "trainyard:gpu_allocated:count"
IDLE = "trainyard:gpu_idle_allocated:count"
ALLOCATED_HOURS = "trainyard:gpu_allocated_hours:sum24h"
IDLE_HOURS = "trainyard:gpu_idle_allocated_hours:sum24h"

CASES = [
    {   # XID 79: the GPU fell off the bus
        "interval": "1m",
        "input_series": [{"series": 'DCGM_FI_DEV_XID_ERRORS{gpu="0", node="n1"}',
                          "values": "0 0 79x10"},
                         {"series": 'DCGM_FI_DEV_XID_ERRORS{gpu="1", node="n1"}',
                          "values": "0x12"}],
        "alert_rule_test": [
            alert("GpuFallenOffBus", "1m"),
            alert("GpuFallenOffBus", "5m", {"severity": "critical", "gpu": "0", "node": "n1"}),
            alert("GpuXidFatal", "5m", {"severity": "critical", "gpu": "0", "node": "n1"}),
            alert("GpuXidError", "5m", {"severity": "warning", "gpu": "0", "node": "n1"}),
        ],
    },
    {   # an application XID (13) is a warning, not fatal
        "interval": "1m",
        "input_series": [{"series": 'DCGM_FI_DEV_XID_ERRORS{gpu="3", node="n2"}',
                          "values": "13x10"}],
        "alert_rule_test": [
            alert("GpuXidError", "5m", {"severity": "warning", "gpu": "3", "node": "n2"}),
            alert("GpuXidFatal", "5m"),
        ],
    },
    {   # 7 of 8 GPUs report: one is missing
        "interval": "1m",
        "input_series": [
            *[{"series": f'DCGM_FI_DEV_GPU_TEMP{{gpu="{g}", node="n1"}}', "values": "50x20"}
              for g in range(7)],
            {"series": 'kube_node_status_capacity{node="n1", resource="nvidia_com_gpu"}',
             "values": "8x20"},
            *[{"series": f'DCGM_FI_DEV_GPU_TEMP{{gpu="{g}", node="n2"}}', "values": "50x20"}
              for g in range(8)],
            {"series": 'kube_node_status_capacity{node="n2", resource="nvidia_com_gpu"}',
             "values": "8x20"},
        ],
        "alert_rule_test": [alert("GpuMissingFromNode", "15m",
                                  {"severity": "critical", "node": "n1"})],
    },
    {   # hot for 10 minutes
        "interval": "1m",
        "input_series": [{"series": 'DCGM_FI_DEV_GPU_TEMP{gpu="0", node="n1"}',
                          "values": "87x10"}],
        "alert_rule_test": [
            alert("GpuTemperatureHigh", "3m"),
            alert("GpuTemperatureHigh", "7m", {"severity": "warning", "gpu": "0", "node": "n1"}),
            alert("GpuTemperatureCritical", "7m"),
        ],
    },
    {   # a pod's GPUs idle for 40 minutes; an unallocated idle GPU does not count
        "interval": "1m",
        "input_series": [
            {"series": 'DCGM_FI_DEV_GPU_UTIL{gpu="0", node="n1", exported_namespace="research", '
                       'exported_pod="llm-a100-2n-node-0-0-abcde"}', "values": "1x40"},
            {"series": 'DCGM_FI_DEV_GPU_UTIL{gpu="1", node="n1", exported_namespace="research", '
                       'exported_pod="llm-a100-2n-node-0-0-abcde"}', "values": "2x40"},
            {"series": 'DCGM_FI_DEV_GPU_UTIL{gpu="2", node="n1"}', "values": "0x40"},
        ],
        "alert_rule_test": [
            alert("GpuAllocatedButIdle", "20m"),
            alert("GpuAllocatedButIdle", "35m", {
                "severity": "warning", "exported_namespace": "research",
                "exported_pod": "llm-a100-2n-node-0-0-abcde"}),
        ],
    },
    {   # a GPU node and a system node NotReady
        "interval": "1m",
        "input_series": [
            {"series": 'kube_node_status_condition{condition="Ready", status="true", node="g1"}',
             "values": "0x20"},
            {"series": 'kube_node_labels{node="g1", label_trainyard_io_accelerator="nvidia", '
                       'label_trainyard_io_pool="a100"}', "values": "1x20"},
            {"series": 'kube_node_status_condition{condition="Ready", status="true", node="s1"}',
             "values": "0x20"},
            {"series": 'kube_node_labels{node="s1", label_trainyard_io_accelerator="none", '
                       'label_trainyard_io_pool="system"}', "values": "1x20"},
        ],
        "alert_rule_test": [
            alert("GpuNodeNotReady", "7m", {
                "severity": "critical", "condition": "Ready", "status": "true", "node": "g1",
                "label_trainyard_io_pool": "a100"}),
            alert("NodeNotReady", "7m"),
            alert("NodeNotReady", "12m",
                  *[{"severity": "warning", "condition": "Ready", "status": "true", "node": n}
                    for n in ("g1", "s1")]),
        ],
    },
    {   # EFA drops and RDMA errors
        "interval": "1m",
        "input_series": [
            {"series": 'node_efa_rx_drops_total{device="rdmap16s27", port="1", node="g1"}',
             "values": "0+10x20"},
            {"series": 'node_efa_rdma_write_wr_err_total{device="rdmap16s27", port="1", '
                       'node="g1"}', "values": "0 0 0 1 1 1 1 1 1 1"},
            {"series": 'node_infiniband_state_id{device="rdmap16s27", port="1", node="g1"}',
             "values": "4x10"},
        ],
        "alert_rule_test": [
            alert("EfaReceiveDrops", "15m",
                  {"severity": "warning", "device": "rdmap16s27", "port": "1", "node": "g1"}),
            alert("EfaRdmaErrors", "5m",
                  {"severity": "warning", "device": "rdmap16s27", "port": "1", "node": "g1"}),
            alert("EfaPortDown", "8m"),
        ],
    },
    {   # rank 0 stopped writing metrics
        "interval": "1m",
        "input_series": [{"series": 'trainyard_train_metrics_file_mtime_seconds{namespace='
                                    '"research", trainjob="llm-a100-2n"}', "values": "0x30"}],
        "alert_rule_test": [
            alert("TrainingStalled", "10m"),
            alert("TrainingStalled", "22m", {"severity": "warning", "namespace": "research",
                                              "trainjob": "llm-a100-2n"}),
        ],
    },
    {   # Idle cost. research's pod holds 2 a100 GPUs at 1-3% (idle); vision's pod holds 2 a100
        # GPUs, one busy, one idle but for a burst at 40 min; an l4 GPU nobody holds sits at 0;
        # a Pending pod asks for 8 GPUs it has not got (no node yet).
        "interval": "1m",
        "input_series": [
            pool_node("n1", "a100"), pool_node("n2", "a100"), pool_node("n3", "l4"),
            *gpu_pod("research", "idle-0", "n1", 2, {"Running": "1x300"}),
            *gpu_pod("vision", "busy-0", "n2", 2, {"Running": "1x300"}),
            *gpu_pod("vision", "waiting-0", "", 8, {"Pending": "1x300", "Running": "0x300"}),
            dcgm_util("n1", 0, "1x300", "research", "idle-0"),
            dcgm_util("n1", 1, "3x300", "research", "idle-0"),
            dcgm_util("n2", 0, "90x300", "vision", "busy-0"),
            dcgm_util("n2", 1, f"0x40 50 {IDLE_UTIL_PERCENT - 1}x259", "vision", "busy-0"),
            dcgm_util("n3", 0, "0x300"),
        ],
        "alert_rule_test": [
            alert("TeamGpusIdle", "30m"),
            alert("TeamGpusIdle", "59m"),  # idle, but not yet for an hour
            alert("TeamGpusIdle", "61m",
                  {"severity": "warning", "pool": "a100", "namespace": "research"}),
            alert("TeamGpusIdle", "90m",  # vision's burst at 40 min is within the hour
                  {"severity": "warning", "pool": "a100", "namespace": "research"}),
            alert("TeamGpusIdle", "2h",
                  {"severity": "warning", "pool": "a100", "namespace": "research"},
                  {"severity": "warning", "pool": "a100", "namespace": "vision"}),
        ],
        "promql_expr_test": [
            recorded(ALLOCATED, "30m", ({"pool": "a100", "namespace": "research"}, 2),
                     ({"pool": "a100", "namespace": "vision"}, 2)),
            recorded(IDLE, "30m", ({"pool": "a100", "namespace": "research"}, 0),
                     ({"pool": "a100", "namespace": "vision"}, 0)),
            recorded(IDLE, "61m", ({"pool": "a100", "namespace": "research"}, 2),
                     ({"pool": "a100", "namespace": "vision"}, 0)),
            recorded(IDLE, "2h", ({"pool": "a100", "namespace": "research"}, 2),
                     ({"pool": "a100", "namespace": "vision"}, 1)),
        ],
    },
    {   # GPU-hours: a pod holds 8 GPUs, idle, for 2 h and then succeeds (it keeps its request
        # until deleted; DCGM's last samples linger 5 min). 16 GPU-hours allocated; 8 idle (the
        # second hour: a GPU counts as idle once it has been idle an hour).
        "interval": "1m",
        "input_series": [
            pool_node("n1", "a100"),
            *gpu_pod("research", "done-0", "n1", 8,
                     {"Running": "1x119 0x180", "Succeeded": "0x119 1x180"}),
            *[dcgm_util("n1", g, "0x119", "research", "done-0") for g in range(8)],
        ],
        "alert_rule_test": [
            alert("TeamGpusIdle", "90m",
                  {"severity": "warning", "pool": "a100", "namespace": "research"}),
            alert("TeamGpusIdle", "2h"),  # Succeeded: nothing allocated any more
        ],
        "promql_expr_test": [
            recorded(ALLOCATED, "3h"),
            recorded(IDLE, "3h"),
            recorded(ALLOCATED_HOURS, "3h", ({"pool": "a100", "namespace": "research"}, 16)),
            recorded(IDLE_HOURS, "3h", ({"pool": "a100", "namespace": "research"}, 8)),
        ],
    },
    {   # Capacity, use and jobs: an 8-GPU a100 node; research's TrainJob "llm" holds 4 GPUs at
        # 50 % and 100 %, 0 %, 0 %; 4 GPUs nobody holds. Used = 0.5 + 1 = 1.5 GPUs.
        "interval": "1m",
        "input_series": [
            pool_node("n1", "a100"),
            series("kube_node_status_capacity", "8x300", node="n1", resource="nvidia_com_gpu",
                   unit="integer"),
            *gpu_pod("research", "llm-node-0-0", "n1", 4, {"Running": "1x300"}),
            series("kube_pod_labels", "1x300", namespace="research", pod="llm-node-0-0",
                   label_jobset_sigs_k8s_io_jobset_name="llm"),
            dcgm_util("n1", 0, "50x300", "research", "llm-node-0-0"),
            dcgm_util("n1", 1, "100x300", "research", "llm-node-0-0"),
            dcgm_util("n1", 2, "0x300", "research", "llm-node-0-0"),
            dcgm_util("n1", 3, "0x300", "research", "llm-node-0-0"),
            dcgm_util("n1", 4, "0x300"),
        ],
        "promql_expr_test": [
            recorded("trainyard:gpu_capacity:count", "10m", ({"pool": "a100"}, 8)),
            recorded("trainyard:gpu_used:sum", "10m",
                     ({"pool": "a100", "namespace": "research"}, 1.5)),
            recorded("trainyard:gpu_allocated_by_job:count", "10m",
                     ({"namespace": "research", "job_name": "llm"}, 4)),
            # 181 one-minute samples from 0 to 3 h inclusive, over 60
            recorded("trainyard:gpu_capacity_hours:sum24h", "3h", ({"pool": "a100"}, 8 * 181 / 60)),
            recorded("trainyard:gpu_allocated_by_job_hours:sum24h", "3h",
                     ({"namespace": "research", "job_name": "llm"}, 4 * 181 / 60)),
        ],
    },
]


@needs_promtool
def test_promtool_unit_tests(tmp_path):
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": _rule_files_for_promtool(tmp_path, ALERT_FILES),
                                     "evaluation_interval": "1m",
                                     "tests": CASES}, sort_keys=False))
    out = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_team_gpus_idle_names_pool_team_count_and_what_to_do(tmp_path):
    """The shipped annotations (templates and the query for the team's allocated GPUs)."""
    test = {
        "interval": "1m",
        "input_series": [
            pool_node("n1", "a100"),
            *gpu_pod("research", "llm-0", "n1", 8, {"Running": "1x100"}),
            *[dcgm_util("n1", g, "0x100" if g < 3 else "97x100", "research", "llm-0")
              for g in range(8)],
        ],
        "alert_rule_test": [{"eval_time": "70m", "alertname": "TeamGpusIdle", "exp_alerts": [{
            "exp_labels": {"severity": "warning", "pool": "a100", "namespace": "research"},
            "exp_annotations": {
                "summary": "Team research: 3 allocated GPU(s) in pool a100 idle for an hour",
                "description": (
                    "3 of the 8 GPUs that team research's running pods hold in pool a100 stayed "
                    "below 5% utilisation for the last hour. They are paid for and kept from "
                    "every other team."),
                "runbook": (
                    'Find the pods: the "Cost and waste" row of the trainyard / GPUs dashboard, '
                    "or `kubectl -n research get pods -o wide` on the pool's nodes. Check the "
                    "job: a hung collective, a crashed rank or a job waiting on input looks like "
                    "this. If it is not doing useful work, release the GPUs: `kubectl -n "
                    "research delete trainjob <name>` (it resumes from its newest checkpoint "
                    "when rendered again)."),
            }}]}],
    }
    tests = tmp_path / "annotations.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(m.ALERTS_DIR / "cost.yaml")],
                                     "evaluation_interval": "1m", "tests": [test]},
                                    sort_keys=False))
    out = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _rule_files_for_promtool(tmp_path, paths):
    """Copies of `paths` without annotations (templates `check rules` already validates), so a
    test states only which alerts fire with which labels."""
    out = []
    for path in paths:
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
        copy = tmp_path / path.name
        copy.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(str(copy))
    return out


# ----------------------------------------------------------------------------------------------
# Nothing we ship fires on a healthy EKS GPU cluster
# ----------------------------------------------------------------------------------------------
# kube-prometheus-stack components EKS does not expose (data/monitoring/kube-prometheus-stack.yaml
# turns them off): the chart's values key -> the scrape job it would have created.
EKS_ABSENT_COMPONENTS = {"kubeControllerManager": "kube-controller-manager",
                         "kubeScheduler": "kube-scheduler",
                         "kubeEtcd": "kube-etcd",
                         "kubeProxy": "kube-proxy"}
# Metric families only those processes serve. (etcd_request_* and apiserver_storage_* come from
# the API server, which EKS does expose; workqueue_* and rest_client_* come from many.)
EKS_ABSENT_METRIC_PREFIXES = ("etcd_server_", "etcd_network_", "etcd_disk_", "etcd_mvcc_",
                              "etcd_debugging_", "scheduler_", "kubeproxy_", "node_collector_",
                              "cronjob_controller_", "endpoint_slice_controller_",
                              "attachdetach_controller_")


def test_no_rule_relies_on_a_component_eks_does_not_expose():
    values = m.kube_prometheus_stack_values(MonitoringConfig())
    for key in EKS_ABSENT_COMPONENTS:
        assert values[key]["enabled"] is False, key
    absent_jobs = (*EKS_ABSENT_COMPONENTS.values(), "etcd")
    for file, rule in rules():
        expr = rule["expr"]
        assert not [j for j in absent_jobs if j in expr], f"{file} {rule['alert']}: {expr}"
        names = m.promql_metric_names(expr)
        bad = sorted(n for n in names if n.startswith(EKS_ABSENT_METRIC_PREFIXES))
        assert not bad, f"{file} {rule['alert']}: {bad} only exist for components EKS hides"


HEALTHY_HOURS = 4
HEALTHY_EVAL_TIMES = ("15m", "1h", "2h", "3h", "4h")
"""Each alert is evaluated at these times (every `for:` and every [1h] window has filled)."""


def _seconds(duration: str) -> int:
    n, unit = int(duration[:-1]), duration[-1]
    return n * {"s": 1, "m": 60, "h": 3600}[unit]


def healthy_eks_gpu_cluster(step_s: int, samples: int) -> list[dict]:
    """promtool input series of a healthy EKS GPU cluster, sampled every `step_s` seconds:
    two system nodes, two p4d EFA nodes (8 A100, 4 EFA devices each) running one TrainJob, a g6
    node whose GPU nobody uses, a trn1 node; every target up; GPUs busy and cool; EFA ports
    ACTIVE with a trickle of retransmits; counters fresh; throughput steady. What EKS hides
    (controller-manager, scheduler, etcd, kube-proxy) is absent, as on a real cluster."""
    n = samples - 1

    def const(v):
        return f"{v}x{n}"

    def rate(per_s, start=0):  # a counter growing `per_s` per second
        return f"{start}+{per_s * step_s}x{n}"

    def clock(lag_s):  # a Unix-time gauge that trails promtool's time() by lag_s
        return f"{-lag_s}+{step_s}x{n}"

    def lb(**labels):
        return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"

    nodes = {  # node -> (pool, accelerator, efa, GPUs, EFA devices)
        "ip-10-0-1-10": ("system", "none", "false", 0, 0),
        "ip-10-0-2-10": ("system", "none", "false", 0, 0),
        "ip-10-0-64-11": ("a100", "nvidia", "true", 8, 4),
        "ip-10-0-64-12": ("a100", "nvidia", "true", 8, 4),
        "ip-10-0-96-13": ("l4", "nvidia", "false", 1, 0),
        "ip-10-0-128-14": ("trn1", "neuron", "true", 0, 8),
    }
    job_pods = {"ip-10-0-64-11": "llm-a100-2n-node-0-0-x7k2p",
                "ip-10-0-64-12": "llm-a100-2n-node-0-1-q9z4m"}
    out = []

    def add(name, labels, values):
        out.append({"series": name + lb(**labels), "values": values})

    # kube-state-metrics' pods: the TrainJob's (8 GPUs each, Running), CoreDNS (no GPU) and a
    # finished job's pod on the l4 node (Succeeded, kept until its TrainJob is deleted: its GPU
    # request no longer holds the GPU).
    pods = {**{(pod, "research", node, 8): "Running" for node, pod in job_pods.items()},
            ("coredns-5d8f7c9b6-abcde", "kube-system", "ip-10-0-1-10", 0): "Running",
            ("vit-l4-node-0-0-h3n8w", "research", "ip-10-0-96-13", 1): "Succeeded"}
    for (pod, namespace, node, gpus), phase in pods.items():
        for p in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
            add("kube_pod_status_phase", {"namespace": namespace, "pod": pod, "phase": p},
                const(int(p == phase)))
        request = {"namespace": namespace, "pod": pod, "container": "node", "node": node}
        add("kube_pod_container_resource_requests",
            request | {"resource": "cpu", "unit": "core"}, const(4))
        if gpus:
            add("kube_pod_container_resource_requests",
                request | {"resource": "nvidia_com_gpu", "unit": "integer"}, const(gpus))
            jobset = pod.rsplit("-node-", 1)[0]  # Trainer v2 pods: <trainjob>-node-<i>-<j>-...
            add("kube_pod_labels", {"namespace": namespace, "pod": pod,
                                    "label_jobset_sigs_k8s_io_jobset_name": jobset}, const(1))

    for job in ("apiserver", "coredns", "kube-state-metrics",
                "kube-prometheus-stack-prometheus", "kube-prometheus-stack-alertmanager",
                "kube-prometheus-stack-operator"):
        add("up", {"job": job, "instance": f"{job}:443"}, const(1))
    for node, (pool, accel, efa, gpus, efas) in nodes.items():
        add("up", {"job": "kubelet", "instance": node, "node": node}, const(1))
        add("up", {"job": "node-exporter", "instance": f"{node}:9100", "node": node}, const(1))
        add("kube_node_status_condition",
            {"node": node, "condition": "Ready", "status": "true"}, const(1))
        for status in ("false", "unknown"):
            add("kube_node_status_condition",
                {"node": node, "condition": "Ready", "status": status}, const(0))
        add("kube_node_labels", {"node": node, "label_trainyard_io_pool": pool,
                                 "label_trainyard_io_accelerator": accel,
                                 "label_trainyard_io_efa": efa}, const(1))
        # The textfile sidecar runs on every node (an empty file where there is no EFA).
        add("node_textfile_mtime_seconds",
            {"node": node, "file": "/run/trainyard-textfile/efa.prom"}, clock(15))
        if gpus:
            add("up", {"job": "dcgm-exporter", "instance": f"{node}:9400", "node": node},
                const(1))
            add("kube_node_status_capacity",
                {"node": node, "resource": "nvidia_com_gpu", "unit": "integer"}, const(gpus))
        for g in range(gpus):
            gpu = {"gpu": str(g), "node": node}
            if node in job_pods:  # allocated to the TrainJob's pod on this node
                gpu |= {"exported_namespace": "research", "exported_pod": job_pods[node],
                        "exported_container": "node"}
            add("DCGM_FI_DEV_GPU_UTIL", gpu, const(96 if node in job_pods else 0))
            add("DCGM_FI_DEV_GPU_TEMP", gpu, const(64))
            add("DCGM_FI_DEV_MEMORY_TEMP", gpu, const(72))
            add("DCGM_FI_DEV_XID_ERRORS", gpu, const(0))
            add("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", gpu, const(0))
            add("DCGM_FI_DEV_ROW_REMAP_FAILURE", gpu, const(0))
            add("DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", gpu, const(0))
            # A few CRC errors since boot, none lately.
            add("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", gpu, const(3))
        for d in range(efas):
            port = {"device": f"rdmap{16 + d}s27", "port": "1", "node": node}
            add("node_infiniband_state_id", port, const(4))
            add("node_efa_tx_pkts_total", port, rate(200_000))
            add("node_efa_retrans_pkts_total", port, rate(20))  # 0.01% of packets
            for counter in ("rx_drops", "rdma_read_wr_err", "rdma_write_wr_err",
                            "unresponsive_remote_events", "impaired_remote_conn_events"):
                add(f"node_efa_{counter}_total", port, const(0))
    # Rank 0 of an LLM TrainJob and of a vision TrainJob (the throughput sidecar).
    for trainjob, metric, per_s in (("llm-a100-2n", "trainyard_train_tokens_per_second", 410_000),
                                    ("vit-l4", "trainyard_train_images_per_second", 2_400)):
        pod = {"namespace": "research", "trainjob": trainjob,
               "job": "monitoring/trainyard-training"}
        add("up", pod, const(1))
        add("trainyard_train_metrics_file_mtime_seconds", pod, clock(20))
        add(metric, pod, const(per_s))
    healthy_serving(add, const, rate)
    return out


def healthy_serving(add, const, rate) -> None:
    """The serving namespace of the healthy cluster (alerts/serving.yaml): model `llm` on vLLM
    split A/B (one replica per variant, p99 time to first token ~0.1 s under its recorded 0.2 s
    SLO, a steady queue of one, no aborts), `vit` on Triton at a fixed size (replicas.min =
    replicas.max), `embed` on the KServe CPU runtime (no recorded SLO: the default holds), and
    the KEDA HPAs and predictor Deployments kube-state-metrics reports for them."""
    ns = "serving"

    def target(isvc, model, variant):
        return {"namespace": ns, "isvc": isvc, "model": model, "variant": variant,
                "pod": f"{isvc}-predictor-7d9c5b6f4-x2k8m", "job": f"{ns}/trainyard-predictors"}

    # Cumulative share of requests at or under each bucket bound.
    ttft = {"0.02": 0.2, "0.04": 0.5, "0.06": 0.8, "0.08": 0.95, "0.1": 0.995, "0.25": 1,
            "0.5": 1, "+Inf": 1}
    for variant, per_s in (("a", 4), ("b", 1)):
        t = target(f"llm-{variant}", "llm", variant) | {"model_name": "llm", "engine": "0"}
        for le, share in ttft.items():
            add("vllm:time_to_first_token_seconds_bucket", t | {"le": le}, rate(per_s * share))
        add("vllm:time_to_first_token_seconds_count", t, rate(per_s))
        add("vllm:request_success_total", t | {"finished_reason": "stop"}, rate(per_s * 0.75))
        add("vllm:request_success_total", t | {"finished_reason": "length"}, rate(per_s * 0.25))
        add("vllm:request_success_total", t | {"finished_reason": "abort"}, const(0))
        add("vllm:num_requests_waiting", t, const(1))
    add("trainyard:serving_latency_slo:seconds", {"namespace": ns, "model": "llm"}, const(0.2))
    vit = target("vit", "vit", "main") | {"exported_model": "vit", "version": "1"}
    add("nv_inference_request_success", vit, rate(20))
    add("nv_inference_request_failure", vit, const(0))
    add("nv_inference_pending_request_count", vit, const(0))
    embed = target("embed", "embed", "main") | {"model_name": "embed"}
    for le, share in {"0.025": 0.3, "0.05": 0.9, "0.075": 0.999, "0.1": 1, "+Inf": 1}.items():
        add("request_predict_seconds_bucket", embed | {"le": le}, rate(10 * share))
    add("request_predict_seconds_count", embed, rate(10))
    ksm = {"job": "kube-state-metrics", "namespace": ns}
    for isvc, (lo, now, hi) in {"llm-a": (1, 2, 4), "llm-b": (1, 1, 4), "vit": (2, 2, 2),
                                "embed": (1, 1, 3)}.items():
        hpa = ksm | {"horizontalpodautoscaler": f"keda-hpa-{isvc}"}
        add("kube_horizontalpodautoscaler_spec_min_replicas", hpa, const(lo))
        add("kube_horizontalpodautoscaler_spec_max_replicas", hpa, const(hi))
        add("kube_horizontalpodautoscaler_status_current_replicas", hpa, const(now))
        add("kube_horizontalpodautoscaler_status_desired_replicas", hpa, const(now))
        deploy = ksm | {"deployment": f"{isvc}-predictor"}
        add("kube_deployment_spec_replicas", deploy, const(now))
        add("kube_deployment_status_replicas_available", deploy, const(now))


_SELECTOR = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")


def vector_selectors(expr: str) -> list[str]:
    """`metric{matchers}` of each vector selector in a PromQL expression (functions, keywords,
    strings outside matchers and by/on label lists skipped): what must have data for the
    rule's silence to mean anything."""
    # Strings outside {...}, e.g. label_replace's arguments, are not selectors.
    s = "".join(part if part.startswith("{") else m._STRINGS.sub('""', part)
                for part in re.split(r"(\{[^}]*\})", expr))
    s = m._LABEL_LISTS.sub(" ", s)
    found = []
    for mt in _SELECTOR.finditer(s):
        name = mt.group(1)
        if name in m._PROMQL_KEYWORDS or (not mt.group(2)
                                          and s[mt.end():].lstrip().startswith("(")):
            continue
        found.append(name + (mt.group(2) or ""))
    return list(dict.fromkeys(found))


def test_vector_selectors():
    assert vector_selectors('rate(node_efa_rx_drops_total[5m]) > 0') == ["node_efa_rx_drops_total"]
    assert vector_selectors(
        'count by (node) (DCGM_FI_DEV_GPU_TEMP) < on (node) max by (node) '
        '(kube_node_status_capacity{resource="nvidia_com_gpu"})') == [
        "DCGM_FI_DEV_GPU_TEMP", 'kube_node_status_capacity{resource="nvidia_com_gpu"}']
    assert vector_selectors('time() - x{file=~".*efa.prom"} > 300') == ['x{file=~".*efa.prom"}']
    assert vector_selectors(
        'label_replace(max_over_time(a{p!=""}[1h]) < 5 and a{p!=""} offset 1h, "pool", "$1", '
        '"label_pool", "(.+)") or b:c:d * 0') == ['a{p!=""}', "b:c:d"]


def test_the_healthy_cluster_feeds_every_metric_the_rules_read():
    fed = {s["series"].split("{")[0] for s in healthy_eks_gpu_cluster(60, 2)}
    for file, rule in all_rules():
        missing = m.promql_metric_names(rule["expr"]) - fed - m.recorded_metrics()
        assert not missing, (f"{file} {rule_name(rule)}: give {sorted(missing)} healthy values "
                             "in healthy_eks_gpu_cluster()")


@needs_promtool
@pytest.mark.parametrize("path", ALERT_FILES, ids=lambda p: p.name)
def test_no_alert_fires_on_a_healthy_eks_gpu_cluster(tmp_path, path):
    spec = m.kube_prometheus_stack_values(MonitoringConfig())["prometheus"]["prometheusSpec"]
    interval = spec["evaluationInterval"]
    step = _seconds(spec["scrapeInterval"])
    samples = HEALTHY_HOURS * 3600 // step + 1
    file_rules = [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    selectors = [s for r in file_rules for s in vector_selectors(r["expr"])]
    test = {
        "interval": f"{step}s",
        "input_series": healthy_eks_gpu_cluster(step, samples),
        "alert_rule_test": [{"eval_time": t, "alertname": r["alert"], "exp_alerts": []}
                            for r in file_rules if "alert" in r for t in HEALTHY_EVAL_TIMES],
        # Every selector the rules (recording rules included) read has data, so the silence
        # above is not vacuous.
        "promql_expr_test": [{"expr": f"absent({s})", "eval_time": t, "exp_samples": []}
                             for s in dict.fromkeys(selectors) for t in HEALTHY_EVAL_TIMES],
    }
    tests = tmp_path / "healthy.yaml"
    tests.write_text(yaml.safe_dump({
        "rule_files": _rule_files_for_promtool(tmp_path, [path]),
        "evaluation_interval": interval, "tests": [test]}, sort_keys=False))
    out = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]


@needs_promtool
def test_a_healthy_clusters_allocated_gpus_are_busy(tmp_path):
    """On the healthy cluster the cost rules see the TrainJob's 16 a100 GPUs, none idle; the
    idle l4 GPU (a finished pod's) and CoreDNS (no GPU) are not allocated."""
    spec = m.kube_prometheus_stack_values(MonitoringConfig())["prometheus"]["prometheusSpec"]
    step = _seconds(spec["scrapeInterval"])
    a100 = {"pool": "a100", "namespace": "research"}
    test = {
        "interval": f"{step}s",
        "input_series": healthy_eks_gpu_cluster(step, HEALTHY_HOURS * 3600 // step + 1),
        "promql_expr_test": [
            *[recorded(ALLOCATED, t, (a100, 16)) for t in HEALTHY_EVAL_TIMES],
            *[recorded(IDLE, t, (a100, 0)) for t in HEALTHY_EVAL_TIMES],
            recorded(IDLE_HOURS, "4h", (a100, 0)),
        ],
    }
    tests = tmp_path / "healthy-cost.yaml"
    tests.write_text(yaml.safe_dump({
        "rule_files": _rule_files_for_promtool(tmp_path, [m.ALERTS_DIR / "cost.yaml"]),
        "evaluation_interval": spec["evaluationInterval"], "tests": [test]}, sort_keys=False))
    out = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
