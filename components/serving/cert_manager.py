"""CertManager: the jetstack chart (pinned), which issues the serving certificates of KServe's
admission webhooks. Namespace `cert-manager`, default deny plus what it needs: the API server
reaches its webhook, it reaches the API server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.services import netpol
from components.services.monitoring import deep_merge
from components.serving.helm import ON_SYSTEM_NODES, namespace, release, small, values_file

CHART = "cert-manager"
NAMESPACE = "cert-manager"
WEBHOOK_PORT = 10250
"""cert-manager's webhook listens here (chart value webhook.securePort, default 10250)."""


@dataclass(frozen=True)
class CertManagerArgs:
    provider: k8s.Provider
    """Kubernetes provider of the cluster (required)."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Cluster, add-ons and system nodes. Default none."""
    monitoring_namespace: str = "monitoring"
    """Namespace allowed to scrape the controller's metrics (9402). Default `monitoring`."""


def values() -> dict:
    """Static values plus placement on the system nodes and small, bounded resources for each
    of the chart's workloads."""
    placed = {"nodeSelector": dict(ON_SYSTEM_NODES), "resources": small()}
    return deep_merge(values_file("cert-manager"), {
        **placed, "webhook": dict(placed), "cainjector": dict(placed),
        "startupapicheck": dict(placed)})


def network_policies(monitoring_namespace: str) -> dict[str, dict]:
    return {
        "default-deny": netpol.deny_all(),
        "allow-dns": netpol.allow_dns(),
        "allow-same-namespace": netpol.allow_same_namespace(),
        # The controllers call only the API server (its ENIs sit in the cluster subnets).
        "allow-api-server-egress": netpol.allow_egress_to_cidrs(netpol.PRIVATE_RANGES, [443]),
        "allow-webhook": netpol.allow_ingress_on([WEBHOOK_PORT]),
        "allow-monitoring-scrape": netpol.allow_ingress_from_namespace(monitoring_namespace,
                                                                       [9402]),
    }


class CertManager(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: CertManagerArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:CertManager", name, None, opts)
        base = pulumi.ResourceOptions(parent=self, provider=args.provider,
                                      depends_on=list(args.depends_on))
        self.namespace = namespace(self, NAMESPACE, name,
                                   network_policies(args.monitoring_namespace), base)
        self.release = release(f"{name}-release", CHART, NAMESPACE, values(),
                               pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(
                                   depends_on=[self.namespace])))
        self.register_outputs({"namespace": NAMESPACE})
