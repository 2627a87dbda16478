"""`trainyard cost --actual`: what a stack really cost, from AWS Cost Explorer, beside the plan's
estimate for the same period.

    trainyard cost --stack prod --actual --since 2026-11-01 [--until 2026-11-27]
                   [--prometheus http://localhost:9090] [--json actual.json]

Two GetCostAndUsage queries (Cost Explorer lives in us-east-1), both filtered on the stack's
cost-allocation tag `trainyard.io/stack` and grouped by the pool tag `trainyard.io/pool` and the
purchase type (On Demand / Spot / Savings Plans ...):

1. UnblendedCost of everything the stack tags: each pool's instances, their root volumes and
   network interfaces (launch templates and EC2NodeClasses tag all three), and the shared rest
   (control plane, NAT, endpoints, storage, keys) under "(shared)".
2. UsageQuantity of the usage-type group "EC2: Running Hours": node-hours per pool and purchase
   type, so the report can say what the Spot discount actually was (Spot $ per node-hour against
   the pool's on-demand list price) and how many nodes ran on average against the pool's min and
   max.

The plan's estimate for the same hours comes from `trainyard.cost.estimate` (min and max sizes;
Karpenter pools have min 0). With `--prometheus`, each pool's spend is split between teams by
the GPU-hours their pods held (`trainyard:gpu_allocated:count`, a recording rule of the
platform's monitoring), and the GPU-hours held but idle for an hour (`trainyard:gpu_idle_
allocated:count`) and those nobody held are priced as waste.

Everything is fetched and computed before anything is printed: an error (no credentials, no
Cost Explorer data yet, throttling after retries) is one line on stderr and exit 2.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from typing import Optional

from trainyard.errors import UsageError

STACK_TAG = "trainyard.io/stack"
POOL_TAG = "trainyard.io/pool"
RUNNING_HOURS = "EC2: Running Hours"
SHARED = "(shared)"
CE_REGION = "us-east-1"  # Cost Explorer's one endpoint
MAX_PAGES = 100

# Cost Explorer error codes and what to tell the user (one line each).
CE_ERRORS = {
    "DataUnavailableException": "Cost Explorer has no data for {period} yet (it is enabled per "
                                "account and data appears up to 24 hours after use)",
    "LimitExceededException": "Cost Explorer throttled the request even after retries; wait a "
                              "minute and run it again",
    "ThrottlingException": "Cost Explorer throttled the request even after retries; wait a "
                           "minute and run it again",
    "AccessDeniedException": "the credentials may not call ce:GetCostAndUsage (grant it, or use "
                             "the payer account's read-only billing role)",
    "BillExpirationException": "Cost Explorer: the bill for {period} has expired",
    "RequestChangedException": "Cost Explorer: the data changed while paging; run it again",
    "InvalidNextTokenException": "Cost Explorer: a page token was refused; run it again",
}


def parse_period(since: Optional[str], until: Optional[str],
                 today: dt.date) -> tuple[dt.date, dt.date]:
    """[start, end) as Cost Explorer takes it; `until` defaults to today (exclusive)."""
    if not since:
        raise UsageError("--actual needs --since DATE (YYYY-MM-DD)")
    start = _date("--since", since)
    end = _date("--until", until) if until else today
    if end <= start:
        raise UsageError(f"--until {end.isoformat()} must be after --since {start.isoformat()}")
    if end > today + dt.timedelta(days=1):
        raise UsageError(f"--until {end.isoformat()} is in the future (today is "
                         f"{today.isoformat()})")
    if start < today - dt.timedelta(days=14 * 31):
        raise UsageError(f"--since {start.isoformat()}: Cost Explorer keeps about 14 months")
    return start, end


def _date(flag: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a date (YYYY-MM-DD)") from None


# ----------------------------------------------------------------------------------------------
# Cost Explorer
# ----------------------------------------------------------------------------------------------
def ce_client(profile: Optional[str] = None):  # pragma: no cover - needs AWS credentials
    import boto3
    from botocore.config import Config

    session = boto3.Session(profile_name=profile)
    if session.get_credentials() is None:
        raise UsageError("--actual needs AWS credentials (none found): set AWS_PROFILE or "
                         "use --profile")
    return session.client("ce", region_name=CE_REGION,
                          config=Config(retries={"max_attempts": 8, "mode": "adaptive"}))


def _pages(ce, request: dict, period: str) -> list[dict]:
    """Every ResultsByTime of a GetCostAndUsage request, following NextPageToken."""
    import botocore.exceptions

    out: list[dict] = []
    token = None
    for _ in range(MAX_PAGES):
        req = dict(request, **({"NextPageToken": token} if token else {}))
        try:
            resp = ce.get_cost_and_usage(**req)
        except botocore.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            text = CE_ERRORS.get(code)
            if text is None:
                raise UsageError(f"Cost Explorer GetCostAndUsage failed: {code or e}") from None
            raise UsageError(f"{text.format(period=period)} ({code})") from None
        except botocore.exceptions.NoCredentialsError:
            raise UsageError("--actual needs AWS credentials (none found)") from None
        except botocore.exceptions.BotoCoreError as e:
            raise UsageError(f"Cost Explorer GetCostAndUsage failed: {e}") from None
        out.extend(resp.get("ResultsByTime", []))
        token = resp.get("NextPageToken")
        if not token:
            return out
    raise UsageError(f"Cost Explorer returned more than {MAX_PAGES} pages; shorten the period")


def _tag_value(key: str) -> str:
    """'trainyard.io/pool$a100' -> 'a100'; 'trainyard.io/pool$' (untagged) -> ''."""
    return key.split("$", 1)[1] if "$" in key else key


def fetch(ce, stack: str, start: dt.date, end: dt.date) -> dict:
    """Spend and node-hours per (pool, purchase type), summed over the period."""
    period = f"{start.isoformat()}..{end.isoformat()}"
    stack_filter = {"Tags": {"Key": STACK_TAG, "Values": [stack], "MatchOptions": ["EQUALS"]}}
    base = {"TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
            "Granularity": "MONTHLY",
            "GroupBy": [{"Type": "TAG", "Key": POOL_TAG},
                        {"Type": "DIMENSION", "Key": "PURCHASE_TYPE"}]}
    spend = _pages(ce, {**base, "Metrics": ["UnblendedCost"], "Filter": stack_filter}, period)
    hours = _pages(ce, {**base, "Metrics": ["UsageQuantity", "UnblendedCost"], "Filter": {
        "And": [stack_filter, {"Dimensions": {"Key": "USAGE_TYPE_GROUP",
                                              "Values": [RUNNING_HOURS]}}]}}, period)
    cost: dict[tuple[str, str], float] = defaultdict(float)
    node_hours: dict[tuple[str, str], float] = defaultdict(float)
    node_cost: dict[tuple[str, str], float] = defaultdict(float)
    estimated = False
    for r in spend:
        estimated |= bool(r.get("Estimated"))
        for g in r.get("Groups", []):
            key = (_tag_value(g["Keys"][0]) or SHARED, g["Keys"][1])
            cost[key] += float(g["Metrics"]["UnblendedCost"]["Amount"])
        total = r.get("Total", {}).get("UnblendedCost")
        if total and not r.get("Groups"):  # no groups: the whole amount is unattributed
            cost[(SHARED, "")] += float(total["Amount"])
    for r in hours:
        for g in r.get("Groups", []):
            key = (_tag_value(g["Keys"][0]) or SHARED, g["Keys"][1])
            node_hours[key] += float(g["Metrics"]["UsageQuantity"]["Amount"])
            node_cost[key] += float(g["Metrics"]["UnblendedCost"]["Amount"])
    return {"cost": dict(cost), "node_hours": dict(node_hours), "node_cost": dict(node_cost),
            "estimated": estimated}


def inactive_tags(ce) -> list[str]:
    """Which of the platform's cost-allocation tags are not active in billing (a tag that is
    not active is not in Cost Explorer at all: every amount would land under "(shared)")."""
    import botocore.exceptions

    try:
        resp = ce.list_cost_allocation_tags(TagKeys=[STACK_TAG, POOL_TAG])
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
        return []  # best effort: ListCostAllocationTags needs the payer account's permission
    active = {t["TagKey"] for t in resp.get("CostAllocationTags", []) if t.get("Status") == "Active"}
    return [k for k in (STACK_TAG, POOL_TAG) if k not in active]


# ----------------------------------------------------------------------------------------------
# Team split from Prometheus (optional)
# ----------------------------------------------------------------------------------------------
Query = Callable[[str], list[dict]]


def check_prometheus_url(url: str) -> None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"--prometheus {url!r} is not an http(s) URL")


def prometheus_query(url: str, at: dt.datetime, timeout: float = 30.0) -> Query:
    """An instant-query function against a Prometheus HTTP API (e.g. a port-forward)."""
    check_prometheus_url(url)

    def query(expr: str) -> list[dict]:
        q = urllib.parse.urlencode({"query": expr, "time": f"{at.timestamp():.0f}"})
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query?{q}",
                                        timeout=timeout) as resp:
                body = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise UsageError(f"--prometheus {url}: query failed: {e}") from None
        if body.get("status") != "success":
            raise UsageError(f"--prometheus {url}: {body.get('error', 'query failed')}")
        return body["data"]["result"]

    return query


def team_gpu_hours(query: Query, hours: float) -> dict[str, dict[str, dict[str, float]]]:
    """{pool: {team: {"held": GPU-hours, "idle": GPU-hours}}} over the last `hours` before the
    query time, from the platform's recording rules (1-minute subquery, so the sums do not
    depend on the rule evaluation interval)."""
    window = f"{max(int(round(hours)), 1)}h"
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for kind, series in (("held", "trainyard:gpu_allocated:count"),
                         ("idle", "trainyard:gpu_idle_allocated:count")):
        expr = f"sum by (pool, namespace) (sum_over_time({series}[{window}:1m])) / 60"
        for s in query(expr):
            m = s.get("metric", {})
            pool, team = m.get("pool"), m.get("namespace")
            if pool and team:
                out[pool][team][kind] = float(s["value"][1])
    return {p: {t: {"held": v.get("held", 0.0), "idle": v.get("idle", 0.0)}
                for t, v in teams.items()} for p, teams in out.items()}


# ----------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------
def _r(x: Optional[float], n: int = 2) -> Optional[float]:
    return None if x is None else round(x, n)


def compare(actual: dict, est: dict, start: dt.date, end: dt.date,
            teams: Optional[dict] = None) -> dict:
    """Actual spend per pool next to the estimate for the same hours, with the difference
    explained: node-hours against the pool's min and max, the Spot discount obtained."""
    hours = (end - start).days * 24.0
    by_pool: dict[str, dict] = {}
    pools_est = {p["pool"] or p["name"]: p for p in est["pools"]}
    for (pool, purchase), usd in actual["cost"].items():
        row = by_pool.setdefault(pool, {"pool": pool, "actual_usd": 0.0, "by_purchase": {}})
        row["actual_usd"] += usd
        row["by_purchase"][purchase or "(none)"] = _r(usd)
    for (pool, purchase), nh in actual["node_hours"].items():
        row = by_pool.setdefault(pool, {"pool": pool, "actual_usd": 0.0, "by_purchase": {}})
        row.setdefault("node_hours", {})[purchase] = _r(nh)
    rows = []
    for name in sorted(set(by_pool) | set(pools_est), key=lambda n: (n == SHARED, n)):
        row = by_pool.get(name, {"pool": name, "actual_usd": 0.0, "by_purchase": {}})
        p = pools_est.get(name)
        nh = row.get("node_hours", {})
        total_nh = sum(nh.values())
        row["actual_usd"] = _r(row["actual_usd"])
        row["node_hours_total"] = _r(total_nh)
        row["avg_nodes"] = _r(total_nh / hours, 3) if hours else None
        notes = []
        if p is not None:
            row["estimate_usd"] = {
                size: _r((p["hourly"][size]["effective"] + p["ebs_hourly"][size]) * hours)
                for size in ("min", "max")}
            row["sizes"] = {"min": p["sizes"]["min"], "max": p["sizes"]["max"]}
            od = p["price_per_node_hour"]["on_demand"]
            spot_nh = sum(v for k, v in nh.items() if "spot" in k.lower())
            spot_usd = sum(v for (pool, k), v in actual["node_cost"].items()
                           if pool == name and "spot" in k.lower())
            if spot_nh > 0 and od:
                obtained = 1 - (spot_usd / spot_nh) / od
                row["spot_discount_obtained"] = _r(obtained, 3)
                notes.append(f"Spot at {obtained:.0%} below on-demand")
            if p["sizes"]["max"]:
                notes.append(f"{row['avg_nodes']:g} nodes on average (min {p['sizes']['min']}, "
                             f"max {p['sizes']['max']})")
        elif name == SHARED:
            row["estimate_usd"] = {"min": _r(est["fixed_hourly"] * hours),
                                   "max": _r(est["fixed_hourly"] * hours)}
            notes.append("control plane, NAT, endpoints, storage, keys; usage-based charges "
                         "(data transfer, S3 requests, logs) are not in the estimate")
        else:
            notes.append("not in the current plan (a removed or renamed pool)")
        if teams and p is not None and name in teams and total_nh and p["gpus_per_node"]:
            row["teams"] = _split(row["actual_usd"], total_nh * p["gpus_per_node"], teams[name])
        row["note"] = "; ".join(notes)
        rows.append(row)
    total = sum(r["actual_usd"] for r in rows)
    return {"stack": est.get("stack"), "period": {"start": start.isoformat(),
                                                  "end": end.isoformat(), "hours": hours},
            "currency": "USD", "estimated_by_aws": actual["estimated"], "pools": rows,
            "actual_total_usd": _r(total),
            "estimate_total_usd": {size: _r(est["totals"][size]["hourly"] * hours)
                                   for size in ("min", "max")}}


def _split(pool_usd: float, paid_gpu_hours: float, teams: dict) -> dict:
    """A pool's spend split by the GPU-hours each team held; what nobody held is unallocated."""
    per_gpu_hour = pool_usd / paid_gpu_hours if paid_gpu_hours else 0.0
    out = {}
    held_total = 0.0
    for team, v in sorted(teams.items()):
        held_total += v["held"]
        out[team] = {"gpu_hours": _r(v["held"]), "usd": _r(v["held"] * per_gpu_hour),
                     "idle_gpu_hours": _r(v["idle"]), "idle_usd": _r(v["idle"] * per_gpu_hour)}
    unallocated = max(paid_gpu_hours - held_total, 0.0)
    out["(unallocated)"] = {"gpu_hours": _r(unallocated), "usd": _r(unallocated * per_gpu_hour),
                            "idle_gpu_hours": _r(unallocated),
                            "idle_usd": _r(unallocated * per_gpu_hour)}
    return out


def render(report: dict, warnings: list[str]) -> str:
    from trainyard.plan import text_table

    lines = [f"warning: {w}" for w in warnings]
    p = report["period"]
    lines.append(f"Actual spend of stack {report['stack']} from {p['start']} to {p['end']} "
                 f"(end exclusive, {p['hours']:g} h), AWS Cost Explorer, USD"
                 + (" (includes AWS estimates for the current month)"
                    if report["estimated_by_aws"] else ""))
    rows = []
    for r in report["pools"]:
        est = r.get("estimate_usd") or {}
        rows.append([r["pool"], f"{r['actual_usd']:,.2f}",
                     f"{est['min']:,.2f}" if est else "-", f"{est['max']:,.2f}" if est else "-",
                     f"{r['node_hours_total']:g}", r["note"]])
    rows.append(["total", f"{report['actual_total_usd']:,.2f}",
                 f"{report['estimate_total_usd']['min']:,.2f}",
                 f"{report['estimate_total_usd']['max']:,.2f}", "", ""])
    lines += text_table([("pool", "actual", "estimate at min", "estimate at max",
                          "node-hours", "why it differs"), *map(tuple, rows)],
                        right=(1, 2, 3, 4))
    team_rows = [[r["pool"], team, f"{v['gpu_hours']:g}", f"{v['usd']:,.2f}",
                  f"{v['idle_gpu_hours']:g}", f"{v['idle_usd']:,.2f}"]
                 for r in report["pools"] for team, v in (r.get("teams") or {}).items()]
    if team_rows:
        lines.append("")
        lines.append("Per team (pool spend split by the GPU-hours each team's pods held; idle: "
                     "held but below 5% utilisation for an hour, or held by nobody)")
        lines += text_table([("pool", "team", "GPU-hours", "USD", "idle GPU-hours",
                              "idle USD"), *map(tuple, team_rows)], right=(2, 3, 4, 5))
    return "\n".join(lines) + "\n"
