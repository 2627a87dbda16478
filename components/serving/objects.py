"""The Kubernetes objects of served models, as plain dicts: pure functions shared by the
InferenceModels component and `trainyard serve render`.

Per model: one InferenceService per variant (one, or `a` and `b` under a traffic split) in KServe's
raw Kubernetes mode (`Standard`, formerly `RawDeployment`) with the autoscaler class `external`, so
KServe makes the predictor Deployment and Service and leaves the replica count to KEDA; a KEDA
ScaledObject per variant on the server's own metric; one Ingress (the shared ALB, host
`<model>.<domain>`; for A/B an ALB forward action over the two variants' Services with weights);
a service account with its own Pod Identity role that may only read the model's export prefixes.
For the namespace: NetworkPolicies and one PodMonitor for every predictor. Names are interfaces:
the Deployment KServe makes is `<isvc>-predictor`, which the ScaledObject targets.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import yaml

from components.config.serving import DEFAULT_RESOURCES, MODELS_PREFIX
from components.config.types import SYSTEM_POOL_NAME, ServedModelConfig, ServingConfig
from components.services import netpol
from components.services.k8s_names import GPU_RESOURCE, GPU_TAINT_KEY, POOL_LABEL

DATA = Path(__file__).resolve().parents[1] / "data" / "serving"
ISVC_API = "serving.kserve.io/v1beta1"
RUNTIME_API = "serving.kserve.io/v1alpha1"
KEDA_API = "keda.sh/v1alpha1"
DEPLOYMENT_MODE = "Standard"
"""KServe >= 0.15 name of raw Kubernetes mode; `RawDeployment` is the deprecated spelling."""
AUTOSCALER_CLASS = "external"
"""KServe makes no HPA and ignores replica diffs: the ScaledObject owns the replica count."""
MODEL_LABEL = "trainyard.io/model"
VARIANT_LABEL = "trainyard.io/variant"
SERVED_NAME_LABEL = "servedModelName"
"""ISVC label the runtimes' `--model_name={{.Labels.servedModelName}}` reads: both variants of
an A/B split answer to the model's name, so clients never see `a` or `b`."""
ISVC_LABEL = "serving.kserve.io/inferenceservice"
"""Set by KServe on predictor pods: the InferenceService's name."""
HTTP_PORT = 8080
SERVICE_PORT = 80
"""The predictor Service KServe makes listens on 80 and forwards to the container's 8080."""
HEALTH_PATH = "/v2/health/ready"
PROMETHEUS_URL = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
"""The kube-prometheus-stack release (components/services/monitoring.py, fixed release name)."""
ALB_GROUP = "trainyard-serving"
"""IngressGroup: every model's Ingress shares one ALB (one listener, host rules)."""
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
POD_IDENTITY_ADDRESS = "169.254.170.23/32"
"""The EKS Pod Identity agent's link-local address (credentials on port 80)."""
PLACEHOLDER_BUCKET = "${checkpointsBucket}"
"""Shown by `trainyard serve render` where the stack's bucket name goes (known after up)."""


CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                      "capabilities": {"drop": ["ALL"]}}
"""On the runtimes' container and again on each InferenceService's model container (KServe
merges the two; the model's own settings are what the pod policies see in the plan). The
kserve images run as uid 1000; Triton's runtime adds runAsUser 1000 (its image starts as root)."""


# ----------------------------------------------------------------------------------------------
# Runtimes
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def runtimes() -> dict[str, dict]:
    with (DATA / "runtimes.yaml").open() as f:
        return yaml.safe_load(f)["runtimes"]


def cluster_serving_runtime(runtime: str) -> dict:
    """One ClusterServingRuntime (serving.kserve.io/v1alpha1) from data/serving/runtimes.yaml."""
    rt = runtimes()[runtime]
    res = DEFAULT_RESOURCES[runtime]
    container: dict[str, Any] = {
        "name": "kserve-container", "image": rt["image"], "args": list(rt["args"]),
        "ports": [{"containerPort": HTTP_PORT, "name": "http", "protocol": "TCP"}],
        "resources": resources(res.cpu, res.memory, res.gpus),
        "securityContext": copy.deepcopy(CONTAINER_SECURITY),
    }
    if rt.get("runAsUser") is not None:
        container["securityContext"]["runAsUser"] = rt["runAsUser"]
    if rt.get("command"):
        container["command"] = list(rt["command"])
    if rt["metricsPort"] != HTTP_PORT:
        container["ports"].append({"containerPort": rt["metricsPort"], "name": "metrics",
                                   "protocol": "TCP"})
    return {
        "apiVersion": RUNTIME_API, "kind": "ClusterServingRuntime",
        "metadata": {"name": rt["name"], "labels": {"app.kubernetes.io/part-of": "trainyard"}},
        "spec": {
            "supportedModelFormats": [{"name": rt["modelFormat"], "autoSelect": False}],
            "protocolVersions": list(rt["protocolVersions"]),
            "containers": [container],
        },
    }


def resources(cpu: str, memory: str, gpus: int) -> dict:
    """Requests = limits (Guaranteed QoS): a predictor is never throttled below what it asked."""
    amounts = {"cpu": cpu, "memory": memory}
    if gpus:
        amounts[GPU_RESOURCE["nvidia"]] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


# ----------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------
def variants(model: ServedModelConfig) -> dict[str, str]:
    """InferenceService name -> source prefix: `<model>` alone, or `<model>-a` and `<model>-b`."""
    if model.traffic is None:
        return {model.name: model.source}
    return {f"{model.name}-a": model.traffic.a, f"{model.name}-b": model.traffic.b}


def predictor_name(isvc: str) -> str:
    return f"{isvc}-predictor"


def service_account(model: ServedModelConfig) -> str:
    return f"model-{model.name}"


def host(model: ServedModelConfig, domain: str) -> str:
    return f"{model.name}.{domain}"


def storage_uri(bucket: str, source: str) -> str:
    return f"s3://{bucket}/{source}"


# ----------------------------------------------------------------------------------------------
# Per model
# ----------------------------------------------------------------------------------------------
def inference_service(model: ServedModelConfig, isvc: str, source: str, namespace: str,
                      bucket: str) -> dict:
    res = model.resources or DEFAULT_RESOURCES[model.runtime]
    rt = runtimes()[model.runtime]
    predictor: dict[str, Any] = {
        "minReplicas": model.min_replicas,
        "maxReplicas": model.max_replicas,
        "serviceAccountName": service_account(model),
        "nodeSelector": {POOL_LABEL: model.pool or SYSTEM_POOL_NAME},
        "model": {
            "modelFormat": {"name": rt["modelFormat"]},
            "runtime": rt["name"],
            "storageUri": storage_uri(bucket, source),
            "resources": resources(res.cpu, res.memory, res.gpus),
            "securityContext": copy.deepcopy(CONTAINER_SECURITY),
        },
    }
    if res.gpus:
        predictor["tolerations"] = [{"key": GPU_TAINT_KEY["nvidia"], "operator": "Exists",
                                     "effect": "NoSchedule"}]
    variant = isvc[len(model.name) + 1:] if isvc != model.name else "main"
    return {
        "apiVersion": ISVC_API, "kind": "InferenceService",
        "metadata": {
            "name": isvc, "namespace": namespace,
            "labels": {MODEL_LABEL: model.name, VARIANT_LABEL: variant,
                       SERVED_NAME_LABEL: model.name},
            "annotations": {"serving.kserve.io/deploymentMode": DEPLOYMENT_MODE,
                            "serving.kserve.io/autoscalerClass": AUTOSCALER_CLASS},
        },
        "spec": {"predictor": predictor},
    }


def scaling_query(model: ServedModelConfig, isvc: str, namespace: str) -> Optional[str]:
    """PromQL whose value KEDA divides by the replica count and holds at the target (the
    Prometheus scaler's AverageValue). None for `cpu` (KEDA's cpu scaler)."""
    sel = f'namespace="{namespace}", isvc="{isvc}"'
    signal = model.autoscaling.signal
    if signal == "cpu":
        return None
    if model.runtime == "huggingface-vllm":
        metric = "vllm:num_requests_running" if signal == "requests-in-flight" else \
            "vllm:num_requests_waiting"
        return f"sum({metric}{{{sel}}})"
    if model.runtime == "triton":
        if signal == "queue-depth":
            return f"sum(nv_inference_pending_request_count{{{sel}}})"
        # Little's law: seconds of request time per second = requests in flight on average.
        return f"sum(rate(nv_inference_request_duration_us{{{sel}}}[1m])) / 1e6"
    raise ValueError(f"{model.runtime} exports no {signal} metric")


def scaled_object(model: ServedModelConfig, isvc: str, namespace: str) -> dict:
    query = scaling_query(model, isvc, namespace)
    if query is None:
        trigger = {"type": "cpu", "metricType": "Utilization",
                   "metadata": {"value": str(model.autoscaling.target)}}
    else:
        trigger = {"type": "prometheus", "metadata": {
            "serverAddress": PROMETHEUS_URL, "query": query,
            "threshold": str(model.autoscaling.target)}}
    return {
        "apiVersion": KEDA_API, "kind": "ScaledObject",
        "metadata": {"name": isvc, "namespace": namespace,
                     "labels": {MODEL_LABEL: model.name}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": predictor_name(isvc)},
            "minReplicaCount": model.min_replicas,
            "maxReplicaCount": model.max_replicas,
            "pollingInterval": 15,
            # GPU replicas take minutes to start (node, image, weights): scale up at once, down
            # only after five quiet minutes.
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleDown": {"stabilizationWindowSeconds": 300}}}},
            "triggers": [trigger],
        },
    }


def split_action(model: ServedModelConfig) -> str:
    """The ALB forward action (annotation value) weighting the two variants' Services."""
    assert model.traffic is not None
    groups = [{"serviceName": predictor_name(f"{model.name}-{v}"), "servicePort": SERVICE_PORT,
               "weight": w} for v, w in (("a", model.traffic.weight_a),
                                         ("b", model.traffic.weight_b))]
    return json.dumps({"type": "forward", "forwardConfig": {"targetGroups": groups}},
                      sort_keys=True)


def split_action_name(model: ServedModelConfig) -> str:
    return f"{model.name}-split"


def ingress(model: ServedModelConfig, config: ServingConfig, subnet_ids: Sequence[str],
            tags: Mapping[str, str], vpc_cidr: str) -> dict:
    ing = config.ingress
    annotations = {
        "alb.ingress.kubernetes.io/scheme": ing.scheme,
        "alb.ingress.kubernetes.io/target-type": "ip",
        "alb.ingress.kubernetes.io/group.name": ALB_GROUP,
        "alb.ingress.kubernetes.io/listen-ports": json.dumps([{"HTTPS": 443}]),
        "alb.ingress.kubernetes.io/certificate-arn": ing.certificate_arn,
        "alb.ingress.kubernetes.io/ssl-policy": SSL_POLICY,
        # Public subnets hold no pods: the NetworkPolicy admitting them admits only the ALB.
        "alb.ingress.kubernetes.io/subnets": ",".join(subnet_ids),
        "alb.ingress.kubernetes.io/inbound-cidrs": ",".join(ing.allowed_cidrs or (vpc_cidr,)),
        "alb.ingress.kubernetes.io/healthcheck-path": HEALTH_PATH,
        "alb.ingress.kubernetes.io/tags": ",".join(f"{k}={v}" for k, v in sorted(tags.items())),
    }
    if model.traffic is None:
        backend = {"service": {"name": predictor_name(model.name),
                               "port": {"number": SERVICE_PORT}}}
    else:
        action = split_action_name(model)
        annotations[f"alb.ingress.kubernetes.io/actions.{action}"] = split_action(model)
        backend = {"service": {"name": action, "port": {"name": "use-annotation"}}}
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": model.name, "namespace": config.namespace,
                     "labels": {MODEL_LABEL: model.name}, "annotations": annotations},
        "spec": {"ingressClassName": "alb", "rules": [{
            "host": host(model, ing.domain),
            "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}]},
    }


def model_objects(model: ServedModelConfig, config: ServingConfig, bucket: str,
                  subnet_ids: Sequence[str], tags: Mapping[str, str], vpc_cidr: str
                  ) -> list[dict]:
    """Every namespaced object of one model, in apply order."""
    # The predictors never call the Kubernetes API: no API token in their pods. The storage
    # initializer's S3 credentials come from EKS Pod Identity (its own projected token).
    out: list[dict] = [{"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": service_account(model),
                                     "namespace": config.namespace,
                                     "labels": {MODEL_LABEL: model.name}},
                        "automountServiceAccountToken": False}]
    for isvc, source in variants(model).items():
        out.append(inference_service(model, isvc, source, config.namespace, bucket))
        out.append(scaled_object(model, isvc, config.namespace))
    out.append(ingress(model, config, subnet_ids, tags, vpc_cidr))
    return out


LATENCY_SLO_SERIES = "trainyard:serving_latency_slo:seconds"
"""Per-model latency SLO that components/data/alerts/serving.yaml compares latency with."""


def latency_slo_rule(model: ServedModelConfig, namespace: str) -> dict:
    """A PrometheusRule recording the model's `latencySloMs` as a series, so the one shipped
    ServingLatencyOverSlo alert holds each model to its own threshold."""
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": f"{model.name}-slo", "namespace": namespace,
                     "labels": {MODEL_LABEL: model.name,
                                "app.kubernetes.io/part-of": "trainyard"}},
        "spec": {"groups": [{"name": f"trainyard-serving-slo-{model.name}", "rules": [{
            "record": LATENCY_SLO_SERIES,
            "expr": f"vector({model.latency_slo_ms / 1000:g})",
            "labels": {"namespace": namespace, "model": model.name}}]}]},
    }


# ----------------------------------------------------------------------------------------------
# Read-only model storage (Pod Identity role per model)
# ----------------------------------------------------------------------------------------------
def model_reader_policy(bucket_arn: str, key_arn: str, region: str,
                        sources: Sequence[str]) -> str:
    """s3:GetObject on exactly the model's export prefixes, ListBucket only under them, and the
    storage key only to decrypt through S3. Nothing writes."""
    for s in sources:
        if not s.startswith(MODELS_PREFIX) or not s.endswith("/"):
            raise ValueError(f"source {s!r} is not an export prefix under {MODELS_PREFIX}")
    prefixes = sorted(set(sources))
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "ListExport", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": bucket_arn,
         "Condition": {"StringLike": {"s3:prefix": [p for s in prefixes for p in (s, f"{s}*")]}}},
        {"Sid": "ReadExport", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": [f"{bucket_arn}/{s}*" for s in prefixes]},
        {"Sid": "DecryptThroughS3", "Effect": "Allow", "Action": "kms:Decrypt",
         "Resource": key_arn,
         "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}},
    ]}, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Namespace-wide
# ----------------------------------------------------------------------------------------------
def network_policies(lb_cidrs: Sequence[str], monitoring_namespace: str) -> dict[str, dict]:
    """The serving namespace: default deny; predictors take traffic only from the load balancer
    (its subnets, which hold no pods) and Prometheus; they reach DNS, the Pod Identity agent and
    HTTPS (S3 through the gateway endpoint, STS)."""
    metrics_ports = sorted({HTTP_PORT, *(rt["metricsPort"] for rt in runtimes().values())})
    return {
        "default-deny": netpol.deny_all(),
        "allow-dns": netpol.allow_dns(),
        "allow-load-balancer": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{
            "from": [{"ipBlock": {"cidr": c}} for c in lb_cidrs],
            "ports": [{"protocol": "TCP", "port": HTTP_PORT}]}]},
        "allow-monitoring-scrape": netpol.allow_ingress_from_namespace(monitoring_namespace,
                                                                       metrics_ports),
        "allow-pod-identity": netpol.allow_egress_to(POD_IDENTITY_ADDRESS, [80]),
        "allow-https-egress": netpol.allow_egress_to("0.0.0.0/0", [443]),
    }


def pod_monitor_spec() -> dict:
    """Every predictor of the namespace: /metrics on the HTTP port (KServe, vLLM) and on the
    metrics port (Triton); the InferenceService and model become labels."""
    relabel = [
        {"sourceLabels": ["__meta_kubernetes_pod_label_serving_kserve_io_inferenceservice"],
         "targetLabel": "isvc", "action": "replace"},
        {"sourceLabels": ["__meta_kubernetes_pod_label_trainyard_io_model"],
         "targetLabel": "model", "action": "replace"},
        {"sourceLabels": ["__meta_kubernetes_pod_label_trainyard_io_variant"],
         "targetLabel": "variant", "action": "replace"},
        {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node",
         "action": "replace"},
    ]
    return {
        "selector": {"matchExpressions": [{"key": ISVC_LABEL, "operator": "Exists"}]},
        "podMetricsEndpoints": [{"port": port, "path": "/metrics", "interval": "15s",
                                 "relabelings": relabel} for port in ("http", "metrics")],
    }
