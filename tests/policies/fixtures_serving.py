"""Fixtures of the serving rules (policies/serving.py); merged into policy_fixtures.FIXTURES."""

from __future__ import annotations

import json

from policy_fixtures import Case, R

ING = "kubernetes:networking.k8s.io/v1:Ingress"
ISVC = "kubernetes:serving.kserve.io/v1beta1:InferenceService"
CSR = "kubernetes:serving.kserve.io/v1alpha1:ClusterServingRuntime"
PIA = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
ROLE = "aws:iam/role:Role"
RP = "aws:iam/rolePolicy:RolePolicy"
ALB = "alb.ingress.kubernetes.io/"
CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0"
LIMITS = {"cpu": "3", "memory": "12Gi", "nvidia.com/gpu": "1"}


def ingress(name="llm", **annotations) -> dict:
    ann = {f"{ALB}scheme": "internal", f"{ALB}listen-ports": json.dumps([{"HTTPS": 443}]),
           f"{ALB}certificate-arn": CERT,
           f"{ALB}ssl-policy": "ELBSecurityPolicy-TLS13-1-2-2021-06"}
    ann.update({f"{ALB}{k.replace('_', '-')}": v for k, v in annotations.items()})
    return R(ING, f"ing-{name}", {"metadata": {"name": name, "namespace": "serving",
                                               "annotations": ann},
                                  "spec": {"ingressClassName": "alb", "rules": []}})


def isvc(name="llm", uri="s3://bucket/models/llm/v1/", sa="model-llm", limits=None) -> dict:
    res = {"requests": dict(LIMITS), "limits": dict(LIMITS if limits is None else limits)}
    return R(ISVC, f"isvc-{name}", {"metadata": {"name": name, "namespace": "serving"}, "spec": {
        "predictor": {"serviceAccountName": sa, "model": {
            "modelFormat": {"name": "huggingface"}, "storageUri": uri, "resources": res}}}})


def reader(actions=("s3:GetObject",), sa="model-llm") -> list:
    role = R(ROLE, "reader", {"assumeRolePolicy": "{}"},
             outputs={"arn": "arn:aws:iam::123456789012:role/reader"})
    role["outputs"]["arn"] = "arn:aws:iam::123456789012:role/reader"
    policy = R(RP, "reader-policy", {"role": "reader-id", "policy": json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": list(actions), "Resource": "arn:aws:s3:::b/models/*"}]})})
    assoc = R(PIA, "reader-assoc", {"clusterName": "c", "namespace": "serving",
                                    "serviceAccount": sa,
                                    "roleArn": "arn:aws:iam::123456789012:role/reader"})
    return [role, policy, assoc]


def runtime(image="kserve/huggingfaceserver:v0.16.0") -> dict:
    return R(CSR, "runtime", {"metadata": {"name": "trainyard-hf-vllm"}, "spec": {
        "containers": [{"name": "kserve-container", "image": image}]}})


SERVING_FIXTURES = {
    "serving-no-public-load-balancer": {
        "bad": [Case([ingress(scheme="internet-facing")], expect="ing-llm")],
        "good": [Case([ingress()]),
                 Case([ingress(scheme="internet-facing")], label="allowed",
                      config={"allowInternetFacing": True})],
    },
    "serving-tls-listeners": {
        "bad": [Case([ingress(listen_ports=json.dumps([{"HTTP": 80}]))], expect="ing-llm",
                     label="http"),
                Case([ingress(certificate_arn="")], expect="ing-llm", label="no-cert")],
        "good": [Case([ingress()])],
    },
    "serving-model-storage-read-only": {
        "bad": [Case([isvc(), *reader(("s3:GetObject", "s3:PutObject"))],
                     expect="reader-policy", label="writes"),
                Case([isvc(uri="pvc://models/llm"), *reader()], expect="isvc-llm",
                     label="not-s3"),
                Case([isvc(sa="other"), *reader()], expect="isvc-llm", label="no-role")],
        "good": [Case([isvc(), *reader(("s3:GetObject", "s3:ListBucket", "kms:Decrypt"))])],
    },
    "serving-predictor-limits": {
        "bad": [Case([isvc(limits={"cpu": "3", "memory": "12Gi"})], expect="isvc-llm")],
        "good": [Case([isvc()])],
    },
    "serving-runtime-images-pinned": {
        "bad": [Case([runtime("kserve/huggingfaceserver:latest")], expect="runtime"),
                Case([runtime("kserve/huggingfaceserver")], expect="runtime", label="no-tag")],
        "good": [Case([runtime()])],
    },
}
