"""The Kueue rules (policies/queues.py) on the committed plans: they pass, and each catches the
mistake it exists for when it is injected into prod's plan."""

from __future__ import annotations

from fractions import Fraction

import pytest

from policies import by_name
from policies.queues import quantity, selector_matches
from tests.conftest import STACKS
from trainyard.check import PolicyConfig, run_checks

RULES = ("team-queue-covers-flavors", "team-quota-admits-queue", "queue-quota-fits-capacity")
CQ = "kubernetes:kueue.x-k8s.io/v1beta2:ClusterQueue"


def check(plan: dict, *names: str):
    return run_checks(plan, PolicyConfig(source="test", properties={}),
                      [by_name()[n] for n in names or RULES])


def find(plan: dict, type_: str, name: str, namespace=None) -> dict:
    return next(r for r in plan["resources"] if r["type"] == type_
                and r["inputs"]["metadata"]["name"] == name
                and r["inputs"]["metadata"].get("namespace") == namespace)


@pytest.mark.parametrize("stack", STACKS)
def test_committed_stacks_pass(plan_for, stack):
    report = check(plan_for(stack))
    assert not report.errors and not report.cannot_judge, (report.errors, report.cannot_judge)
    assert report.violations == []


def test_a_pool_missing_from_a_team_queue(plan_for):
    plan = plan_for("prod")
    cq = find(plan, CQ, "research")
    group = cq["inputs"]["spec"]["resourceGroups"][0]
    group["flavors"] = [f for f in group["flavors"] if f["name"] != "h100"]
    (v,) = check(plan, "team-queue-covers-flavors").violations
    assert v["urn"] == cq["urn"] and "h100" in v["message"]


def test_an_efa_pool_without_efa_quota(plan_for):
    plan = plan_for("prod")
    cq = find(plan, CQ, "applied")
    group = cq["inputs"]["spec"]["resourceGroups"][0]
    keep = ["cpu", "memory", "nvidia.com/gpu"]
    group["coveredResources"] = keep
    for f in group["flavors"]:
        f["resources"] = [r for r in f["resources"] if r["name"] in keep]
    (v,) = check(plan, "team-queue-covers-flavors").violations
    assert v["urn"] == cq["urn"]
    assert "vpc.amazonaws.com/efa" in v["message"] and "a100" in v["message"]


def test_a_resource_quota_at_gpu_quota_would_refuse_borrowed_pods(plan_for):
    plan = plan_for("prod")
    quota = find(plan, "kubernetes:core/v1:ResourceQuota", "gpu-quota", "research")
    quota["inputs"]["spec"]["hard"]["requests.nvidia.com/gpu"] = "64"  # the gpuQuota
    (v,) = check(plan, "team-quota-admits-queue").violations
    assert v["urn"] == quota["urn"] and "can admit 248" in v["message"]


def test_oversubscribed_quota_is_reported_with_the_amount(plan_for):
    plan = plan_for("prod")
    cq = find(plan, CQ, "applied")
    for f in cq["inputs"]["spec"]["resourceGroups"][0]["flavors"]:
        for r in f["resources"]:
            if f["name"] == "g-spot" and r["name"] == "nvidia.com/gpu":
                r["nominalQuota"] = "200"  # was 32
    (v,) = check(plan, "queue-quota-fits-capacity").violations
    assert v["level"] == "advisory"
    assert "guarantee 264 GPUs" in v["message"] and "oversubscribed by 16" in v["message"]
    assert "g-spot: 232 guaranteed of 64" in v["message"]


def test_quantity():
    assert quantity("64") == 64 and quantity(8.0) == 8 and quantity("1536Gi") == 1536 * 2**30
    assert quantity("500m") == Fraction(1, 2) and quantity("1e3") == 1000
    assert quantity("8 GPUs") is None and quantity(None) is None and quantity(True) is None


def test_selector_matches():
    labels = {"kubernetes.io/metadata.name": "research", "team": "r"}
    assert selector_matches({}, labels) and not selector_matches(None, labels)
    assert selector_matches({"matchLabels": {"team": "r"}}, labels)
    assert not selector_matches({"matchLabels": {"team": "x"}}, labels)
    expr = lambda op, *v: {"matchExpressions": [{"key": "team", "operator": op,  # noqa: E731
                                                 "values": list(v)}]}
    assert selector_matches(expr("In", "r", "x"), labels)
    assert not selector_matches(expr("NotIn", "r"), labels)
    assert selector_matches(expr("Exists"), labels)
    assert not selector_matches(expr("DoesNotExist"), labels)
