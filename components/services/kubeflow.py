"""Kubeflow: Kubeflow Trainer v2 from its OCI Helm chart (pinned in components/data/charts.yaml;
it brings JobSet and the Trainer CRDs) plus one ClusterTrainingRuntime per NVIDIA GPU pool.

Runtimes are named `torch-efa-<pool>` (EFA pools) or `torch-<pool>`; they are built by
components/services/trainjob.py (pure, shared with `trainyard job render`) from the pool's facts: GPUs,
EFA devices and huge pages per node, node selector and toleration, /dev/shm, the NCCL
environment. A TrainJob picks its pool by naming the runtime. Neuron pools get no runtime yet.
The `kubeflow-system` namespace denies traffic by default, then admits the API server to the
webhooks, monitoring to the metrics, and lets the controllers reach the API server.

Requires Kubernetes >= 1.31 (components/config/__init__.py only accepts such versions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.compute.addons import chart
from components.compute.catalog import Catalog, load_catalog
from components.config import GpuPoolConfig, KubeflowConfig
from components.services import netpol
from components.services.k8s_names import SYSTEM_NAMESPACES
from components.services.monitoring import release_chart
from components.services.trainjob import cluster_training_runtime, pool_facts, supports_runtime

TRAINER_CHART = "kubeflow-trainer"
VALUES_PATH = Path(__file__).resolve().parents[1] / "data" / "kubeflow" / "trainer-values.yaml"


@dataclass(frozen=True)
class KubeflowArgs:
    config: KubeflowConfig
    """Typed `trainyard:kubeflow` section (the runtimes' default training image) (required)."""
    provider: k8s.Provider
    """Kubernetes provider of the cluster (required)."""
    gpu_pools: Sequence[GpuPoolConfig] = ()
    """GPU pools to build runtimes for (NVIDIA ones). Default none."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Cluster, add-ons and node groups: created first, deleted last. Default none."""
    namespace: str = SYSTEM_NAMESPACES["kubeflow"]
    """Namespace of the Trainer controller and JobSet. Default `kubeflow-system`."""
    monitoring_namespace: str = SYSTEM_NAMESPACES["monitoring"]
    """Namespace allowed to scrape the controllers' metrics. Default `monitoring`."""
    catalog: Optional[Catalog] = None
    """Instance catalog. Default: components/data/instances.yaml."""


WEBHOOK_PORT = 9443
"""Port of the Trainer's and JobSet's admission webhooks."""


def network_policies(monitoring_namespace: str) -> dict[str, dict]:
    """NetworkPolicies of the Trainer's namespace: default deny; the controllers reach the API
    server over HTTPS (the chart's runtime installer also fetches kubectl over HTTPS); the API
    server reaches their admission webhooks; monitoring scrapes their metrics."""
    return {
        "default-deny": netpol.deny_all(),
        "allow-dns": netpol.allow_dns(),
        "allow-same-namespace": netpol.allow_same_namespace(),
        "allow-https-egress": netpol.allow_egress_to("0.0.0.0/0", [443]),
        "allow-webhooks": netpol.allow_ingress_on([WEBHOOK_PORT]),
        "allow-monitoring-scrape": netpol.allow_ingress_from_namespace(monitoring_namespace),
    }


def trainer_values() -> dict:
    with VALUES_PATH.open() as f:
        return yaml.safe_load(f)


def runtimes(config: KubeflowConfig, pools: Sequence[GpuPoolConfig],
             catalog: Optional[Catalog] = None) -> dict[str, dict]:
    """Pool name -> ClusterTrainingRuntime, for every pool a torch runtime supports.

    The kubeflow-trainer-api models check these in tests (every runtime of every committed
    stack) and in `trainyard job render`, not here: importing the pydantic models costs about
    two seconds of every plan."""
    out = {}
    for pool in pools:
        if pool.purpose != "training":
            continue  # inference pools serve models; TrainJobs do not run there
        facts = pool_facts(pool, catalog)
        if not supports_runtime(facts):
            continue
        out[pool.name] = cluster_training_runtime(facts, config.training_image)
    return out


class Kubeflow(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    trainer: k8s.helm.v3.Release
    runtimes: dict[str, k8s.apiextensions.CustomResource]

    def __init__(self, name: str, args: KubeflowArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Kubeflow", name, None, opts)
        self._name, self._args = name, args
        catalog = args.catalog or load_catalog()

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.namespace,
                labels={
                    # The controller, webhooks and JobSet run as non-root without privileges;
                    # `restricted` is only warned about because the chart's runtime-installer
                    # Job (alpine) does not declare a seccomp profile.
                    "pod-security.kubernetes.io/enforce": "baseline",
                    "pod-security.kubernetes.io/audit": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                }),
            opts=self._opts())

        for policy, spec in network_policies(args.monitoring_namespace).items():
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=policy, namespace=args.namespace),
                spec=spec, opts=self._opts(self.namespace))

        pin = chart(TRAINER_CHART)
        chart_ref, repo = release_chart(pin)
        self.trainer = k8s.helm.v3.Release(
            f"{name}-trainer",
            # A fixed release name: one Trainer per cluster, and its webhook service name
            # (derived from it) must stay stable across updates.
            name=pin.chart, chart=chart_ref, version=pin.version, repository_opts=repo,
            namespace=args.namespace, values=trainer_values(),
            max_history=5, timeout=900, atomic=True, cleanup_on_fail=True,
            opts=self._opts(self.namespace))

        self.runtimes = {}
        self.runtime_names: dict[str, str] = {}  # pool name -> runtime name
        for pool_name, runtime in runtimes(args.config, args.gpu_pools, catalog).items():
            meta = runtime["metadata"]
            self.runtimes[pool_name] = k8s.apiextensions.CustomResource(
                f"{name}-runtime-{pool_name}",
                api_version=runtime["apiVersion"], kind=runtime["kind"],
                metadata=k8s.meta.v1.ObjectMetaArgs(name=meta["name"], labels=meta["labels"]),
                spec=runtime["spec"],
                # The Trainer's CRDs and validating webhook come with the release.
                opts=self._opts(self.trainer))
            self.runtime_names[pool_name] = meta["name"]

        self.register_outputs({
            "namespace": args.namespace,
            "chartVersion": pin.version,
            "runtimes": dict(self.runtime_names),
        })

    def _opts(self, *depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, provider=self._args.provider,
                                      depends_on=[*self._args.depends_on, *depends_on])
