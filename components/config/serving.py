"""`trainyard:serving` parsing: which models the stack serves, how, and behind which load balancer.

Every key is read once through the strict Reader (unknown keys refused, every problem one line with
its key path). Rules that tie serving to other sections (the pool a model runs on, the monitoring
its autoscaler reads, the namespaces teams own) judge only what parsed.

Sources are key prefixes in the stack's checkpoints bucket under MODELS_PREFIX: bucket names carry
a suffix S3 picks at creation, so config names the key and the platform fills in the bucket.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Sequence
from typing import Optional

from components.compute.catalog import Catalog
from components.config.reader import Reader, cidr_check, name_check
from components.config.types import (
    LB_SCHEMES,
    SERVING_RUNTIMES,
    SERVING_SIGNALS,
    GpuPoolConfig,
    MonitoringConfig,
    ServedModelConfig,
    ServingAutoscaling,
    ServingConfig,
    ServingIngressConfig,
    ServingResources,
    TeamConfig,
    TrafficSplit,
)

MODELS_PREFIX = "models/"
"""Key prefix of exports in the checkpoints bucket (stack output `modelsPrefix`)."""
GPU_RUNTIMES = ("huggingface-vllm", "triton")
DEFAULT_RESOURCES = {
    # One L4 / A10G (24 GiB) per vLLM replica; the host side holds the tokenizer, the HTTP
    # server and the weights while they load (a 1B model in bf16 is ~2.5 GB).
    "huggingface-vllm": ServingResources(cpu="3", memory="12Gi", gpus=1),
    "huggingface-cpu": ServingResources(cpu="2", memory="4Gi", gpus=0),
    "triton": ServingResources(cpu="3", memory="8Gi", gpus=1),
}
SIGNALS_BY_RUNTIME = {
    "huggingface-vllm": ("requests-in-flight", "queue-depth"),
    "triton": ("requests-in-flight", "queue-depth"),
    # KServe's Transformers backend exports latency histograms only: no in-flight gauge.
    "huggingface-cpu": ("cpu",),
}
RESERVED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "monitoring",
                       "kubeflow-system", "kserve", "keda", "cert-manager")
_SOURCE_RE = re.compile(r"^models/([a-z0-9][a-z0-9._-]*/)+$")
_ACM_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}$")
_DOMAIN_RE = re.compile(r"^(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$")
_NAMESPACE_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def source_check(value: str) -> Optional[str]:
    if _SOURCE_RE.match(value) and ".." not in value:
        return None
    return (f"is not an export prefix under {MODELS_PREFIX} (lowercase path segments, ending "
            f"in '/', e.g. {MODELS_PREFIX}llm-125m/2026-11-20/)")


def _quantity(value: str) -> Optional[str]:
    return None if _QUANTITY_RE.match(value) else "is not a Kubernetes quantity (e.g. 4, 500m, 24Gi)"


def _serving(r: Reader, pools: Sequence[GpuPoolConfig], pools_ok: bool,
             monitoring: MonitoringConfig, teams: Sequence[TeamConfig],
             catalog: Catalog) -> ServingConfig:
    """Parse `trainyard:serving`. `pools_ok`: whether gpuPools parsed (pool rules judge only
    then)."""
    enabled = r.bool("enabled", False)
    namespace = r.str("namespace", "serving", check=lambda v: None
                      if _NAMESPACE_RE.match(v) and v not in RESERVED_NAMESPACES else
                      "is not a usable namespace name (a DNS label, not a system namespace)")
    ingress = _ingress(r.child("ingress"))
    models = tuple(_model(m, pools if pools_ok else None, catalog) for m in r.items("models"))
    r.finish()
    config = ServingConfig(enabled=bool(enabled), namespace=namespace or "serving",
                           ingress=ingress, models=models)
    _rules(r, config, pools if pools_ok else None, monitoring, teams, catalog)
    return config


def _ingress(r: Reader) -> ServingIngressConfig:
    scheme = r.str("scheme", "internal", choices=LB_SCHEMES)

    def cidr(value: str) -> Optional[str]:
        problem = cidr_check(value)
        if problem:
            return problem
        if ipaddress.ip_network(value).prefixlen == 0:
            return "admits the whole internet; name the client networks"
        return None

    ingress = ServingIngressConfig(
        scheme=scheme or "internal",
        certificate_arn=r.str("certificateArn", "", check=lambda v: None
                              if _ACM_ARN_RE.match(v) else "is not an ACM certificate ARN"),
        domain=r.str("domain", "", check=lambda v: None if _DOMAIN_RE.match(v) else
                     "is not a DNS domain (lowercase labels, e.g. serving.example.internal)"),
        allowed_cidrs=r.str_list("allowedCidrs", (), check=cidr))
    r.finish()
    return ingress


def _model(r: Reader, pools: Optional[Sequence[GpuPoolConfig]], catalog: Catalog
           ) -> ServedModelConfig:
    name = r.str("name", check=name_check)
    runtime = r.str("runtime", choices=SERVING_RUNTIMES)
    source = r.str("source", "", check=source_check)
    pool_names = [p.name for p in pools] if pools is not None else None
    pool = r.str("pool", "", check=lambda v: None if pool_names is None or v in pool_names
                 or not v else
                 f"is not a GPU pool of this stack ({', '.join(pool_names) or 'none'})")
    rep = r.child("replicas")
    lo, hi = rep.int("min", 1, min=1, max=100), rep.int("max", 2, min=1, max=100)
    if rep.parsed("min", "max") and lo > hi:
        rep.error(f"{lo} is above replicas.max {hi}", "min")
    rep.finish()
    default_signal = SIGNALS_BY_RUNTIME[runtime][0] if runtime else "requests-in-flight"
    a = r.child("autoscaling")
    signal = a.str("signal", default_signal, choices=SERVING_SIGNALS)
    target = a.int("target", 70 if signal == "cpu" else 8, min=1,
                   max=100 if signal == "cpu" else 10000)
    a.finish()
    if runtime and signal and a.parsed("signal") and r.parsed("runtime") and \
            signal not in SIGNALS_BY_RUNTIME[runtime]:
        a.error(f"{signal!r} is not a signal {runtime} exports (use "
                f"{' or '.join(SIGNALS_BY_RUNTIME[runtime])})", "signal")
    resources = _resources(r, runtime)
    traffic = _traffic(r)
    model = ServedModelConfig(
        name=name or "", runtime=runtime or "huggingface-cpu", source=source or "",
        pool=pool or "", min_replicas=lo, max_replicas=hi,
        autoscaling=ServingAutoscaling(signal=signal or default_signal, target=target),
        resources=resources, traffic=traffic,
        latency_slo_ms=r.int("latencySloMs", 200, min=1, max=600000))
    if r.parsed("source", "traffic"):
        if traffic is None and not source:
            r.error("is required (or give traffic.a and traffic.b for an A/B split)", "source")
        if traffic is not None and source:
            r.error("goes with traffic: traffic.a and traffic.b name the two sources; drop "
                    "source (roll back by removing traffic and setting source)", "source")
    if runtime in GPU_RUNTIMES and r.parsed("runtime", "pool") and not pool:
        r.error(f"is required for the {runtime} runtime (a GPU pool of this stack)", "pool")
    if pool and pools is not None and r.parsed("pool", "runtime") and resources is not None:
        spec = catalog.get(next(p for p in pools if p.name == pool).instance_types[0])
        if resources.gpus > spec.gpus:
            r.error(f"{resources.gpus} GPUs per replica do not fit a node of pool {pool} "
                    f"({spec.name}: {spec.gpus})", "resources.gpus")
    r.finish()
    return model


def _resources(r: Reader, runtime: Optional[str]) -> Optional[ServingResources]:
    default = DEFAULT_RESOURCES.get(runtime or "")
    res = r.child("resources")
    cpu = res.str("cpu", default.cpu if default else "1", check=_quantity)
    memory = res.str("memory", default.memory if default else "2Gi", check=_quantity)
    gpus = res.int("gpus", default.gpus if default else 0, min=0, max=8)
    res.finish()
    if runtime and r.parsed("runtime") and res.parsed("gpus"):
        if runtime == "huggingface-cpu" and gpus:
            res.error(f"{gpus} must be 0 for the CPU runtime (use huggingface-vllm on a GPU "
                      "pool)", "gpus")
        if runtime in GPU_RUNTIMES and not gpus:
            res.error(f"0 is not enough: the {runtime} runtime needs a GPU", "gpus")
    return ServingResources(cpu=cpu, memory=memory, gpus=gpus)


def _traffic(r: Reader) -> Optional[TrafficSplit]:
    if r.raw.get("traffic") is None:
        r.child("traffic")
        return None
    t = r.child("traffic")
    a, b = t.str("a", check=source_check), t.str("b", check=source_check)
    w = t.child("weights", required=True)
    wa, wb = w.int("a", min=0, max=100), w.int("b", min=0, max=100)
    w.finish()
    t.finish()
    if w.parsed("a", "b") and wa is not None and wb is not None and wa + wb != 100:
        w.error(f"a {wa} + b {wb} = {wa + wb}; the weights must sum to 100")
    if t.parsed("a", "b") and a and a == b:
        t.error("names the same source as traffic.a; an A/B split needs two exports", "b")
    if not t.ok or None in (a, b, wa, wb):
        return None
    return TrafficSplit(a=a, b=b, weight_a=wa, weight_b=wb)


def gpus_at(model: ServedModelConfig, replicas: int) -> int:
    resources = model.resources or DEFAULT_RESOURCES[model.runtime]
    return replicas * resources.gpus * len(model.sources)


def _rules(r: Reader, config: ServingConfig, pools: Optional[Sequence[GpuPoolConfig]],
           monitoring: MonitoringConfig, teams: Sequence[TeamConfig], catalog: Catalog) -> None:
    names = [m.name for m in config.models if m.name]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        r.error(f"duplicate model names {dupes}", "models")
    if r.parsed("namespace") and config.namespace in {t.name for t in teams}:
        r.error(f"{config.namespace!r} is a team namespace; serving needs its own", "namespace")
    if not config.enabled or not r.parsed("enabled"):
        return
    ing = config.ingress
    if config.models:
        for key, value in (("certificateArn", ing.certificate_arn), ("domain", ing.domain)):
            if not value and r.parsed(f"ingress.{key}"):
                r.error("is required when models are served (HTTPS listener, host rules)",
                        f"ingress.{key}")
    if ing.scheme == "internet-facing" and not ing.allowed_cidrs and \
            r.parsed("ingress.scheme", "ingress.allowedCidrs"):
        r.error("is required for an internet-facing load balancer (the client networks)",
                "ingress.allowedCidrs")
    if not monitoring.enabled and any(m.autoscaling.signal != "cpu" for m in config.models):
        r.error("KEDA scales models on the servers' metrics through Prometheus: turn "
                "trainyard:monitoring.enabled on, or scale on cpu", "models")
    if pools is None:
        return
    # Every replica at max must fit the pool's maximum (Karpenter limits / node group maxSize).
    by_pool: dict[str, int] = {}
    for m in config.models:
        if m.pool:
            by_pool[m.pool] = by_pool.get(m.pool, 0) + gpus_at(m, m.max_replicas)
    for pool in pools:
        want = by_pool.get(pool.name, 0)
        if not want:
            continue
        per_node = catalog.get(pool.instance_types[0]).gpus
        have = pool.max_size * per_node
        if want > have:
            r.error(f"at replicas.max the models on pool {pool.name} need {want} GPUs; the pool "
                    f"holds {have} ({pool.max_size} nodes x {per_node}): raise its maxSize or "
                    f"lower replicas.max", "models")


def standing_nodes(model: ServedModelConfig, per_node_gpus: int, replicas: int) -> int:
    """Nodes `replicas` replicas of every variant of `model` occupy (GPU-bound packing)."""
    gpus = gpus_at(model, replicas)
    return math.ceil(gpus / per_node_gpus) if gpus and per_node_gpus else 0
