"""Fixtures of the supply-chain rules on ECR, workload images and secrets
(policies/supply_chain.py): violating cases name the resource the violation must point at."""

from __future__ import annotations

from policy_fixtures import CTR, ECR, Case, R, pod_template

LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
SCANNING = "aws:ecr/registryScanningConfiguration:RegistryScanningConfiguration"
SM = "aws:secretsmanager/secret:Secret"
K8S_SECRET = "kubernetes:core/v1:Secret"
TRAINJOB = "kubernetes:trainer.kubeflow.org/v1alpha1:TrainJob"
ISVC = "kubernetes:serving.kserve.io/v1beta1:InferenceService"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/abc"
URL = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def repo(name="train", scan=True, mutability="IMMUTABLE", kms=KEY_ARN, url=True) -> dict:
    inputs = {"name": f"trainyard-{name}", "imageTagMutability": mutability,
              "imageScanningConfiguration": {"scanOnPush": scan}}
    if kms is not None:
        inputs["encryptionConfigurations"] = [{"encryptionType": "KMS",
                                               **({"kmsKey": kms} if kms else {})}]
    outputs = {"repositoryUrl": f"{URL}/trainyard-{name}"} if url else {}
    return R(ECR, name, inputs, outputs, rid=f"trainyard-{name}")


def lifecycle(name="train") -> dict:
    return R(LIFECYCLE, f"{name}-lc", {"repository": f"trainyard-{name}", "policy": "{}"})


def enhanced(filters=("trainyard-*",), frequency="CONTINUOUS_SCAN") -> dict:
    return R(SCANNING, "scanning", {"scanType": "ENHANCED", "rules": [{
        "scanFrequency": frequency,
        "repositoryFilters": [{"filter": f, "filterType": "WILDCARD"} for f in filters]}]})


def runtime(image: str, name="rt") -> dict:
    return R(CTR, name, {"metadata": {"name": "torch"}, "spec": {"template": {"spec": {
        "replicatedJobs": [{"template": {"spec": {"template": pod_template(image=image)}}}]}}}})


SUPPLY_CHAIN_EXTRA_CASES = {
    "ecr-scan-and-immutable-tags": {
        "bad": [Case([repo(scan=False)], "train", label="no scan"),
                Case([repo(scan=False), enhanced(filters=("other-*",))], "train",
                     label="enhanced rule misses it"),
                Case([repo(scan=False), enhanced(frequency="MANUAL")], "train",
                     label="manual enhanced rule")],
        "good": [Case([repo(scan=False), enhanced()], label="enhanced scanning covers it")],
    },
}

SUPPLY_CHAIN_FIXTURES = {
    "ecr-repository-kms": {
        "bad": [Case([repo(kms=None)], "train", label="AES256"),
                Case([repo(kms="")], "train", label="AWS managed key")],
        "good": [Case([repo()]),
                 Case([repo(kms="")], config={"requireCustomerKey": False},
                      label="AWS managed key allowed")],
    },
    "ecr-lifecycle-policy": {
        "bad": [Case([repo(), repo("serve"), lifecycle("train")], "serve")],
        "good": [Case([repo(), lifecycle("train")])],
    },
    "workload-images-from-registry": {
        "bad": [Case([repo(), lifecycle(), runtime("nvcr.io/nvidia/pytorch:25.01-py3")], "rt",
                     label="foreign registry"),
                Case([repo(), runtime(f"{URL}/someone-else:1.0")], "rt",
                     label="other repository in the account"),
                Case([repo(), R(TRAINJOB, "job", {"spec": {"trainer": {
                    "image": "docker.io/library/python:3.12"}}})], "job", label="TrainJob"),
                Case([R(ISVC, "svc", {"spec": {"predictor": {"containers": [
                    {"name": "kserve-container", "image": f"{URL}/trainyard-serve:1.0"}]}}})],
                     "svc", label="no repositories in the stack")],
        "good": [Case([repo(), runtime(f"{URL}/trainyard-train:0.1.0")]),
                 Case([repo(url=False), runtime(f"{URL}/trainyard-train@sha256:" + "a" * 64)],
                      label="URL unknown at preview: name and ECR host"),
                 Case([repo(), runtime("public.ecr.aws/docker/library/python:3.12.8-slim")],
                      label="allowed prefix"),
                 Case([runtime("registry.example.com/ml/train:1.0")],
                      config={"allowedImagePrefixes": ["registry.example.com/ml/"]},
                      label="configured prefix")],
    },
    "secretsmanager-customer-key": {
        "bad": [Case([R(SM, "sec", {"name": "trainyard/dev/x"})], "sec"),
                Case([R(SM, "sec", {"kmsKeyId": "alias/aws/secretsmanager"})], "sec",
                     label="AWS managed alias")],
        "good": [Case([R(SM, "sec", {"name": "trainyard/dev/x", "kmsKeyId": KEY_ARN})])],
    },
    "k8s-secret-from-secret-store": {
        "bad": [Case([R(K8S_SECRET, "pw", {"metadata": {"name": "grafana-admin",
                                                         "namespace": "monitoring"},
                                            "stringData": {"admin-password": "x"}})], "pw")],
        "good": [Case([R(K8S_SECRET, "tls", {"metadata": {"name": "empty", "namespace": "a"},
                                              "type": "Opaque"})]),
                 Case([R(K8S_SECRET, "cfg", {"metadata": {"name": "cfg", "namespace": "a"},
                                              "data": {"k": "dg=="}})],
                      config={"allowedSecrets": ["a/cfg"]}, label="allowed")],
    },
}
