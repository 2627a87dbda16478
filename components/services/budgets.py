"""Budgets: AWS Budgets for the stack, its pools and the teams that own pools, so overspend is
noticed before the invoice (`trainyard:budgets`, components/config/budgets.py).

Each budget is a monthly COST budget filtered on the cost-allocation tags the platform puts on
everything that costs money (`trainyard.io/stack`, and `trainyard.io/pool` on each pool's
instances, volumes and network interfaces), with one ACTUAL notification per configured threshold
and a FORECASTED one at 100 %, to e-mail and/or an SNS topic. Tags only filter spend once they
are active cost-allocation tags in billing: `trainyard preflight` and `trainyard cost --actual`
say when they are not, and `activate_tags` creates the activation (payer or standalone accounts
only: AWS refuses it in a member account).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.config.types import BudgetsConfig

STACK_TAG = "trainyard.io/stack"
POOL_TAG = "trainyard.io/pool"


def tag_filter(stack: str, pools: Sequence[str] = ()) -> dict:
    """The budget's filter expression: the stack's tag, and one of the pools' when given."""
    stack_expr = {"tags": {"key": STACK_TAG, "values": [stack], "match_options": ["EQUALS"]}}
    if not pools:
        return stack_expr
    return {"ands": [stack_expr, {"tags": {"key": POOL_TAG, "values": list(pools),
                                           "match_options": ["EQUALS"]}}]}


def notifications(config: BudgetsConfig) -> list[dict]:
    """One ACTUAL notification per threshold and a FORECASTED one at 100 %."""
    subscribers: dict = {}
    if config.emails:
        subscribers["subscriber_email_addresses"] = list(config.emails)
    if config.sns_topic_arn:
        subscribers["subscriber_sns_topic_arns"] = [config.sns_topic_arn]
    out = [{"comparison_operator": "GREATER_THAN", "threshold": float(p),
            "threshold_type": "PERCENTAGE", "notification_type": "ACTUAL", **subscribers}
           for p in config.alert_at_percent]
    out.append({"comparison_operator": "GREATER_THAN", "threshold": 100.0,
                "threshold_type": "PERCENTAGE", "notification_type": "FORECASTED",
                **subscribers})
    return out


def budget_specs(stack: str, config: BudgetsConfig) -> list[tuple[str, int, dict]]:
    """(logical suffix, USD per month, filter expression) for every budget."""
    specs = []
    if config.monthly_usd:
        specs.append(("stack", config.monthly_usd, tag_filter(stack)))
    specs += [(f"pool-{b.name}", b.monthly_usd, tag_filter(stack, [b.name]))
              for b in config.pools]
    specs += [(f"team-{b.name}", b.monthly_usd, tag_filter(stack, b.pools))
              for b in config.teams]
    return specs


@dataclass(frozen=True)
class BudgetsArgs:
    stack: str
    """Stack name: the `trainyard.io/stack` tag value (required)."""
    config: BudgetsConfig
    """Parsed `trainyard:budgets` (required; `enabled` False creates nothing)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on every budget (default none)."""


class Budgets(pulumi.ComponentResource):
    def __init__(self, name: str, args: BudgetsArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Budgets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.budgets: dict[str, aws.budgets.Budget] = {}
        notes = notifications(args.config)
        for suffix, usd, expr in budget_specs(args.stack, args.config):
            self.budgets[suffix] = aws.budgets.Budget(
                f"{name}-{suffix}", budget_type="COST", time_unit="MONTHLY",
                limit_amount=f"{usd:.2f}", limit_unit="USD", filter_expression=expr,
                notifications=notes, tags=dict(args.tags), opts=child)
        self.tag_activations = [
            aws.costexplorer.CostAllocationTag(f"{name}-tag-{i}", tag_key=key, status="Active",
                                               opts=child)
            for i, key in enumerate((STACK_TAG, POOL_TAG))] if args.config.activate_tags else []
        self.register_outputs({"budgetNames": [b.name for b in self.budgets.values()]})
