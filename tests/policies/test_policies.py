"""Every policy: each violating fixture is caught at the right URN, each compliant fixture passes
(no violation, nothing it cannot judge, no error). Fixtures: policy_fixtures.py."""

from __future__ import annotations

import pytest
from policy_fixtures import FIXTURES, Case

from policies import POLICIES, by_name
from trainyard.check import PolicyConfig, run_checks


def _run(name: str, case: Case):
    policy = by_name()[name]
    cfg = PolicyConfig(source="test", properties={name: dict(case.config)} if case.config else {})
    plan = {"project": "trainyard", "stack": "test", "resources": case.resources}
    return run_checks(plan, cfg, [policy])


def _cases(kind: str):
    for name, fx in sorted(FIXTURES.items()):
        for i, case in enumerate(fx.get(kind, [])):
            yield pytest.param(name, case, id=f"{name}-{kind}-{case.label or i}")


def test_every_policy_has_violating_and_compliant_fixtures():
    names = {p.name for p in POLICIES}
    missing = sorted(n for n in names if not FIXTURES.get(n, {}).get("bad")
                     or not FIXTURES.get(n, {}).get("good"))
    assert not missing, f"policies without both fixtures: {missing}"
    assert not set(FIXTURES) - names, f"fixtures for unknown policies: {set(FIXTURES) - names}"


@pytest.mark.parametrize("name,case", list(_cases("bad")))
def test_violating_fixture_is_caught(name, case):
    report = _run(name, case)
    assert not report.errors, report.errors
    mine = [v for v in report.violations if v["policy"] == name]
    assert mine, f"{name} missed the violation ({case.label})"
    if case.expect:
        urns = {v["urn"] for v in mine}
        expected = [r["urn"] for r in case.resources if r["name"] == case.expect]
        assert expected and expected[0] in urns, f"{name}: expected {case.expect}, got {urns}"
    for v in mine:
        assert v["message"] and v["level"] in ("mandatory", "advisory")


@pytest.mark.parametrize("name,case", list(_cases("good")))
def test_compliant_fixture_passes(name, case):
    report = _run(name, case)
    assert not report.errors, report.errors
    assert not report.cannot_judge, report.cannot_judge
    assert not report.violations, report.violations
