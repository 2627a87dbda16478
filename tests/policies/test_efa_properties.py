"""EFA rules against every EFA-capable type in the facts table: both documented layouts pass,
dropping or duplicating any interface is caught at the launch template."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_fixtures import LT, efa_pool

from policies import by_name, facts
from trainyard.check import PolicyConfig, run_checks

EFA_TYPES = sorted(t for t, f in facts.INSTANCES.items() if f.max_efa)
RULES = [by_name()[n] for n in ("efa-interface-layout", "efa-interface-count")]


def legacy_layout(n: int) -> list:
    nics = [{"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "efa",
             "securityGroups": ["efa-sg-id"]}]
    nics += [{"networkCardIndex": c, "deviceIndex": 1, "interfaceType": "efa",
              "securityGroups": ["efa-sg-id"]} for c in range(1, n)]
    return nics


def _check(resources):
    return run_checks({"stack": "t", "resources": resources}, PolicyConfig(), RULES)


def _pool(instance: str, layout: str):
    n = facts.INSTANCES[instance].max_efa
    res = efa_pool(instance=instance, efa=n)
    if layout == "legacy":
        lt = [r for r in res if r["type"] == LT][0]
        lt["inputs"]["networkInterfaces"] = legacy_layout(n)
    return res


@pytest.mark.parametrize("layout", ["current", "legacy"])
@pytest.mark.parametrize("instance", EFA_TYPES)
def test_documented_layouts_pass(instance, layout):
    report = _check(_pool(instance, layout))
    assert not report.violations and not report.errors and not report.cannot_judge


@settings(max_examples=40, deadline=None)
@given(instance=st.sampled_from([t for t in EFA_TYPES if facts.INSTANCES[t].max_efa > 1]),
       layout=st.sampled_from(["current", "legacy"]), data=st.data())
def test_dropping_any_efa_interface_is_caught(instance, layout, data):
    res = _pool(instance, layout)
    lt = [r for r in res if r["type"] == LT][0]
    nics = lt["inputs"]["networkInterfaces"]
    efa_idx = [i for i, ni in enumerate(nics) if ni["interfaceType"] in ("efa", "efa-only")
               and (ni["networkCardIndex"], ni["deviceIndex"]) != (0, 0)]
    nics.pop(data.draw(st.sampled_from(efa_idx)))
    report = _check(res)
    assert ("efa-interface-count", lt["urn"]) in {(v["policy"], v["urn"])
                                                  for v in report.violations}


@settings(max_examples=40, deadline=None)
@given(instance=st.sampled_from(EFA_TYPES), data=st.data())
def test_a_second_efa_interface_on_a_card_is_caught(instance, data):
    res = _pool(instance, "current")
    lt = [r for r in res if r["type"] == LT][0]
    nics = lt["inputs"]["networkInterfaces"]
    card = data.draw(st.integers(0, facts.INSTANCES[instance].max_efa - 1))
    nics.append({"networkCardIndex": card, "deviceIndex": 1 if card else 2,
                 "interfaceType": "efa-only", "securityGroups": ["efa-sg-id"]})
    report = _check(res)
    assert {v["policy"] for v in report.violations} & {"efa-interface-layout",
                                                        "efa-interface-count"}
