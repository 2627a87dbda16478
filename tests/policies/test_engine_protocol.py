"""The pack through pulumi-policy's own analyzer servicer (what `pulumi preview --policy-pack`
talks to over gRPC), without a server: the metadata the engine reads, the per-environment config
it sends, and Analyze / AnalyzeStack on protobuf requests built from a synthesized plan."""

from __future__ import annotations

import json

from google.protobuf import struct_pb2
from pulumi.runtime.proto import analyzer_pb2 as pb
from pulumi_policy import EnforcementLevel
from pulumi_policy.policy import _PolicyAnalyzerServicer

from policies import POLICIES
from trainyard.check import CONFIG_DIR, overlay

LEVEL = {"advisory": pb.ADVISORY, "mandatory": pb.MANDATORY, "remediate": pb.REMEDIATE,
         "disabled": pb.DISABLED}


def _struct(d: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(json.loads(json.dumps(d)))
    return s


def _servicer(env: str) -> _PolicyAnalyzerServicer:
    s = _PolicyAnalyzerServicer("trainyard", "0.1.0", POLICIES, EnforcementLevel.ADVISORY)
    raw = json.loads((CONFIG_DIR / f"{env}.json").read_text())
    config = {}
    by = {p.name: p for p in POLICIES}
    for p in POLICIES:  # the engine sends every policy: level plus schema-default-filled props
        value = raw.get(p.name, {})
        value = {"enforcementLevel": value} if isinstance(value, str) else dict(value)
        level = value.pop("enforcementLevel", by[p.name].enforcement_level.value)
        props = {k: v["default"] for k, v in p.config_properties.items()}
        props.update(value)
        config[p.name] = pb.PolicyConfig(enforcementLevel=LEVEL[level], properties=_struct(props))
    s.Configure(pb.ConfigureAnalyzerRequest(policyConfig=config), None)
    return s


def test_analyzer_info_carries_every_policy_and_schema():
    s = _PolicyAnalyzerServicer("trainyard", "0.1.0", POLICIES, EnforcementLevel.ADVISORY)
    info = s.GetAnalyzerInfo(None, None)
    assert [p.name for p in info.policies] == [p.name for p in POLICIES]
    budget = [p for p in info.policies if p.name == "gpu-budget"][0]
    assert budget.enforcementLevel == pb.MANDATORY
    assert "maxGpus" in budget.configSchema.properties
    assert budget.policy_type == pb.POLICY_TYPE_STACK


def _resource_requests(plan):
    for r in plan["resources"]:
        yield r, pb.AnalyzeRequest(type=r["type"], urn=r["urn"], name=r["name"],
                                   properties=_struct(r["inputs"]))


def _stack_request(plan):
    out = []
    for r in plan["resources"]:
        state = {**overlay(r["outputs"], r["inputs"]), "id": r["id"] or ""}
        out.append(pb.AnalyzerResource(type=r["type"], urn=r["urn"], name=r["name"],
                                       properties=_struct(state), parent=r["parent"] or "",
                                       dependencies=r.get("dependencies") or []))
    return pb.AnalyzeStackRequest(resources=out)


def _diagnostics(s, plan):
    diags = []
    for _, req in _resource_requests(plan):
        diags += list(s.Analyze(req, None).diagnostics)
    diags += list(s.AnalyzeStack(_stack_request(plan), None).diagnostics)
    return diags


def test_engine_path_matches_offline_check(plan_for):
    from trainyard.check import environment_of, load_policy_config, run_checks

    plan = plan_for("prod")
    lt = [r for r in plan["resources"] if r["type"] == "aws:ec2/launchTemplate:LaunchTemplate"][0]
    lt["inputs"]["metadataOptions"]["httpTokens"] = "optional"
    engine = {(d.policyName, d.urn) for d in _diagnostics(_servicer("prod"), plan)
              if d.enforcementLevel == pb.MANDATORY}
    assert ("launch-template-imdsv2", lt["urn"]) in engine
    offline = run_checks(plan, load_policy_config(CONFIG_DIR / "prod.json", POLICIES), POLICIES,
                         environment_of(plan))
    assert {(v["policy"], v["urn"]) for v in offline.mandatory} == engine
