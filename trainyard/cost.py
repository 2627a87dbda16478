"""`trainyard cost`: what a stack costs per hour and per month, offline.

    trainyard cost --stack prod [--json cost.json]
    trainyard cost --plan plan.json [--efs-gib 500] [--live-spot]

Prices every node pool (EKS managed node groups at their scaling config; Karpenter NodePools at
0 / 0 / the most nodes their limits allow) at its min, desired and max size at its own capacity
type (one table: pool x min / desired / max), with the other market beside it where there is
one (Spot for an on-demand pool, on-demand for a Spot pool; none for Capacity Block and ODCR
pools, which are never Spot). Adds each node's root volume (EBS, from the launch templates and
EC2NodeClasses) and the fixed costs
in the plan: EKS control planes, NAT gateways, interface endpoints per AZ, FSx for Lustre
storage, KMS customer managed keys, the persistent volumes charts ask for (Prometheus,
Alertmanager, Grafana: EBS gp3) and EFS storage at an assumed size. Reports a blended
$/GPU-hour and the date and source of every price used. Warnings (prices from another region,
something the plan does not say) come first.

Units: US dollars, per hour and per month (the catalog's hours_per_month, 730); every size in
GiB and every storage or data price per GiB (AWS's "GB" in price lists).

Prices come from the instance catalog (components/data/instances.yaml: on-demand list prices in
its reference region on its price date) and, for what it does not carry yet (EBS, KMS), from
EXTRA_PRICES below, each with its date and source. Spot is the catalog's documented discount
assumption (`services.spot_discount_assumption`) unless `--live-spot` asks EC2 for the current
spot price history, which needs AWS credentials. Capacity Block and ODCR pools are priced at the
on-demand list price (a block's real price is fixed at purchase). Usage-based charges (NAT and
S3 data, logs ingestion, EFS beyond the assumed size, KMS requests) are listed as rates, not
totals.

JSON (`--json`, keys only ever added): `monthly_total` is the whole stack at desired size with
each pool's own capacity type; `totals` has min/desired/max; `pools`, `fixed`, `prices`,
`warnings`, `units` and `assumptions` give the detail.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from trainyard import cost_actual, cost_serving, outfile

# The parts live beside this module; their public names are re-exported here.
from trainyard.cost_plan import (
    CLUSTER,
    EFS,
    FSX,
    HELM_RELEASE,
    KMS_KEY,
    NAT,
    NODE_GROUP,
    SIZES,
    VPC_ENDPOINT,
    _helm_volumes,
    _inputs,
    _int,
    _launch_templates,
    _region,
    _volume_gib,
    _volume_label,
    reservation_of,
    root_volumes,
)
from trainyard.cost_plan import LAUNCH_TEMPLATE as LAUNCH_TEMPLATE
from trainyard.cost_render import render
from trainyard.cost_spot import SpotPrice, assumed_spot, live_spot
from trainyard.errors import UsageError
from trainyard.plan import (
    NODE_CLASS,
    NODE_POOL,
    add_plan_source_args,
    karpenter_pool,
    node_group_types,
)


# ----------------------------------------------------------------------------------------------
# Prices the catalog does not carry (yet)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ListPrice:
    usd: float
    unit: str
    date: str
    source: str


# Same region and caveat as the catalog (components/data/instances.yaml): Linux/standard list
# prices in us-east-1 as published on the date given, NOT re-read from the live price list when
# written. A `services` entry of the same key in the catalog takes precedence.
EXTRA_PRICES: dict[str, ListPrice] = {
    # gp3 storage; the baseline 3,000 IOPS and 125 MB/s are included (the volumes here ask for
    # no more). https://aws.amazon.com/ebs/pricing/
    "ebs_gp3_gb_month": ListPrice(0.08, "GiB-month", "2025-06-01",
                                  "AWS EBS pricing page, gp3 storage, us-east-1"),
    "ebs_gp2_gb_month": ListPrice(0.10, "GiB-month", "2025-06-01",
                                  "AWS EBS pricing page, gp2 storage, us-east-1"),
    # A customer managed key, any region; requests ($0.03 per 10,000) are usage, not totalled.
    # https://aws.amazon.com/kms/pricing/
    "kms_key_month": ListPrice(1.00, "key-month", "2025-06-01",
                               "AWS KMS pricing page, customer managed key"),
}
EBS_PRICE_KEY = {"gp3": "ebs_gp3_gb_month", "gp2": "ebs_gp2_gb_month"}
UNITS = ("US dollars, per hour and per month of {hours:g} hours; sizes and storage in GiB (AWS "
         "price lists say \"GB\" and bill the GiB a volume or file system is provisioned with, "
         "so every storage and data price here is per GiB)")


def list_price(catalog, key: str) -> ListPrice:
    if key in catalog.services:
        return ListPrice(catalog.services[key], "GiB-month" if key.endswith("_gb_month") else
                         "unit", catalog.price_date,
                         f"catalog services, {catalog.reference_region}")
    return EXTRA_PRICES[key]


# ----------------------------------------------------------------------------------------------
# Estimation (pure: plan + catalog -> dict)
# ----------------------------------------------------------------------------------------------
def _round(x: Optional[float], n: int = 4) -> Optional[float]:
    return None if x is None else round(x, n)


def _ebs_month(catalog, gib: float, volume_type: str, what: str, warnings: list) -> float:
    key = EBS_PRICE_KEY.get(volume_type)
    if key is None:
        warnings.append(f"{what}: EBS volume type {volume_type!r} has no price here; not counted")
        return 0.0
    return gib * list_price(catalog, key).usd


def _specs(types: list[str], what: str, catalog) -> list:
    if not types:
        raise UsageError(f"{what}: no instanceTypes (nor a launch template instanceType) to "
                         "price")
    for t in types:
        if not catalog.knows(t):
            raise UsageError(f"{what}: instance type {t!r} is not in the catalog "
                             "(components/data/instances.yaml); add it to price it")
    return [catalog.get(t) for t in types]


def _pool(r: dict, lts: dict, catalog, spot: SpotPrice, prices: list, warnings: list) -> dict:
    """A managed node group at its scaling config."""
    inp = _inputs(r)
    lt_ref = inp.get("launchTemplate") or {}
    lt = lts.get(lt_ref.get("id")) or lts.get(lt_ref.get("name")) if isinstance(lt_ref, dict) else None
    types = node_group_types(r, lt)
    specs = _specs(types, f"node group {r['name']}", catalog)
    sc = inp.get("scalingConfig") or {}
    sizes = {s: _int(sc.get(f"{s}Size", 0), f"node group {r['name']}: scalingConfig.{s}Size")
             for s in SIZES}
    label = (inp.get("labels") or {}).get("trainyard.io/pool")
    volumes = root_volumes(r, lt)
    if not volumes:
        warnings.append(f"node group {label or r['name']}: the plan gives no root volume size "
                        "(no launch template block device, no diskSize); its EBS is not counted")
    return _priced(r, label, types, specs, inp.get("capacityType") or "ON_DEMAND",
                   reservation_of(r, lt), sizes, volumes, "managed", catalog, spot, prices,
                   warnings)


def _nodepool(r: dict, classes: dict, catalog, spot: SpotPrice, prices: list,
              warnings: list, serving: Optional[dict] = None) -> dict:
    """A Karpenter NodePool: no standing nodes of its own (min and desired 0) but those the
    served models' replicas.min keep up (trainyard/cost_serving.py), max from its limits,
    root volumes from its EC2NodeClass (trainyard/plan.py reads the same facts)."""
    pool = karpenter_pool(r, classes, {})
    what = f"NodePool {pool.label}"
    specs = _specs(list(pool.instance_types), what, catalog)
    ref = (((_inputs(r).get("spec") or {}).get("template") or {}).get("spec") or {}) \
        .get("nodeClassRef", {}).get("name")
    nc = (_inputs(classes.get(ref) or {}).get("spec")) or {}
    volumes = [(_volume_gib((m.get("ebs") or {})["volumeSize"], what),
                str((m.get("ebs") or {}).get("volumeType") or "gp3"))
               for m in nc.get("blockDeviceMappings") or []
               if (m.get("ebs") or {}).get("volumeSize") is not None]
    if not volumes:
        warnings.append(f"{what}: its EC2NodeClass gives no root volume size; its EBS is not "
                        "counted")
    standing = cost_serving.standing_nodes(serving or {"resources": []},
                                           {pool.label: max(s.gpus for s in specs)})
    floor = min(standing.get(pool.label, 0), pool.max_size)
    sizes = {"min": floor, "desired": floor, "max": pool.max_size}
    return _priced(r, pool.label, list(pool.instance_types), specs, pool.capacity_type, None,
                   sizes, volumes, "karpenter", catalog, spot, prices, warnings)


def _priced(r: dict, label: Optional[str], types: list[str], specs: list, capacity: str,
            reservation: Optional[str], sizes: dict, volumes: list, provisioner: str, catalog,
            spot: SpotPrice, prices: list, warnings: list) -> dict:
    spot_possible = reservation is None
    od_by_type = {s.name: s.price_per_hour for s in specs}
    # A diversified pool draws from every type: price it at the mean of its types.
    od = sum(od_by_type.values()) / len(od_by_type)
    sp: Optional[float] = None
    if spot_possible:  # reserved capacity is never Spot: no Spot price to look up or show
        spot_by_type = {}
        for s in specs:
            price, date, source = spot(s.name, s.price_per_hour)
            spot_by_type[s.name] = price
            prices.append({"item": f"{s.name} spot", "usd": _round(price), "unit": "hour",
                           "date": date, "source": source})
        sp = sum(spot_by_type.values()) / len(spot_by_type)
    effective = sp if capacity == "SPOT" and sp is not None else od
    gpus = max(s.gpus for s in specs)

    hourly = {k: {"on_demand": _round(od * n), "spot": _round(sp * n) if sp is not None else None,
                  "effective": _round(effective * n)} for k, n in sizes.items()}
    monthly_h = catalog.services["hours_per_month"]
    monthly = {k: {kind: _round(v * monthly_h, 2) if v is not None else None
                   for kind, v in h.items()} for k, h in hourly.items()}

    root_gib = sum(g for g, _ in volumes)
    per_node_month = sum(_ebs_month(catalog, g, t, f"node group {label or r['name']}", warnings)
                         for g, t in volumes)
    ebs_monthly = {k: _round(per_node_month * n, 2) for k, n in sizes.items()}
    ebs_hourly = {k: _round(per_node_month * n / monthly_h) for k, n in sizes.items()}
    return {
        "name": r["name"], "pool": label, "provisioner": provisioner,
        "urn": r["urn"], "instance_types": types, "capacity_type": capacity,
        "reservation": reservation, "spot_possible": spot_possible,
        "gpus_per_node": gpus, "accelerator": specs[0].gpu_model,
        "sizes": sizes, "gpus": {k: n * gpus for k, n in sizes.items()},
        "price_per_node_hour": {"on_demand": _round(od), "spot": _round(sp),
                                "effective": _round(effective)},
        "hourly": hourly, "monthly": monthly,
        "usd_per_gpu_hour": ({"on_demand": _round(od / gpus),
                              "spot": _round(sp / gpus) if sp is not None else None,
                              "effective": _round(effective / gpus)} if gpus else None),
        "root_volume_gib": root_gib,
        "ebs_hourly": ebs_hourly, "ebs_monthly": ebs_monthly,
        "price_basis": ("on-demand list price (Capacity Block price is set at purchase)"
                        if reservation == "capacity-block" else
                        "on-demand list price (an ODCR bills on-demand rates, used or not)"
                        if reservation == "odcr" else
                        "mean spot price of the pool's types" if capacity == "SPOT" else
                        "on-demand list price"),
    }


def _fixed(plan: dict, catalog, efs_gib: float, warnings: list) -> list[dict]:
    svc, date = catalog.services, catalog.price_date
    hpm = svc["hours_per_month"]
    items = []

    def add(item: str, count: float, unit_price: float, unit: str, urns: list[str], note: str = "",
            price: Optional[ListPrice] = None):
        if not count:
            return
        hourly = count * unit_price if unit == "hour" else count * unit_price / hpm
        items.append({"item": item, "count": _round(count, 2), "unit_price": unit_price,
                      "unit": unit, "hourly": _round(hourly), "monthly": _round(hourly * hpm, 2),
                      "price_date": price.date if price else date, "urns": urns, "note": note,
                      "price_source": price.source if price else
                      f"catalog services, {catalog.reference_region}"})

    res = plan["resources"]
    clusters = [r for r in res if r["type"] == CLUSTER]
    add("EKS control plane", len(clusters), svc["eks_control_plane_hour"], "hour",
        [r["urn"] for r in clusters], "standard support; extended support costs more")
    nats = [r for r in res if r["type"] == NAT
            and (_inputs(r).get("connectivityType") or "public") == "public"]
    add("NAT gateway", len(nats), svc["nat_gateway_hour"], "hour", [r["urn"] for r in nats],
        f"plus ${svc['nat_gateway_gb']}/GiB processed")
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
                f"{int(tput or 125)} MB/s/TiB", gib, svc[key], "GiB-month", [r["urn"]],
                f"{gib} GiB provisioned")
    efs = [r for r in res if r["type"] == EFS]
    if efs and efs_gib:
        add("EFS Standard storage (assumed size)", efs_gib * len(efs),
            svc["efs_standard_gb_month"], "GiB-month", [r["urn"] for r in efs],
            f"{efs_gib:g} GiB assumed per file system (--efs-gib); EFS bills what is stored")
    keys = [r for r in res if r["type"] == KMS_KEY]
    kms = list_price(catalog, "kms_key_month")
    add("KMS customer managed key", len(keys), kms.usd, kms.unit, [r["urn"] for r in keys],
        "plus $0.03 per 10,000 requests", kms)
    volumes, urns = [], []
    for r in res:
        if r["type"] == HELM_RELEASE:
            found = _helm_volumes(_inputs(r).get("values") or {})
            if found:
                volumes += [(_inputs(r).get("chart") or r["name"], path, gib)
                            for path, gib in found]
                urns.append(r["urn"])
    if volumes:
        gp3 = list_price(catalog, "ebs_gp3_gb_month")
        what = ", ".join(f"{_volume_label(path)} {gib} GiB" for _, path, gib in volumes)
        add("EBS gp3 persistent volumes (charts)", sum(g for _, _, g in volumes), gp3.usd,
            gp3.unit, urns, f"{what}; one replica each", gp3)
    return items


def estimate(plan: dict, catalog=None, spot: Optional[SpotPrice] = None,
             efs_gib: float = 0.0) -> dict:
    """Cost of a plan. Raises UsageError on a plan it cannot price."""
    if catalog is None:
        from components.compute.catalog import load_catalog
        catalog = load_catalog()
    spot = spot or assumed_spot(catalog)
    prices: list[dict] = []
    warnings: list[str] = []
    region = _region(plan)
    if region and region != catalog.reference_region:
        warnings.append(f"the stack is in {region} but every price here is a "
                        f"{catalog.reference_region} list price; {region} prices differ")
    lts = _launch_templates(plan)
    pools = [_pool(r, lts, catalog, spot, prices, warnings) for r in plan["resources"]
             if r["type"] == NODE_GROUP]
    classes = {(_inputs(r).get("metadata") or {}).get("name"): r for r in plan["resources"]
               if r["type"] == NODE_CLASS}
    pools += [_nodepool(r, classes, catalog, spot, prices, warnings, plan)
              for r in plan["resources"] if r["type"] == NODE_POOL]
    fixed = _fixed(plan, catalog, efs_gib, warnings)
    hpm = catalog.services["hours_per_month"]
    notebooks = _notebooks(plan, pools, hpm, warnings)
    serving = cost_serving.serving_costs(plan, pools, hpm)
    fixed_hourly = sum(f["hourly"] for f in fixed)

    totals, blended = {}, {}
    for size in SIZES:
        pool_hourly = sum(p["hourly"][size]["effective"] for p in pools)
        ebs_hourly = sum(p["ebs_hourly"][size] for p in pools)
        hourly = pool_hourly + ebs_hourly + fixed_hourly
        gpus = sum(p["gpus"][size] for p in pools)
        totals[size] = {"hourly": _round(hourly), "monthly": _round(hourly * hpm, 2),
                        "gpus": gpus,
                        "pools_hourly_on_demand": _round(sum(p["hourly"][size]["on_demand"]
                                                             for p in pools)),
                        # pools that cannot be Spot (reserved capacity) at their own price
                        "pools_hourly_spot": _round(sum(
                            p["hourly"][size]["spot"] if p["spot_possible"]
                            else p["hourly"][size]["effective"] for p in pools)),
                        "pools_hourly": _round(pool_hourly),
                        "node_ebs_hourly": _round(ebs_hourly),
                        "fixed_hourly": _round(fixed_hourly)}
        blended[size] = _round(hourly / gpus) if gpus else None

    for s in {t for p in pools for t in p["instance_types"]}:
        spec = catalog.get(s)
        prices.append({"item": f"{s} on-demand", "usd": spec.price_per_hour, "unit": "hour",
                       "date": catalog.price_date,
                       "source": f"catalog on-demand list price, {catalog.reference_region}"})
    for f in fixed:
        prices.append({"item": f["item"], "usd": f["unit_price"], "unit": f["unit"],
                       "date": f["price_date"], "source": f["price_source"]})
    if any(p["root_volume_gib"] for p in pools):
        gp3 = list_price(catalog, "ebs_gp3_gb_month")
        prices.append({"item": "EBS gp3 node root volumes", "usd": gp3.usd, "unit": gp3.unit,
                       "date": gp3.date, "source": gp3.source})
    unique, keys = [], set()
    for p in sorted(prices, key=lambda p: p["item"]):
        k = (p["item"], p["usd"], p["date"])
        if k not in keys:
            keys.add(k)
            unique.append(p)

    assumptions = [
        f"on-demand prices: Linux list prices in {catalog.reference_region} on "
        f"{catalog.price_date} (components/data/instances.yaml); EBS and KMS prices: "
        "trainyard/cost.py EXTRA_PRICES, dated there",
        f"spot: on-demand minus {catalog.services['spot_discount_assumption']:.0%} unless "
        "--live-spot (documented assumption; real spot prices move hourly)",
        "diversified pools are priced at the mean of their instance types",
        "Karpenter pools (NodePools) keep no standing nodes of their own: min and desired are "
        "the nodes served models' replicas.min hold (0 where nothing is served), max the most "
        "nodes their limits allow; their root volumes from their EC2NodeClass",
        "Capacity Block and ODCR pools at the on-demand list price (a block's price is set at "
        "purchase; an ODCR bills on-demand rates whether used or not) and never as Spot",
        f"a month is {hpm:g} hours; totals use each pool's own capacity type, plus each node's "
        "root volume (EBS) and the fixed costs",
        f"usage-based charges not totalled: NAT data ${catalog.services['nat_gateway_gb']}/GiB, "
        f"S3 ${catalog.services['s3_standard_gb_month']}/GiB-month, CloudWatch Logs ingestion "
        f"${catalog.services['cloudwatch_logs_gb_ingested']}/GiB, EFS "
        f"${catalog.services['efs_standard_gb_month']}/GiB-month beyond --efs-gib, KMS requests",
    ]
    if region and region != catalog.reference_region:
        assumptions.append(f"the stack is in {region} but prices are for "
                           f"{catalog.reference_region}; regional prices differ")
    return {
        "stack": plan.get("stack"), "region": region, "currency": "USD",
        "units": UNITS.format(hours=hpm),
        "reference_region": catalog.reference_region, "price_date": catalog.price_date,
        "hours_per_month": hpm, "warnings": warnings, "pools": pools, "fixed": fixed,
        "fixed_hourly": _round(fixed_hourly), "fixed_monthly": _round(fixed_hourly * hpm, 2),
        "totals": totals, "monthly_total": totals["desired"]["monthly"],
        "blended_usd_per_gpu_hour": blended, "prices": unique, "assumptions": assumptions,
        "notebooks": notebooks, "serving": serving,
    }


def _notebooks(plan: dict, pools: list[dict], hpm: float, warnings: list) -> Optional[dict]:
    """GPU notebooks at the hub's most servers (active_server_limit), each on its profile's
    pool at that pool's $/GPU-hour: the ceiling if every allowed server were a GPU one all
    month. The GPUs come out of the pool's own max (already in its row), so this is not added
    to the totals; a ceiling above the pool's max means notebooks would queue."""
    from components.services.notebooks import RELEASE, profiles_from_values

    release = next((r for r in plan["resources"] if r["type"] == HELM_RELEASE
                    and _inputs(r).get("name") == RELEASE), None)
    if release is None:
        return None
    values = _inputs(release).get("values") or {}
    limit = ((values.get("hub") or {}).get("config") or {}).get("JupyterHub", {}) \
        .get("active_server_limit")
    by_pool = {p["pool"]: p for p in pools}
    best: Optional[dict] = None
    for prof in profiles_from_values(values):
        o = prof.get("kubespawner_override") or {}
        gpus = sum(int(v) for k, v in (o.get("extra_resource_limits") or {}).items()
                   if k.endswith("/gpu"))
        pool = by_pool.get((o.get("node_selector") or {}).get("trainyard.io/pool"))
        if not gpus or pool is None or not pool["usd_per_gpu_hour"]:
            continue
        rate = gpus * pool["usd_per_gpu_hour"]["effective"]
        if best is None or rate > best["usd_per_server_hour"]:
            best = {"profile": prof.get("slug"), "pool": pool["pool"], "gpus_per_server": gpus,
                    "usd_per_server_hour": rate, "pool_max_gpus": pool["gpus"]["max"]}
    if best is None or not isinstance(limit, int):
        return None
    gpus = limit * best["gpus_per_server"]
    hourly = limit * best["usd_per_server_hour"]
    if gpus > best["pool_max_gpus"]:
        warnings.append(f"notebooks: {limit} GPU servers need {gpus} GPUs but pool "
                        f"{best['pool']} has at most {best['pool_max_gpus']}; the rest would "
                        "wait in the team's queue")
    return {**best, "max_servers": limit, "gpus_at_max": gpus,
            "hourly_at_max": _round(hourly), "monthly_at_max": _round(hourly * hpm, 2)}


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "cost", help="hourly and monthly cost of a stack or plan, offline",
        description="Price every node group at min/desired/max nodes (at its own capacity type, "
                    "with the other market where there is one), node root volumes and the fixed "
                    "costs of a stack or plan, with the date and source of every price. USD; "
                    "storage in GiB.")
    add_plan_source_args(p)
    p.add_argument("--json", metavar="PATH", type=Path, help="write the estimate as JSON")
    p.add_argument("--efs-gib", metavar="GIB", type=float, default=0.0,
                   help="assumed data stored per EFS file system (default 0: usage-based)")
    p.add_argument("--live-spot", action="store_true",
                   help="use EC2 spot price history instead of the documented discount "
                        "(needs AWS credentials)")
    actual = p.add_argument_group(
        "actual spend", "with --actual: what the stack really cost, from AWS Cost Explorer "
                        "(needs credentials with ce:GetCostAndUsage), beside the estimate for "
                        "the same period (trainyard/cost_actual.py)")
    actual.add_argument("--actual", action="store_true",
                        help="report actual spend per pool (and per team with --prometheus)")
    actual.add_argument("--since", metavar="DATE", help="first day, YYYY-MM-DD (inclusive)")
    actual.add_argument("--until", metavar="DATE",
                        help="last day, YYYY-MM-DD (exclusive; default today)")
    actual.add_argument("--prometheus", metavar="URL",
                        help="the platform's Prometheus (e.g. a port-forward): split each "
                             "pool's spend between teams by the GPU-hours they held")
    actual.add_argument("--profile", metavar="NAME", help="AWS profile for Cost Explorer")
    p.set_defaults(func=run)


def run(args) -> int:
    from components.compute.catalog import load_catalog
    from trainyard.check import load_plan_for

    if args.efs_gib < 0:
        raise UsageError(f"--efs-gib must be >= 0, got {args.efs_gib:g}")
    if not args.actual and (args.since or args.until or args.prometheus or args.profile):
        raise UsageError("--since, --until, --prometheus and --profile need --actual")
    today = dt.datetime.now(dt.UTC).date()
    period = cost_actual.parse_period(args.since, args.until, today) if args.actual else None
    if args.prometheus:
        cost_actual.check_prometheus_url(args.prometheus)
    outfile.check_writable(args.json)  # before synthesizing
    plan = load_plan_for(args)
    catalog = load_catalog()
    spot = live_spot(_region(plan) or catalog.reference_region) if args.live_spot else None
    est = estimate(plan, catalog, spot, args.efs_gib)
    if period is not None:
        return _run_actual(args, plan, est, period)
    sys.stdout.write(render(est))
    if args.json is not None:
        outfile.write(args.json, json.dumps(est, indent=2) + "\n")
    return 0


def _run_actual(args, plan: dict, est: dict, period, ce=None, query=None) -> int:
    """Everything is fetched and computed first, then printed: an error prints nothing else."""
    start, end = period
    stack = plan.get("stack") or ""
    ce = ce or cost_actual.ce_client(args.profile)
    data = cost_actual.fetch(ce, stack, start, end)
    warnings = list(est["warnings"])
    for tag in cost_actual.inactive_tags(ce):
        warnings.append(f"cost-allocation tag {tag} is not active in billing: its spend shows "
                        "under (shared); activate it (Billing > Cost allocation tags, or "
                        "`aws ce update-cost-allocation-tags-status`)")
    teams = None
    if args.prometheus:
        at = dt.datetime.combine(end, dt.time(), dt.UTC)
        query = query or cost_actual.prometheus_query(args.prometheus, at)
        teams = cost_actual.team_gpu_hours(query, (end - start).days * 24.0)
    report = cost_actual.compare(data, est, start, end, teams)
    report["warnings"] = warnings
    text = cost_actual.render(report, warnings)
    sys.stdout.write(text)
    if args.json is not None:
        outfile.write(args.json, json.dumps(report, indent=2) + "\n")
    return 0
