"""`trainyard review`: what a change does to the teams' Kueue quota and flavor order, said as
such (the `queues` lines of each stack in the report)."""

from __future__ import annotations

import re
from typing import Any, Optional

_CLUSTER_QUEUE = re.compile(r"^kubernetes:kueue\.x-k8s\.io/v1beta\d+:ClusterQueue$")
ACCELERATORS = ("nvidia.com/gpu", "aws.amazon.com/neuron")


def _gpu_quota(value: Any) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def cluster_queues(plan: Optional[dict]) -> dict[str, dict[str, float]]:
    """ClusterQueue name -> flavor -> nominal accelerators, flavors in the queue's order (those
    of the resource groups covering an accelerator resource)."""
    out: dict[str, dict[str, float]] = {}
    for r in (plan or {}).get("resources", []):
        if not _CLUSTER_QUEUE.match(r.get("type", "")):
            continue
        inputs = r.get("inputs") or {}
        name = str((inputs.get("metadata") or {}).get("name") or r.get("name"))
        flavors: dict[str, float] = {}
        for group in (inputs.get("spec") or {}).get("resourceGroups") or []:
            if not set(group.get("coveredResources") or []) & set(ACCELERATORS):
                continue
            for f in group.get("flavors") or []:
                flavors[str(f.get("name"))] = sum(
                    _gpu_quota(q.get("nominalQuota")) for q in f.get("resources") or []
                    if q.get("name") in ACCELERATORS)
        out[name] = flavors
    return out


def _n(x: float) -> str:
    return f"{x:g}"


def _split(flavors: dict[str, float]) -> str:
    held = [f"{f} {_n(n)}" for f, n in flavors.items() if n]
    return ", ".join(held) or "none"


def queue_changes(base: Optional[dict], head: Optional[dict]) -> list[str]:
    """What a change does to the teams' Kueue quota, as such: `team research: nominal GPU quota
    64 → 32`, `flavor order of research: g-spot, a100 → a100, g-spot`, the split across flavors,
    queues added or removed."""
    b, h = cluster_queues(base), cluster_queues(head)
    out = []
    for team in sorted(set(b) | set(h)):
        if team not in b:
            out.append(f"team {team}: ClusterQueue added, nominal GPU quota "
                       f"{_n(sum(h[team].values()))} ({_split(h[team])})")
            continue
        if team not in h:
            out.append(f"team {team}: ClusterQueue removed (was nominal GPU quota "
                       f"{_n(sum(b[team].values()))})")
            continue
        old, new = b[team], h[team]
        if sum(old.values()) != sum(new.values()):
            out.append(f"team {team}: nominal GPU quota {_n(sum(old.values()))} → "
                       f"{_n(sum(new.values()))}")
        if list(old) != list(new):
            out.append(f"flavor order of {team}: {', '.join(old) or 'none'} → "
                       f"{', '.join(new) or 'none'}")
        if {f: n for f, n in old.items() if n} != {f: n for f, n in new.items() if n}:
            out.append(f"team {team}: nominal GPUs per flavor {_split(old)} → {_split(new)}")
    return out
