"""`trainyard check`: the CLI contract (ARCHITECTURE.md), bad input, the committed stacks, and
one injected misconfiguration of each class caught at the right URN in a synthesized plan."""

from __future__ import annotations

import json

import pytest

from trainyard.check import CONFIG_DIR, environment_of, load_policy_config, run_checks
from trainyard.cli import main

STACKS = ("dev", "staging", "prod")


def _write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def _check(plan: dict):
    from policies import POLICIES

    env = environment_of(plan)
    return run_checks(plan, load_policy_config(CONFIG_DIR / f"{env}.json", POLICIES), POLICIES,
                      env)


def _mandatory(report) -> set:
    return {(v["policy"], v["urn"]) for v in report.mandatory}


# ----------------------------------------------------------------------------------------------
# Contract
# ----------------------------------------------------------------------------------------------
BAD_LT = {"urn": "urn:pulumi:dev::trainyard::aws:ec2/launchTemplate:LaunchTemplate::lt",
          "type": "aws:ec2/launchTemplate:LaunchTemplate", "name": "lt", "parent": None,
          "id": "lt-1", "inputs": {"metadataOptions": {"httpTokens": "optional"},
                                   "tags": {"environment": "dev", "owner": "o",
                                            "cost-center": "c"}},
          "outputs": {}}


def test_json_contract_and_exit_1_on_mandatory(tmp_path, capsys):
    plan = _write(tmp_path, "plan.json", {"project": "trainyard", "stack": "dev",
                                          "resources": [BAD_LT], "outputs": {}})
    out = tmp_path / "check.json"
    assert main(["check", "--plan", str(plan), "--json", str(out)]) == 1
    doc = json.loads(out.read_text())
    assert isinstance(doc["policies_run"], int) and doc["policies_run"] >= 40
    assert doc["violations"], doc
    for v in doc["violations"]:
        assert set(v) == {"policy", "level", "urn", "message"}
    assert {"policy": "launch-template-imdsv2", "level": "mandatory", "urn": BAD_LT["urn"],
            "message": v["message"]} in doc["violations"] or any(
        x["policy"] == "launch-template-imdsv2" and x["urn"] == BAD_LT["urn"]
        for x in doc["violations"])
    assert doc["environment"] == "dev" and doc["policy_config"].endswith("dev.json")
    human = capsys.readouterr().out
    assert "[mandatory] launch-template-imdsv2:" in human
    assert BAD_LT["urn"] in human


def test_exit_0_without_mandatory_violations(tmp_path):
    lt = json.loads(json.dumps(BAD_LT))
    lt["inputs"]["metadataOptions"] = {"httpTokens": "required", "httpPutResponseHopLimit": 1}
    plan = _write(tmp_path, "plan.json", {"stack": "dev", "resources": [lt]})
    assert main(["check", "--plan", str(plan)]) == 0


@pytest.mark.parametrize("content,needle", [
    ("{not json", "malformed plan JSON at line 1"),
    ("[]", "a plan is a JSON object"),
    (json.dumps({"stack": "dev"}), "`resources` must be a list"),
    (json.dumps({"resources": [{"type": "x"}]}), "resources[0].urn"),
    (json.dumps({"resources": [{"urn": "u", "type": "t", "inputs": []}]}),
     "resources[0].inputs must be an object"),
])
def test_malformed_plan_exits_2(tmp_path, capsys, content, needle):
    plan = _write(tmp_path, "plan.json", content)
    assert main(["check", "--plan", str(plan)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err


def test_missing_plan_file_exits_2(tmp_path, capsys):
    assert main(["check", "--plan", str(tmp_path / "nope.json")]) == 2
    assert "no such plan file" in capsys.readouterr().err


def test_unknown_stack_exits_2(capsys):
    assert main(["check", "--stack", "no-such-stack"]) == 2
    assert "unknown stack" in capsys.readouterr().err


@pytest.mark.parametrize("config,needle", [
    ({"gpu-budget": {"maxGpus": "lots"}}, "gpu-budget.maxGpus: expected an integer"),
    ({"allowed-instance-types": {"allowedFamilies": "p5"}},
     "allowed-instance-types.allowedFamilies: expected a list"),
    ({"allowed-instance-types": {"allowedFamilies": ["p5", 4]}},
     "allowed-instance-types.allowedFamilies[1]: expected a string"),
    ({"eks-endpoint-access": {"allowPublicEndpoint": "yes"}},
     "eks-endpoint-access.allowPublicEndpoint: expected a boolean"),
    ({"gpu-budget": {"maxGpu": 4}}, "gpu-budget.maxGpu: unknown config key"),
    ({"no-such-policy": "mandatory"}, "no-such-policy: no such policy"),
    ({"s3-encryption": {"enforcementLevel": "blocking"}}, "s3-encryption.enforcementLevel"),
    ({"gpu-budget": {"maxGpus": -1}}, "below the minimum"),
    ("[1, 2", "malformed JSON"),
])
def test_bad_policy_config_exits_2(tmp_path, capsys, config, needle):
    plan = _write(tmp_path, "plan.json", {"stack": "dev", "resources": [BAD_LT]})
    cfg = _write(tmp_path, "policy.json", config)
    assert main(["check", "--plan", str(plan), "--policy-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_environment_from_tags_when_stack_name_is_not_one():
    plan = {"stack": "feature-x", "resources": [BAD_LT]}
    assert environment_of(plan) == "dev"
    assert environment_of({"stack": "prod", "resources": []}) == "prod"
    assert environment_of({"stack": "x", "resources": []}) is None


# ----------------------------------------------------------------------------------------------
# Committed stacks and injected misconfigurations
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_committed_stacks_have_no_mandatory_violations(plan_for, stack):
    report = _check(plan_for(stack))
    assert not report.errors, report.errors
    assert not report.cannot_judge, report.cannot_judge
    assert not report.mandatory, "\n".join(f"{v['policy']}: {v['urn']}: {v['message']}"
                                           for v in report.mandatory)
    assert report.policies_run >= 60


def _one(plan, type_, contains=""):
    found = [r for r in plan["resources"] if r["type"] == type_ and contains in r["name"]]
    assert found, f"no {type_} named *{contains}* in the plan"
    return found[0]


def _efa_lt(plan):
    lts = [r for r in plan["resources"] if r["type"] == "aws:ec2/launchTemplate:LaunchTemplate"
           and any(ni.get("interfaceType") in ("efa", "efa-only")
                   for ni in r["inputs"].get("networkInterfaces") or [])
           and not r["inputs"].get("capacityReservationSpecification")]
    assert lts, "no EFA launch template in the prod plan"
    return lts[0]


def _imdsv1(plan):
    lt = _efa_lt(plan)
    lt["inputs"]["metadataOptions"]["httpTokens"] = "optional"
    return "launch-template-imdsv2", lt["urn"]


def _bucket_unencrypted(plan):
    bucket = _one(plan, "aws:s3/bucket:Bucket", "checkpoints")
    plan["resources"] = [r for r in plan["resources"] if not (
        r["type"].startswith("aws:s3/bucketServerSideEncryptionConfiguration")
        and r["inputs"].get("bucket") == bucket["id"])]
    return "s3-encryption", bucket["urn"]


def _efa_interface_missing(plan):
    lt = _efa_lt(plan)
    lt["inputs"]["networkInterfaces"].pop()
    return "efa-interface-count", lt["urn"]


def _open_ssh(plan):
    rule = _one(plan, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "https")
    rule["inputs"].update(cidrIpv4="0.0.0.0/0", fromPort=22, toPort=22, ipProtocol="tcp")
    return "no-admin-ports-from-internet", rule["urn"]


def _eks_logging_off(plan):
    cluster = _one(plan, "aws:eks/cluster:Cluster")
    cluster["inputs"]["enabledClusterLogTypes"] = []
    return "eks-control-plane-logging", cluster["urn"]


def _efa_egress_self_rule_missing(plan):
    sg = _one(plan, "aws:ec2/securityGroup:SecurityGroup", "efa")
    plan["resources"] = [r for r in plan["resources"] if not (
        r["type"] == "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
        and r["inputs"].get("securityGroupId") == sg["id"]
        and r["inputs"].get("referencedSecurityGroupId") == sg["id"])]
    return "efa-security-group-self-rules", sg["urn"]


def _public_endpoint(plan):
    cluster = _one(plan, "aws:eks/cluster:Cluster")
    cluster["inputs"]["vpcConfig"].update(endpointPublicAccess=True,
                                          publicAccessCidrs=["0.0.0.0/0"])
    return "eks-endpoint-access", cluster["urn"]


def _gpu_taint_removed(plan):
    ng = _one(plan, "aws:eks/nodeGroup:NodeGroup", "a100")
    ng["inputs"]["taints"] = []
    return "gpu-node-taint", ng["urn"]


def _efa_pool_two_subnets(plan):
    ng = _one(plan, "aws:eks/nodeGroup:NodeGroup", "a100")
    ng["inputs"]["subnetIds"] = ng["inputs"]["subnetIds"] + ["subnet-0other"]
    return "efa-pool-single-subnet", ng["urn"]


def _known_bad_nvidia_plugin(plan):
    rel = _one(plan, "kubernetes:helm.sh/v3:Release", "nvidia")
    rel["inputs"]["version"] = "0.19.1"
    return "helm-known-bad-versions", rel["urn"]


def _public_access_block_off(plan):
    bucket = _one(plan, "aws:s3/bucket:Bucket", "datasets")
    pab = [r for r in plan["resources"] if r["type"].startswith("aws:s3/bucketPublicAccessBlock")
           and r["inputs"].get("bucket") == bucket["id"]][0]
    pab["inputs"]["restrictPublicBuckets"] = False
    return "s3-public-access-block", pab["urn"]


def _flow_log_removed(plan):
    vpc = _one(plan, "aws:ec2/vpc:Vpc")
    plan["resources"] = [r for r in plan["resources"] if r["type"] != "aws:ec2/flowLog:FlowLog"]
    return "vpc-flow-logs", vpc["urn"]


def _kms_rotation_off(plan):
    key = _one(plan, "aws:kms/key:Key")
    key["inputs"]["enableKeyRotation"] = False
    return "kms-key-rotation", key["urn"]


def _placement_group_on_capacity_block(plan):
    lt = [r for r in plan["resources"] if r["type"] == "aws:ec2/launchTemplate:LaunchTemplate"
          and r["inputs"].get("instanceMarketOptions", {}).get("marketType") == "capacity-block"]
    assert lt, "no capacity-block launch template in the prod plan"
    lt[0]["inputs"]["placement"] = {"groupName": "forced-pg"}
    return "efa-placement-group", lt[0]["urn"]


INJECTIONS = [_imdsv1, _bucket_unencrypted, _efa_interface_missing, _open_ssh, _eks_logging_off,
              _efa_egress_self_rule_missing, _public_endpoint, _gpu_taint_removed,
              _efa_pool_two_subnets, _known_bad_nvidia_plugin, _public_access_block_off,
              _flow_log_removed, _kms_rotation_off, _placement_group_on_capacity_block]


# Prod with its elastic pools as managed node groups: several injections break an elastic
# EFA pool's node group or launch template (the committed prod gives those pools to Karpenter).
@pytest.fixture(scope="module")
def prod_baseline(managed_plan_for):
    return _mandatory(_check(managed_plan_for("prod")))


@pytest.mark.parametrize("inject", INJECTIONS, ids=lambda f: f.__name__.strip("_"))
def test_injected_misconfiguration_is_caught_at_its_urn(managed_plan_for, prod_baseline, inject):
    plan = managed_plan_for("prod")
    policy, urn = inject(plan)
    assert (policy, urn) not in prod_baseline
    report = _check(plan)
    assert not report.errors, report.errors
    assert (policy, urn) in _mandatory(report), (
        f"{policy} did not flag {urn}; got "
        f"{sorted(v for v in _mandatory(report) if v[0] == policy)}")


def test_check_stack_end_to_end(tmp_path, capsys, monkeypatch, plan_for):
    from trainyard import synth

    monkeypatch.setattr(synth, "synthesize", lambda stack, stack_file=None: plan_for(stack))
    out = tmp_path / "dev.json"
    code = main(["check", "--stack", "dev", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert code == (1 if doc["summary"]["mandatory"] or doc["errors"] else 0)
    assert doc["stack"] == "dev" and doc["resources_checked"] > 50
    assert "trainyard check: stack dev" in capsys.readouterr().out


def test_unknown_values_are_reported_not_passed(tmp_path, capsys):
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

    lt = json.loads(json.dumps(BAD_LT))
    lt["inputs"]["metadataOptions"] = {"httpTokens": UNKNOWN_STRING_VALUE}
    plan = _write(tmp_path, "plan.json", {"stack": "dev", "resources": [lt]})
    out = tmp_path / "check.json"
    assert main(["check", "--plan", str(plan), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {"policy": "launch-template-imdsv2", "urn": lt["urn"],
            "message": "cannot judge: string value at .metadataOptions.httpTokens can't be "
                       "known during preview"} in doc["cannot_judge"]
    assert "cannot judge (values unknown until the resources exist; not a pass)" in \
        capsys.readouterr().out


@pytest.mark.parametrize("command", ["check", "cost", "plan"])
@pytest.mark.parametrize("bad", ["missing-dir/out.json", "."])
def test_unwritable_json_path_fails_before_synthesis(tmp_path, capsys, monkeypatch, command,
                                                     bad):
    """check, cost and plan share one check of the output path (trainyard/outfile.py), made
    before the stack is synthesized."""
    from trainyard import synth

    def no_synthesis(*args, **kwargs):
        raise AssertionError("synthesized before checking the --json path")

    monkeypatch.setattr(synth, "synthesize", no_synthesis)
    monkeypatch.setattr("trainyard.plan.synthesize", no_synthesis)
    target = tmp_path / bad
    assert main([command, "--stack", "dev", "--json", str(target)]) == 2
    err = capsys.readouterr().err
    reason = f"no directory {target.parent}" if bad != "." else "it is a directory"
    assert err == f"error: {target}: cannot write: {reason}\n"
