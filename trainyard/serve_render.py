"""`trainyard serve render MODEL --stack S`: one served model's Kubernetes objects as the stack
creates them (components/serving/objects.py), as YAML documents or, with `--json`, a v1 List.

The model's service account, its InferenceService per variant (KServe raw mode; KServe makes the
`<isvc>-predictor` Deployment and Service from it), the KEDA ScaledObject per variant, the
Ingress (with the ALB's weighted forward action for an A/B split), the PrometheusRule recording
its latency SLO, and the serving namespace's NetworkPolicies and PodMonitor (shared by every
model; the last two only with monitoring on). Values known only after `pulumi up` are shown as
placeholders: the checkpoints bucket as `${checkpointsBucket}` and the load balancer's subnets
as `${publicSubnet:<az>}`.

    trainyard serve render llm --stack prod
    trainyard serve render llm --stack prod --json | jq '.items[].kind'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from trainyard.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a model of trainyard:serving.models")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--stack", help="stack name: stacks/Pulumi.<NAME>.yaml")
    g.add_argument("--stack-file", type=Path, metavar="PATH", help="any stack config file")
    p.add_argument("--json", action="store_true", help="print a JSON v1 List instead of YAML")


def render(config, model_name: str) -> list[dict]:
    """The objects of `model_name` in a parsed StackConfig (UsageError when it is not served)."""
    from components.network import netmath
    from components.serving import objects

    serving = config.serving
    if not serving.enabled:
        raise UsageError(f"stack {config.stack!r} serves no models (trainyard:serving.enabled "
                         "is false)")
    models = {m.name: m for m in serving.models}
    if model_name not in models:
        raise UsageError(f"unknown model {model_name!r} in stack {config.stack!r} (served: "
                         f"{', '.join(sorted(models)) or 'none'})")
    model, net = models[model_name], config.network
    azs = list(net.availability_zones)
    plan = netmath.carve_subnets(net.vpc_cidr, net.availability_zones,
                                 net.private_subnet_prefix, net.public_subnet_prefix)
    out = objects.model_objects(model, serving, objects.PLACEHOLDER_BUCKET,
                                [f"${{publicSubnet:{az}}}" for az in azs], config.tags,
                                net.vpc_cidr)
    monitoring = config.monitoring.enabled
    if monitoring:
        out.append(objects.latency_slo_rule(model, serving.namespace))
    for name, spec in objects.network_policies([plan.public[az] for az in azs],
                                               "monitoring").items():
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": name, "namespace": serving.namespace}, "spec": spec})
    if monitoring:
        out.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
                    "metadata": {"name": "trainyard-predictors", "namespace": serving.namespace,
                                 "labels": {"app.kubernetes.io/part-of": "trainyard"}},
                    "spec": objects.pod_monitor_spec()})
    return out


def run(args: argparse.Namespace) -> int:
    from trainyard.synth import load_config

    config = load_config(args.stack or "custom", args.stack_file)
    docs = render(config, args.model)
    if args.json:
        json.dump({"apiVersion": "v1", "kind": "List", "items": docs}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False))
    return 0
