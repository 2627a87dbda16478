"""`trainyard cost`, served models: the nodes their replicas hold, read from the plan's
InferenceServices (one per model variant: pool from the nodeSelector, GPUs per replica from the
predictor's limits, replicas.min / replicas.max).

A Karpenter pool has no standing size of its own (min 0), but replicas.min replicas are always
running, so the pool keeps the nodes they fill: `standing_nodes` gives, per pool, the nodes the
served models occupy at their minimum (GPU-bound packing, as components/config/serving.py
`standing_nodes` counts them), which trainyard/cost.py prices as the pool's min and desired size.
`serving_costs` prices each model at replicas.min and replicas.max on its pool's node price.
"""

from __future__ import annotations

import math
from typing import Any, Optional

ISVC = "kubernetes:serving.kserve.io/v1beta1:InferenceService"
POOL_LABEL = "trainyard.io/pool"
MODEL_LABEL = "trainyard.io/model"
GPU = "nvidia.com/gpu"


def _gpus(predictor: dict) -> int:
    res = (predictor.get("model") or {}).get("resources") or {}
    value = (res.get("limits") or {}).get(GPU) or (res.get("requests") or {}).get(GPU) or 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def replicas(plan: dict) -> list[dict]:
    """One row per InferenceService of the plan: model, isvc, pool, GPUs per replica, min, max."""
    out = []
    for r in plan["resources"]:
        if r["type"] != ISVC:
            continue
        inputs: dict[str, Any] = r.get("inputs") or {}
        meta = inputs.get("metadata") or {}
        predictor = (inputs.get("spec") or {}).get("predictor") or {}
        out.append({"model": (meta.get("labels") or {}).get(MODEL_LABEL) or meta.get("name"),
                    "isvc": meta.get("name") or r["name"],
                    "pool": (predictor.get("nodeSelector") or {}).get(POOL_LABEL),
                    "gpus_per_replica": _gpus(predictor),
                    "min": int(predictor.get("minReplicas") or 1),
                    "max": int(predictor.get("maxReplicas") or predictor.get("minReplicas") or 1)})
    return out


def _nodes(gpus: int, per_node: int) -> int:
    return math.ceil(gpus / per_node) if gpus and per_node else 0


def standing_nodes(plan: dict, gpus_per_node: dict[str, int]) -> dict[str, int]:
    """Pool -> nodes the served models' replicas.min keep up (GPU replicas only)."""
    need: dict[str, int] = {}
    for row in replicas(plan):
        if row["pool"] in gpus_per_node and row["gpus_per_replica"]:
            need[row["pool"]] = need.get(row["pool"], 0) + row["min"] * row["gpus_per_replica"]
    return {pool: _nodes(g, gpus_per_node[pool]) for pool, g in need.items()}


def serving_costs(plan: dict, pools: list[dict], hours_per_month: float) -> Optional[dict]:
    """Each model (all its variants) at replicas.min and replicas.max on its pool's node price
    (the pool's own capacity type). None when the plan serves nothing."""
    rows = replicas(plan)
    if not rows:
        return None
    by_pool = {p["pool"]: p for p in pools}
    models: dict[str, dict] = {}
    for row in rows:
        pool = by_pool.get(row["pool"])
        m = models.setdefault(row["model"], {
            "model": row["model"], "pool": row["pool"], "variants": [],
            "replicas": {"min": 0, "max": 0}, "gpus": {"min": 0, "max": 0},
            "nodes": {"min": 0, "max": 0}, "hourly": {"min": None, "max": None}})
        m["variants"].append(row["isvc"])
        for size in ("min", "max"):
            m["replicas"][size] += row[size]
            m["gpus"][size] += row[size] * row["gpus_per_replica"]
        if pool is not None and pool["gpus_per_node"]:
            for size in ("min", "max"):
                m["nodes"][size] = _nodes(m["gpus"][size], pool["gpus_per_node"])
                m["hourly"][size] = round(m["nodes"][size]
                                          * pool["price_per_node_hour"]["effective"], 4)
    out = list(models.values())
    for m in out:
        m["monthly"] = {k: round(v * hours_per_month, 2) if v is not None else None
                        for k, v in m["hourly"].items()}
    total = {size: round(sum(m["hourly"][size] or 0 for m in out), 4) for size in ("min", "max")}
    return {"models": out, "hourly": total,
            "monthly": {k: round(v * hours_per_month, 2) for k, v in total.items()}}
