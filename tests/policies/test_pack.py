"""The pack's shape: metadata on every rule, the engine entry point, the per-environment config
files, the resource type tokens and taggable types against the installed provider SDKs."""

from __future__ import annotations

import importlib
import json
import re
import runpy
import sys
from pathlib import Path

import pytest
import yaml

import policies
from policies import BY_FAMILY, POLICIES
from policies.common import FAMILIES, Refs
from trainyard.check import CONFIG_DIR, parse_policy_config

PACK = Path(policies.__file__).parent
SITE = Path(importlib.import_module("pulumi_aws").__file__).parent


def test_every_family_has_rules_and_every_rule_a_family():
    assert set(BY_FAMILY) == set(FAMILIES)
    for family, rules in BY_FAMILY.items():
        assert rules, f"family {family} has no rules"
    assert sum(len(r) for r in BY_FAMILY.values()) == len(POLICIES)
    assert len({p.name for p in POLICIES}) == len(POLICIES)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_rule_metadata(policy):
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", policy.name)
    assert policy.description.endswith(".")
    assert policy.enforcement_level is not None
    assert policy.enforcement_level.value in ("mandatory", "advisory")
    assert policy.remediation_steps and len(policy.remediation_steps) > 20
    assert policy.framework is not None and policy.framework.name
    assert isinstance(policy.refs, Refs)
    refs = policy.refs
    assert refs.checkov or refs.trivy or refs.cis or refs.other, "needs at least one reference"
    assert f"family:{policy.family}" in policy.tags
    for ref in refs.checkov:
        assert re.fullmatch(r"CKV2?_(AWS|K8S)_\d+", ref), ref
    for ref in refs.trivy:
        assert re.fullmatch(r"AWS-\d{4}", ref), ref
    for ref in refs.cis:
        assert re.fullmatch(r"\d(\.\d+){1,2}", ref), ref
    for key, spec in policy.config_properties.items():
        assert {"type", "default", "description"} <= set(spec), key
        assert policy.config_schema is not None and key in policy.config_schema.properties


def test_environment_thresholds_are_config_not_code():
    """The thresholds the issue names are per-environment config with schema defaults."""
    by = policies.by_name()
    assert "maxGpus" in by["gpu-budget"].config_properties
    assert "allowedFamilies" in by["allowed-instance-types"].config_properties
    assert "allowedPublicCidrs" in by["eks-endpoint-access"].config_properties
    assert "maxHopLimit" in by["launch-template-imds-hop-limit"].config_properties


def test_main_builds_the_pack_from_the_modules(monkeypatch):
    import pulumi_policy

    built = {}

    class FakePack:  # PolicyPack would start a gRPC server and never return
        def __init__(self, name, policies, **kw):
            built.update(name=name, policies=policies, **kw)

    monkeypatch.setattr(pulumi_policy, "PolicyPack", FakePack)
    monkeypatch.setattr(sys, "path", list(sys.path))
    runpy.run_path(str(PACK / "__main__.py"), run_name="__main__")
    assert built["name"] == "trainyard"
    assert [p.name for p in built["policies"]] == [p.name for p in POLICIES]
    text = (PACK / "__main__.py").read_text()
    assert "def " not in text, "__main__.py only builds the pack; rules live in modules"


def test_pack_files():
    meta = yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())
    assert meta["runtime"]["name"] == "python"
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(meta["version"]))
    reqs = (PACK / "requirements.txt").read_text()
    assert "pulumi-policy" in reqs


def test_no_components_import():
    for path in PACK.glob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+components", path.read_text(), re.M), path


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_environment_config_files_are_valid(env):
    path = CONFIG_DIR / f"{env}.json"
    raw = json.loads(path.read_text())
    cfg = parse_policy_config(raw, POLICIES, str(path))
    assert cfg.properties["gpu-budget"]["maxGpus"] >= 1
    if env == "prod":
        assert cfg.properties["eks-endpoint-access"]["allowPublicEndpoint"] is False
        assert cfg.properties["gpu-capacity-not-spot-only"]["requireNonSpot"] is True


def _tokens() -> set[str]:
    found = set()
    for path in PACK.glob("*.py"):
        found |= set(re.findall(r'"((?:aws|kubernetes):[A-Za-z0-9./]+:[A-Za-z0-9]+)"',
                                path.read_text()))
    from policies.tagging import TAGGABLE
    return found | set(TAGGABLE)


@pytest.mark.parametrize("token", sorted(_tokens()))
def test_type_tokens_exist_in_installed_sdks(token):
    if token.startswith("kubernetes:"):
        kind = token.rsplit(":", 1)[-1]
        group = token.split(":")[1]
        if group.startswith(("trainer.kubeflow.org", "karpenter.sh", "karpenter.k8s.aws",
                             "serving.kserve.io", "keda.sh", "kueue.x-k8s.io",
                             "external-secrets.io", "monitoring.coreos.com",
                             "cert-manager.io")):
            return  # a CustomResource: the token is built from apiVersion and kind
        k8s = Path(importlib.import_module("pulumi_kubernetes").__file__).parent
        hits = [p for p in k8s.rglob(f"{kind}.py") if f'"{token}"' in p.read_text()]
        assert hits, token
        return
    module = token.split(":")[1].split("/")[0]
    text = "".join(p.read_text() for p in (SITE / module).glob("*.py"))
    assert f'"{token}"' in text or f"'{token}'" in text, token


def test_taggable_types_take_tags():
    from policies.tagging import TAGGABLE

    for token in sorted(TAGGABLE):
        module, cls = token.split(":")[1].split("/")[0], token.rsplit(":", 1)[-1]
        klass = getattr(importlib.import_module(f"pulumi_aws.{module}"), cls)
        args_cls = getattr(importlib.import_module(f"pulumi_aws.{module}"), f"{cls}Args")
        assert "tags" in args_cls.__init__.__code__.co_varnames, token
        assert klass is not None
