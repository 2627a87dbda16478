"""`trainyard cost`: the text report of an estimate (the dict trainyard/cost.py `estimate`
returns, also written by `--json`)."""

from __future__ import annotations

from typing import Optional

from trainyard.cost_plan import SIZES
from trainyard.plan import text_table


def _money(x: Optional[float]) -> str:
    return "-" if x is None else f"${x:,.2f}"


def _sizes(values: dict, fmt=str) -> str:
    return "/".join(fmt(values[s]) for s in SIZES)


def _alternative(p: dict) -> str:
    """The price the pool would have at max size on the other market, or why there is none."""
    if not p["spot_possible"]:
        return {"capacity-block": "none: Capacity Block", "odcr": "none: ODCR"}[p["reservation"]]
    if p["capacity_type"] == "SPOT":
        return f"on-demand {_money(p['hourly']['max']['on_demand'])}"
    return f"Spot {_money(p['hourly']['max']['spot'])}"


def render(est: dict) -> str:
    lines = [f"trainyard cost: stack {est['stack'] or '?'} (list prices "
             f"{est['reference_region']} {est['price_date']})",
             f"Units: {est['units']}."]
    if est["warnings"]:
        lines += ["", "Warnings:"] + [f"  ! {w}" for w in est["warnings"]]

    lines += ["", "Node pools at min / desired / max nodes, $/hour at each pool's own capacity "
                  "type (instances only):"]
    rows = [("pool", "capacity", "instance types", "nodes", "GPUs", "min", "desired", "max",
             "$/GPU-hour", "other market at max")]
    for p in est["pools"]:
        g = p["usd_per_gpu_hour"]
        rows.append((p["pool"] or p["name"], p["capacity_type"], ", ".join(p["instance_types"]),
                     _sizes(p["sizes"]), _sizes(p["gpus"]),
                     *(_money(p["hourly"][s]["effective"]) for s in SIZES),
                     _money(g["effective"]) if g else "-", _alternative(p)))
    t = est["totals"]
    rows.append(("all pools", "", "", _sizes({s: sum(p["sizes"][s] for p in est["pools"])
                                              for s in SIZES}),
                 _sizes({s: t[s]["gpus"] for s in SIZES}),
                 *(_money(t[s]["pools_hourly"]) for s in SIZES), "", ""))
    lines += text_table(rows, indent="  ", right=(5, 6, 7, 8))

    if any(p["root_volume_gib"] for p in est["pools"]):
        lines += ["", "Node root volumes (EBS), $/month at min / desired / max nodes:"]
        rows = [("pool", "GiB/node", "min", "desired", "max")]
        for p in est["pools"]:
            rows.append((p["pool"] or p["name"], f"{p['root_volume_gib']:,}",
                         *(_money(p["ebs_monthly"][s]) for s in SIZES)))
        rows.append(("all pools", "", *(_money(sum(p["ebs_monthly"][s] for p in est["pools"]))
                                         for s in SIZES)))
        lines += text_table(rows, indent="  ", right=(1, 2, 3, 4))

    lines += ["", "Fixed costs (independent of pool sizes):"]
    rows = [("item", "count", "unit price", "$/month", "note")]
    for f in est["fixed"]:
        rows.append((f["item"], f"{f['count']:,g}", f"${f['unit_price']:g}/{f['unit']}",
                     _money(f["monthly"]), f["note"]))
    rows.append(("total", "", "", _money(est["fixed_monthly"]),
                 f"{_money(est['fixed_hourly'])}/hour"))
    lines += text_table(rows, indent="  ", right=(1, 3))

    lines += ["", "Stack total (pools at their own capacity type + node root volumes + fixed):"]
    rows = [("", "min", "desired", "max")]
    rows.append(("$/hour", *(_money(t[s]["hourly"]) for s in SIZES)))
    rows.append(("$/month", *(_money(t[s]["monthly"]) for s in SIZES)))
    rows.append(("GPUs", *(f"{t[s]['gpus']:,}" for s in SIZES)))
    rows.append(("blended $/GPU-hour", *(_money(est["blended_usd_per_gpu_hour"][s])
                                         if est["blended_usd_per_gpu_hour"][s] else "n/a"
                                         for s in SIZES)))
    lines += text_table(rows, indent="  ", right=(1, 2, 3))

    nb = est.get("notebooks")
    if nb:
        lines += ["", f"Notebooks (GPU hours at the hub's {nb['max_servers']} servers, all on "
                      f"the most expensive GPU profile; inside pool {nb['pool']}'s max, so not "
                      "added to the totals):",
                  f"  {nb['max_servers']} x {nb['gpus_per_server']} GPU on {nb['pool']}: "
                  f"{nb['gpus_at_max']} GPUs, {_money(nb['hourly_at_max'])}/hour, "
                  f"{_money(nb['monthly_at_max'])}/month if none were ever culled"]

    sv = est.get("serving")
    if sv:
        lines += ["", "Served models (their replicas' nodes at replicas.min / replicas.max, "
                      "$/hour at the pool's own capacity type; inside the pools' rows above, "
                      "where replicas.min is the Karpenter pool's min):"]
        rows = [("model", "pool", "variants", "replicas", "GPUs", "nodes", "$/hour min",
                 "$/hour max", "$/month min", "$/month max")]
        for m in sv["models"]:
            rows.append((m["model"], m["pool"] or "-", ", ".join(m["variants"]),
                         f"{m['replicas']['min']}-{m['replicas']['max']}",
                         f"{m['gpus']['min']}-{m['gpus']['max']}",
                         f"{m['nodes']['min']}-{m['nodes']['max']}",
                         _money(m["hourly"]["min"]), _money(m["hourly"]["max"]),
                         _money(m["monthly"]["min"]), _money(m["monthly"]["max"])))
        rows.append(("all models", "", "", "", "", "", _money(sv["hourly"]["min"]),
                     _money(sv["hourly"]["max"]), _money(sv["monthly"]["min"]),
                     _money(sv["monthly"]["max"])))
        lines += text_table(rows, indent="  ", right=(3, 4, 5, 6, 7, 8, 9))

    lines += ["", "Prices used (date, source):"]
    for p in est["prices"]:
        lines.append(f"  {p['item']}: ${p['usd']:g}/{p['unit']}  {p['date']}  {p['source']}")
    lines += ["", "Assumptions:"]
    lines += [f"  - {a}" for a in est["assumptions"]]
    return "\n".join(lines) + "\n"
