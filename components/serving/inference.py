"""InferenceModels: the served models of `trainyard:serving` in their namespace.

The namespace (Pod Security `restricted`, default-deny NetworkPolicies admitting only the load
balancer's subnets and monitoring), one PodMonitor for every predictor, and per model the objects
of components/serving/objects.py: a service account bound through EKS Pod Identity to a role that
may only read the model's export prefixes, an InferenceService and a ScaledObject per variant, and
the Ingress. The bucket name and subnet ids are known only once created: the object bodies are
computed from them (Output.apply computes values, never resources).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws_context import aws_context
from components.config.types import ServedModelConfig, ServingConfig
from components.services.identity import cluster_arn, pod_identity_trust_policy
from components.serving import objects
from components.serving.helm import PSA_RESTRICTED, namespace


@dataclass(frozen=True)
class InferenceModelsArgs:
    config: ServingConfig
    """Typed `trainyard:serving` (required)."""
    provider: k8s.Provider
    """Kubernetes provider of the cluster (required)."""
    cluster_name: pulumi.Input[str]
    """EKS cluster name, for the Pod Identity associations (required)."""
    bucket: pulumi.Input[str]
    """Name of the checkpoints bucket the exports live in, under `models/` (required)."""
    bucket_arn: pulumi.Input[str]
    """Its ARN (required)."""
    key_arn: pulumi.Input[str]
    """The storage KMS key the bucket encrypts with (required)."""
    lb_subnet_ids: Sequence[pulumi.Input[str]]
    """Subnets the ALB lives in: the public subnets, which hold no pods (required)."""
    lb_subnet_cidrs: Sequence[str]
    """Their CIDRs: the only sources the predictors admit besides monitoring (required)."""
    vpc_cidr: str
    """Default client range of an internal ALB (required)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on the AWS resources and, through the Ingress, on the ALB. Default none."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """KServe (CRDs, webhooks, runtimes), KEDA and the load balancer controller. Default none."""
    monitoring_namespace: str = "monitoring"
    """Namespace allowed to scrape the predictors. Default `monitoring`."""
    monitoring_enabled: bool = True
    """Whether the stack runs the Prometheus operator (PodMonitor CRD). Default true."""


class InferenceModels(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    roles: dict[str, aws.iam.Role]
    inference_services: dict[str, k8s.apiextensions.CustomResource]
    scaled_objects: dict[str, k8s.apiextensions.CustomResource]
    ingresses: dict[str, k8s.networking.v1.Ingress]

    def __init__(self, name: str, args: InferenceModelsArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:InferenceModels", name, None, opts)
        self._name, self._args = name, args
        self._account, self._region, self._partition = aws_context(self)
        ns = args.config.namespace
        self._base = pulumi.ResourceOptions(parent=self, provider=args.provider,
                                            depends_on=list(args.depends_on))
        self.namespace = namespace(
            self, ns, name, objects.network_policies(args.lb_subnet_cidrs,
                                                     args.monitoring_namespace),
            self._base, labels={**PSA_RESTRICTED, "app.kubernetes.io/part-of": "trainyard"})
        self.pod_monitor = None
        if args.monitoring_enabled:
            self.pod_monitor = k8s.apiextensions.CustomResource(
                f"{name}-podmonitor", api_version="monitoring.coreos.com/v1", kind="PodMonitor",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name="trainyard-predictors", namespace=ns,
                    labels={"app.kubernetes.io/part-of": "trainyard"}),
                spec=objects.pod_monitor_spec(), opts=self._after(self.namespace))
        self.roles, self.inference_services, self.scaled_objects, self.ingresses = {}, {}, {}, {}
        for model in args.config.models:
            self._create_model(model)
        self.hosts = {m.name: objects.host(m, args.config.ingress.domain)
                      for m in args.config.models}
        self.register_outputs({"namespace": ns, "hosts": dict(self.hosts)})

    def _after(self, *resources: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(self._base, pulumi.ResourceOptions(
            depends_on=list(resources)))

    def _objects(self, model: ServedModelConfig) -> pulumi.Output[list[dict]]:
        a = self._args
        return pulumi.Output.all(a.bucket, *a.lb_subnet_ids).apply(
            lambda v: objects.model_objects(model, a.config, v[0], v[1:], a.tags, a.vpc_cidr))

    def _create_model(self, model: ServedModelConfig) -> None:
        a, n = self._args, f"{self._name}-{model.name}"
        tags = {**a.tags, "Name": f"{n}-reader"}
        source = pulumi.Output.all(self._partition, self._region, self._account,
                                   a.cluster_name).apply(lambda v: cluster_arn(*v))
        role = aws.iam.Role(
            f"{n}-reader", description=f"Model {model.name}: read its exports (EKS Pod Identity)",
            assume_role_policy=pulumi.Output.all(self._account, source)
            .apply(lambda v: pod_identity_trust_policy(*v)),
            max_session_duration=3600, tags=tags, opts=pulumi.ResourceOptions(parent=self))
        policy = aws.iam.RolePolicy(
            f"{n}-reader", role=role.id,
            policy=pulumi.Output.all(a.bucket_arn, a.key_arn, self._region).apply(
                lambda v: objects.model_reader_policy(v[0], v[1], v[2], model.sources)),
            opts=pulumi.ResourceOptions(parent=self))
        self.roles[model.name] = role
        if a.monitoring_enabled:
            rule = objects.latency_slo_rule(model, a.config.namespace)
            k8s.apiextensions.CustomResource(
                f"{n}-slo", api_version=rule["apiVersion"], kind=rule["kind"],
                metadata=rule["metadata"], spec=rule["spec"], opts=self._after(self.namespace))
        bodies = self._objects(model)

        def part(i: int, key: str) -> pulumi.Output[Any]:
            return bodies.apply(lambda objs: objs[i][key])

        sa_body = objects.model_objects(model, a.config, objects.PLACEHOLDER_BUCKET, [],
                                        a.tags, a.vpc_cidr)
        account = k8s.core.v1.ServiceAccount(
            f"{n}-sa", metadata=sa_body[0]["metadata"],
            automount_service_account_token=sa_body[0]["automountServiceAccountToken"],
            opts=self._after(self.namespace))
        association = aws.eks.PodIdentityAssociation(
            f"{n}-reader", cluster_name=a.cluster_name, namespace=a.config.namespace,
            service_account=objects.service_account(model), role_arn=role.arn, tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*a.depends_on, account]))
        for i, body in enumerate(sa_body):
            kind, name = body["kind"], body["metadata"]["name"]
            if kind == "InferenceService":
                # Credentials (association, policy) before the storage initializer runs.
                self.inference_services[name] = k8s.apiextensions.CustomResource(
                    f"{self._name}-{name}-isvc", api_version=body["apiVersion"], kind=kind,
                    metadata=body["metadata"], spec=part(i, "spec"),
                    opts=self._after(self.namespace, account, association, policy))
            elif kind == "ScaledObject":
                self.scaled_objects[name] = k8s.apiextensions.CustomResource(
                    f"{self._name}-{name}-scaler", api_version=body["apiVersion"], kind=kind,
                    metadata=body["metadata"], spec=body["spec"],
                    opts=self._after(self.inference_services[name]))
            elif kind == "Ingress":
                self.ingresses[name] = k8s.networking.v1.Ingress(
                    f"{n}-ingress", metadata=part(i, "metadata"), spec=body["spec"],
                    opts=self._after(*(self.inference_services[v]
                                       for v in objects.variants(model))))
