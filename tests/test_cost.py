"""`trainyard cost`: exact arithmetic on a hand-written plan, every price dated, on-demand vs
spot, fixed costs, blended $/GPU-hour, the JSON `trainyard review` reads, and bad input."""

from __future__ import annotations

import json

import pytest

from components.compute.catalog import load_catalog
from trainyard.cli import main
from trainyard.cost import assumed_spot, estimate

CAT = load_catalog()
S = CAT.services
HPM = S["hours_per_month"]


def R(typ, name, inputs, rid=None, outputs=None):
    return {"urn": f"urn:pulumi:t::trainyard::{typ}::{name}", "type": typ, "name": name,
            "parent": None, "id": rid or f"{name}-id", "inputs": inputs,
            "outputs": outputs or {"arn": f"arn:aws:ec2:us-east-1:123456789012:x/{name}"}}


def ng(name, types, capacity, lo, want, hi, lt=None):
    inputs = {"instanceTypes": types, "capacityType": capacity,
              "scalingConfig": {"minSize": lo, "desiredSize": want, "maxSize": hi},
              "labels": {"trainyard.io/pool": name}}
    if lt:
        inputs["launchTemplate"] = {"id": lt, "version": "1"}
    return R("aws:eks/nodeGroup:NodeGroup", f"{name}-ng", inputs)


PLAN = {"project": "trainyard", "stack": "t", "outputs": {}, "resources": [
    R("aws:eks/cluster:Cluster", "eks", {"version": "1.33"}),
    ng("system", ["m6i.xlarge"], "ON_DEMAND", 2, 2, 4),
    ng("a100", ["p4d.24xlarge"], "ON_DEMAND", 0, 2, 4),
    ng("spot", ["g5.48xlarge", "g6.48xlarge"], "SPOT", 0, 1, 2),
    R("aws:ec2/natGateway:NatGateway", "nat-a", {"connectivityType": "public"}),
    R("aws:ec2/natGateway:NatGateway", "nat-b", {}),
    R("aws:ec2/vpcEndpoint:VpcEndpoint", "ecr", {"vpcEndpointType": "Interface",
                                                  "subnetIds": ["s1", "s2", "s3"]}),
    R("aws:ec2/vpcEndpoint:VpcEndpoint", "s3", {"vpcEndpointType": "Gateway"}),
    R("aws:fsx/lustreFileSystem:LustreFileSystem", "fsx", {
        "deploymentType": "PERSISTENT_2", "storageCapacity": 1200, "perUnitStorageThroughput": 250}),
    R("aws:efs/fileSystem:FileSystem", "efs", {"encrypted": True}),
]}


def approx(x):
    return pytest.approx(x, rel=1e-6, abs=1e-3)


def test_pool_prices_at_each_size_on_demand_and_spot():
    est = estimate(PLAN, CAT)
    pools = {p["pool"]: p for p in est["pools"]}
    p4d = CAT.get("p4d.24xlarge").price_per_hour
    a100 = pools["a100"]
    assert a100["sizes"] == {"min": 0, "desired": 2, "max": 4}
    assert a100["gpus"] == {"min": 0, "desired": 16, "max": 32}
    assert a100["hourly"]["desired"]["on_demand"] == approx(2 * p4d)
    assert a100["hourly"]["max"]["spot"] == approx(4 * p4d * (1 - S["spot_discount_assumption"]))
    assert a100["hourly"]["desired"]["effective"] == approx(2 * p4d)
    assert a100["monthly"]["desired"]["on_demand"] == approx(2 * p4d * HPM)
    assert a100["usd_per_gpu_hour"]["on_demand"] == approx(p4d / 8)

    mean_od = (CAT.get("g5.48xlarge").price_per_hour + CAT.get("g6.48xlarge").price_per_hour) / 2
    spot = pools["spot"]
    assert spot["price_per_node_hour"]["on_demand"] == approx(mean_od)
    assert spot["price_per_node_hour"]["effective"] == approx(
        mean_od * (1 - S["spot_discount_assumption"]))
    assert pools["system"]["usd_per_gpu_hour"] is None


def test_fixed_costs():
    est = estimate(PLAN, CAT)
    fixed = {f["item"].split(" (")[0].split(" PERSISTENT")[0]: f for f in est["fixed"]}
    assert fixed["EKS control plane"]["hourly"] == approx(S["eks_control_plane_hour"])
    assert fixed["NAT gateway"]["count"] == 2
    assert fixed["NAT gateway"]["hourly"] == approx(2 * S["nat_gateway_hour"])
    assert fixed["Interface VPC endpoint"]["count"] == 3  # one per AZ; the gateway one is free
    assert fixed["FSx for Lustre"]["monthly"] == approx(
        1200 * S["fsx_lustre_persistent2_250_gb_month"])
    assert not any(f["item"].startswith("EFS") for f in est["fixed"])  # usage-based by default
    with_efs = estimate(PLAN, CAT, efs_gib=100)
    efs = [f for f in with_efs["fixed"] if f["item"].startswith("EFS")][0]
    assert efs["monthly"] == approx(100 * S["efs_standard_gb_month"])


def test_totals_and_blended_gpu_hour():
    est = estimate(PLAN, CAT)
    pools_desired = sum(p["hourly"]["desired"]["effective"] for p in est["pools"])
    ebs_desired = sum(p["ebs_hourly"]["desired"] for p in est["pools"])
    total = pools_desired + ebs_desired + est["fixed_hourly"]
    assert est["totals"]["desired"]["hourly"] == approx(total)
    assert est["totals"]["desired"]["gpus"] == 16 + 8
    assert est["blended_usd_per_gpu_hour"]["desired"] == approx(total / 24)
    assert est["blended_usd_per_gpu_hour"]["min"] is None  # no GPUs at min size
    assert est["monthly_total"] == approx(total * HPM)


def test_every_price_is_dated_and_sourced():
    est = estimate(PLAN, CAT)
    items = {p["item"] for p in est["prices"]}
    for t in ("m6i.xlarge", "p4d.24xlarge", "g5.48xlarge", "g6.48xlarge"):
        assert f"{t} on-demand" in items and f"{t} spot" in items
    for p in est["prices"]:
        assert p["date"] == CAT.price_date and p["source"] and p["usd"] is not None
    assert any("assumption" in p["source"] for p in est["prices"] if p["item"].endswith("spot"))
    assert any("spot" in a for a in est["assumptions"])


def test_live_spot_prices_replace_the_assumption():
    def live(instance_type, on_demand):
        return (1.0, "2026-11-20", "EC2 spot price history (test)")

    est = estimate(PLAN, CAT, spot=live)
    spot = {p["pool"]: p for p in est["pools"]}["spot"]
    assert spot["price_per_node_hour"]["spot"] == 1.0
    dated = [p for p in est["prices"] if p["item"] == "g5.48xlarge spot"]
    assert dated == [{"item": "g5.48xlarge spot", "usd": 1.0, "unit": "hour",
                      "date": "2026-11-20", "source": "EC2 spot price history (test)"}]


def test_assumed_spot_uses_the_catalog_discount():
    price, date, source = assumed_spot(CAT)("p5.48xlarge", 100.0)
    assert price == approx(100 * (1 - S["spot_discount_assumption"]))
    assert date == CAT.price_date and "spot_discount_assumption" in source


def test_launch_template_instance_type_is_priced():
    lt = R("aws:ec2/launchTemplate:LaunchTemplate", "lt", {"instanceType": "p5.48xlarge"},
           rid="lt-1")
    group = ng("h100", [], "CAPACITY_BLOCK", 0, 1, 1, lt="lt-1")
    est = estimate({"stack": "t", "resources": [lt, group]}, CAT)
    assert est["pools"][0]["instance_types"] == ["p5.48xlarge"]
    assert est["pools"][0]["hourly"]["desired"]["effective"] == approx(
        CAT.get("p5.48xlarge").price_per_hour)


def test_cli_plan_json_is_what_review_reads(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    out = tmp_path / "cost.json"
    assert main(["cost", "--plan", str(plan), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    want = estimate(PLAN, CAT)
    assert doc["monthly_total"] == approx(want["monthly_total"])
    assert doc["totals"]["max"]["monthly"] == approx(want["totals"]["max"]["monthly"])
    review = __import__("trainyard.review", fromlist=["x"])
    if hasattr(review, "monthly_totals"):  # the reader `trainyard review` uses
        assert review.monthly_totals(doc)["desired"] == approx(want["monthly_total"])
    human = capsys.readouterr().out
    assert "blended" in human and CAT.price_date in human and "on-demand" in human


def test_cli_stack(capsys, monkeypatch, plan_for):
    from trainyard import synth

    monkeypatch.setattr(synth, "synthesize", lambda stack, stack_file=None: plan_for(stack))
    assert main(["cost", "--stack", "dev"]) == 0
    out = capsys.readouterr().out
    assert "EKS control plane" in out and "NAT gateway" in out


@pytest.mark.parametrize("content,needle", [
    ("{oops", "malformed plan JSON"),
    (json.dumps({"resources": [ng("x", ["p9.huge"], "ON_DEMAND", 0, 1, 1)]}),
     "'p9.huge' is not in the catalog"),
    (json.dumps({"resources": [R("aws:eks/nodeGroup:NodeGroup", "x", {
        "instanceTypes": ["p4d.24xlarge"], "scalingConfig": {"maxSize": "many"}})]}),
     "scalingConfig.maxSize: expected a number"),
])
def test_bad_plan_exits_2(tmp_path, capsys, content, needle):
    plan = tmp_path / "plan.json"
    plan.write_text(content)
    assert main(["cost", "--plan", str(plan)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_bad_flags_exit_2(tmp_path, capsys):
    assert main(["cost", "--stack", "no-such-stack"]) == 2
    assert "unknown stack" in capsys.readouterr().err
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    assert main(["cost", "--plan", str(plan), "--efs-gib", "-1"]) == 2


# ----------------------------------------------------------------------------------------------
# Reserved capacity, EBS, KMS, warnings, units and the table people read
# ----------------------------------------------------------------------------------------------
def lt(name, gib=200, volume_type="gp3", **extra):
    return R("aws:ec2/launchTemplate:LaunchTemplate", f"{name}-lt", {
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {
            "volumeSize": gib, "volumeType": volume_type, "encrypted": "true"}}], **extra},
        rid=f"lt-{name}")


def kps_release(prometheus="500Gi", grafana="20Gi", alertmanager="2Gi"):
    pvc = lambda size: {"volumeClaimTemplate": {"spec": {  # noqa: E731
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}}
    return R("kubernetes:helm.sh/v3:Release", "kps", {
        "chart": "kube-prometheus-stack", "values": {
            "prometheus": {"prometheusSpec": {"storageSpec": pvc(prometheus)}},
            "alertmanager": {"alertmanagerSpec": {"storage": pvc(alertmanager)}},
            "grafana": {"persistence": {"enabled": True, "size": grafana}},
            "prometheusOperator": {"persistence": {"enabled": False, "size": "9Gi"}}}})


RESERVED = {"project": "trainyard", "stack": "t", "outputs": {}, "resources": [
    lt("system", gib=50), ng("system", ["m6i.xlarge"], "ON_DEMAND", 2, 2, 4, lt="lt-system"),
    lt("a100"), ng("a100", ["p4d.24xlarge"], "ON_DEMAND", 0, 2, 4, lt="lt-a100"),
    lt("odcr", capacityReservationSpecification={
        "capacityReservationTarget": {"capacityReservationId": "cr-0123456789abcdef0"}}),
    ng("odcr", ["p4d.24xlarge"], "ON_DEMAND", 2, 2, 2, lt="lt-odcr"),
    lt("h100", instanceType="p5.48xlarge", instanceMarketOptions={"marketType": "capacity-block"},
       capacityReservationSpecification={
           "capacityReservationTarget": {"capacityReservationId": "cr-0fedcba9876543210"}}),
    ng("h100", [], "CAPACITY_BLOCK", 0, 4, 4, lt="lt-h100"),
    ng("spot", ["g5.48xlarge"], "SPOT", 0, 1, 2),
    R("aws:kms/key:Key", "logs", {}), R("aws:kms/key:Key", "storage", {}),
    R("aws:kms/alias:Alias", "storage-alias", {}),
    kps_release(),
]}


def test_reserved_capacity_is_never_priced_as_spot():
    est = estimate(RESERVED, CAT)
    pools = {p["pool"]: p for p in est["pools"]}
    assert (pools["h100"]["reservation"], pools["odcr"]["reservation"]) == ("capacity-block", "odcr")
    for name in ("h100", "odcr"):
        p = pools[name]
        assert not p["spot_possible"]
        assert p["price_per_node_hour"]["spot"] is None and p["usd_per_gpu_hour"]["spot"] is None
        assert all(p["hourly"][s]["spot"] is None for s in ("min", "desired", "max"))
    assert pools["a100"]["spot_possible"] and pools["a100"]["hourly"]["max"]["spot"] > 0
    # p5 is used only by the Capacity Block pool: no p5 Spot price is looked up or listed.
    assert "p5.48xlarge spot" not in {p["item"] for p in est["prices"]}
    asked = []
    estimate(RESERVED, CAT, spot=lambda t, od: asked.append(t) or (od / 2, "d", "s"))
    assert "p5.48xlarge" not in asked
    # pools_hourly_spot: the pools that can be Spot at Spot, the others at their own price
    d = est["totals"]["desired"]
    assert d["pools_hourly_spot"] == approx(sum(
        p["hourly"]["desired"]["spot"] if p["spot_possible"] else p["hourly"]["desired"]["effective"]
        for p in est["pools"]))


def test_node_root_volumes_chart_volumes_and_kms_keys_are_counted():
    est = estimate(RESERVED, CAT)
    gp3 = 0.08
    pools = {p["pool"]: p for p in est["pools"]}
    assert pools["a100"]["root_volume_gib"] == 200 and pools["system"]["root_volume_gib"] == 50
    assert pools["a100"]["ebs_monthly"] == {"min": 0, "desired": approx(2 * 200 * gp3),
                                            "max": approx(4 * 200 * gp3)}
    assert pools["spot"]["root_volume_gib"] == 0  # no launch template, no diskSize
    assert any(w.startswith("node group spot: the plan gives no root volume size")
               for w in est["warnings"])
    fixed = {f["item"]: f for f in est["fixed"]}
    kms = fixed["KMS customer managed key"]
    assert kms["count"] == 2 and kms["monthly"] == approx(2 * 1.00)  # aliases are free
    charts = fixed["EBS gp3 persistent volumes (charts)"]
    assert charts["count"] == 500 + 20 + 2  # the operator's persistence is disabled
    assert charts["monthly"] == approx(522 * gp3)
    assert "prometheus 500 GiB" in charts["note"] and "grafana 20 GiB" in charts["note"]
    ebs = sum(p["ebs_hourly"]["max"] for p in est["pools"])
    pools_max = sum(p["hourly"]["max"]["effective"] for p in est["pools"])
    assert est["totals"]["max"]["hourly"] == approx(pools_max + ebs + est["fixed_hourly"])
    for item in ("KMS customer managed key", "EBS gp3 persistent volumes (charts)",
                 "EBS gp3 node root volumes"):
        (price,) = [p for p in est["prices"] if p["item"] == item]
        assert price["date"] and "pricing page" in price["source"], price


def test_prices_from_another_region_are_a_warning_at_the_top(capsys, tmp_path):
    plan = json.loads(json.dumps(RESERVED))
    for r in plan["resources"]:
        r["outputs"]["arn"] = r["outputs"]["arn"].replace("us-east-1", "eu-west-1")
    est = estimate(plan, CAT)
    assert est["region"] == "eu-west-1"
    assert est["warnings"][0] == ("the stack is in eu-west-1 but every price here is a "
                                  "us-east-1 list price; eu-west-1 prices differ")
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    assert main(["cost", "--plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.index("Warnings:") < out.index("Node pools")
    assert out.index("eu-west-1 prices differ") < out.index("Node pools")


def test_human_output_is_a_pool_by_size_table_in_one_unit_system(capsys, tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(RESERVED))
    out_json = tmp_path / "cost.json"
    assert main(["cost", "--plan", str(path), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    est = json.loads(out_json.read_text())
    assert est["units"].startswith("US dollars, per hour and per month of 730 hours") and \
        "GiB" in est["units"]
    assert f"Units: {est['units']}" in out
    assert "GB-month" not in out.replace('"GB"', "")  # one unit system: GiB
    lines = out.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["pool", "capacity"])
    cols = lines[header].split()
    assert cols[cols.index("min"):cols.index("min") + 3] == ["min", "desired", "max"]
    rows = {ln.split()[0]: ln for ln in lines[header + 1:header + 1 + len(est["pools"])]}
    assert set(rows) == {p["pool"] for p in est["pools"]}
    a100 = next(p for p in est["pools"] if p["pool"] == "a100")
    for size in ("min", "desired", "max"):
        assert f"${a100['hourly'][size]['effective']:,.2f}" in rows["a100"]
    assert "Spot $" in rows["a100"]
    assert "Spot" not in rows["h100"].replace("none: Capacity Block", "")
    assert rows["h100"].rstrip().endswith("none: Capacity Block")
    assert rows["odcr"].rstrip().endswith("none: ODCR")
    assert "on-demand $" in rows["spot"]
    # the keys `trainyard review` reads are still there
    assert est["monthly_total"] == est["totals"]["desired"]["monthly"]
    assert {"hourly", "monthly", "gpus"} <= set(est["totals"]["max"])


def test_prod_plan_costs_its_reserved_pools_without_spot(plan_for):
    est = estimate(plan_for("prod"), CAT)
    h100 = next(p for p in est["pools"] if p["pool"] == "h100")
    assert h100["reservation"] == "capacity-block" and not h100["spot_possible"]
    assert all(p["root_volume_gib"] for p in est["pools"])  # every launch template says
    fixed = {f["item"]: f for f in est["fixed"]}
    assert fixed["KMS customer managed key"]["count"] >= 1
    assert fixed["EBS gp3 persistent volumes (charts)"]["count"] >= 500  # prometheusStorageGiB
    assert not est["warnings"]


# ----------------------------------------------------------------------------------------------
# Karpenter pools: no standing nodes, max from the NodePool's limits, EBS from the EC2NodeClass
# ----------------------------------------------------------------------------------------------
def nodepool(name, types, market, limits, volume="200Gi"):
    spec = {"template": {"metadata": {"labels": {"trainyard.io/pool": name}}, "spec": {
        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name},
        "requirements": [
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": types},
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": [market]}]}},
        "limits": limits}
    np = R("kubernetes:karpenter.sh/v1:NodePool", f"{name}-nodepool",
           {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": name},
            "spec": spec})
    nc = R("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass", f"{name}-nodeclass",
           {"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
            "metadata": {"name": name},
            "spec": {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {
                "volumeSize": volume, "volumeType": "gp3", "encrypted": True}}]}})
    return [np, nc]


KPLAN = {"project": "trainyard", "stack": "t", "outputs": {}, "resources": [
    R("aws:eks/cluster:Cluster", "eks", {"version": "1.36"}),
    *nodepool("g-spot", ["g5.48xlarge", "g6.48xlarge"], "spot",
              {"nvidia.com/gpu": "64", "cpu": "1536"}),
    *nodepool("a100", ["p4d.24xlarge"], "on-demand", {"nvidia.com/gpu": "32", "cpu": "384"},
              volume="1Ti"),
]}


def test_karpenter_pools_have_no_standing_nodes_and_their_limits_as_max():
    est = estimate(KPLAN, CAT)
    pools = {p["pool"]: p for p in est["pools"]}
    g, a = pools["g-spot"], pools["a100"]
    assert g["provisioner"] == a["provisioner"] == "karpenter"
    assert g["sizes"] == {"min": 0, "desired": 0, "max": 8}
    assert a["sizes"] == {"min": 0, "desired": 0, "max": 4}
    assert (g["capacity_type"], a["capacity_type"]) == ("SPOT", "ON_DEMAND")
    assert g["gpus"]["max"] == 64 and a["gpus"]["max"] == 32
    p4d = CAT.get("p4d.24xlarge").price_per_hour
    assert a["hourly"]["max"]["effective"] == approx(4 * p4d)
    assert a["hourly"]["desired"]["effective"] == 0
    assert (g["root_volume_gib"], a["root_volume_gib"]) == (200, 1024)
    assert est["monthly_total"] == est["totals"]["desired"]["monthly"]
    assert est["totals"]["max"]["gpus"] == 96


def test_karpenter_pool_with_an_unreadable_volume_size_exits_2(tmp_path, capsys):
    plan = json.loads(json.dumps(KPLAN))
    plan["resources"][2]["inputs"]["spec"]["blockDeviceMappings"][0]["ebs"]["volumeSize"] = "big"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    assert main(["cost", "--plan", str(path)]) == 2
    assert "volumeSize \"big\" is not a size like 200Gi" in capsys.readouterr().err


def test_prod_plan_costs_its_karpenter_pools(plan_for):
    pools = {p["pool"]: p for p in estimate(plan_for("prod"), CAT)["pools"]}
    assert {n for n, p in pools.items() if p["provisioner"] == "karpenter"} == \
        {"a100", "g-spot", "eval-spot", "inference"}
    assert pools["a100"]["sizes"] == {"min": 0, "desired": 0, "max": 16}
    assert pools["h100"]["provisioner"] == "managed"
