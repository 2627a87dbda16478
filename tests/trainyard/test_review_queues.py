"""`trainyard review` says what a change does to Kueue quota and flavor order, as such."""

from __future__ import annotations

import copy
import dataclasses

from components.compute.catalog import load_catalog
from components.services.kueue import quota_plan
from trainyard import review as R
from trainyard.synth import load_config

CQ = "kubernetes:kueue.x-k8s.io/v1beta2:ClusterQueue"


def cq(name: str, flavors: dict[str, int]) -> dict:
    return {"type": CQ, "name": f"trainyard-kueue-cq-{name}", "urn": f"urn::{name}",
            "inputs": {"metadata": {"name": name}, "spec": {"resourceGroups": [{
                "coveredResources": ["cpu", "nvidia.com/gpu"],
                "flavors": [{"name": f, "resources": [
                    {"name": "cpu", "nominalQuota": str(n * 12)},
                    {"name": "nvidia.com/gpu", "nominalQuota": str(n)}]}
                    for f, n in flavors.items()]}]}}}


def plan(*resources) -> dict:
    return {"resources": list(resources)}


def test_quota_change():
    base = plan(cq("research", {"g-spot": 32, "a100": 32}))
    head = plan(cq("research", {"g-spot": 32, "a100": 0}))
    assert R.queue_changes(base, head) == [
        "team research: nominal GPU quota 64 → 32",
        "team research: nominal GPUs per flavor g-spot 32, a100 32 → g-spot 32"]


def test_flavor_order_change_alone():
    base = plan(cq("research", {"g-spot": 8, "a100": 0}))
    head = plan(cq("research", {"a100": 0, "g-spot": 8}))
    assert R.queue_changes(base, head) == ["flavor order of research: g-spot, a100 → a100, g-spot"]


def test_queues_added_removed_and_unchanged():
    base = plan(cq("research", {"a": 8}), cq("old", {"a": 4}))
    head = plan(cq("research", {"a": 8}), cq("new", {"a": 8, "b": 4}))
    assert R.queue_changes(base, head) == [
        "team new: ClusterQueue added, nominal GPU quota 12 (a 8, b 4)",
        "team old: ClusterQueue removed (was nominal GPU quota 4)"]
    assert R.queue_changes(base, copy.deepcopy(base)) == []
    assert R.queue_changes(None, plan()) == []


def test_review_of_a_quota_cut_in_prod(plan_for):
    """prod's research quota 64 -> 32, replanned from config: the report names the change."""
    base_plan = plan_for("prod")
    head_plan = copy.deepcopy(base_plan)
    cfg = load_config("prod")
    cut = [dataclasses.replace(t, gpu_quota=32) if t.name == "research" else t
           for t in cfg.teams]
    plan_head = quota_plan(cut, cfg.gpu_pools)
    for r in head_plan["resources"]:
        if r["type"] == CQ and r["inputs"]["metadata"]["name"] == "research":
            for f in r["inputs"]["spec"]["resourceGroups"][0]["flavors"]:
                for q in f["resources"]:
                    if q["name"] == "nvidia.com/gpu":
                        q["nominalQuota"] = str(plan_head.nominal["research"][f["name"]])
    side = lambda p: R.Side(present=True, plan=p, violations=[], policies_run=1,  # noqa: E731
                            monthly={"desired": 0.0, "max": 0.0})
    sr = R.build_stack_review("prod", side(base_plan), side(head_plan), load_catalog())
    assert "team research: nominal GPU quota 64 → 32" in sr.queues
    assert sr.to_json()["queues"] == sr.queues
    review = R.Review("origin/main", "a" * 40, "", "working tree", "b" * 40, "", False, [sr], 0.1)
    text = R.render_markdown(review)
    assert "**Queues** (Kueue quota and flavor order)" in text
    assert "- team research: nominal GPU quota 64 → 32" in text
