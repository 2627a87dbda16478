"""Check a KServe object (a dict, as the plan and `trainyard serve render` hold it) against the
installed kserve SDK's own models (kserve.models, OpenAPI-generated from KServe's API, plus the
kubernetes client models they embed): every key must be a field of its model (strict: unknown
keys are problems, which the SDK's own deserializer would drop silently), and each model is
constructed, which runs the SDK's client-side validation (required fields, enums)."""

from __future__ import annotations

import re
from typing import Any

import kserve.models
import kubernetes.client.models

KINDS = {"InferenceService": "V1beta1InferenceService",
         "ClusterServingRuntime": "V1alpha1ClusterServingRuntime"}


def _model_class(name: str):
    for module in (kserve.models, kubernetes.client.models):
        if hasattr(module, name):
            return getattr(module, name)
    return None


def _check(value: Any, type_name: str, path: str, out: list[str]) -> Any:
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            out.append(f"{path}: expected a list")
            return None
        return [_check(v, m.group(1), f"{path}[{i}]", out) for i, v in enumerate(value)]
    m = re.fullmatch(r"dict\((\w+), (.+)\)", type_name)
    if m:
        if not isinstance(value, dict):
            out.append(f"{path}: expected a mapping")
            return None
        return {k: _check(v, m.group(2), f"{path}.{k}", out) for k, v in value.items()}
    cls = _model_class(type_name)
    if cls is None:  # str, int, bool, object, float, datetime
        return value
    if not isinstance(value, dict):
        out.append(f"{path}: expected a {type_name} mapping")
        return None
    by_json = {j: attr for attr, j in cls.attribute_map.items()}
    kwargs = {}
    for key, v in value.items():
        attr = by_json.get(key)
        if attr is None:
            out.append(f"{path}.{key}: not a field of {type_name}")
            continue
        kwargs[attr] = _check(v, cls.openapi_types[attr], f"{path}.{key}", out)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        out.append(f"{path}: {type_name}: {e}")
        return None


def kserve_problems(obj: dict) -> list[str]:
    """Problems of `obj` (empty: valid for the installed kserve SDK)."""
    name = KINDS.get(obj.get("kind", ""))
    if name is None:
        return [f"kind {obj.get('kind')!r} is not checked here"]
    out: list[str] = []
    _check(obj, name, obj["kind"], out)
    return out
