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
