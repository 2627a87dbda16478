"""KServe: the `kserve-crd` and `kserve` charts (pinned, same version) in raw Kubernetes mode, and
trainyard's ClusterServingRuntimes (pinned images, components/data/serving/runtimes.yaml).
Namespace `kserve`: default deny; the API server reaches the controller's webhooks (their
certificates come from cert-manager, which must be installed first); the controller reaches the
API server; monitoring scrapes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.services import netpol
from components.services.monitoring import deep_merge
from components.serving.helm import ON_SYSTEM_NODES, namespace, release, values_file
from components.serving.objects import cluster_serving_runtime, runtimes

CRD_CHART = "kserve-crd"
CHART = "kserve"
NAMESPACE = "kserve"
WEBHOOK_PORT = 9443
"""kserve-controller-manager's webhook server port."""


@dataclass(frozen=True)
class KServeArgs:
    provider: k8s.Provider
    """Kubernetes provider of the cluster (required)."""
    region: str
    """AWS region: the storage initializer's S3 endpoint region (required)."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Cluster, add-ons, system nodes and cert-manager (its Certificate CRD and issuer). Default
    none."""
    monitoring_namespace: str = "monitoring"
    """Namespace allowed to scrape the controller. Default `monitoring`."""


def values(region: str) -> dict:
    return deep_merge(values_file("kserve"), {"kserve": {
        "controller": {"nodeSelector": dict(ON_SYSTEM_NODES),
                       "resources": {"requests": {"cpu": "100m", "memory": "300Mi"},
                                     "limits": {"memory": "600Mi"}}},
        "storage": {"s3": {"region": region}},
    }})


def network_policies(monitoring_namespace: str) -> dict[str, dict]:
    return {
        "default-deny": netpol.deny_all(),
        "allow-dns": netpol.allow_dns(),
        "allow-same-namespace": netpol.allow_same_namespace(),
        # The controllers call only the API server (its ENIs sit in the cluster subnets).
        "allow-api-server-egress": netpol.allow_egress_to_cidrs(netpol.PRIVATE_RANGES, [443]),
        "allow-webhooks": netpol.allow_ingress_on([WEBHOOK_PORT]),
        "allow-monitoring-scrape": netpol.allow_ingress_from_namespace(monitoring_namespace),
    }


class KServe(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    crds: k8s.helm.v3.Release
    release: k8s.helm.v3.Release
    runtimes: dict[str, k8s.apiextensions.CustomResource]

    def __init__(self, name: str, args: KServeArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:KServe", name, None, opts)
        base = pulumi.ResourceOptions(parent=self, provider=args.provider,
                                      depends_on=list(args.depends_on))

        def after(*resources: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(
                depends_on=list(resources)))

        self.namespace = namespace(self, NAMESPACE, name,
                                   network_policies(args.monitoring_namespace), base)
        self.crds = release(f"{name}-crds", CRD_CHART, NAMESPACE, {}, after(self.namespace))
        self.release = release(f"{name}-controller", CHART, NAMESPACE, values(args.region),
                               after(self.namespace, self.crds), timeout=900)
        self.runtimes = {}
        for key in runtimes():
            rt = cluster_serving_runtime(key)
            self.runtimes[key] = k8s.apiextensions.CustomResource(
                f"{name}-runtime-{key}", api_version=rt["apiVersion"], kind=rt["kind"],
                metadata=k8s.meta.v1.ObjectMetaArgs(**rt["metadata"]), spec=rt["spec"],
                # The runtime webhook comes with the controller.
                opts=after(self.release))
        self.register_outputs({"namespace": NAMESPACE,
                               "runtimes": {k: runtimes()[k]["name"] for k in runtimes()}})
