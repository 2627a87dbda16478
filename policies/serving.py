"""Serving rules (family `kubernetes`): the load balancer in front of the models stays private
unless the policy config allows a public one, its listeners speak TLS, model storage is read-only,
predictors have resource limits, model runtimes run pinned images. The serving charts' workloads
for the schedulability rule are in policies/serving_charts.py."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pulumi_policy import Severity

from .common import (
    MANDATORY,
    Refs,
    Stack,
    get,
    items,
    plain,
    resource_rule,
    schema,
    short,
    stack_rule,
)
from .supply_chain import image_problem

INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
ISVC = "kubernetes:serving.kserve.io/v1beta1:InferenceService"
RUNTIME_TYPES = ("kubernetes:serving.kserve.io/v1alpha1:ClusterServingRuntime",
                 "kubernetes:serving.kserve.io/v1alpha1:ServingRuntime")
POD_IDENTITY = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ALB = "alb.ingress.kubernetes.io/"
READ_ACTIONS = {"s3:getobject", "s3:listbucket", "kms:decrypt"}
"""What a model reader may do (read the export, list its prefix, decrypt through S3)."""


def _is_alb(props) -> bool:
    annotations = get(props, "metadata.annotations") or {}
    return get(props, "spec.ingressClassName") == "alb" or \
        annotations.get("kubernetes.io/ingress.class") == "alb"


@resource_rule(
    name="serving-no-public-load-balancer",
    description="ALB Ingresses are internal unless the policy config allows an internet-facing "
                "load balancer.",
    family="kubernetes", types=(INGRESS,), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_127",), other=("aws-lbc:annotations#scheme",)),
    config=schema(allowInternetFacing={
        "type": "boolean", "default": False,
        "description": "Whether an internet-facing ALB may serve models in this environment."}),
    remediation="Set alb.ingress.kubernetes.io/scheme: internal (trainyard:serving.ingress."
                "scheme), or allow internet-facing in the environment's policy config.")
def serving_no_public_load_balancer(args, cfg, report):
    if not _is_alb(args.props):
        return
    scheme = (get(args.props, "metadata.annotations") or {}).get(f"{ALB}scheme", "internal")
    if scheme != "internal" and not cfg["allowInternetFacing"]:
        report(f"Ingress {get(args.props, 'metadata.name')} asks for an {scheme} load balancer: "
               "use scheme internal, or allow it in the policy config (allowInternetFacing).")


@resource_rule(
    name="serving-tls-listeners",
    description="ALB Ingresses listen on HTTPS only, with an ACM certificate and a TLS 1.2+ "
                "security policy.",
    family="kubernetes", types=(INGRESS,), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV_AWS_2", "CKV_AWS_103"), trivy=("AWS-0054", "AWS-0047")),
    remediation="Set alb.ingress.kubernetes.io/listen-ports to [{\"HTTPS\": 443}], "
                "certificate-arn to an ACM certificate and ssl-policy to "
                "ELBSecurityPolicy-TLS13-1-2-2021-06.")
def serving_tls_listeners(args, cfg, report):
    if not _is_alb(args.props):
        return
    annotations = get(args.props, "metadata.annotations") or {}
    name = get(args.props, "metadata.name")
    try:
        ports = json.loads(annotations.get(f"{ALB}listen-ports") or "[]")
    except ValueError:
        ports = None
    protocols = {k for p in (ports or [{"HTTP": 80}]) if isinstance(p, Mapping) for k in p}
    if protocols != {"HTTPS"}:
        report(f"Ingress {name} listens on {sorted(protocols) or 'HTTP'}: listen on HTTPS only.")
    if not str(annotations.get(f"{ALB}certificate-arn") or "").startswith("arn:"):
        report(f"Ingress {name} names no certificate: set {ALB}certificate-arn.")
    policy = str(annotations.get(f"{ALB}ssl-policy") or "")
    if not policy.startswith(("ELBSecurityPolicy-TLS13", "ELBSecurityPolicy-TLS-1-2")):
        report(f"Ingress {name} uses ssl-policy {policy or '(the default, TLS 1.0+)'}: use a "
               "TLS 1.2+ policy such as ELBSecurityPolicy-TLS13-1-2-2021-06.")


def _statements(policy_doc: Any) -> list:
    doc = json.loads(policy_doc) if isinstance(policy_doc, str) else plain(policy_doc)
    statements = doc.get("Statement", []) if isinstance(doc, Mapping) else []
    return [statements] if isinstance(statements, Mapping) else list(statements)


@stack_rule(
    name="serving-model-storage-read-only",
    description="InferenceServices load models from s3:// and the role their service account "
                "assumes (EKS Pod Identity) may only read: GetObject, ListBucket, kms:Decrypt.",
    family="kubernetes", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("aws-iam:least-privilege", "kserve-docs:s3-storage")),
    remediation="Point storageUri at the export's s3:// prefix and give the model's service "
                "account a role whose policies allow only s3:GetObject, s3:ListBucket and "
                "kms:Decrypt.")
def serving_model_storage_read_only(stack: Stack, cfg, report):
    for isvc in stack.of(ISVC):
        pred = get(isvc.props, "spec.predictor") or {}
        name, ns = get(isvc.props, "metadata.name"), get(isvc.props, "metadata.namespace")
        uri = str(get(pred, "model.storageUri") or "")
        if not uri.startswith("s3://"):
            report(f"InferenceService {name} loads its model from {uri or 'nowhere'}: use the "
                   "export's s3:// prefix.", isvc.urn)
        sa = get(pred, "serviceAccountName")
        assocs = [a for a in stack.of(POD_IDENTITY)
                  if get(a.props, "namespace") == ns and get(a.props, "serviceAccount") == sa]
        if not sa or not assocs:
            report(f"InferenceService {name}: service account {sa or '(default)'} has no Pod "
                   "Identity role of its own: give the model a read-only role.", isvc.urn)
            continue
        for assoc in assocs:
            for role in stack.linked(assoc, "roleArn", stack.of(ROLE), keys=("arn",)):
                for rp in stack.referring(role, stack.of(ROLE_POLICY), "role", keys=("id",)):
                    for st in _statements(get(rp.props, "policy")):
                        actions = [str(a).lower() for a in items(st.get("Action"))]
                        extra = sorted(a for a in actions if a not in READ_ACTIONS)
                        if st.get("Effect") == "Allow" and extra:
                            report(f"InferenceService {name}: role policy {short(rp.urn)} "
                                   f"allows {', '.join(extra)}: model storage is read-only.",
                                   rp.urn)


@resource_rule(
    name="serving-predictor-limits",
    description="InferenceService predictors set CPU and memory limits (and a GPU limit when "
                "they request GPUs).",
    family="kubernetes", types=(ISVC,), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_K8S_11", "CKV_K8S_13"), cis=("5.7.4",)),
    remediation="Set spec.predictor.model.resources.limits (cpu, memory, nvidia.com/gpu) - "
                "trainyard:serving models[].resources.")
def serving_predictor_limits(args, cfg, report):
    pred = get(args.props, "spec.predictor") or {}
    containers = [("model", get(pred, "model"))] + \
        [(str(get(c, "name")), c) for c in items(get(pred, "containers"))]
    for where, c in containers:
        if not c:
            continue
        limits = get(c, "resources.limits") or {}
        requests = get(c, "resources.requests") or {}
        missing = [k for k in ("cpu", "memory") if k not in limits]
        if "nvidia.com/gpu" in requests and "nvidia.com/gpu" not in limits:
            missing.append("nvidia.com/gpu")
        if missing:
            report(f"predictor {where} of {get(args.props, 'metadata.name')} has no limit for "
                   f"{', '.join(missing)}: set resources.limits.")


@resource_rule(
    name="serving-runtime-images-pinned",
    description="Serving runtimes run images pinned to an exact tag or digest (no :latest, no "
                "missing tag).",
    family="kubernetes", types=RUNTIME_TYPES, level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(other=("openssf-scorecard:Pinned-Dependencies",)),
    remediation="Pin each runtime container's image to a version tag or @sha256 digest "
                "(components/data/serving/runtimes.yaml).")
def serving_runtime_images_pinned(args, cfg, report):
    for i, c in enumerate(items(get(args.props, "spec.containers"))):
        image = str(get(c, "image") or "")
        problem = "has no image" if not image else image_problem(image, False)
        if problem:
            report(f"runtime {get(args.props, 'metadata.name')} container [{i}] {image} "
                   f"{problem}: pin a version tag or digest.")
