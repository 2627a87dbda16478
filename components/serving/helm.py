"""Helpers the serving components share: a platform namespace with its NetworkPolicies, a pinned
Helm release placed on the system nodes. Plain functions; each component calls them with
itself as parent."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.compute.addons import chart
from components.config.types import SYSTEM_POOL_NAME
from components.services.k8s_names import POOL_LABEL
from components.services.monitoring import release_chart

DATA = Path(__file__).resolve().parents[1] / "data" / "serving"
ON_SYSTEM_NODES = {POOL_LABEL: SYSTEM_POOL_NAME}
"""Controllers run on the system nodes, never on GPU capacity."""
PSA_RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
                  "pod-security.kubernetes.io/audit": "restricted",
                  "pod-security.kubernetes.io/warn": "restricted"}


def values_file(name: str) -> dict:
    with (DATA / f"{name}.yaml").open() as f:
        return yaml.safe_load(f) or {}


def small(cpu: str = "100m", memory: str = "256Mi", memory_limit: str = "512Mi") -> dict:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}


def namespace(owner: pulumi.Resource, name: str, role: str, policies: Mapping[str, dict],
              opts: pulumi.ResourceOptions, labels: Mapping[str, str] = PSA_RESTRICTED
              ) -> k8s.core.v1.Namespace:
    ns = k8s.core.v1.Namespace(
        f"{role}-namespace", metadata=k8s.meta.v1.ObjectMetaArgs(name=name, labels=dict(labels)),
        opts=opts)
    for policy, spec in policies.items():
        k8s.networking.v1.NetworkPolicy(
            f"{role}-{policy}",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=policy, namespace=name), spec=spec,
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[ns])))
    return ns


def release(logical: str, chart_key: str, namespace_name: str, values: Mapping[str, Any],
            opts: pulumi.ResourceOptions, timeout: int = 600) -> k8s.helm.v3.Release:
    """A release of a chart pinned in components/data/charts.yaml. Fixed release name (the
    chart's): webhook Services and certificates are named after it and must not move."""
    pin = chart(chart_key)
    chart_ref, repo = release_chart(pin)
    return k8s.helm.v3.Release(
        logical, name=pin.chart, chart=chart_ref, version=pin.version, repository_opts=repo,
        namespace=namespace_name, values=dict(values), max_history=5, timeout=timeout,
        atomic=True, cleanup_on_fail=True, opts=opts)

