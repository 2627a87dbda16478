"""Budgets: `trainyard:budgets` parsed once with one-line errors, and the AWS Budgets the plan
declares (tag filters, one notification per threshold plus the forecast)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from components.config import ConfigError, load
from components.config.types import BudgetLimit, BudgetsConfig
from components.services.budgets import budget_specs, notifications, tag_filter
from tests.conftest import stack_raw

ROOT = Path(__file__).resolve().parents[2]
BUDGET = "aws:budgets/budget:Budget"


def raw(stack: str = "prod") -> dict:
    return stack_raw(stack)


def with_budgets(budgets) -> dict:
    r = copy.deepcopy(raw())
    r["trainyard:budgets"] = budgets
    return r


def test_prod_budgets_parse():
    cfg = load(raw(), "prod").budgets
    assert cfg.enabled and cfg.monthly_usd == 900000
    assert cfg.alert_at_percent == (50, 80, 100)
    assert [b.name for b in cfg.pools] == ["a100", "h100"]


def test_absent_means_no_budgets():
    assert load(raw("dev"), "dev").budgets == BudgetsConfig()


OK_NOTIFY = {"emails": ["a@example.com"]}


@pytest.mark.parametrize("budgets,needle", [
    ({"monthlyUsd": 10}, "trainyard:budgets.notify: is required"),
    ({"monthlyUsd": 10, "notify": {}}, "needs emails or snsTopicArn"),
    ({"monthlyUsd": 10, "notify": {"emails": ["nope"]}}, "'nope' is not an e-mail address"),
    ({"monthlyUsd": 10, "notify": {"snsTopicArn": "arn:aws:sqs:us-east-1:1:x"}},
     "is not an SNS topic ARN"),
    ({"monthlyUsd": 0, "notify": OK_NOTIFY}, "monthlyUsd: 0 is below the minimum 1"),
    ({"monthlyUsd": 10, "notify": OK_NOTIFY, "alertAtPercent": [80, 80]}, "duplicate entries"),
    ({"monthlyUsd": 10, "notify": OK_NOTIFY, "alertAtPercent": [10, 20, 30, 40, 50]},
     "at most 4 thresholds"),
    ({"monthlyUsd": 10, "notify": OK_NOTIFY, "alertAtPercent": "80"}, "whole percentages"),
    ({"notify": OK_NOTIFY, "pools": [{"pool": "x100", "monthlyUsd": 5}]},
     "pools[0].pool: 'x100' is not a pool of this stack"),
    ({"notify": OK_NOTIFY, "pools": [{"pool": "a100", "monthlyUsd": 5},
                                     {"pool": "a100", "monthlyUsd": 6}]},
     "pool ['a100'] listed more than once"),
    ({"notify": OK_NOTIFY, "teams": [{"team": "nobody", "monthlyUsd": 5, "pools": ["a100"]}]},
     "'nobody' is not a team of this stack"),
    ({"notify": OK_NOTIFY, "teams": [{"team": "research", "monthlyUsd": 5, "pools": []}]},
     "needs at least 1 item"),
    ({"notify": OK_NOTIFY, "teams": [
        {"team": "research", "monthlyUsd": 5, "pools": ["g-spot"]},
        {"team": "applied", "monthlyUsd": 5, "pools": ["g-spot"]}]},
     "pool 'g-spot' is also in team 'research''s budget"),
    ({"monthlyUsd": 10, "notify": OK_NOTIFY, "limit": 3}, "trainyard:budgets.limit"),
    ({"monthlyUsd": 10, "notify": {"emails": [f"a{i}@x.io" for i in range(11)]}},
     "at most 10 e-mail subscribers"),
])
def test_bad_budgets_are_one_line_each(budgets, needle):
    with pytest.raises(ConfigError) as e:
        load(with_budgets(budgets), "prod")
    assert len(e.value.problems) == 1, e.value.problems
    assert needle in e.value.problems[0]


def test_filters_and_notifications():
    assert tag_filter("prod") == {"tags": {"key": "trainyard.io/stack", "values": ["prod"],
                                           "match_options": ["EQUALS"]}}
    both = tag_filter("prod", ["a", "b"])
    assert both["ands"][1]["tags"] == {"key": "trainyard.io/pool", "values": ["a", "b"],
                                       "match_options": ["EQUALS"]}
    cfg = BudgetsConfig(enabled=True, monthly_usd=5, alert_at_percent=(80, 100),
                        emails=("a@x.io",), sns_topic_arn="arn:aws:sns:us-east-1:123456789012:t",
                        teams=(BudgetLimit("research", 7, ("g",)),))
    notes = notifications(cfg)
    assert [(n["notification_type"], n["threshold"]) for n in notes] == [
        ("ACTUAL", 80.0), ("ACTUAL", 100.0), ("FORECASTED", 100.0)]
    assert all(n["subscriber_sns_topic_arns"] == [cfg.sns_topic_arn] for n in notes)
    assert [(s, usd) for s, usd, _ in budget_specs("prod", cfg)] == [("stack", 5),
                                                                      ("team-research", 7)]


def test_prod_plan_declares_the_budgets(plan_for):
    budgets = [r for r in plan_for("prod")["resources"] if r["type"] == BUDGET]
    assert len(budgets) == 3
    by_limit = {b["inputs"]["limitAmount"]: b["inputs"] for b in budgets}
    assert set(by_limit) == {"900000.00", "400000.00"}
    stack_budget = by_limit["900000.00"]
    assert stack_budget["budgetType"] == "COST" and stack_budget["timeUnit"] == "MONTHLY"
    assert stack_budget["filterExpression"]["tags"]["values"] == ["prod"]
    assert len(stack_budget["notifications"]) == 4  # 50, 80, 100 and the forecast
    assert not [r for r in plan_for("dev")["resources"] if r["type"] == BUDGET]


def test_every_taggable_resource_carries_the_stack_cost_tag(plan_for):
    """`cost --actual` and the budgets filter on trainyard.io/stack: whatever the plan tags
    carries it, and the pools' launched instances and volumes carry the pool tag too."""
    plan = plan_for("prod")
    tagged = [r for r in plan["resources"] if isinstance(r["inputs"].get("tags"), dict)]
    assert tagged
    missing = [r["urn"] for r in tagged if r["inputs"]["tags"].get("trainyard.io/stack") != "prod"]
    assert not missing, missing[:5]
    lts = [r for r in plan["resources"] if r["type"] == "aws:ec2/launchTemplate:LaunchTemplate"]
    for lt in lts:
        specs = {s["resourceType"]: s["tags"] for s in lt["inputs"]["tagSpecifications"]}
        assert {"instance", "volume", "network-interface"} <= set(specs)
        assert all(t.get("trainyard.io/stack") == "prod" for t in specs.values())
