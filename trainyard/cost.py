"""`trainyard cost`: what a stack costs per hour and per month, offline.

    trainyard cost --stack prod [--json cost.json]
    trainyard cost --plan plan.json [--efs-gib 500] [--live-spot]

Prices every node group at its min, desired and max size, on-demand and spot, and adds the fixed
costs in the plan (EKS control planes, NAT gateways, interface endpoints per AZ, FSx for Lustre
storage, EFS storage at an assumed size). Reports a blended $/GPU-hour and the date and source
of every price used.

Prices come from the instance catalog (components/data/instances.yaml: on-demand list prices in
its reference region on its price date). Spot is the catalog's documented discount assumption
(`services.spot_discount_assumption`) unless `--live-spot` asks EC2 for the current spot price
history, which needs AWS credentials. Capacity Block pools are priced at the on-demand list price
(the block's real price is fixed at purchase). Usage-based charges (NAT and S3 data, logs
ingestion, EFS beyond the assumed size) are listed as rates, not totals.

JSON (`--json`): `monthly_total` is the whole stack at desired size with each pool's own capacity
type; `totals` has min/desired/max; `pools`, `fixed`, `prices` and `assumptions` give the detail.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from trainyard.errors import UsageError
from trainyard.plan import add_plan_source_args, node_group_types

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
CLUSTER = "aws:eks/cluster:Cluster"
NAT = "aws:ec2/natGateway:NatGateway"
VPC_ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
EFS = "aws:efs/fileSystem:FileSystem"
FSX = "aws:fsx/lustreFileSystem:LustreFileSystem"
SIZES = ("min", "desired", "max")

SpotPrice = Callable[[str, float], tuple[float, str, str]]
"""(instance type, on-demand price) -> (spot $/h, date, source)."""


# ----------------------------------------------------------------------------------------------
# Price sources
# ----------------------------------------------------------------------------------------------
def assumed_spot(catalog) -> SpotPrice:
    discount = catalog.services["spot_discount_assumption"]

    def price(instance_type: str, on_demand: float) -> tuple[float, str, str]:
        return (on_demand * (1 - discount), catalog.price_date,
                f"assumption: on-demand minus {discount:.0%} "
                "(catalog services.spot_discount_assumption)")
    return price


def live_spot(region: str) -> SpotPrice:  # pragma: no cover - needs AWS credentials
    """Current spot prices from EC2 (the mean over the region's AZs of the latest price)."""
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise UsageError("--live-spot needs boto3 (pip install boto3)") from None
    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise UsageError("--live-spot needs AWS credentials (none found); drop the flag to use "
                         "the catalog's spot discount assumption")
    ec2 = session.client("ec2", region_name=region)
    cache: dict[str, tuple[float, str, str]] = {}

    def price(instance_type: str, on_demand: float) -> tuple[float, str, str]:
        if instance_type not in cache:
            try:
                resp = ec2.describe_spot_price_history(
                    InstanceTypes=[instance_type], ProductDescriptions=["Linux/UNIX"],
                    StartTime=dt.datetime.now(dt.UTC), MaxResults=100)
            except botocore.exceptions.BotoCoreError as e:
                raise UsageError(f"--live-spot: EC2 spot price history failed: {e}") from None
            except botocore.exceptions.ClientError as e:
                raise UsageError(f"--live-spot: EC2 spot price history failed: {e}") from None
            latest: dict[str, Any] = {}
            for h in resp.get("SpotPriceHistory", []):
                az = h["AvailabilityZone"]
                if az not in latest or h["Timestamp"] > latest[az]["Timestamp"]:
                    latest[az] = h
            if not latest:
                raise UsageError(f"--live-spot: no spot price for {instance_type} in {region}")
            mean = sum(float(h["SpotPrice"]) for h in latest.values()) / len(latest)
            when = max(h["Timestamp"] for h in latest.values()).date().isoformat()
            cache[instance_type] = (mean, when, f"EC2 spot price history, {region}, mean of "
                                                f"{len(latest)} AZs")
        return cache[instance_type]
    return price


# ----------------------------------------------------------------------------------------------
# Estimation (pure: plan + catalog -> dict)
# ----------------------------------------------------------------------------------------------
def _round(x: Optional[float], n: int = 4) -> Optional[float]:
    return None if x is None else round(x, n)


def _inputs(r: dict) -> dict:
    return r.get("inputs") or {}


def _launch_templates(plan: dict) -> dict:
    out = {}
    for r in plan["resources"]:
        if r["type"] == LAUNCH_TEMPLATE:
            for key in (r.get("id"), (r.get("outputs") or {}).get("name"), _inputs(r).get("name")):
                if key:
                    out[key] = r
    return out


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{what}: expected a number, got {json.dumps(value)}")
    return int(value)


def _pool(r: dict, lts: dict, catalog, spot: SpotPrice, prices: list) -> dict:
    inp = _inputs(r)
    lt_ref = inp.get("launchTemplate") or {}
    lt = lts.get(lt_ref.get("id")) or lts.get(lt_ref.get("name")) if isinstance(lt_ref, dict) else None
    types = node_group_types(r, lt)
    if not types:
        raise UsageError(f"node group {r['name']}: no instanceTypes (nor a launch template "
                         "instanceType) to price")
    specs = []
    for t in types:
        if not catalog.knows(t):
            raise UsageError(f"node group {r['name']}: instance type {t!r} is not in the "
                             "catalog (components/data/instances.yaml); add it to price it")
        specs.append(catalog.get(t))
    sc = inp.get("scalingConfig") or {}
    sizes = {s: _int(sc.get(f"{s}Size", 0), f"node group {r['name']}: scalingConfig.{s}Size")
             for s in SIZES}
    capacity = inp.get("capacityType") or "ON_DEMAND"

    od_by_type = {s.name: s.price_per_hour for s in specs}
    spot_by_type = {}
    for s in specs:
        price, date, source = spot(s.name, s.price_per_hour)
        spot_by_type[s.name] = price
        prices.append({"item": f"{s.name} spot", "usd": _round(price), "unit": "hour",
                       "date": date, "source": source})
    # A diversified pool draws from every type: price it at the mean of its types.
    od = sum(od_by_type.values()) / len(od_by_type)
    sp = sum(spot_by_type.values()) / len(spot_by_type)
    effective = sp if capacity == "SPOT" else od
    gpus = max(s.gpus for s in specs)

    hourly = {k: {"on_demand": _round(od * n), "spot": _round(sp * n),
                  "effective": _round(effective * n)} for k, n in sizes.items()}
    monthly_h = catalog.services["hours_per_month"]
    monthly = {k: {kind: _round(v * monthly_h, 2) for kind, v in h.items()}
               for k, h in hourly.items()}
    return {
        "name": r["name"], "pool": (inp.get("labels") or {}).get("trainyard.io/pool"),
        "urn": r["urn"], "instance_types": types, "capacity_type": capacity,
        "gpus_per_node": gpus, "accelerator": specs[0].gpu_model,
        "sizes": sizes, "gpus": {k: n * gpus for k, n in sizes.items()},
        "price_per_node_hour": {"on_demand": _round(od), "spot": _round(sp),
                                "effective": _round(effective)},
        "hourly": hourly, "monthly": monthly,
        "usd_per_gpu_hour": ({"on_demand": _round(od / gpus), "spot": _round(sp / gpus),
                              "effective": _round(effective / gpus)} if gpus else None),
        "price_basis": ("on-demand list price (Capacity Block price is set at purchase)"
                        if capacity == "CAPACITY_BLOCK" else
                        "mean spot price of the pool's types" if capacity == "SPOT" else
                        "on-demand list price"),
    }


def _fixed(plan: dict, catalog, efs_gib: float) -> list[dict]:
    svc, date = catalog.services, catalog.price_date
    hpm = svc["hours_per_month"]
    items = []

    def add(item: str, count: float, unit_price: float, unit: str, urns: list[str], note: str = ""):
        if not count:
            return
        hourly = count * unit_price if unit == "hour" else count * unit_price / hpm
        items.append({"item": item, "count": _round(count, 2), "unit_price": unit_price,
                      "unit": unit, "hourly": _round(hourly), "monthly": _round(hourly * hpm, 2),
                      "price_date": date, "urns": urns, "note": note})

    res = plan["resources"]
    clusters = [r for r in res if r["type"] == CLUSTER]
    add("EKS control plane", len(clusters), svc["eks_control_plane_hour"], "hour",
        [r["urn"] for r in clusters], "standard support; extended support costs more")
    nats = [r for r in res if r["type"] == NAT
            and (_inputs(r).get("connectivityType") or "public") == "public"]
    add("NAT gateway", len(nats), svc["nat_gateway_hour"], "hour", [r["urn"] for r in nats],
        f"plus ${svc['nat_gateway_gb']}/GB processed")
    endpoint_azs, endpoint_urns = 0, []
    for r in res:
        if r["type"] == VPC_ENDPOINT and _inputs(r).get("vpcEndpointType") == "Interface":
            endpoint_azs += max(1, len(_inputs(r).get("subnetIds") or []))
            endpoint_urns.append(r["urn"])
    add("Interface VPC endpoint (per AZ)", endpoint_azs, svc["interface_endpoint_az_hour"],
        "hour", endpoint_urns, "plus data processed; gateway endpoints (S3) are free")
    for r in res:
        if r["type"] == FSX:
            inp = _inputs(r)
            gib = _int(inp.get("storageCapacity", 0), f"{r['name']}: storageCapacity")
            tput = inp.get("perUnitStorageThroughput")
            key = f"fsx_lustre_persistent2_{int(tput) if tput else 125}_gb_month"
            if key not in svc:
                raise UsageError(f"{r['name']}: no FSx price for perUnitStorageThroughput "
                                 f"{tput!r} in the catalog")
            add(f"FSx for Lustre {inp.get('deploymentType', 'PERSISTENT_2')} "
                f"{int(tput or 125)} MB/s/TiB", gib, svc[key], "GB-month", [r["urn"]],
                f"{gib} GiB provisioned")
    efs = [r for r in res if r["type"] == EFS]
    if efs and efs_gib:
        add("EFS Standard storage (assumed size)", efs_gib * len(efs),
            svc["efs_standard_gb_month"], "GB-month", [r["urn"] for r in efs],
            f"{efs_gib:g} GiB assumed per file system (--efs-gib); EFS bills what is stored")
    return items


def estimate(plan: dict, catalog=None, spot: Optional[SpotPrice] = None,
             efs_gib: float = 0.0) -> dict:
    """Cost of a plan. Raises UsageError on a plan it cannot price."""
    if catalog is None:
        from components.catalog import load_catalog
        catalog = load_catalog()
    spot = spot or assumed_spot(catalog)
    prices: list[dict] = []
    lts = _launch_templates(plan)
    pools = [_pool(r, lts, catalog, spot, prices) for r in plan["resources"]
             if r["type"] == NODE_GROUP]
    fixed = _fixed(plan, catalog, efs_gib)
    hpm = catalog.services["hours_per_month"]
    fixed_hourly = sum(f["hourly"] for f in fixed)

    totals, blended = {}, {}
    for size in SIZES:
        pool_hourly = sum(p["hourly"][size]["effective"] for p in pools)
        hourly = pool_hourly + fixed_hourly
        gpus = sum(p["gpus"][size] for p in pools)
        totals[size] = {"hourly": _round(hourly), "monthly": _round(hourly * hpm, 2),
                        "gpus": gpus,
                        "pools_hourly_on_demand": _round(sum(p["hourly"][size]["on_demand"]
                                                             for p in pools)),
                        "pools_hourly_spot": _round(sum(p["hourly"][size]["spot"] for p in pools))}
        blended[size] = _round(hourly / gpus) if gpus else None

    for s in {t for p in pools for t in p["instance_types"]}:
        spec = catalog.get(s)
        prices.append({"item": f"{s} on-demand", "usd": spec.price_per_hour, "unit": "hour",
                       "date": catalog.price_date,
                       "source": f"catalog on-demand list price, {catalog.reference_region}"})
    for f in fixed:
        prices.append({"item": f["item"], "usd": f["unit_price"], "unit": f["unit"],
                       "date": f["price_date"],
                       "source": f"catalog services, {catalog.reference_region}"})
    unique, keys = [], set()
    for p in sorted(prices, key=lambda p: p["item"]):
        k = (p["item"], p["usd"], p["date"])
        if k not in keys:
            keys.add(k)
            unique.append(p)

    region = _region(plan)
    assumptions = [
        f"on-demand prices: Linux list prices in {catalog.reference_region} on "
        f"{catalog.price_date} (components/data/instances.yaml)",
        f"spot: on-demand minus {catalog.services['spot_discount_assumption']:.0%} unless "
        "--live-spot (documented assumption; real spot prices move hourly)",
        "diversified pools are priced at the mean of their instance types",
        "Capacity Block pools at the on-demand list price (the block price is set at purchase)",
        f"a month is {hpm:g} hours; totals use each pool's own capacity type",
        f"usage-based charges not totalled: NAT data ${catalog.services['nat_gateway_gb']}/GB, "
        f"S3 ${catalog.services['s3_standard_gb_month']}/GB-month, CloudWatch Logs ingestion "
        f"${catalog.services['cloudwatch_logs_gb_ingested']}/GB, EFS "
        f"${catalog.services['efs_standard_gb_month']}/GB-month beyond --efs-gib",
    ]
    if region and region != catalog.reference_region:
        assumptions.append(f"the stack is in {region} but prices are for "
                           f"{catalog.reference_region}; regional prices differ")
    return {
        "stack": plan.get("stack"), "region": region, "currency": "USD",
        "reference_region": catalog.reference_region, "price_date": catalog.price_date,
        "hours_per_month": hpm, "pools": pools, "fixed": fixed,
        "fixed_hourly": _round(fixed_hourly), "fixed_monthly": _round(fixed_hourly * hpm, 2),
        "totals": totals, "monthly_total": totals["desired"]["monthly"],
        "blended_usd_per_gpu_hour": blended, "prices": unique, "assumptions": assumptions,
    }


def _region(plan: dict) -> Optional[str]:
    for r in plan.get("resources", []):
        arn = (r.get("outputs") or {}).get("arn")
        if isinstance(arn, str) and arn.startswith("arn:"):
            parts = arn.split(":")
            if len(parts) > 3 and parts[3]:
                return parts[3]
    return None


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------
def _money(x: Optional[float]) -> str:
    return "-" if x is None else f"${x:,.2f}"


def render(est: dict) -> str:
    lines = [f"trainyard cost: stack {est['stack'] or '?'} (USD; list prices "
             f"{est['reference_region']} {est['price_date']})", ""]
    lines.append("GPU and system node groups (per hour at min / desired / max nodes):")
    for p in est["pools"]:
        sz = p["sizes"]
        lines.append(f"  {p['pool'] or p['name']}  {', '.join(p['instance_types'])}  {p['capacity_type']}  "
                     f"nodes {sz['min']}/{sz['desired']}/{sz['max']}  "
                     f"GPUs {p['gpus']['min']}/{p['gpus']['desired']}/{p['gpus']['max']}")
        for kind in ("on_demand", "spot"):
            mark = "*" if (kind == "spot") == (p["capacity_type"] == "SPOT") else " "
            h = [p["hourly"][s][kind] for s in SIZES]
            m = [p["monthly"][s][kind] for s in SIZES]
            lines.append(f"   {mark}{kind.replace('_', '-'):<9} {' / '.join(_money(x) for x in h)}"
                         f" per hour;  {' / '.join(_money(x) for x in m)} per month")
        if p["usd_per_gpu_hour"]:
            g = p["usd_per_gpu_hour"]
            lines.append(f"    $/GPU-hour: on-demand {_money(g['on_demand'])}, spot "
                         f"{_money(g['spot'])}")
    lines.append("  (* = the pool's own capacity type, used in the totals)")
    lines.append("")
    lines.append("Fixed costs:")
    for f in est["fixed"]:
        lines.append(f"  {f['item']}: {f['count']:g} x ${f['unit_price']}/{f['unit']} = "
                     f"{_money(f['monthly'])}/month ({f['note']})" if f["note"] else
                     f"  {f['item']}: {f['count']:g} x ${f['unit_price']}/{f['unit']} = "
                     f"{_money(f['monthly'])}/month")
    lines.append(f"  total fixed: {_money(est['fixed_hourly'])}/hour, "
                 f"{_money(est['fixed_monthly'])}/month")
    lines.append("")
    lines.append("Stack total (fixed + pools at their own capacity type):")
    for s in SIZES:
        t = est["totals"][s]
        b = est["blended_usd_per_gpu_hour"][s]
        lines.append(f"  {s:<8} {_money(t['hourly'])}/hour  {_money(t['monthly'])}/month  "
                     f"{t['gpus']} GPUs  blended {_money(b) + '/GPU-hour' if b else 'n/a (no GPUs)'}")
    lines.append("")
    lines.append("Prices used (date, source):")
    for p in est["prices"]:
        lines.append(f"  {p['item']}: ${p['usd']}/{p['unit']}  {p['date']}  {p['source']}")
    lines.append("")
    lines.append("Assumptions:")
    lines += [f"  - {a}" for a in est["assumptions"]]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "cost", help="hourly and monthly cost of a stack or plan, offline",
        description="Price every node group at min/desired/max (on-demand and spot) plus the "
                    "fixed costs, with the date of every price.")
    add_plan_source_args(p)
    p.add_argument("--json", metavar="PATH", type=Path, help="write the estimate as JSON")
    p.add_argument("--efs-gib", metavar="GIB", type=float, default=0.0,
                   help="assumed data stored per EFS file system (default 0: usage-based)")
    p.add_argument("--live-spot", action="store_true",
                   help="use EC2 spot price history instead of the documented discount "
                        "(needs AWS credentials)")
    p.set_defaults(func=run)


def run(args) -> int:
    from components.catalog import load_catalog
    from trainyard.check import load_plan_for

    if args.efs_gib < 0:
        raise UsageError(f"--efs-gib must be >= 0, got {args.efs_gib:g}")
    plan = load_plan_for(args)
    catalog = load_catalog()
    spot = live_spot(_region(plan) or catalog.reference_region) if args.live_spot else None
    est = estimate(plan, catalog, spot, args.efs_gib)
    sys.stdout.write(render(est))
    if args.json is not None:
        try:
            Path(args.json).write_text(json.dumps(est, indent=2) + "\n")
        except OSError as e:
            raise UsageError(f"{args.json}: cannot write: {e}") from None
    return 0
