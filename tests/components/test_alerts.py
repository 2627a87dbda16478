"""Alert rules (components/data/alerts/*.yaml): promtool validates every file, each rule names
only provided metrics, and `promtool test rules` shows the important ones fire on synthetic
series (and stay quiet where they should)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from components import monitoring as m

ALERT_FILES = sorted(m.ALERTS_DIR.glob("*.yaml"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (`apt-get install prometheus`; .ci/run "
                             "installs it in CI)")


def rules():
    for path in ALERT_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield path.name, rule


def test_there_are_alert_files():
    assert {p.name for p in ALERT_FILES} == {"gpu.yaml", "efa.yaml", "nodes.yaml",
                                              "training.yaml"}


@needs_promtool
@pytest.mark.parametrize("path", ALERT_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path):
    out = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_rules_are_alerts_with_severity_and_text():
    names = []
    for file, rule in rules():
        assert "alert" in rule, f"{file}: recording rules belong elsewhere"
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        names.append(rule["alert"])
    assert len(names) == len(set(names))


def test_rules_reference_only_provided_metrics():
    known = m.known_metrics()
    for file, rule in rules():
        names = m.promql_metric_names(rule["expr"])
        assert names and not names - known, f"{file} {rule['alert']}: {sorted(names - known)}"


def test_alerts_cover_what_the_issue_asks_for():
    names = {rule["alert"] for _, rule in rules()}
    assert {"GpuXidError", "GpuXidFatal", "GpuFallenOffBus", "GpuMissingFromNode",
            "GpuTemperatureHigh", "GpuNodeNotReady", "GpuAllocatedButIdle", "EfaReceiveDrops",
            "EfaRdmaErrors", "EfaPortDown"} <= names


# ----------------------------------------------------------------------------------------------
# promtool test rules
# ----------------------------------------------------------------------------------------------
def alert(name, t, *labels):
    """An alert_rule_test: `name` evaluated at `t` expecting one alert per labels dict."""
    return {"eval_time": t, "alertname": name, "exp_alerts": [{"exp_labels": lb} for lb in labels]}


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
]


@needs_promtool
def test_promtool_unit_tests(tmp_path):
    # Annotations are templates promtool `check rules` already validates; strip them so the
    # cases below state only which alerts fire with which labels.
    rule_files = []
    for path in ALERT_FILES:
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
        out = tmp_path / path.name
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
        rule_files.append(str(out))
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": rule_files, "evaluation_interval": "1m",
                                     "tests": CASES}, sort_keys=False))
    out = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
