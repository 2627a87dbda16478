"""The GitHub workflows: valid against GitHub's workflow schema (check-jsonschema's vendored copy,
no network), clean under zizmor (offline, every persona), and shaped as docs/review.md says.

Both tools run from the venv's bin directory, as subprocesses."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
BIN = Path(sys.executable).parent
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed (pip install -e '.[dev]')"
    return found


def _load(path: Path) -> dict:
    # PyYAML reads the `on:` key as True (YAML 1.1); normalise it back.
    doc = yaml.safe_load(path.read_text())
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _steps(doc: dict):
    for job_id, job in doc["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def test_both_workflows_exist():
    assert {p.name for p in FILES} >= {"pr.yml", "deploy.yml"}


def test_schema_valid():
    proc = subprocess.run([_tool("check-jsonschema"), "--builtin-schema",
                           "vendor.github-workflows", *map(str, FILES)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_catches_a_bad_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    stepz: []\n")
    proc = subprocess.run([_tool("check-jsonschema"), "--builtin-schema",
                           "vendor.github-workflows", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0


@pytest.mark.parametrize("persona", ["regular", "pedantic", "auditor"])
def test_zizmor_clean(persona):
    proc = subprocess.run([_tool("zizmor"), "--offline", "--no-config", "--persona", persona,
                           str(WORKFLOWS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings" in proc.stdout


def test_zizmor_catches_template_injection(tmp_path):
    d = tmp_path / ".github" / "workflows"
    d.mkdir(parents=True)
    (d / "bad.yml").write_text(
        "on: pull_request\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - run: echo \"${{ github.event.pull_request.title }}\"\n")
    proc = subprocess.run([_tool("zizmor"), "--offline", "--no-config", str(d)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "template-injection" in proc.stdout


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_hardening(path):
    doc = _load(path)
    assert "pull_request_target" not in doc["on"]
    assert doc.get("permissions") == {}, "top-level permissions must be empty"
    for job_id, job in doc["jobs"].items():
        assert "permissions" in job, f"{job_id}: job without explicit permissions"
        assert job.get("timeout-minutes"), f"{job_id}: no timeout"
    for job_id, step in _steps(doc):
        uses = step.get("uses")
        if uses and not uses.startswith("./"):
            assert SHA_PIN.match(uses), f"{job_id}: {uses} is not pinned to a commit SHA"
        if uses and uses.startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False, job_id
        assert "${{" not in (step.get("run") or ""), f"{job_id}: expression inside run:"


def test_pr_workflow():
    doc = _load(WORKFLOWS / "pr.yml")
    assert list(doc["on"]) == ["pull_request"]
    jobs = doc["jobs"]
    runs = " ".join(s.get("run", "") for _, s in _steps(doc))
    assert "make lint" in runs and "make test" in runs
    review = jobs["review"]
    checkout = review["steps"][0]
    assert checkout["with"]["fetch-depth"] == 0, "review needs the base branch's history"
    assert 'trainyard review --base "origin/${BASE_REF}"' in runs
    assert review["permissions"] == {"contents": "read", "pull-requests": "write"}
    posts = [s for s in review["steps"] if "github-script" in s.get("uses", "")]
    assert posts and "trainyard-review" in posts[0]["with"]["script"]
    assert "head.repo.full_name == github.repository" in posts[0]["if"]

    preview = jobs["preview"]
    assert "vars.AWS_ROLE_ARN" in preview["if"]
    assert preview["strategy"]["matrix"]["stack"] == ["dev", "staging", "prod"]
    assert preview["permissions"]["id-token"] == "write"
    pulumi = [s for s in preview["steps"] if s.get("uses", "").startswith("pulumi/actions@")][0]
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["comment-on-pr"] is True and pulumi["with"]["diff"] is True
    assert pulumi["with"]["policyPacks"] == "policies"


def test_deploy_workflow_order_and_environments():
    doc = _load(WORKFLOWS / "deploy.yml")
    assert doc["on"] == {"push": {"branches": ["main"]}}
    assert doc["concurrency"]["cancel-in-progress"] is False
    jobs = doc["jobs"]
    assert jobs["staging"]["needs"] == "dev" and jobs["prod"]["needs"] == "staging"
    for env in ("dev", "staging", "prod"):
        job = jobs[env]
        assert job["environment"] == env
        pulumi = [s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@")][0]
        assert pulumi["with"]["command"] == "up"
        assert pulumi["with"]["stack-name"] == env
        assert pulumi["with"]["policyPacks"] == "policies"
        assert pulumi["with"]["policyPackConfigs"] == f"policies/config/{env}.json"
        runs = " ".join(s.get("run", "") for s in job["steps"])
        assert f"trainyard check --stack {env}" in runs


def test_dependabot_keeps_action_pins_current():
    path = ROOT / ".github" / "dependabot.yml"
    proc = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot",
                           str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ecosystems = {u["package-ecosystem"] for u in _load(path)["updates"]}
    assert "github-actions" in ecosystems


TRIVY_V0_35_0 = "aquasecurity/trivy-action@57a97c7e7821a5776cebc9bb87c984fa69cba8f1"
"""trivy-action v0.35.0: the one release the March 2026 tag rewrite left intact (published as an
immutable release); the SHA as cited by several independent pinning PRs (e.g. github/gh-aw#22003,
n8n-io/n8n-hosting#95), not checked against the repository itself (no network here)."""


def test_pr_workflow_scans_the_training_image_with_trivy():
    doc = _load(WORKFLOWS / "pr.yml")
    job = doc["jobs"]["image-scan"]
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    assert "head.repo.full_name == github.repository" in job["if"]  # no AWS role for forks
    steps = job["steps"]
    builds = [i for i, st in enumerate(steps) if "docker build" in st.get("run", "")]
    scans = [i for i, st in enumerate(steps) if st.get("uses", "").startswith(
        "aquasecurity/trivy-action@")]
    assert len(builds) == 1 and len(scans) == 1 and builds[0] < scans[0]
    # the training stage (the last stage is the notebook image)
    assert "-f workloads/Dockerfile --target train -t trainyard-train:pr" in steps[builds[0]]["run"]
    trivy = steps[scans[0]]
    assert trivy["uses"] == TRIVY_V0_35_0
    w = trivy["with"]
    assert w["image-ref"] == "trainyard-train:pr"
    assert (w["severity"], w["ignore-unfixed"], str(w["exit-code"])) == ("CRITICAL", True, "1")
    # the DLC base image's registry is the one the job logs in to
    dockerfile = (ROOT / "workloads" / "Dockerfile").read_text()
    registry = re.search(r"ARG BASE_IMAGE=([^/\s]+)/", dockerfile).group(1)
    assert any(registry in st.get("run", "") for st in steps[:builds[0]])
