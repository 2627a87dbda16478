"""Monitoring: kube-prometheus-stack and DCGM exporter values, the Grafana admin secret (never in
plaintext in a plan), dashboards/alerts/PodMonitor objects, and the two small exporters
(EFA textfile sidecar, training-throughput sidecar) run for real."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from components.config import MonitoringConfig
from components.services import monitoring as m
from components.services.netpol import PRIVATE_RANGES
from tests.conftest import resources, synthesize_program
from trainyard import jobspec
from trainyard.mocks import _h

RELEASE = "kubernetes:helm.sh/v3:Release"
PASSWORD_TYPE = "random:index/randomPassword:RandomPassword"
PROMTOOL = shutil.which("promtool")


def mock_password(logical_name: str, length: int = 32) -> str:
    """What TrainyardMocks answers for a RandomPassword (the plaintext a leak would show)."""
    return _h(PASSWORD_TYPE, logical_name, "pw", n=64)[:length]


def releases(plan) -> dict[str, dict]:
    return {r["inputs"]["name"]: r for r in resources(plan, RELEASE)}


def in_namespace(plan, type_, ns="monitoring"):
    return {r["inputs"]["metadata"]["name"]: r for r in resources(plan, type_)
            if r["inputs"]["metadata"].get("namespace") == ns}


@pytest.fixture(scope="module")
def prod(plan_for):
    return plan_for("prod")


# ----------------------------------------------------------------------------------------------
# Values (pure)
# ----------------------------------------------------------------------------------------------
def test_kube_state_metrics_exposes_the_labels_the_rules_join_on():
    """`--metric-labels-allowlist` (the subchart's metricLabelsAllowlist: `resource=[k8s
    labels]`): kube_node_labels carries label_trainyard_io_pool, which the GPU dashboard's pool
    variable and the cost rules (data/alerts/cost.yaml) join on; kube_pod_labels the JobSet."""
    entries = m.kube_prometheus_stack_values(MonitoringConfig())["kube-state-metrics"][
        "metricLabelsAllowlist"]
    allow = {}
    for entry in entries:
        resource, labels = re.fullmatch(r"(\w+)=\[([^\]]*)\]", entry).groups()
        allow[resource] = set(labels.split(","))
    assert {"trainyard.io/pool", "trainyard.io/accelerator", "trainyard.io/efa"} <= \
        allow["nodes"]
    assert "jobset.sigs.k8s.io/jobset-name" in allow["pods"]
    rules = json.dumps(m.alert_rule_files()["cost"])
    assert "label_trainyard_io_pool" in rules and "kube_node_labels" in rules


def test_kube_prometheus_stack_values_follow_the_config():
    v = m.kube_prometheus_stack_values(MonitoringConfig(prometheus_retention_days=30,
                                                        prometheus_storage_gib=500,
                                                        grafana_storage_gib=20), "gp3-x")
    spec = v["prometheus"]["prometheusSpec"]
    for sel in ("serviceMonitor", "podMonitor", "rule", "probe", "scrapeConfig"):
        assert spec[f"{sel}SelectorNilUsesHelmValues"] is False
    assert spec["retention"] == "30d"
    assert spec["retentionSize"] == "425GB"  # below the volume, so Prometheus never fills it
    pvc = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert pvc == {"accessModes": ["ReadWriteOnce"], "storageClassName": "gp3-x",
                   "resources": {"requests": {"storage": "500Gi"}}}
    g = v["grafana"]
    assert g["admin"] == {"existingSecret": m.GRAFANA_SECRET, "userKey": "admin-user",
                          "passwordKey": "admin-password"}
    assert g["persistence"]["enabled"] is True and g["persistence"]["size"] == "20Gi"
    assert g["sidecar"]["dashboards"]["label"] == m.DASHBOARD_LABEL
    assert g["sidecar"]["dashboards"]["labelValue"] == "1"
    assert "adminPassword" not in json.dumps(v)
    ne = v["prometheus-node-exporter"]
    assert "--collector.textfile.directory=/run/trainyard-textfile" in ne["extraArgs"]
    assert [s["name"] for s in ne["sidecars"]] == ["efa-textfile"]


CHART_KEYS = yaml.safe_load(
    (Path(__file__).parent / "data" / "chart_value_keys.yaml").read_text())


def _get(values: dict, dotted: str):
    for part in dotted.split("."):
        values = values[part]
    return values


def test_kube_prometheus_stack_skips_what_eks_does_not_expose():
    """EKS hides kube-controller-manager, kube-scheduler and etcd, and binds kube-proxy's metrics
    to the node's loopback: scraping them (the chart's default) makes their *Down alerts fire
    forever. Every such switch, under the chart's own key name, is off."""
    v = m.kube_prometheus_stack_values(MonitoringConfig())
    switches = CHART_KEYS["kube-prometheus-stack"]["keys"]
    assert {k.split(".")[0] for k in switches} == {
        "kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy", "defaultRules"}
    for key in switches:
        assert _get(v, key) is False, key
    # Only those: the API server, kubelet, CoreDNS, node-exporter and kube-state-metrics rules
    # stay at the chart's defaults (on), and rules as a whole are still created.
    assert set(v["defaultRules"]) == {"rules"}
    assert set(v["defaultRules"]["rules"]) == {k.rsplit(".", 1)[1] for k in switches
                                               if k.startswith("defaultRules.")}


def test_prod_plan_installs_kube_prometheus_stack_without_eks_hidden_targets(prod):
    values = releases(prod)["kube-prometheus-stack"]["inputs"]["values"]
    for key in CHART_KEYS["kube-prometheus-stack"]["keys"]:
        assert _get(values, key) is False, key


def test_dcgm_exporter_values_run_on_nvidia_nodes_with_our_counters():
    v = m.dcgm_exporter_values()
    assert v["nodeSelector"] == {"trainyard.io/accelerator": "nvidia"}
    assert v["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                 "effect": "NoSchedule"}]
    assert v["service"]["port"] == 9400
    assert v["serviceMonitor"]["enabled"] is True
    (mount,) = v["extraVolumeMounts"]
    (volume,) = v["extraConfigMapVolumes"]
    assert volume["configMap"]["name"] == m.DCGM_COUNTERS_CONFIGMAP
    assert v["arguments"] == ["-f", f"{mount['mountPath']}/counters.csv"]
    relabel = v["serviceMonitor"]["relabelings"][0]
    assert relabel["targetLabel"] == "node"


def test_dcgm_counters_csv_lists_every_counter_once():
    csv = m.dcgm_counters_csv()
    lines = [ln for ln in csv.splitlines() if ln and not ln.startswith("#")]
    fields = [ln.split(",")[0] for ln in lines]
    assert fields == [c["field"] for c in m.dcgm_counters()]
    assert len(fields) == len(set(fields))
    assert all(ln.split(", ")[1] in ("gauge", "counter") for ln in lines)
    for needed in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_POWER_USAGE",
                   "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS",
                   "DCGM_FI_PROF_NVLINK_TX_BYTES"):
        assert needed in fields


# ----------------------------------------------------------------------------------------------
# The prod plan
# ----------------------------------------------------------------------------------------------
def test_prod_plan_pins_both_monitoring_charts(prod):
    rel = releases(prod)
    kps, dcgm = rel["kube-prometheus-stack"]["inputs"], rel["dcgm-exporter"]["inputs"]
    assert (kps["chart"], kps["version"]) == ("kube-prometheus-stack", "82.18.0")
    assert kps["repositoryOpts"] == {"repo": "https://prometheus-community.github.io/helm-charts"}
    assert (dcgm["chart"], dcgm["version"]) == ("dcgm-exporter", "4.8.1")
    assert dcgm["repositoryOpts"] == {"repo": "https://nvidia.github.io/dcgm-exporter/helm-charts"}
    assert kps["namespace"] == dcgm["namespace"] == "monitoring"
    assert kps["values"]["prometheus"]["prometheusSpec"]["retention"] == "30d"
    # The DCGM chart's ServiceMonitor needs the operator's CRDs: installed after the stack.
    assert rel["kube-prometheus-stack"]["urn"] in rel["dcgm-exporter"]["dependencies"]
    for r in (rel["kube-prometheus-stack"], rel["dcgm-exporter"]):
        eks = [d for d in r["dependencies"] if "aws:eks/cluster:Cluster" in d]
        assert eks, "monitoring waits for (and is deleted before) the cluster"


def test_prod_plan_never_shows_the_grafana_password(prod):
    (pw,) = resources(prod, PASSWORD_TYPE)
    assert pw["outputs"]["result"] == "[secret]"
    text = json.dumps(prod)
    assert mock_password(pw["name"]) not in text
    # secrets.enabled (default): the password lives in Secrets Manager and reaches the cluster
    # through an ExternalSecret; Pulumi writes no Kubernetes Secret and exports no password.
    assert m.GRAFANA_SECRET not in in_namespace(prod, "kubernetes:core/v1:Secret")
    assert m.GRAFANA_SECRET in in_namespace(prod, "kubernetes:external-secrets.io/v1:ExternalSecret")
    (version,) = resources(prod, "aws:secretsmanager/secretVersion:SecretVersion")
    assert version["inputs"]["secretString"] == "[secret]"
    assert "grafanaAdminPassword" not in prod["outputs"]
    kps = releases(prod)["kube-prometheus-stack"]["inputs"]["values"]
    assert kps["grafana"]["admin"]["existingSecret"] == m.GRAFANA_SECRET


def test_plan_json_from_the_cli_has_no_plaintext_password(tmp_path):
    from trainyard.cli import main

    out = tmp_path / "dev.json"
    assert main(["plan", "--stack", "dev", "--json", str(out), "--quiet"]) == 0
    plan = json.loads(out.read_text())
    (pw,) = resources(plan, PASSWORD_TYPE)
    assert mock_password(pw["name"]) not in out.read_text()
    assert plan["outputs"]["grafanaAdminSecretArn"].startswith("arn:aws:secretsmanager:")


def test_prod_plan_ships_dashboards_alerts_and_the_training_pod_monitor(prod):
    cms = in_namespace(prod, "kubernetes:core/v1:ConfigMap")
    for f in ("gpu.json", "efa.json", "training.json"):
        cm = cms[m.configmap_name(f)]["inputs"]
        assert cm["metadata"]["labels"] == {m.DASHBOARD_LABEL: "1"}
        assert json.loads(cm["data"][f])["uid"].startswith("trainyard-")
    assert cms[m.DCGM_COUNTERS_CONFIGMAP]["inputs"]["data"]["counters.csv"] == \
        m.dcgm_counters_csv()
    rules = in_namespace(prod, "kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    assert set(rules) == {"trainyard-gpu", "trainyard-efa", "trainyard-nodes",
                          "trainyard-training", "trainyard-cost", "trainyard-serving"}
    assert rules["trainyard-gpu"]["inputs"]["spec"] == m.alert_rule_files()["gpu"]
    assert rules["trainyard-cost"]["inputs"]["spec"] == m.alert_rule_files()["cost"]
    (pm,) = in_namespace(prod, "kubernetes:monitoring.coreos.com/v1:PodMonitor").values()
    spec = pm["inputs"]["spec"]
    assert spec["namespaceSelector"] == {"any": True}
    assert spec["selector"]["matchLabels"] == {jobspec.METRICS_LABEL: "true"}
    assert spec["podMetricsEndpoints"][0]["port"] == jobspec.exporter()["port_name"]
    kps_urn = releases(prod)["kube-prometheus-stack"]["urn"]
    assert kps_urn in pm["dependencies"]
    assert all(kps_urn in r["dependencies"] for r in rules.values())


def test_prod_plan_monitoring_namespace_and_storage(prod):
    ns = next(r for r in resources(prod, "kubernetes:core/v1:Namespace")
              if r["inputs"]["metadata"]["name"] == "monitoring")
    assert ns["inputs"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    (sc,) = [r for r in resources(prod, "kubernetes:storage.k8s.io/v1:StorageClass")
             if r["inputs"]["metadata"]["name"] == m.STORAGE_CLASS]
    assert sc["inputs"]["provisioner"] == "ebs.csi.aws.com"
    assert sc["inputs"]["parameters"] == {"type": "gp3", "encrypted": "true"}
    assert sc["inputs"]["reclaimPolicy"] == "Retain"  # prod: storage.retainOnDelete
    assert sc["inputs"]["volumeBindingMode"] == "WaitForFirstConsumer"


def test_every_stack_installs_dcgm(any_plan):
    # dev (g5/g6), staging (p4d/p4de) and prod all have NVIDIA pools.
    assert "dcgm-exporter" in releases(any_plan)


# ----------------------------------------------------------------------------------------------
# The component on its own: a password from config, no NVIDIA pool
# ----------------------------------------------------------------------------------------------
def test_a_given_password_is_used_and_stays_secret():
    def program():
        import pulumi
        import pulumi_kubernetes as k8s

        provider = k8s.Provider("unit-k8s", kubeconfig="{}")
        m.Monitoring("unit-mon", m.MonitoringArgs(
            config=MonitoringConfig(), provider=provider, storage_class="gp2",
            grafana_admin_password=pulumi.Output.secret("hunter2-from-config")))

    plan = synthesize_program(program)
    assert "hunter2-from-config" not in json.dumps(plan)
    assert resources(plan, PASSWORD_TYPE) == []
    assert "dcgm-exporter" not in releases(plan)  # no NVIDIA pool
    assert resources(plan, "kubernetes:storage.k8s.io/v1:StorageClass") == []
    pvc = releases(plan)["kube-prometheus-stack"]["inputs"]["values"]["prometheus"][
        "prometheusSpec"]["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert pvc["storageClassName"] == "gp2"


# ----------------------------------------------------------------------------------------------
# The EFA textfile sidecar and the training-throughput sidecar, run for real
# ----------------------------------------------------------------------------------------------
def efa_script() -> str:
    values = yaml.safe_load((m.MONITORING_DATA / "kube-prometheus-stack.yaml").read_text())
    (sidecar,) = values["prometheus-node-exporter"]["sidecars"]
    return sidecar["args"][0]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_efa_textfile_sidecar_turns_hw_counters_into_metrics(tmp_path):
    sys_root, out_dir = tmp_path / "sys", tmp_path / "textfile"
    out_dir.mkdir()
    for dev, values in (("rdmap16s27", {"tx_bytes": 1000, "rx_drops": 2, "lifespan": 10}),
                        ("rdmap32s27", {"tx_bytes": 5000, "rdma_read_bytes": 7})):
        hw = sys_root / "class" / "infiniband" / dev / "ports" / "1" / "hw_counters"
        hw.mkdir(parents=True)
        for counter, value in values.items():
            (hw / counter).write_text(f"{value}\n")
    script = (efa_script().replace("/host/sys", str(sys_root))
              .replace("/run/trainyard-textfile", str(out_dir))
              .replace("sleep 15", "exit 0"))
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    text = (out_dir / "efa.prom").read_text()
    assert text.splitlines() == [
        'node_efa_rdma_read_bytes_total{device="rdmap32s27",port="1"} 7',
        'node_efa_rx_drops_total{device="rdmap16s27",port="1"} 2',
        'node_efa_tx_bytes_total{device="rdmap16s27",port="1"} 1000',
        'node_efa_tx_bytes_total{device="rdmap32s27",port="1"} 5000',
    ]
    assert not (out_dir / "efa.prom.tmp").exists()
    if PROMTOOL:
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                               text=True)
        assert "error" not in (check.stdout + check.stderr).lower()


def test_efa_textfile_sidecar_writes_an_empty_file_without_efa(tmp_path):
    out_dir = tmp_path / "textfile"
    out_dir.mkdir()
    script = (efa_script().replace("/host/sys", str(tmp_path / "nosys"))
              .replace("/run/trainyard-textfile", str(out_dir)).replace("sleep 15", "exit 0"))
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    assert (out_dir / "efa.prom").read_text() == ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_sidecar(metrics):
    """Run the runtime's train-metrics sidecar over `metrics` (a JSONL file) and scrape it once."""
    port = free_port()
    env = {"TRAIN_METRICS_FILE": str(metrics), "TRAIN_METRICS_PORT": str(port),
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-c", jobspec.exporter()["script"]], env=env)
    try:
        body = None
        for _ in range(50):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert body is not None, "the sidecar did not come up"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    samples = dict(ln.split(" ", 1) for ln in body.splitlines() if not ln.startswith("#"))
    return body, samples


def test_training_sidecar_serves_the_last_step_of_the_jsonl(tmp_path):
    metrics = tmp_path / "train.jsonl"
    metrics.write_text(
        json.dumps({"step": 10, "loss": 5.5, "tokens": 10240, "tokens_per_s": 51234.5,
                    "mfu": None}) + "\n"
        + json.dumps({"event": "checkpoint", "step": 10}) + "\n"
        + json.dumps({"step": 20, "loss": 4.25, "tokens": 20480, "tokens_per_s": 60000.0,
                      "mfu": 0.41}) + "\n"
        + '{"step": 30, "loss": 4.1, "tok')  # a half-written line is skipped
    body, samples = scrape_sidecar(metrics)
    assert samples["trainyard_train_step"] == "20.0"
    assert samples["trainyard_train_loss"] == "4.25"
    assert samples["trainyard_train_tokens_per_second"] == "60000.0"
    assert samples["trainyard_train_mfu_ratio"] == "0.41"
    assert samples["trainyard_train_tokens_total"] == "20480.0"
    assert abs(float(samples["trainyard_train_metrics_file_mtime_seconds"]) -
               metrics.stat().st_mtime) < 1
    if PROMTOOL:
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_training_sidecar_serves_vision_throughput(tmp_path):
    metrics = tmp_path / "train.jsonl"
    metrics.write_text(json.dumps({"step": 5, "loss": 1.5, "images": 640, "images_per_s": 812.5,
                                   "mfu": None}) + "\n")
    _, samples = scrape_sidecar(metrics)
    assert samples["trainyard_train_images_per_second"] == "812.5"
    assert samples["trainyard_train_images_total"] == "640.0"


def test_training_sidecar_serves_the_last_evaluation(tmp_path):
    """Step records carry the last eval (workloads/vision and llm trainers): the sidecar serves
    it, so the held-out figures reach Prometheus, not only the metrics file and TensorBoard."""
    metrics = tmp_path / "train.jsonl"
    metrics.write_text(
        json.dumps({"event": "eval", "step": 100, "eval_loss": 0.9, "eval_top1": 0.71}) + "\n"
        + json.dumps({"step": 101, "loss": 0.8, "images": 64, "images_per_s": 100.0,
                      "eval_loss": 0.9, "eval_top1": 0.71, "eval_top5": 0.93,
                      "eval_step": 100}) + "\n")
    _, samples = scrape_sidecar(metrics)
    assert samples["trainyard_train_eval_loss"] == "0.9"
    assert samples["trainyard_train_eval_top1_ratio"] == "0.71"
    assert samples["trainyard_train_eval_top5_ratio"] == "0.93"


def test_monitoring_namespace_denies_ingress_except_within_and_the_operator_webhook(prod):
    # the Monitoring component's own policies (KEDA adds one letting its scaler query Prometheus)
    pols = {n: r["inputs"]["spec"] for n, r in
            in_namespace(prod, "kubernetes:networking.k8s.io/v1:NetworkPolicy").items()
            if "Monitoring" in r["urn"]}
    assert set(pols) == {"default-deny", "allow-dns", "allow-same-namespace", "allow-egress",
                         "allow-https-egress", "allow-operator-webhook"}
    assert pols["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    ingress = {name: spec["ingress"] for name, spec in pols.items() if "ingress" in spec}
    assert ingress == {
        "allow-same-namespace": [{"from": [{"podSelector": {}}]}],
        # the EKS control plane calls the webhook from ENIs in the cluster's subnets: private
        # ranges only, never the internet
        "allow-operator-webhook": [{"from": [{"ipBlock": {"cidr": c}} for c in PRIVATE_RANGES],
                                    "ports": [{"protocol": "TCP", "port": 10250}]}]}
