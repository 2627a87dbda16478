"""`trainyard plan`: the JSON contract, determinism, references and the human summary."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_contract_shape(any_plan):
    assert any_plan["project"] == "trainyard" and any_plan["stack"] in ("dev", "staging", "prod")
    urns = {r["urn"] for r in any_plan["resources"]}
    assert len(urns) == len(any_plan["resources"])
    for r in any_plan["resources"]:
        assert {"urn", "type", "name", "parent", "id", "inputs", "outputs"} <= set(r)
        assert r["parent"] is None or r["parent"] in urns
        if r["custom"]:
            assert r["id"], r["urn"]
    components = [r for r in any_plan["resources"] if r["type"].startswith("trainyard:index:")]
    assert {c["type"] for c in components} >= {"trainyard:index:Platform", "trainyard:index:Network"}


def test_references_resolve_to_mock_ids(plan_for):
    plan = plan_for("prod")
    ids = {r["id"] for r in plan["resources"] if r["id"]}
    subnets = [r for r in plan["resources"] if r["type"] == "aws:ec2/subnet:Subnet"]
    assert all(s["inputs"]["vpcId"] in ids for s in subnets)
    vpc = next(r for r in plan["resources"] if r["type"] == "aws:ec2/vpc:Vpc")
    assert vpc["id"].startswith("vpc-") and vpc["outputs"]["arn"].startswith("arn:aws:ec2:us-east-1:")


def test_no_secret_in_plain_text(any_plan):
    text = json.dumps(any_plan)
    assert "BEGIN RSA PRIVATE KEY" not in text


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_byte_identical_across_processes(stack, tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"{stack}-{i}.json"
        r = subprocess.run([sys.executable, "-m", "trainyard", "plan", "--stack", stack,
                            "--json", str(out), "--quiet"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert json.loads(outs[0])["stack"] == stack


def test_human_summary():
    r = subprocess.run([sys.executable, "-m", "trainyard", "plan", "--stack", "prod"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "stack 'prod'" in r.stdout and "placeholders" in r.stdout
    assert "Network" in r.stdout


def test_stack_file_and_stack_are_exclusive():
    r = subprocess.run([sys.executable, "-m", "trainyard", "plan", "--stack", "dev",
                        "--stack-file", "stacks/Pulumi.dev.yaml"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_unwritable_json_path_is_a_clear_error(tmp_path):
    target = tmp_path / "missing" / "plan.json"
    r = subprocess.run([sys.executable, "-m", "trainyard", "plan", "--stack", "dev",
                        "--json", str(target)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {target}: cannot write: no directory {target.parent}"


# ----------------------------------------------------------------------------------------------
# The human summary: one count (the one `check` gives), AZs per pool, the subnet IP budget
# ----------------------------------------------------------------------------------------------
def test_plan_and_check_count_the_same_resources(plan_for, capsys):
    from trainyard.check import render, run_checks
    from trainyard.plan import count_resources, summarize

    plan = plan_for("prod")
    counts = count_resources(plan)
    custom = [r for r in plan["resources"] if r["custom"]]
    assert counts.resources == len(custom)
    assert counts.providers == sum(1 for r in custom if r["type"].startswith("pulumi:providers:"))
    assert counts.components == sum(1 for r in plan["resources"]
                                    if r["type"].startswith("trainyard:index:"))
    assert counts.total == len(plan["resources"])  # what the policies are handed
    phrase = str(counts)
    assert phrase.startswith(f"{counts.resources} resources") and \
        f"and {counts.components} components" in phrase
    report = run_checks(plan, policies=[])
    assert report.resources == counts.total
    assert f"over {phrase}:" in render(report)
    assert f"  {phrase}" in summarize(plan)
    assert report.to_json()["resources"] == counts.resources
    assert report.to_json()["components"] == counts.components


def test_pool_table_has_the_pools_availability_zones(plan_for):
    from trainyard.plan import planned_pools, summarize

    plan = plan_for("prod")
    pools = {p.label: p for p in planned_pools(plan)}
    assert pools["a100"].availability_zones == ("us-east-1a",)
    assert pools["h100"].availability_zones == ("us-east-1b",)
    assert pools["eval-spot"].availability_zones == ("us-east-1a", "us-east-1b", "us-east-1c")
    text = summarize(plan)
    header = next(line for line in text.splitlines() if line.strip().startswith("pool "))
    assert " AZ " in header
    a100 = next(line for line in text.splitlines() if line.strip().startswith("a100 "))
    assert "us-east-1a" in a100 and "us-east-1b" not in a100


def test_subnet_table_is_netmaths_ip_budget(plan_for):
    from components.compute.catalog import load_catalog
    from components.network import netmath
    from trainyard.plan import subnet_rows, summarize
    from trainyard.synth import load_config

    cfg, plan = load_config("prod"), plan_for("prod")
    rows = subnet_rows(cfg)
    planned = {(r["inputs"]["availabilityZone"], r["inputs"]["cidrBlock"])
               for r in plan["resources"] if r["type"] == "aws:ec2/subnet:Subnet"}
    assert {(r.az, r.cidr) for r in rows} == planned  # the subnets the program creates
    private = {r.az: r for r in rows if r.role == "private"}
    for az, row in private.items():
        assert row.usable == netmath.usable_addresses(row.cidr)
        assert row.needed_at_max == netmath.ips_needed_in_az(
            az, cfg.gpu_pools, cfg.cluster.system_nodes, cfg.network, load_catalog())
        assert 0 < row.needed_at_max <= row.usable
    # us-east-1a holds the a100 and g-spot pools at max size: the largest demand.
    assert max(private.values(), key=lambda r: r.needed_at_max).az == "us-east-1a"
    text = summarize(plan, config=cfg)
    assert "IPs needed at max" in text and "usable IPs" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("private  us-east-1a"))
    assert f"{private['us-east-1a'].needed_at_max:,}" in line and \
        f"{private['us-east-1a'].usable:,}" in line


def test_pool_table_shows_each_pools_provisioner(plan_for):
    """Karpenter pools are in the table (and the GPU total) with no standing nodes and their
    NodePool's limits as the maximum; reserved and system pools are node groups."""
    from trainyard.plan import summarize

    text = summarize(plan_for("prod"))
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.startswith("    ") and len(line.split()) > 4}
    assert rows["a100"][1:3] == ["karpenter", "ON_DEMAND"] and "0/0/16" in rows["a100"]
    assert rows["g-spot"][1:3] == ["karpenter", "SPOT"] and "0/0/8" in rows["g-spot"]
    assert rows["h100"][1:3] == ["managed", "CAPACITY_BLOCK"] and "0/4/4" in rows["h100"]
    assert rows["system"][1] == "managed"
    assert "at max size: 256 GPUs, 200 EFA interfaces" in text  # 248 training + 8 inference
