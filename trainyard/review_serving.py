"""`trainyard review`: what a change does to served models, said as such (the `serving` lines of
each stack in the report): a traffic split's weights, an A/B split started or ended, the export
a variant serves, replicas.min / replicas.max. Read from the plans' Ingresses (the ALB forward
action's weighted target groups, components/serving/objects.py `split_action`) and
InferenceServices."""

from __future__ import annotations

import json
from typing import Optional

INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
ISVC = "kubernetes:serving.kserve.io/v1beta1:InferenceService"
ACTION_PREFIX = "alb.ingress.kubernetes.io/actions."
MODEL_LABEL = "trainyard.io/model"


def _meta(r: dict) -> dict:
    return (r.get("inputs") or {}).get("metadata") or {}


def splits(plan: Optional[dict]) -> dict[str, dict[str, int]]:
    """Model (Ingress name) -> {target Service: weight} of its forward action, {} without one."""
    out: dict[str, dict[str, int]] = {}
    for r in (plan or {}).get("resources", []):
        if r.get("type") != INGRESS:
            continue
        meta = _meta(r)
        if MODEL_LABEL not in (meta.get("labels") or {}):
            continue
        weights: dict[str, int] = {}
        for key, value in (meta.get("annotations") or {}).items():
            if not key.startswith(ACTION_PREFIX) or not isinstance(value, str):
                continue
            try:
                action = json.loads(value)
            except ValueError:
                continue
            for g in ((action.get("forwardConfig") or {}).get("targetGroups") or []):
                weights[str(g.get("serviceName"))] = int(g.get("weight") or 0)
        out[str(meta.get("labels", {}).get(MODEL_LABEL))] = weights
    return out


def services(plan: Optional[dict]) -> dict[str, dict]:
    """InferenceService name -> {model, source, min, max}."""
    out = {}
    for r in (plan or {}).get("resources", []):
        if r.get("type") != ISVC:
            continue
        meta = _meta(r)
        predictor = ((r.get("inputs") or {}).get("spec") or {}).get("predictor") or {}
        uri = str((predictor.get("model") or {}).get("storageUri") or "")
        out[str(meta.get("name"))] = {
            "model": (meta.get("labels") or {}).get(MODEL_LABEL),
            # the key under the bucket: bucket names differ between plans (mock suffixes)
            "source": uri.split("/", 3)[3] if uri.startswith("s3://") and uri.count("/") >= 3
            else uri,
            "min": predictor.get("minReplicas"), "max": predictor.get("maxReplicas")}
    return out


def _weights(w: dict[str, int]) -> str:
    return " / ".join(f"{svc.removesuffix('-predictor')} {n}%" for svc, n in w.items())


def serving_changes(base: Optional[dict], head: Optional[dict]) -> list[str]:
    """One line per change: `model llm: traffic split llm-a 90% / llm-b 10% → llm-a 50% /
    llm-b 50%`, a split started or ended, a variant's export or replica bounds."""
    out = []
    sb, sh = splits(base), splits(head)
    for model in sorted(set(sb) | set(sh)):
        old, new = sb.get(model), sh.get(model)
        if old is None:
            out.append(f"model {model}: served (new)" + (
                f", traffic split {_weights(new)}" if new else ""))
        elif new is None:
            out.append(f"model {model}: no longer served")
        elif old and not new:
            out.append(f"model {model}: A/B split ended (was {_weights(old)}); one variant "
                       "takes all traffic")
        elif new and not old:
            out.append(f"model {model}: A/B split started: traffic split {_weights(new)}")
        elif old != new:
            out.append(f"model {model}: traffic split {_weights(old)} → {_weights(new)}")
    vb, vh = services(base), services(head)
    for isvc in sorted(set(vb) & set(vh)):
        old, new = vb[isvc], vh[isvc]
        if old["source"] != new["source"]:
            out.append(f"model {new['model']}: {isvc} serves {new['source']} (was "
                       f"{old['source']})")
        if (old["min"], old["max"]) != (new["min"], new["max"]):
            out.append(f"model {new['model']}: {isvc} replicas {old['min']}-{old['max']} → "
                       f"{new['min']}-{new['max']}")
    return out
