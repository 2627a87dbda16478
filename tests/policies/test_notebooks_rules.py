"""Notebook rules on the committed stacks and on the prod hub broken the ways a PR would break
it: dummy auth, an internet-facing proxy, culling off. Each fails on the hub release."""

from __future__ import annotations

import copy

import pytest

from policies import by_name
from tests.conftest import STACKS
from trainyard.check import PolicyConfig, run_checks

MINE = ("notebooks-real-auth", "notebooks-not-public", "notebooks-culled")
RELEASE = "kubernetes:helm.sh/v3:Release"


def check(plan: dict, *names: str, config: dict | None = None):
    return run_checks(plan, PolicyConfig(source="test", properties=config or {}),
                      [by_name()[n] for n in names])


def hub(plan: dict) -> dict:
    (r,) = [r for r in plan["resources"] if r["type"] == RELEASE
            and r["inputs"].get("chart") == "jupyterhub"]
    return r


def broken(plan_for, edit) -> tuple[dict, str]:
    plan = copy.deepcopy(plan_for("prod"))
    r = hub(plan)
    edit(r["inputs"]["values"])
    return plan, r["urn"]


@pytest.mark.parametrize("stack", STACKS)
def test_clean_stacks_pass(plan_for, stack):
    report = check(plan_for(stack), *MINE)
    assert not report.errors and not report.violations and not report.cannot_judge


@pytest.mark.parametrize("name,edit", [
    ("notebooks-real-auth",
     lambda v: v["hub"]["config"]["JupyterHub"].update(authenticator_class="dummy")),
    ("notebooks-real-auth", lambda v: v["hub"]["config"]["JupyterHub"].pop("authenticator_class")),
    ("notebooks-not-public", lambda v: v["proxy"].update(service={"type": "LoadBalancer"})),
    ("notebooks-culled", lambda v: v["cull"].update(enabled=False)),
])
def test_broken_hub_fails_on_the_release(plan_for, name, edit):
    plan, urn = broken(plan_for, edit)
    report = check(plan, name)
    assert [v["urn"] for v in report.violations] == [urn], report.violations


def test_config_can_allow_what_a_stack_chooses(plan_for):
    plan, _ = broken(plan_for, lambda v: v["proxy"].update(service={"type": "LoadBalancer"}))
    report = check(plan, "notebooks-not-public",
                   config={"notebooks-not-public": {"allowPublic": True}})
    assert not report.violations
    internal, _ = broken(plan_for, lambda v: v["proxy"].update(service={
        "type": "LoadBalancer", "annotations": {
            "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}}))
    assert not check(internal, "notebooks-not-public").violations
