"""`trainyard:budgets`: AWS Budgets for the stack, its pools and the teams that own pools.

    trainyard:budgets:
      monthlyUsd: 400000            # everything tagged trainyard.io/stack=<stack>
      activateCostAllocationTags: false   # true only in a payer or standalone account
      alertAtPercent: [80, 100]     # actual spend; a forecast alert at 100 % is always added
      notify:
        emails: [ml-platform@example.com]
        snsTopicArn: arn:aws:sns:us-east-1:123456789012:ml-budgets
      pools:
        - {pool: a100, monthlyUsd: 250000}
      teams:                        # only pools the team alone uses: AWS cannot see inside a
        - {team: research, monthlyUsd: 50000, pools: [g-spot]}   # node shared by several teams

Budgets see AWS billing, so a team budget can only cover pools that team alone runs on; the
share of a pool several teams use comes from the cluster's own metrics (docs/cost.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional

from components.config.reader import Reader
from components.config.types import BudgetLimit, BudgetsConfig

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
SNS_ARN = re.compile(r"arn:aws[\w-]*:sns:[a-z0-9-]+:\d{12}:[\w-]{1,256}")
MAX_EMAILS = 10  # AWS Budgets: up to 10 e-mail subscribers per notification
MAX_NOTIFICATIONS = 5  # ... and 5 notifications per budget (one is the forecast alert)


def _email(value: str) -> Optional[str]:
    return None if EMAIL.fullmatch(value) else "is not an e-mail address"


def _sns(value: str) -> Optional[str]:
    return None if SNS_ARN.fullmatch(value) else "is not an SNS topic ARN"


def _member(names: Optional[Sequence[str]], what: str):
    """A check that `value` is one of `names` (None: the names did not parse; accept)."""
    def check(value: str) -> Optional[str]:
        if names is None or value in names:
            return None
        return f"is not a {what} of this stack ({', '.join(names) or 'none'})"
    return check


def parse_budgets(r: Reader, pool_names: Optional[Sequence[str]],
                  team_names: Optional[Sequence[str]]) -> BudgetsConfig:
    if not r.raw:
        r.finish()
        return BudgetsConfig()
    monthly = r.int("monthlyUsd", 0, min=1)
    activate = r.bool("activateCostAllocationTags", False)
    percents = _percents(r)
    n = r.child("notify", required=True)
    emails = n.str_list("emails", (), check=_email)
    topic = n.str("snsTopicArn", "", check=_sns)
    if n.ok and not emails and not topic and n.parsed("emails", "snsTopicArn"):
        n.error("needs emails or snsTopicArn (a budget nobody hears about is noise)")
    if len(emails) > MAX_EMAILS:
        n.error(f"AWS Budgets takes at most {MAX_EMAILS} e-mail subscribers, got {len(emails)}",
                "emails")
    n.finish()
    pools = []
    for p in r.items("pools"):
        name = p.str("pool", check=_member(pool_names, "pool"))
        pools.append(BudgetLimit(name or "", p.int("monthlyUsd", min=1) or 0, ()))
        p.finish()
    _unique(r, "pools", [b.name for b in pools], "pool")
    teams = []
    owner: dict[str, str] = {}
    for t in r.items("teams"):
        name = t.str("team", check=_member(team_names, "team"))
        team_pools = t.str_list("pools", min_items=1, check=_member(pool_names, "pool"))
        for pool in team_pools:
            if pool in owner and name and owner[pool] != name:
                t.error(f"pool {pool!r} is also in team {owner[pool]!r}'s budget: a team budget "
                        "covers only pools that team alone uses", "pools")
            owner.setdefault(pool, name or "")
        teams.append(BudgetLimit(name or "", t.int("monthlyUsd", min=1) or 0, team_pools))
        t.finish()
    _unique(r, "teams", [b.name for b in teams], "team")
    r.finish()
    return BudgetsConfig(enabled=True, monthly_usd=monthly, alert_at_percent=percents,
                         emails=emails, sns_topic_arn=topic, pools=tuple(pools),
                         teams=tuple(teams), activate_tags=activate)


def _percents(r: Reader) -> tuple[int, ...]:
    value = r.value("alertAtPercent", [80, 100])
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000 for v in value):
        r.error(f"expected a list of whole percentages 1..1000, got {value!r}", "alertAtPercent")
        return (80, 100)
    if len(set(value)) != len(value):
        r.error(f"duplicate entries {sorted(value)}", "alertAtPercent")
    if len(value) > MAX_NOTIFICATIONS - 1:
        r.error(f"at most {MAX_NOTIFICATIONS - 1} thresholds (AWS Budgets allows "
                f"{MAX_NOTIFICATIONS} notifications; one is the forecast alert)", "alertAtPercent")
    return tuple(sorted(set(value)))


def _unique(r: Reader, key: str, names: list[str], what: str) -> None:
    dupes = sorted({n for n in names if n and names.count(n) > 1})
    if dupes:
        r.error(f"{what} {dupes} listed more than once", key)
