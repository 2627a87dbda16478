"""`trainyard cost --actual` against botocore's Stubber: realistic GetCostAndUsage pages
(NextPageToken), the estimate beside the actual, the Spot discount obtained, the team split from
Prometheus, and every error a one-line message with exit 2 and nothing else printed."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import pytest
from botocore.stub import ANY, Stubber

from trainyard import cost_actual
from trainyard.cli import main

START, END = "2026-11-01", "2026-11-08"  # 7 days, 168 h


def money(x: float) -> dict:
    return {"Amount": f"{x:.10f}", "Unit": "USD"}


def group(pool: str, purchase: str, usd: float, qty: float | None = None) -> dict:
    metrics = {"UnblendedCost": money(usd)}
    if qty is not None:
        metrics["UsageQuantity"] = {"Amount": f"{qty:.6f}", "Unit": "Hrs"}
    return {"Keys": [f"trainyard.io/pool${pool}", purchase], "Metrics": metrics}


def page(groups: list, token: str | None = None, estimated: bool = False) -> dict:
    resp = {"ResultsByTime": [{"TimePeriod": {"Start": START, "End": END}, "Total": {},
                               "Groups": groups, "Estimated": estimated}],
            "DimensionValueAttributes": [],
            "GroupDefinitions": [{"Type": "TAG", "Key": "trainyard.io/pool"},
                                 {"Type": "DIMENSION", "Key": "PURCHASE_TYPE"}]}
    if token:
        resp["NextPageToken"] = token
    return resp


@pytest.fixture
def ce():
    client = boto3.client("ce", region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    with Stubber(client) as stub:
        yield client, stub


def spend_params(token=None):
    p = {"TimePeriod": {"Start": START, "End": END}, "Granularity": "MONTHLY",
         "GroupBy": ANY, "Metrics": ["UnblendedCost"],
         "Filter": {"Tags": {"Key": "trainyard.io/stack", "Values": ["dev"],
                             "MatchOptions": ["EQUALS"]}}}
    if token:
        p["NextPageToken"] = token
    return p


def hours_params():
    return {"TimePeriod": {"Start": START, "End": END}, "Granularity": "MONTHLY",
            "GroupBy": ANY, "Metrics": ["UsageQuantity", "UnblendedCost"],
            "Filter": {"And": [spend_params()["Filter"], {"Dimensions": {
                "Key": "USAGE_TYPE_GROUP", "Values": ["EC2: Running Hours"]}}]}}


def run_actual(monkeypatch, plan_for, client, *extra):
    from trainyard import synth

    monkeypatch.setattr(synth, "synthesize", lambda stack, stack_file=None: plan_for(stack))
    monkeypatch.setattr(cost_actual, "ce_client", lambda profile=None: client)
    return main(["cost", "--stack", "dev", "--actual", "--since", START, "--until", END, *extra])


def dev_pools(plan_for) -> dict:
    from trainyard.cost import estimate

    return {p["pool"]: p for p in estimate(plan_for("dev"))["pools"]}


def stub_happy(stub, pools):
    spot_pool = next(n for n, p in pools.items() if p["spot_possible"] and p["gpus_per_node"])
    od = pools[spot_pool]["price_per_node_hour"]["on_demand"]
    # Spend, in two pages: the pool's Spot instances, then its EBS and the shared rest.
    stub.add_response("get_cost_and_usage", page([group(spot_pool, "Spot Instances", 50 * od * 0.3)],
                                                 token="p2"), spend_params())
    stub.add_response("get_cost_and_usage", page([
        group(spot_pool, "On Demand Instances", 4.0),
        group("", "On Demand Instances", 120.5)], estimated=True), spend_params("p2"))
    # Running hours: 50 Spot node-hours at 70 % off on-demand.
    stub.add_response("get_cost_and_usage", page([
        group(spot_pool, "Spot Instances", 50 * od * 0.3, qty=50.0)]), hours_params())
    stub.add_response("list_cost_allocation_tags", {"CostAllocationTags": [
        {"TagKey": "trainyard.io/stack", "Type": "UserDefined", "Status": "Active"}]},
        {"TagKeys": ["trainyard.io/stack", "trainyard.io/pool"]})
    return spot_pool


def test_actual_spend_per_pool_beside_the_estimate(ce, monkeypatch, plan_for, capsys, tmp_path):
    client, stub = ce
    pools = dev_pools(plan_for)
    spot_pool = stub_happy(stub, pools)
    out_json = tmp_path / "actual.json"
    assert run_actual(monkeypatch, plan_for, client, "--json", str(out_json)) == 0
    stub.assert_no_pending_responses()
    out = capsys.readouterr().out
    assert "includes AWS estimates" in out
    assert "cost-allocation tag trainyard.io/pool is not active" in out
    report = json.loads(out_json.read_text())
    assert report["period"] == {"start": START, "end": END, "hours": 168.0}
    row = next(r for r in report["pools"] if r["pool"] == spot_pool)
    od = pools[spot_pool]["price_per_node_hour"]["on_demand"]
    assert row["actual_usd"] == pytest.approx(50 * od * 0.3 + 4.0, abs=0.01)
    assert row["spot_discount_obtained"] == pytest.approx(0.7, abs=1e-3)
    assert row["avg_nodes"] == pytest.approx(50 / 168, abs=1e-3)
    hourly_max = pools[spot_pool]["hourly"]["max"]["effective"] + pools[spot_pool]["ebs_hourly"]["max"]
    assert row["estimate_usd"]["max"] == pytest.approx(hourly_max * 168, abs=0.01)
    shared = next(r for r in report["pools"] if r["pool"] == "(shared)")
    assert shared["actual_usd"] == pytest.approx(120.5)
    assert report["actual_total_usd"] == pytest.approx(120.5 + 4.0 + 50 * od * 0.3, abs=0.01)
    # every plan pool has a row, used or not
    assert {p for p in pools} <= {r["pool"] for r in report["pools"]}


def test_team_split_from_prometheus(ce, monkeypatch, plan_for, capsys, tmp_path):
    client, stub = ce
    pools = dev_pools(plan_for)
    spot_pool = stub_happy(stub, pools)
    gpus = pools[spot_pool]["gpus_per_node"]
    queries = []

    def query(expr):
        queries.append(expr)
        if "gpu_idle" in expr:
            return [{"metric": {"pool": spot_pool, "namespace": "research"}, "value": [0, "5"]}]
        return [{"metric": {"pool": spot_pool, "namespace": "research"}, "value": [0, "20"]},
                {"metric": {"pool": spot_pool, "namespace": "applied"}, "value": [0, "10"]}]

    monkeypatch.setattr(cost_actual, "prometheus_query", lambda url, at: query)
    out_json = tmp_path / "a.json"
    assert run_actual(monkeypatch, plan_for, client, "--prometheus", "http://127.0.0.1:9090",
                      "--json", str(out_json)) == 0
    assert all("[168h:1m]" in q for q in queries)
    row = next(r for r in json.loads(out_json.read_text())["pools"] if r["pool"] == spot_pool)
    paid = 50 * gpus
    per_gpu_hour = row["actual_usd"] / paid
    assert row["teams"]["research"]["usd"] == pytest.approx(20 * per_gpu_hour, abs=0.01)
    assert row["teams"]["research"]["idle_usd"] == pytest.approx(5 * per_gpu_hour, abs=0.01)
    assert row["teams"]["(unallocated)"]["gpu_hours"] == pytest.approx(paid - 30)
    assert "Per team" in capsys.readouterr().out


@pytest.mark.parametrize("code,needle", [
    ("DataUnavailableException", "no data for 2026-11-01..2026-11-08 yet"),
    ("LimitExceededException", "throttled"),
    ("AccessDeniedException", "ce:GetCostAndUsage"),
    ("SomethingNewException", "GetCostAndUsage failed: SomethingNewException"),
])
def test_cost_explorer_errors_are_one_line_and_print_nothing_else(ce, monkeypatch, plan_for,
                                                                  capsys, code, needle):
    client, stub = ce
    pools = dev_pools(plan_for)
    spot_pool = next(iter(pools))
    # the first page succeeds, the second fails: nothing of the first may be printed
    stub.add_response("get_cost_and_usage", page([group(spot_pool, "Spot Instances", 1.0)],
                                                 token="p2"), spend_params())
    stub.add_client_error("get_cost_and_usage", service_error_code=code, service_message="x",
                          http_status_code=400)
    assert run_actual(monkeypatch, plan_for, client) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert needle in captured.err and len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,needle", [
    (["--actual"], "--actual needs --since"),
    (["--actual", "--since", "2026-13-01"], "--since '2026-13-01' is not a date"),
    (["--actual", "--since", "2026-11-08", "--until", "2026-11-01"], "must be after --since"),
    (["--actual", "--since", "2026-11-01", "--until", "2999-01-01"], "is in the future"),
    (["--actual", "--since", "2020-01-01"], "about 14 months"),
    (["--since", "2026-11-01"], "need --actual"),
    (["--actual", "--since", "2026-11-01", "--prometheus", "localhost:9090"], "not an http(s) URL"),
])
def test_bad_flags(monkeypatch, plan_for, capsys, argv, needle):
    from trainyard import synth

    monkeypatch.setattr(synth, "synthesize", lambda stack, stack_file=None: plan_for(stack))
    monkeypatch.setattr(cost_actual, "ce_client", lambda profile=None: pytest.fail("no CE call"))
    assert main(["cost", "--stack", "dev", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_period_defaults_to_today_exclusive():
    today = dt.date(2026, 11, 27)
    assert cost_actual.parse_period("2026-11-01", None, today) == (dt.date(2026, 11, 1), today)


def test_prometheus_query_reads_the_http_api():
    """A real HTTP round trip against a tiny local server speaking Prometheus' query API."""
    import http.server
    import threading

    seen = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"pool": "a", "namespace": "t"}, "value": [1, "3.5"]}]}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        q = cost_actual.prometheus_query(f"http://127.0.0.1:{srv.server_port}",
                                         dt.datetime(2026, 11, 8, tzinfo=dt.UTC))
        assert cost_actual.team_gpu_hours(q, 168) == {"a": {"t": {"held": 3.5, "idle": 3.5}}}
    finally:
        srv.shutdown()
    assert seen and seen[0].startswith("/api/v1/query?query=")
