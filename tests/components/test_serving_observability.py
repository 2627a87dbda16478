"""Watching served models: the alert rules of components/data/alerts/serving.yaml fire (and stay
quiet) on synthetic series under `promtool test rules`, each model is held to its own latency
SLO through the recording rule components/serving/objects.py makes, and the serving dashboard
shows what the issue asks for (QPS, latency percentiles, time to first token, tokens/s, queue,
batch size, replicas, GPU utilisation). That every metric named is one the exporters provide,
and that nothing fires on a healthy cluster, is checked with the other files in test_alerts.py
and test_dashboards.py."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from components.config.types import ServedModelConfig
from components.services import monitoring as m
from components.serving import objects
from tests.components.test_alerts import (
    PROMTOOL,
    _rule_files_for_promtool,
    alert,
    needs_promtool,
    series,
)

RULES = m.ALERTS_DIR / "serving.yaml"
NS = "serving"


def target(isvc: str, model: str, variant: str) -> dict:
    """Labels the predictors' PodMonitor puts on every series it scrapes."""
    return {"namespace": NS, "isvc": isvc, "model": model, "variant": variant,
            "pod": f"{isvc}-predictor-5f6d7c8b9-abcde"}


def histogram(name: str, labels: dict, per_min: float, shares: dict) -> list[dict]:
    """Counter series of a histogram growing `per_min` observations a minute, `shares` the
    cumulative share at or under each bound."""
    out = [series(f"{name}_bucket", f"0+{per_min * share:g}x60", **labels, le=le)
           for le, share in shares.items()]
    out.append(series(f"{name}_count", f"0+{per_min:g}x60", **labels))
    return out


FAST = {"0.05": 0.5, "0.1": 0.995, "0.25": 1, "0.5": 1, "+Inf": 1}  # p99 ~0.1 s
SLOW = {"0.05": 0.1, "0.1": 0.3, "0.25": 0.6, "0.5": 1, "+Inf": 1}  # p99 ~0.49 s


def slo(model: str, seconds: float) -> dict:
    return series(objects.LATENCY_SLO_SERIES, f"{seconds}x60", namespace=NS, model=model)


def labels(model: str, variant: str, **extra) -> dict:
    return {"namespace": NS, "model": model, "variant": variant, **extra}


CASES = [
    {   # Latency. llm-a is slow (p99 ~0.49 s) against llm's recorded 0.2 s SLO, llm-b is fast;
        # `chat` is as slow but its SLO is 0.6 s; `embed` (KServe predict, no recorded SLO) is
        # slow against the default 0.2 s.
        "interval": "1m",
        "input_series": [
            *histogram("vllm:time_to_first_token_seconds", target("llm-a", "llm", "a"), 120, SLOW),
            *histogram("vllm:time_to_first_token_seconds", target("llm-b", "llm", "b"), 120, FAST),
            *histogram("vllm:time_to_first_token_seconds", target("chat", "chat", "main"), 60,
                       SLOW),
            *histogram("request_predict_seconds", target("embed", "embed", "main"), 600, SLOW),
            slo("llm", 0.2), slo("chat", 0.6),
        ],
        "alert_rule_test": [
            alert("ServingLatencyOverSlo", "10m"),  # not yet for 10 minutes
            alert("ServingLatencyOverSlo", "20m",
                  labels("embed", "main", measure="predict", severity="warning"),
                  labels("llm", "a", measure="time to first token", severity="warning")),
        ],
    },
    {   # Errors. llm-a aborts 10% of its requests, llm-b 1%; Triton's vit fails 20%.
        "interval": "1m",
        "input_series": [
            series("vllm:request_success_total", "0+90x60", **target("llm-a", "llm", "a"),
                   finished_reason="stop"),
            series("vllm:request_success_total", "0+10x60", **target("llm-a", "llm", "a"),
                   finished_reason="abort"),
            series("vllm:request_success_total", "0+99x60", **target("llm-b", "llm", "b"),
                   finished_reason="stop"),
            series("vllm:request_success_total", "0+1x60", **target("llm-b", "llm", "b"),
                   finished_reason="abort"),
            series("nv_inference_request_success", "0+80x60", **target("vit", "vit", "main")),
            series("nv_inference_request_failure", "0+20x60", **target("vit", "vit", "main")),
        ],
        "alert_rule_test": [
            alert("ServingErrorRatioHigh", "8m"),
            alert("ServingErrorRatioHigh", "20m", labels("llm", "a", severity="critical"),
                  labels("vit", "main", severity="critical")),
        ],
    },
    {   # Queues. llm-a's grows by one request a minute; llm-b holds a steady 5; vit's grew for
        # 10 minutes and then held (growth over, the alert resolves).
        "interval": "1m",
        "input_series": [
            series("vllm:num_requests_waiting", "0+1x60", **target("llm-a", "llm", "a")),
            series("vllm:num_requests_waiting", "5x60", **target("llm-b", "llm", "b")),
            series("nv_inference_pending_request_count", "0+2x10 20x50",
                   **target("vit", "vit", "main")),
        ],
        "alert_rule_test": [
            alert("ServingQueueGrowing", "15m"),  # growing, not yet for 10 minutes
            alert("ServingQueueGrowing", "25m", labels("llm", "a", severity="warning")),
            alert("ServingQueueGrowing", "45m", labels("llm", "a", severity="warning")),
        ],
    },
    {   # Replicas. llm-a's HPA sits at its max of 4; vit is fixed at 2 (min = max); embed is
        # below its max; llm-b reached max only for 10 minutes.
        "interval": "1m",
        "input_series": [
            *[series(f"kube_horizontalpodautoscaler_{name}", values, namespace=NS,
                     horizontalpodautoscaler=f"keda-hpa-{isvc}")
              for isvc, lo, now, hi in (("llm-a", "1x60", "4x60", "4x60"),
                                        ("llm-b", "1x60", "2x20 4x10 3x30", "4x60"),
                                        ("vit", "2x60", "2x60", "2x60"),
                                        ("embed", "1x60", "2x60", "3x60"))
              for name, values in (("spec_min_replicas", lo),
                                   ("status_current_replicas", now),
                                   ("spec_max_replicas", hi))],
            # An HPA that is not KEDA's is none of these alerts' business.
            series("kube_horizontalpodautoscaler_status_current_replicas", "5x60",
                   namespace="web", horizontalpodautoscaler="frontend"),
            series("kube_horizontalpodautoscaler_spec_max_replicas", "5x60",
                   namespace="web", horizontalpodautoscaler="frontend"),
        ],
        "alert_rule_test": [
            alert("ServingReplicasAtMax", "10m"),
            alert("ServingReplicasAtMax", "20m", {"namespace": NS, "severity": "warning",
                                                  "horizontalpodautoscaler": "keda-hpa-llm-a"}),
            alert("ServingReplicasAtMax", "35m", {"namespace": NS, "severity": "warning",
                                                  "horizontalpodautoscaler": "keda-hpa-llm-a"}),
        ],
    },
    {   # Availability. llm-a's third replica never comes up (no Spot capacity); llm-b's new
        # replica takes 5 minutes; CoreDNS is not a predictor.
        "interval": "1m",
        "input_series": [
            series("kube_deployment_spec_replicas", "3x40", namespace=NS,
                   deployment="llm-a-predictor"),
            series("kube_deployment_status_replicas_available", "2x40", namespace=NS,
                   deployment="llm-a-predictor"),
            series("kube_deployment_spec_replicas", "1x10 2x30", namespace=NS,
                   deployment="llm-b-predictor"),
            series("kube_deployment_status_replicas_available", "1x15 2x25", namespace=NS,
                   deployment="llm-b-predictor"),
            series("kube_deployment_spec_replicas", "2x40", namespace="kube-system",
                   deployment="coredns"),
            series("kube_deployment_status_replicas_available", "1x40", namespace="kube-system",
                   deployment="coredns"),
        ],
        "alert_rule_test": [
            alert("ServingReplicasUnavailable", "10m"),
            alert("ServingReplicasUnavailable", "30m", {"namespace": NS, "severity": "warning",
                                                        "deployment": "llm-a-predictor"}),
        ],
    },
]


def run_promtool(tmp_path, rule_files, tests) -> None:
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump({"rule_files": rule_files, "evaluation_interval": "1m",
                                    "tests": tests}, sort_keys=False))
    out = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]


@needs_promtool
def test_serving_alerts_fire_and_stay_quiet(tmp_path):
    run_promtool(tmp_path, _rule_files_for_promtool(tmp_path, [RULES]), CASES)


@needs_promtool
def test_the_alerts_would_catch_a_wrong_expectation(tmp_path):
    """The harness has teeth: expecting llm-b (fast) in the latency alert fails."""
    case = json.loads(json.dumps(CASES[0]))
    case["alert_rule_test"][1]["exp_alerts"].append(
        {"exp_labels": labels("llm", "b", measure="time to first token", severity="warning")})
    with pytest.raises(AssertionError):
        run_promtool(tmp_path, _rule_files_for_promtool(tmp_path, [RULES]), [case])


def model(name: str, slo_ms: int) -> ServedModelConfig:
    return ServedModelConfig(name=name, runtime="huggingface-vllm", source="models/x/1/",
                             pool="inference", latency_slo_ms=slo_ms)


@needs_promtool
def test_each_model_is_held_to_its_own_slo(tmp_path):
    """The recording rule of each model (what InferenceModels creates) feeds the shipped alert:
    at the same p99 of ~0.49 s, `strict` (250 ms) alerts and `relaxed` (800 ms) does not."""
    rules = []
    for mdl in (model("strict", 250), model("relaxed", 800)):
        rule = objects.latency_slo_rule(mdl, NS)
        assert rule["metadata"] == {"name": f"{mdl.name}-slo", "namespace": NS, "labels": {
            objects.MODEL_LABEL: mdl.name, "app.kubernetes.io/part-of": "trainyard"}}
        path = tmp_path / f"{mdl.name}-slo.yaml"
        path.write_text(yaml.safe_dump(rule["spec"]))
        rules.append(str(path))
    out = subprocess.run([PROMTOOL, "check", "rules", *rules], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    test = {
        "interval": "1m",
        "input_series": [s for n in ("strict", "relaxed") for s in histogram(
            "vllm:time_to_first_token_seconds", target(n, n, "main"), 60, SLOW)],
        "alert_rule_test": [alert("ServingLatencyOverSlo", "20m", labels(
            "strict", "main", measure="time to first token", severity="warning"))],
        "promql_expr_test": [{"expr": objects.LATENCY_SLO_SERIES, "eval_time": "5m",
                              "exp_samples": [
                                  {"labels": f'{objects.LATENCY_SLO_SERIES}{{model="relaxed", '
                                             f'namespace="{NS}"}}', "value": 0.8},
                                  {"labels": f'{objects.LATENCY_SLO_SERIES}{{model="strict", '
                                             f'namespace="{NS}"}}', "value": 0.25}]}],
    }
    run_promtool(tmp_path, [*_rule_files_for_promtool(tmp_path, [RULES]), *rules], [test])


def test_alerts_cover_what_the_issue_asks_for():
    names = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert {"ServingLatencyOverSlo", "ServingErrorRatioHigh", "ServingQueueGrowing",
            "ServingReplicasAtMax"} <= names


# ----------------------------------------------------------------------------------------------
# The dashboard
# ----------------------------------------------------------------------------------------------
DASHBOARD = m.DASHBOARDS_DIR / "serving.json"


def panels() -> dict[str, list[str]]:
    """Panel title -> its expressions."""
    out = {}

    def walk(items):
        for p in items:
            if p.get("targets"):
                out[p["title"]] = [t["expr"] for t in p["targets"]]
            walk(p.get("panels", []))
    walk(json.loads(DASHBOARD.read_text())["panels"])
    return out


@pytest.mark.parametrize("topic, metric", [
    ("QPS", "vllm:e2e_request_latency_seconds_count"),
    ("QPS", "request_predict_seconds_count"),
    ("QPS", "nv_inference_request_success"),
    ("Latency", "vllm:e2e_request_latency_seconds_bucket"),
    ("Latency", "request_predict_seconds_bucket"),
    ("Time to first token", "vllm:time_to_first_token_seconds_bucket"),
    ("Tokens/s", "vllm:generation_tokens_total"),
    ("Queue depth", "vllm:num_requests_waiting"),
    ("Queue depth", "nv_inference_pending_request_count"),
    ("Batch size", "vllm:num_requests_running"),
    ("Batch size", "nv_inference_exec_count"),
    ("Replicas", "kube_horizontalpodautoscaler_status_current_replicas"),
    ("Replicas", "kube_horizontalpodautoscaler_spec_max_replicas"),
    ("GPU utilisation", "DCGM_FI_DEV_GPU_UTIL"),
    ("Errors", "vllm:request_success_total"),
])
def test_dashboard_shows_what_the_issue_asks_for(topic, metric):
    (title,) = [t for t in panels() if t.startswith(topic)]
    assert any(metric in m.promql_metric_names(e) for e in panels()[title]), (topic, metric)


def test_latency_panels_show_p50_p95_p99():
    by_title = panels()
    for topic in ("Latency", "Time to first token"):
        (title,) = [t for t in by_title if t.startswith(topic)]
        for q in ("0.5", "0.95", "0.99"):
            assert any(f"histogram_quantile({q}," in e for e in by_title[title]), (topic, q)
