"""Checkov as an oracle we did not write, over the clean prod plan.

The plan's Kubernetes objects are rendered to YAML and scanned with Checkov's `kubernetes`
framework; its AWS resources are mapped to the Terraform plan JSON Checkov reads (pulumi-aws is
bridged from the Terraform AWS provider: `aws:s3/bucket:Bucket` -> `aws_s3_bucket`, camelCase ->
snake_case, single nested blocks -> one-element lists, references between resources ->
`configuration` expressions) and scanned with `--framework terraform_plan`. Every failure must be
listed in checkov_exceptions.yaml (check id, resource, and either `rule:` naming the pack rule that
covers it or `reason:`); a failure not listed fails the test, and so does a listed one that no
longer fails (stale entries hide regressions).

Checkov pins boto3==1.35.49, which conflicts with the `train` extra (boto3>=1.40), so it lives in
its own virtualenv: `python -m venv .venv/checkov && .venv/checkov/bin/pip install
checkov==3.3.30` (or set TRAINYARD_CHECKOV to a checkov executable). It runs with
`--skip-download` and needs no network. Figures: `pytest -s tests/policies/test_checkov_oracle.py`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXCEPTIONS = Path(__file__).with_name("checkov_exceptions.yaml")
CHECKOV_VERSION = "3.3.30"


def _checkov() -> str | None:
    for cand in (os.environ.get("TRAINYARD_CHECKOV"), str(ROOT / ".venv/checkov/bin/checkov"),
                 shutil.which("checkov")):
        if cand and Path(cand).exists():
            return cand
    return None


# ----------------------------------------------------------------------------------------------
# Pulumi plan -> Terraform plan JSON
# ----------------------------------------------------------------------------------------------
_TF_RENAMES = {"aws:s3/bucketV2:BucketV2": "aws_s3_bucket",
               "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
                   "aws_iam_openid_connect_provider"}
_MAPS = {"tags", "tagsAll", "labels", "parameters", "environment", "variables"}
_SKIP_KEYS = {"__defaults"}


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def tf_type(token: str) -> str | None:
    """`aws:ec2/securityGroup:SecurityGroup` -> `aws_security_group`: the bridge's module is
    the Terraform name's service prefix, except `ec2`, whose resources have none."""
    if token in _TF_RENAMES:
        return _TF_RENAMES[token]
    m = re.fullmatch(r"aws:([a-zA-Z0-9]+)/[a-zA-Z0-9]+:([A-Za-z0-9]+)", token)
    if not m:
        return None
    module, cls = m.group(1).lower(), snake(m.group(2))
    return f"aws_{cls}" if module == "ec2" else f"aws_{module}_{cls}"


def tf_key(key: str, value) -> str:
    """The bridge pluralizes repeatable blocks (`rules`, `networkInterfaces`, `transitions`):
    Terraform names them in the singular."""
    name = snake(key)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        if name.endswith("ies"):
            return name[:-3] + "y"
        if name.endswith("s") and not name.endswith("ss"):
            return name[:-1]
    return name


def _block(value: dict) -> dict:
    return {tf_key(k, v): tf_values(v, k) for k, v in value.items() if k not in _SKIP_KEYS}


def tf_values(value, key: str = ""):
    """Pulumi inputs -> Terraform plan `values`: a single nested block becomes a one-element
    list, a list of blocks a list, maps (tags, labels) stay maps."""
    if isinstance(value, dict):
        if key in _MAPS:
            return dict(value)
        return _block(value) if key == "" else [_block(value)]
    if isinstance(value, list):
        return [_block(v) if isinstance(v, dict) else v for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def terraform_plan(plan: dict) -> tuple[dict, dict]:
    """(plan JSON, address -> pulumi logical name)."""
    resources, config, names, by_ref = [], [], {}, {}
    for r in plan["resources"]:
        t = tf_type(r["type"])
        if not t or r.get("custom") is False:
            continue
        name = re.sub(r"[^A-Za-z0-9_]", "_", r["name"])
        address = f"{t}.{name}"
        names[address] = r["name"]
        for ref in (r.get("id"), (r.get("outputs") or {}).get("arn"),
                    (r.get("outputs") or {}).get("name")):
            if isinstance(ref, str) and ref:
                by_ref.setdefault(ref, address)
        values = tf_values(r.get("inputs") or {})
        resources.append({"address": address, "mode": "managed", "type": t, "name": name,
                          "provider_name": "registry.terraform.io/hashicorp/aws",
                          "values": values})
    for res in resources:
        exprs = {}
        for k, v in res["values"].items():
            refs = [by_ref[s] for s in (v if isinstance(v, list) else [v])
                    if isinstance(s, str) and s in by_ref and by_ref[s] != res["address"]]
            if refs:
                exprs[k] = {"references": [f"{a}.id" for a in refs] + refs}
        config.append({"address": res["address"], "mode": "managed", "type": res["type"],
                       "name": res["name"], "provider_config_key": "aws",
                       "expressions": exprs})
    doc = {"format_version": "1.2", "terraform_version": "1.9.8",
           "planned_values": {"root_module": {"resources": resources}},
           "configuration": {"provider_config": {"aws": {"name": "aws"}},
                             "root_module": {"resources": config}}}
    return doc, names


def kubernetes_manifests(plan: dict) -> dict[str, dict]:
    """file name -> manifest, for every Kubernetes object the plan declares (not Helm
    releases: the plan holds their values, not what they render)."""
    out = {}
    for r in plan["resources"]:
        inputs = r.get("inputs") or {}
        if not r["type"].startswith("kubernetes:") or "kind" not in inputs \
                or r["type"] == "kubernetes:helm.sh/v3:Release":
            continue
        out[re.sub(r"[^A-Za-z0-9_.-]", "_", r["name"]) + ".yaml"] = inputs
    return out


# ----------------------------------------------------------------------------------------------
# Running Checkov once per framework
# ----------------------------------------------------------------------------------------------
def _run(exe: str, args: list[str]) -> dict:
    proc = subprocess.run([exe, *args, "--skip-download", "-o", "json", "--quiet",
                           "--soft-fail"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BC_SKIP_MAPPING": "TRUE",
                               "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
    out = json.loads(proc.stdout) if proc.stdout.strip().startswith(("{", "[")) else {}
    assert out, f"checkov produced no JSON: {proc.stderr[-2000:]}"
    return out


@pytest.fixture(scope="module")
def checkov_results(plan_for, tmp_path_factory):
    exe = _checkov()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("checkov is not installed: python -m venv .venv/checkov && "
                        f".venv/checkov/bin/pip install checkov=={CHECKOV_VERSION}")
        pytest.skip("checkov not installed (.venv/checkov/bin/checkov or TRAINYARD_CHECKOV)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    assert version == CHECKOV_VERSION, f"checkov {version}, the exceptions are for {CHECKOV_VERSION}"
    plan = plan_for("prod")
    work = tmp_path_factory.mktemp("checkov")
    k8s = work / "k8s"
    k8s.mkdir()
    for fname, manifest in kubernetes_manifests(plan).items():
        (k8s / fname).write_text(yaml.safe_dump(manifest, sort_keys=False))
    tf, names = terraform_plan(plan)
    (work / "plan.json").write_text(json.dumps(tf))
    results = {"kubernetes": _run(exe, ["-d", str(k8s), "--framework", "kubernetes"]),
               "terraform_plan": _run(exe, ["-f", str(work / "plan.json"),
                                            "--framework", "terraform_plan"])}
    return results, names


def _failures(results: dict, names: dict) -> list[tuple[str, str, str]]:
    out = []
    for framework, report in results.items():
        for f in report.get("results", {}).get("failed_checks", []):
            resource = f["resource"]
            if framework == "terraform_plan":
                resource = f"{resource.split('.')[0]}.{names.get(resource, resource.split('.', 1)[-1])}"
            out.append((framework, f["check_id"], resource))
    return sorted(set(out))


def _exceptions() -> dict[tuple[str, str, str], dict]:
    data = yaml.safe_load(EXCEPTIONS.read_text()) or {}
    out = {}
    for e in data.get("exceptions", []):
        assert e.get("rule") or e.get("reason"), f"exception without rule or reason: {e}"
        out[(e["framework"], e["check"], e["resource"])] = e
    return out


def test_tf_type_mapping():
    assert tf_type("aws:ec2/securityGroup:SecurityGroup") == "aws_security_group"
    assert tf_type("aws:s3/bucketPolicy:BucketPolicy") == "aws_s3_bucket_policy"
    assert tf_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") == \
        "aws_vpc_security_group_ingress_rule"
    assert tf_type("aws:fsx/lustreFileSystem:LustreFileSystem") == "aws_fsx_lustre_file_system"
    assert tf_values({"vpcConfig": {"endpointPublicAccess": False}, "tags": {"a": "b"}}) == \
        {"vpc_config": [{"endpoint_public_access": False}], "tags": {"a": "b"}}


def test_every_checkov_failure_is_fixed_covered_or_excepted(checkov_results):
    results, names = checkov_results
    failures = _failures(results, names)
    exceptions = _exceptions()
    new = [f for f in failures if f not in exceptions]
    stale = [k for k in exceptions if k not in set(failures)]
    summary = {fw: r.get("summary", {}) for fw, r in results.items()}
    covered = sum(1 for f in failures if f in exceptions and exceptions[f].get("rule"))
    print(f"\ncheckov {CHECKOV_VERSION} over clean prod:")
    for fw, s in summary.items():
        print(f"  {fw}: {s.get('passed')} passed, {s.get('failed')} failed, "
              f"{s.get('resource_count')} resources")
    print(f"  distinct failures {len(failures)}: {covered} caught by a pack rule, "
          f"{len(failures) - covered - len(new)} excepted with a reason, {len(new)} new")
    assert not new, "new Checkov failures (fix, cover with a rule, or list in " \
                    f"checkov_exceptions.yaml): {new}"
    assert not stale, f"exceptions that no longer fail (remove them): {stale}"
    for e in exceptions.values():
        if e.get("rule"):
            from policies import by_name

            assert e["rule"] in by_name(), f"unknown pack rule {e['rule']} in exceptions"
