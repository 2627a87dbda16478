"""The offline runner behaves like the engine: unknown values are "cannot judge" (reported, not a
pass, not a crash), a raising policy is an error of that policy while the others run, config
defaults are applied, numbers may arrive as floats, and stack rules follow property dependencies
when a sibling's reference is still unknown (a fresh preview)."""

from __future__ import annotations

from policy_fixtures import BUCKET, LT, VERS, R, lt_props, rid, storage
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationPolicy,
    StackValidationArgs,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from policies import by_name
from trainyard.check import PolicyConfig, run_checks


def _plan(resources):
    return {"project": "trainyard", "stack": "test", "resources": resources}


def test_unknown_value_is_cannot_judge_not_pass_or_crash():
    lt = R(LT, "lt", lt_props(metadataOptions={"httpTokens": UNKNOWN_STRING_VALUE}))
    report = run_checks(_plan([lt]), PolicyConfig(), [by_name()["launch-template-imdsv2"]])
    assert not report.violations and not report.errors
    assert report.cannot_judge == [{
        "policy": "launch-template-imdsv2", "urn": lt["urn"],
        "message": "cannot judge: string value at .metadataOptions.httpTokens can't be known "
                   "during preview"}]
    assert report.to_json()["summary"]["cannot_judge"] == 1


def test_unknown_sibling_reference_without_dependencies_is_cannot_judge():
    res = storage()
    for r in res:
        if r["type"] == VERS and r["inputs"]["bucket"] == rid("checkpoints"):
            r["inputs"]["bucket"] = UNKNOWN_STRING_VALUE
    report = run_checks(_plan(res), PolicyConfig(), [by_name()["s3-versioning"]])
    assert report.cannot_judge and report.cannot_judge[0]["policy"] == "s3-versioning"
    assert not report.errors


def _policy_resource(r, props, deps=None):
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    return PolicyResource(r["type"], unknown_checking_proxy(props), r["urn"], r["name"], opts,
                          None, None, [], deps or {})


def test_stack_rule_follows_property_dependencies_during_preview():
    """Fresh preview: the bucket's id is unknown, so BucketVersioning.bucket is unknown too;
    the engine's property dependencies still tie the two together."""
    bucket = R(BUCKET, "ckpt", {"tags": {}})
    vers = R(VERS, "ckpt-versioning", {"versioningConfiguration": {"status": "Enabled"}})
    b = _policy_resource(bucket, {"tags": {}, "id": UNKNOWN_STRING_VALUE,
                                  "bucket": UNKNOWN_STRING_VALUE})
    v = _policy_resource(vers, {"bucket": UNKNOWN_STRING_VALUE,
                                "versioningConfiguration": {"status": "Enabled"}},
                         deps={"bucket": [b]})
    seen = []
    by_name()["s3-versioning"].validate(StackValidationArgs([b, v], {}),
                                        lambda m, u=None: seen.append((m, u)))
    assert seen == []
    v2 = _policy_resource(vers, {"bucket": UNKNOWN_STRING_VALUE,
                                 "versioningConfiguration": {"status": "Enabled"}},
                          deps={"bucket": [_policy_resource(R(BUCKET, "other"), {})]})
    by_name()["s3-versioning"].validate(StackValidationArgs([b, v2], {}),
                                        lambda m, u=None: seen.append((m, u)))
    assert seen and seen[0][1] == bucket["urn"]


def test_raising_policy_is_reported_and_others_still_run():
    def boom(args, report):
        raise RuntimeError("kaboom")

    broken = ResourceValidationPolicy("broken-rule", "A rule that crashes.", boom,
                                      EnforcementLevel.ADVISORY)
    lt = R(LT, "lt", lt_props(metadataOptions={"httpTokens": "optional"}))
    report = run_checks(_plan([lt]), PolicyConfig(),
                        [broken, by_name()["launch-template-imdsv2"]])
    assert report.errors == [{"policy": "broken-rule", "urn": lt["urn"],
                              "message": "RuntimeError: kaboom"}]
    assert [v["policy"] for v in report.violations] == ["launch-template-imdsv2"]
    assert report.policies_run == 2
    assert report.exit_code == 1


def test_errors_alone_fail_the_check():
    def boom(args, report):
        raise KeyError("x")

    broken = ResourceValidationPolicy("broken-rule", "A rule that crashes.", boom,
                                      EnforcementLevel.ADVISORY)
    report = run_checks(_plan([R(LT, "lt", lt_props())]), PolicyConfig(), [broken])
    assert report.errors and not report.violations and report.exit_code == 1


def test_schema_defaults_are_applied():
    """No config at all: the GPU budget's default (16 GPUs) applies."""
    from policy_fixtures import NG, ng_props

    ng = R(NG, "ng", ng_props(scalingConfig={"minSize": 0, "desiredSize": 0, "maxSize": 3.0}))
    report = run_checks(_plan([ng]), PolicyConfig(), [by_name()["gpu-budget"]])
    assert [v["urn"] for v in report.violations] == [ng["urn"]]  # 3 x 8 = 24 > 16


def test_enforcement_level_override_and_disable():
    lt = R(LT, "lt", lt_props(metadataOptions={"httpTokens": "optional"}))
    policy = by_name()["launch-template-imdsv2"]
    report = run_checks(_plan([lt]), PolicyConfig(levels={policy.name: "advisory"}), [policy])
    assert [v["level"] for v in report.violations] == ["advisory"] and report.exit_code == 0
    report = run_checks(_plan([lt]), PolicyConfig(levels={policy.name: "disabled"}), [policy])
    assert report.policies_run == 0 and not report.violations
    report = run_checks(_plan([lt]), PolicyConfig(levels={policy.name: "remediate"}), [policy])
    assert [v["level"] for v in report.violations] == ["mandatory"]
