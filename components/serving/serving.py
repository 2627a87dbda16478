"""Serving: the platform's inference half, wired from `trainyard:serving` (docs/serving.md).

cert-manager first (KServe's webhook certificates), then KServe (CRDs, controller, runtimes),
KEDA and the AWS Load Balancer Controller side by side, then the served models. Each part is its
own component in this layer; this one only wires them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.config.types import ServingConfig
from components.serving.alb_controller import LoadBalancerController, LoadBalancerControllerArgs
from components.serving.cert_manager import CertManager, CertManagerArgs
from components.serving.inference import InferenceModels, InferenceModelsArgs
from components.serving.keda import Keda, KedaArgs
from components.serving.kserve import KServe, KServeArgs


@dataclass(frozen=True)
class ServingArgs:
    config: ServingConfig
    """Typed `trainyard:serving`; the component is only built when enabled (required)."""
    provider: k8s.Provider
    """Kubernetes provider of the cluster (required)."""
    cluster_name: pulumi.Input[str]
    """EKS cluster name (required)."""
    region: str
    """AWS region (required)."""
    vpc_id: pulumi.Input[str]
    """The cluster's VPC (required)."""
    vpc_cidr: str
    """Its CIDR: default client range of an internal ALB (required)."""
    lb_subnet_ids: Sequence[pulumi.Input[str]]
    """Public subnets, where the ALB lives (required)."""
    lb_subnet_cidrs: Sequence[str]
    """Their CIDRs (required)."""
    bucket: pulumi.Input[str]
    """Checkpoints bucket name: exports live under its `models/` prefix (required)."""
    bucket_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    """Its ARN and its KMS key (required)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Cluster, add-ons, system nodes (Platform.k8s_dependencies). Default none."""
    monitoring_enabled: bool = True
    """Whether kube-prometheus-stack runs (PodMonitors, KEDA's Prometheus). Default true."""


class Serving(pulumi.ComponentResource):
    def __init__(self, name: str, args: ServingArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Serving", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        deps = list(args.depends_on)
        self.cert_manager = CertManager(f"{name}-cert-manager", CertManagerArgs(
            provider=args.provider, depends_on=deps), child)
        self.kserve = KServe(f"{name}-kserve", KServeArgs(
            provider=args.provider, region=args.region,
            depends_on=[*deps, self.cert_manager.release]), child)
        self.keda = Keda(f"{name}-keda", KedaArgs(
            provider=args.provider, depends_on=deps,
            monitoring_enabled=args.monitoring_enabled), child)
        self.load_balancer = LoadBalancerController(f"{name}-alb", LoadBalancerControllerArgs(
            cluster_name=args.cluster_name, provider=args.provider, vpc_id=args.vpc_id,
            region=args.region, tags=args.tags, depends_on=deps), child)
        self.models = InferenceModels(f"{name}-models", InferenceModelsArgs(
            config=args.config, provider=args.provider, cluster_name=args.cluster_name,
            bucket=args.bucket, bucket_arn=args.bucket_arn, key_arn=args.key_arn,
            lb_subnet_ids=args.lb_subnet_ids, lb_subnet_cidrs=args.lb_subnet_cidrs,
            vpc_cidr=args.vpc_cidr, tags=args.tags,
            depends_on=[*deps, self.kserve.release, *self.kserve.runtimes.values(),
                        self.keda.release, self.load_balancer.release],
            monitoring_enabled=args.monitoring_enabled), child)
        self.register_outputs({"namespace": args.config.namespace})
