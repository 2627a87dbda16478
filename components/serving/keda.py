"""Keda: the kedacore chart (pinned) that scales each model's predictor Deployment on the model
server's own metrics, read from the stack's Prometheus. Namespace `keda`: default deny; the API
server reaches its metrics API and admission webhooks; it reaches the API server and, through a
NetworkPolicy it adds in the monitoring namespace, Prometheus's HTTP port only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.services import netpol
from components.services.monitoring import deep_merge
from components.serving.helm import ON_SYSTEM_NODES, namespace, release, small, values_file

CHART = "keda"
NAMESPACE = "keda"
METRICS_API_PORT = 6443
"""keda-operator-metrics-apiserver: the external.metrics.k8s.io APIService the API server calls."""
WEBHOOK_PORT = 9443
PROMETHEUS_PORT = 9090
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}
"""Labels the prometheus-operator puts on Prometheus pods."""


@dataclass(frozen=True)
class KedaArgs:
    provider: k8s.Provider
    """Kubernetes provider of the cluster (required)."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Cluster, add-ons and system nodes. Default none."""
    monitoring_namespace: str = "monitoring"
    """Where Prometheus runs (the ScaledObjects query it). Default `monitoring`."""
    monitoring_enabled: bool = True
    """Whether the stack runs Prometheus; without it no policy is added in its namespace."""


def values() -> dict:
    return deep_merge(values_file("keda"), {
        "nodeSelector": dict(ON_SYSTEM_NODES),
        "resources": {"operator": small("100m", "256Mi", "1Gi"),
                      "metricServer": small("100m", "256Mi", "1Gi"),
                      "webhooks": small("50m", "128Mi", "256Mi")},
    })


def network_policies(monitoring_namespace: str) -> dict[str, dict]:
    prometheus = netpol.namespace_peer(monitoring_namespace)
    prometheus = {**prometheus, "podSelector": {"matchLabels": dict(PROMETHEUS_POD_LABELS)}}
    return {
        "default-deny": netpol.deny_all(),
        "allow-dns": netpol.allow_dns(),
        "allow-same-namespace": netpol.allow_same_namespace(),
        # The controllers call only the API server (its ENIs sit in the cluster subnets).
        "allow-api-server-egress": netpol.allow_egress_to_cidrs(netpol.PRIVATE_RANGES, [443]),
        "allow-api-server": netpol.allow_ingress_on([METRICS_API_PORT, WEBHOOK_PORT]),
        "allow-prometheus-egress": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [prometheus], "ports": [{"protocol": "TCP", "port": PROMETHEUS_PORT}]}]},
        "allow-monitoring-scrape": netpol.allow_ingress_from_namespace(monitoring_namespace),
    }


def prometheus_ingress_from_keda() -> dict:
    """In the monitoring namespace: Prometheus's HTTP port admits KEDA's pods."""
    return {"podSelector": {"matchLabels": dict(PROMETHEUS_POD_LABELS)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [netpol.namespace_peer(NAMESPACE)],
                         "ports": [{"protocol": "TCP", "port": PROMETHEUS_PORT}]}]}


class Keda(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: KedaArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Keda", name, None, opts)
        base = pulumi.ResourceOptions(parent=self, provider=args.provider,
                                      depends_on=list(args.depends_on))
        self.namespace = namespace(self, NAMESPACE, name,
                                   network_policies(args.monitoring_namespace), base)
        self.prometheus_policy = None
        if args.monitoring_enabled:
            self.prometheus_policy = k8s.networking.v1.NetworkPolicy(
                f"{name}-prometheus-ingress",
                metadata=k8s.meta.v1.ObjectMetaArgs(name="allow-keda-queries",
                                                    namespace=args.monitoring_namespace),
                spec=prometheus_ingress_from_keda(), opts=base)
        self.release = release(f"{name}-release", CHART, NAMESPACE, values(),
                               pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(
                                   depends_on=[self.namespace])))
        self.register_outputs({"namespace": NAMESPACE})
