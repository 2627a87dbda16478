"""Grafana dashboards (components/data/dashboards/*.json): valid JSON, Grafana's shape, and only
metrics the installed exporters provide (metrics.txt, itself checked against each exporter) or
the shipped recording rules write (data/alerts/cost.yaml)."""

from __future__ import annotations

import json
import re

import pytest

from components.services import monitoring as m

DASHBOARD_FILES = sorted(m.DASHBOARDS_DIR.glob("*.json"))
# Port counters of the Linux EFA driver (drivers/infiniband/hw/efa/efa_verbs.c, EFA_PORT_STATS)
# that the efa-textfile sidecar turns into node_efa_<counter>_total.
EFA_PORT_COUNTERS = {
    "tx_bytes", "tx_pkts", "rx_bytes", "rx_pkts", "rx_drops", "send_bytes", "send_wrs",
    "recv_bytes", "recv_wrs", "rdma_read_wrs", "rdma_read_bytes", "rdma_read_wr_err",
    "rdma_read_resp_bytes", "rdma_write_wrs", "rdma_write_bytes", "rdma_write_wr_err",
    "rdma_write_recv_bytes", "retrans_bytes", "retrans_pkts", "retrans_timeout_events",
    "unresponsive_remote_events", "impaired_remote_conn_events",
}


def load(path):
    return json.loads(path.read_text())


def all_panels(items):
    for p in items:
        yield p
        yield from all_panels(p.get("panels", []))


def test_there_are_dashboards():
    assert {"gpu.json", "efa.json", "training.json", "cost.json", "serving.json"} <= {p.name for p in DASHBOARD_FILES}


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_is_valid_grafana_json(path):
    d = load(path)  # raises on invalid JSON
    assert d["uid"] and len(d["uid"]) <= 40 and d["title"].startswith("trainyard / ")
    assert isinstance(d["schemaVersion"], int)
    names = [v["name"] for v in d["templating"]["list"]]
    assert names[0] == "datasource" and len(names) == len(set(names))
    ids = [p["id"] for p in all_panels(d["panels"])]
    assert len(ids) == len(set(ids))
    for p in all_panels(d["panels"]):
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + \
            p["gridPos"]["w"] <= 24
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))


def test_dashboard_uids_are_unique():
    uids = [load(p)["uid"] for p in DASHBOARD_FILES]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_references_only_provided_metrics(path):
    known = m.known_metrics() | m.recorded_metrics()
    exprs = m.dashboard_exprs(load(path))
    assert exprs
    for expr in exprs:
        names = m.promql_metric_names(expr)
        assert names, f"{path.name}: no metric in {expr!r}"
        missing = names - known
        assert not missing, (f"{path.name}: {sorted(missing)} neither in metrics.txt nor "
                             f"recorded by a rule ({expr!r})")


def test_dashboards_cover_what_the_issue_asks_for():
    used = set()
    for path in DASHBOARD_FILES:
        for expr in m.dashboard_exprs(load(path)):
            used |= m.promql_metric_names(expr)
    wanted = {
        "GPU utilisation": "DCGM_FI_DEV_GPU_UTIL", "memory": "DCGM_FI_DEV_FB_USED",
        "power": "DCGM_FI_DEV_POWER_USAGE", "temperature": "DCGM_FI_DEV_GPU_TEMP",
        "XID errors": "DCGM_FI_DEV_XID_ERRORS", "NVLink": "DCGM_FI_PROF_NVLINK_TX_BYTES",
        "EFA traffic": "node_efa_tx_bytes_total", "EFA errors": "node_efa_rx_drops_total",
        "training throughput": "trainyard_train_tokens_per_second",
        "GPU-hours allocated": "trainyard:gpu_allocated_hours:sum24h",
        "GPU-hours idle": "trainyard:gpu_idle_allocated_hours:sum24h",
    }
    assert {topic for topic, metric in wanted.items() if metric not in used} == set()


def test_the_cost_panels_show_allocated_vs_idle_per_pool_and_per_team():
    gpu = load(m.DASHBOARDS_DIR / "gpu.json")
    (row,) = [p for p in gpu["panels"] if p["type"] == "row" and p["title"] == "Cost and waste"]
    below = [p for p in gpu["panels"] if p["gridPos"]["y"] > row["gridPos"]["y"]]
    exprs = [t["expr"] for p in below for t in p["targets"]]
    for by in ("pool", "namespace"):
        for series in ("trainyard:gpu_allocated_hours:sum24h",
                       "trainyard:gpu_idle_allocated_hours:sum24h"):
            assert f'sum by ({by}) ({series}{{pool=~"$pool"}})' in exprs, (by, series)


def test_metrics_txt_is_not_where_recorded_series_go():
    assert not m.known_metrics() & m.recorded_metrics()


# ----------------------------------------------------------------------------------------------
# metrics.txt is true to the exporters
# ----------------------------------------------------------------------------------------------
def test_metrics_txt_dcgm_names_are_exactly_the_configured_counters():
    dcgm = {n for n in m.known_metrics() if n.startswith("DCGM_")}
    assert dcgm == {c["field"] for c in m.dcgm_counters()}


def test_metrics_txt_efa_names_are_efa_driver_port_counters():
    efa = {n for n in m.known_metrics() if n.startswith("node_efa_")}
    assert efa == {f"node_efa_{c}_total" for c in EFA_PORT_COUNTERS}


def test_metrics_txt_training_names_are_what_the_sidecar_serves():
    from trainyard.jobspec import exporter

    served = set(re.findall(r"\btrainyard_train_\w+", exporter()["script"]))
    assert {n for n in m.known_metrics() if n.startswith("trainyard_")} == served


def test_metrics_txt_has_no_duplicates_or_odd_names():
    lines = [ln.split("#", 1)[0].strip() for ln in
             (m.DASHBOARDS_DIR / "metrics.txt").read_text().splitlines()]
    names = [ln for ln in lines if ln]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", n) for n in names)


# ----------------------------------------------------------------------------------------------
# The tokenizer
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr, names", [
    ("up", {"up"}),
    ('sum by (node) (rate(node_efa_tx_bytes_total{node=~"$node"}[$__rate_interval]))',
     {"node_efa_tx_bytes_total"}),
    ("DCGM_FI_DEV_FB_USED * 1048576 / 1e6", {"DCGM_FI_DEV_FB_USED"}),
    ('a * on (node) group_left (label_x) max by (node, label_x) (b{label_x!=""})', {"a", "b"}),
    ('count(x) without (gpu) > bool 0 and y unless z or w offset 5m', {"x", "y", "z", "w"}),
    ('label_replace(up, "dst", "$1", "src", "(.*)")', {"up"}),
    ("time() - max(trainyard_train_metrics_file_mtime_seconds)",
     {"trainyard_train_metrics_file_mtime_seconds"}),
    ('histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))', {"h_bucket"}),
    ('max_over_time(x[1h:5m]) < Inf', {"x"}),
    ('sum(a{job="b{c}"}) by (d)', {"a"}),
    ("${datasource}", set()),
])
def test_promql_metric_names(expr, names):
    assert m.promql_metric_names(expr) == names


@pytest.mark.parametrize("query, exprs", [
    ('label_values(kube_node_labels{a="b"}, label_trainyard_io_pool)', ['kube_node_labels{a="b"}']),
    ("label_values(node)", []),
    ("query_result(topk(3, up))", ["topk(3, up)"]),
    ("up", ["up"]),
])
def test_grafana_variable_exprs(query, exprs):
    assert m.grafana_variable_exprs(query) == exprs


def test_the_cost_dashboard_shows_paid_allocated_used_and_idle_per_pool_team_and_job():
    cost = load(m.DASHBOARDS_DIR / "cost.json")
    exprs = " ".join(t["expr"] for p in all_panels(cost["panels"]) for t in p.get("targets", []))
    for series in ("trainyard:gpu_capacity_hours:sum24h", "trainyard:gpu_allocated_hours:sum24h",
                   "trainyard:gpu_used_hours:sum24h", "trainyard:gpu_idle_allocated_hours:sum24h",
                   "trainyard:gpu_allocated_by_job_hours:sum24h"):
        assert series in exprs, series
    for by in ("sum by (pool)", "sum by (namespace)", "sum by (namespace, job_name)"):
        assert by in exprs, by
