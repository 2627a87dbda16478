"""Supply-chain rules: Helm charts pinned to exact versions from trusted repositories, known-bad
chart versions rejected, container images pinned; the stack's ECR repositories immutable, scanned
(on push or by registry enhanced scanning), KMS-encrypted and expiring untagged images; training
and serving images pulled from the stack's own repositories (or an allow-list); secrets kept out
of the Pulumi state (Secrets Manager with a customer key, no literal Kubernetes Secrets).

The generic "approved registries" check for every pod template and Helm values belongs to the
Kubernetes family; `workload-images-from-registry` here is the narrower ECR rule: training and
serving images must be the ones this stack builds and scans."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from pulumi_policy import Severity

from .common import (
    ADVISORY,
    MANDATORY,
    Refs,
    Stack,
    get,
    peek,
    plain,
    resource_rule,
    schema,
    short,
    stack_rule,
    truthy,
)
from .kubernetes import is_k8s_object

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
HELM_CHART_V4 = "kubernetes:helm.sh/v4:Chart"
HELM_TYPES = (HELM_RELEASE, HELM_CHART_V4)
ECR_REPO = "aws:ecr/repository:Repository"
ECR_LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
ECR_SCANNING = "aws:ecr/registryScanningConfiguration:RegistryScanningConfiguration"
SM_SECRET = "aws:secretsmanager/secret:Secret"
K8S_SECRET = "kubernetes:core/v1:Secret"
WORKLOAD_TYPES = (
    "kubernetes:trainer.kubeflow.org/v1alpha1:ClusterTrainingRuntime",
    "kubernetes:trainer.kubeflow.org/v1alpha1:TrainingRuntime",
    "kubernetes:trainer.kubeflow.org/v1alpha1:TrainJob",
    "kubernetes:serving.kserve.io/v1beta1:InferenceService",
)
"""Kinds whose containers run the images trainyard builds (training and serving)."""
ECR_PRIVATE_HOST = re.compile(r"^\d{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
DEFAULT_ALLOWED_IMAGE_PREFIXES = ["public.ecr.aws/docker/library/"]
"""Docker Official Images on ECR Public: the training-throughput exporter sidecar
(components/data/monitoring/train-metrics-exporter.yaml) runs python from there."""

EXACT_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")

# Versions with known defects on this platform (AWS_FACTS.md):
#  - nvidia-device-plugin 0.19.0-0.19.2 enable MOFED by default and so inject every
#    /dev/infiniband/uverbs* node (the EFA devices) into GPU containers, outside the EFA device
#    plugin's allocation (NVIDIA/k8s-device-plugin#1692, fixed in 0.19.3 by #1837);
#  - aws-efa-k8s-device-plugin: plugin v0.5.10 added p6-b200 (EFAv3) support; chart and plugin
#    versions diverged in 2024, and the oldest chart read that ships that plugin is chart 0.5.20
#    (components/data/charts.yaml). The rule compares chart versions.
DEFAULT_BAD_VERSIONS = {"nvidia-device-plugin": ["0.19.0", "0.19.1", "0.19.2"]}
DEFAULT_MINIMUM_VERSIONS = {"aws-efa-k8s-device-plugin": "0.5.20", "kubeflow-trainer": "2.0.0"}

DEFAULT_REPOSITORIES = [
    "https://aws.github.io/eks-charts",
    "https://nvidia.github.io/k8s-device-plugin",
    "https://nvidia.github.io/dcgm-exporter/helm-charts",
    "https://prometheus-community.github.io/helm-charts",
    "https://helm.ngc.nvidia.com/nvidia",
    "https://kubernetes-sigs.github.io/",
    "oci://ghcr.io/kubeflow/charts",
    "oci://registry.k8s.io/",
    "oci://public.ecr.aws/karpenter",
    "https://grafana.github.io/helm-charts",
    "https://charts.jetstack.io",            # cert-manager (serving)
    "https://hub.jupyter.org/helm-chart/",    # JupyterHub (notebooks)
    "https://kedacore.github.io/charts",     # KEDA (serving)
    "oci://ghcr.io/kserve/charts",           # KServe (serving)
    "https://charts.external-secrets.io",
]


def chart_name(props) -> str:
    chart = str(get(props, "chart", ""))
    return chart.rstrip("/").rsplit("/", 1)[-1]


def chart_repo(props) -> str:
    repo = get(props, "repositoryOpts.repo")
    if repo:
        return str(repo)
    chart = str(get(props, "chart", ""))
    if "://" in chart:
        return chart.rsplit("/", 1)[0]
    return ""


def semver(version: str) -> Optional[tuple[int, int, int]]:
    m = EXACT_SEMVER.match(version.strip())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


@resource_rule(
    name="helm-chart-pinned",
    description="Helm releases pin an exact chart version (no ranges, no `latest`, not unset).",
    family="supply-chain", types=HELM_TYPES, level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(other=("slsa:pinned-dependencies", "openssf-scorecard:Pinned-Dependencies")),
    remediation="Set version='<major>.<minor>.<patch>' on the release; upgrade deliberately.")
def helm_chart_pinned(args, cfg, report):
    version = get(args.props, "version")
    name = chart_name(args.props)
    if not version:
        report(f"chart {name} has no version: Helm would install whatever is newest; pin an "
               "exact version.")
    elif not semver(str(version)):
        report(f"chart {name} version {version!r} is not an exact version: pin X.Y.Z.")


@resource_rule(
    name="helm-known-bad-versions",
    description="Charts with known-bad versions for GPU/EFA nodes are not installed at those "
                "versions (nvidia-device-plugin 0.19.0-0.19.2; EFA device plugin chart >= 0.5.20).",
    family="supply-chain", types=HELM_TYPES, level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("NVIDIA/k8s-device-plugin#1692 (MOFED on by default, 0.19.0-0.19.2)",
                     "aws-efa-k8s-device-plugin p6-b200 support")), gpu=True,
    config=schema(
        badVersions={"type": "object", "default": DEFAULT_BAD_VERSIONS,
                     "additionalProperties": {"type": "array", "items": {"type": "string"}},
                     "description": "Chart name -> exact versions that must not be installed."},
        minimumVersions={"type": "object", "default": DEFAULT_MINIMUM_VERSIONS,
                         "additionalProperties": {"type": "string"},
                         "description": "Chart name -> lowest acceptable version."}),
    remediation="nvidia-device-plugin: use 0.18.x (or >= 0.19.3 once validated); "
                "aws-efa-k8s-device-plugin: chart >= 0.5.20.")
def helm_known_bad_versions(args, cfg, report):
    name = chart_name(args.props)
    version = str(get(args.props, "version", "") or "")
    if not version:
        return
    bad = cfg["badVersions"].get(name) or []
    if version.lstrip("v") in [str(b).lstrip("v") for b in bad]:
        report(f"{name} {version} is a known-bad version on GPU/EFA nodes: pick a version "
               "outside " + ", ".join(bad) + ".")
    minimum = cfg["minimumVersions"].get(name)
    have, need = semver(version), semver(str(minimum)) if minimum else None
    if have and need and have < need:
        report(f"{name} {version} is older than the minimum {minimum} for this platform: "
               f"upgrade to >= {minimum}.")


@resource_rule(
    name="helm-trusted-repositories",
    description="Charts come over HTTPS or OCI from the allowed repositories.",
    family="supply-chain", types=HELM_TYPES, level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(other=("slsa:source-integrity",)),
    config=schema(allowedRepositories={
        "type": "array", "items": {"type": "string"}, "default": DEFAULT_REPOSITORIES,
        "description": "Repository URL prefixes charts may come from."}),
    remediation="Install the chart from an allowed https:// or oci:// repository, or add the "
                "repository to allowedRepositories after review.")
def helm_trusted_repositories(args, cfg, report):
    repo = chart_repo(args.props)
    name = chart_name(args.props)
    if not repo:
        if str(get(args.props, "chart", "")).startswith((".", "/")):
            return  # a chart vendored in this repository
        report(f"chart {name} names no repository: set repository_opts.repo (or an oci:// "
               "chart reference).")
        return
    if not repo.startswith(("https://", "oci://")):
        report(f"chart {name} comes from {repo}: use https:// or oci://.")
        return
    allowed = [str(a) for a in cfg["allowedRepositories"]]
    if not any(repo.rstrip("/").startswith(a.rstrip("/")) for a in allowed):
        report(f"chart {name} comes from {repo}, which is not an allowed repository.")


def _images(value: Any, path: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k == "image" and isinstance(v, str):
                out.append((f"{path}.{k}", v))
            else:
                out += _images(v, f"{path}.{k}")
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for i, v in enumerate(value):
            out += _images(v, f"{path}[{i}]")
    return out


def image_problem(image: str, require_digest: bool) -> Optional[str]:
    if "@sha256:" in image:
        return None
    if require_digest:
        return "is not pinned by digest"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag (means :latest)"
    tag = last.rsplit(":", 1)[-1]
    if tag in ("latest", "main", "master", "nightly", "edge"):
        return f"uses the moving tag :{tag}"
    return None


@resource_rule(
    name="container-image-pinned",
    description="Container images in Kubernetes objects use a fixed tag or digest, never a "
                "moving tag such as :latest.",
    family="supply-chain", types=(), level=ADVISORY, severity=Severity.MEDIUM,
    refs=Refs(other=("openssf-scorecard:Pinned-Dependencies",)),
    config=schema(requireDigest={"type": "boolean", "default": False,
                                 "description": "Require @sha256 digests, not only tags."}),
    remediation="Reference images by version tag (or @sha256 digest), e.g. "
                "repo/image:1.2.3@sha256:...")
def container_image_pinned(args, cfg, report):
    if not is_k8s_object(args.resource_type):
        return
    for where, image in _images(plain(args.props)):
        problem = image_problem(image, bool(cfg["requireDigest"]))
        if problem:
            report(f"image {image} at {where} {problem}: pin a version tag or digest.")


# ----------------------------------------------------------------------------------------------
# ECR: the stack's image repositories
# ----------------------------------------------------------------------------------------------
def _enhanced_filters(stack: Stack) -> list[str]:
    """Repository filters of every ENHANCED registry scanning rule (on push or continuous)."""
    out: list[str] = []
    for r in stack.of(ECR_SCANNING):
        if str(get(r.props, "scanType", "")).upper() != "ENHANCED":
            continue
        for rule in plain(get(r.props, "rules") or []):
            if str(rule.get("scanFrequency", "")).upper() not in ("SCAN_ON_PUSH",
                                                                  "CONTINUOUS_SCAN"):
                continue
            out += [str(f.get("filter", "")) for f in rule.get("repositoryFilters") or []
                    if str(f.get("filterType", "WILDCARD")).upper() == "WILDCARD"]
    return out


def _repo_name(repo) -> str:
    return str(peek(repo, "name") or short(repo.urn))


@stack_rule(
    name="ecr-scan-and-immutable-tags",
    description="ECR repositories make tags immutable and scan every pushed image: scan on push "
                "on the repository, or registry enhanced scanning (Amazon Inspector, on push or "
                "continuous) whose rules cover the repository.",
    family="supply-chain", level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_AWS_163", "CKV_AWS_51"), trivy=("AWS-0030", "AWS-0031"),
              cis=("5.1.1",)),
    remediation="Set image_tag_mutability='IMMUTABLE' and image_scanning_configuration="
                "{'scan_on_push': True}, or an aws.ecr.RegistryScanningConfiguration with "
                "scan_type='ENHANCED' and a rule whose filter matches the repository.")
def ecr_scan_and_immutable_tags(stack, cfg, report):
    filters = _enhanced_filters(stack)
    for repo in stack.of(ECR_REPO):
        name = _repo_name(repo)
        scanned = truthy(get(repo.props, "imageScanningConfiguration.scanOnPush")) or any(
            fnmatch.fnmatchcase(name, f) for f in filters)
        if not scanned:
            report(f"repository {name}: scan on push is off and no enhanced scanning rule covers "
                   "it: set image_scanning_configuration.scan_on_push=True (or add the "
                   "repository to the registry's enhanced scanning rules).", repo.urn)
        mutability = get(repo.props, "imageTagMutability", "MUTABLE")
        if mutability != "IMMUTABLE":
            report(f"repository {name}: image tags are {mutability}: a pushed tag can be "
                   "overwritten with different bits after it was scanned and reviewed; set "
                   "image_tag_mutability='IMMUTABLE'.", repo.urn)


@resource_rule(
    name="ecr-repository-kms",
    description="ECR repositories encrypt images with KMS (a customer managed key, or at least "
                "ECR's AWS managed key), not the default S3-managed AES256.",
    family="supply-chain", types=(ECR_REPO,), level=ADVISORY, severity=Severity.LOW,
    refs=Refs(checkov=("CKV_AWS_136",), trivy=("AWS-0033",)),
    config=schema(requireCustomerKey={
        "type": "boolean", "default": True,
        "description": "Also require a customer managed key (kms_key), not aws/ecr."}),
    remediation="Set encryption_configurations=[{'encryption_type': 'KMS', 'kms_key': "
                "<the stack's key ARN>}] (create-only: changing it replaces the repository).")
def ecr_repository_kms(args, cfg, report):
    configs = plain(get(args.props, "encryptionConfigurations") or [])
    kms = [c for c in configs if str(c.get("encryptionType", "")).upper() == "KMS"]
    if not kms:
        report("images are encrypted with S3-managed AES256: set encryption_type='KMS' with the "
               "stack's key (create-only: plan the replacement).")
    elif cfg["requireCustomerKey"] and not any(c.get("kmsKey") for c in kms):
        report("images use ECR's AWS managed key: name the stack's customer managed key "
               "(kms_key) to control rotation and who may decrypt.")


@stack_rule(
    name="ecr-lifecycle-policy",
    description="Every ECR repository has a lifecycle policy (untagged images expire instead of "
                "piling up, each one billed and scanned).",
    family="supply-chain", level=ADVISORY, severity=Severity.LOW,
    refs=Refs(other=("aws-docs:ecr-lifecycle-policies",)),
    remediation="Add an aws.ecr.LifecyclePolicy for the repository, e.g. expire untagged images "
                "beyond the newest N (components/services/registry.py lifecycle_policy).")
def ecr_lifecycle_policy(stack, cfg, report):
    policies = stack.of(ECR_LIFECYCLE)
    for repo in stack.of(ECR_REPO):
        if not stack.referring(repo, policies, "repository", keys=("name", "id")):
            report(f"repository {_repo_name(repo)} has no lifecycle policy.", repo.urn)


# ----------------------------------------------------------------------------------------------
# Images of training and serving workloads
# ----------------------------------------------------------------------------------------------
def split_image(image: str) -> tuple[str, str]:
    """(registry host, repository path) of an image reference; host "" for Docker Hub names."""
    ref = image.split("@", 1)[0]
    first, _, rest = ref.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        host, path = "", ref
    else:
        host, path = first, rest
    last = path.rsplit("/", 1)
    if ":" in last[-1]:
        path = path[: len(path) - len(last[-1]) + last[-1].index(":")]
    return host, path


def from_stack_registry(image: str, repos: Sequence[tuple[str, Optional[str]]]) -> bool:
    """Whether `image` is in one of the stack's repositories, given as (name, repositoryUrl or
    None when unknown at preview): the URL must match when known, else a private ECR host and
    the repository name."""
    host, path = split_image(image)
    for name, url in repos:
        if url:
            if f"{host}/{path}" == url:
                return True
        elif path == name and ECR_PRIVATE_HOST.match(host):
            return True
    return False


@stack_rule(
    name="workload-images-from-registry",
    description="Containers of training runtimes, TrainJobs and InferenceServices run images "
                "from an ECR repository this stack creates (immutable, scanned) or from an "
                "allowed prefix: the image that was scanned is the image that runs.",
    family="supply-chain", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(other=("slsa:build-provenance", "cis-eks-1.4:5.1.1", "aws-docs:ecr-image-scanning")),
    config=schema(allowedImagePrefixes={
        "type": "array", "items": {"type": "string"}, "default": DEFAULT_ALLOWED_IMAGE_PREFIXES,
        "description": "Image reference prefixes allowed besides the stack's repositories "
                       "(e.g. a shared, scanned registry of your organisation)."}),
    remediation="Build the image from workloads/Dockerfile, push it to the stack's repository "
                "(stack output imageRepositories) and set kubeflow.trainingImage to it; or add "
                "the registry to allowedImagePrefixes after review.")
def workload_images_from_registry(stack, cfg, report):
    repos = [(_repo_name(r), peek(r, "repositoryUrl")) for r in stack.of(ECR_REPO)]
    allowed = [str(a) for a in cfg["allowedImagePrefixes"]]
    for r in stack.of(*WORKLOAD_TYPES):
        for where, image in _images(plain(get(r.props, "spec") or {}), "spec"):
            if from_stack_registry(image, repos) or image.startswith(tuple(allowed)):
                continue
            names = ", ".join(n for n, _ in repos) or "none in this stack"
            report(f"{short(r.urn)}: image {image} at {where} is not from the stack's ECR "
                   f"repositories ({names}) nor an allowed prefix.", r.urn)


# ----------------------------------------------------------------------------------------------
# Secrets
# ----------------------------------------------------------------------------------------------
@resource_rule(
    name="secretsmanager-customer-key",
    description="Secrets Manager secrets are encrypted with a customer managed KMS key, so key "
                "policy and IAM decide who can decrypt them (not only secretsmanager:*).",
    family="supply-chain", types=(SM_SECRET,), level=ADVISORY, severity=Severity.LOW,
    refs=Refs(checkov=("CKV_AWS_149",), trivy=("AWS-0098",)),
    remediation="Set kms_key_id to the stack's key ARN and grant readers kms:Decrypt with "
                "kms:ViaService secretsmanager.<region>.amazonaws.com.")
def secretsmanager_customer_key(args, cfg, report):
    key = get(args.props, "kmsKeyId")
    if not key or str(key).endswith("alias/aws/secretsmanager"):
        report("the secret uses the AWS managed key aws/secretsmanager: set kms_key_id to a "
               "customer managed key.")


@resource_rule(
    name="k8s-secret-from-secret-store",
    description="The stack writes no Kubernetes Secret with literal data: its value would sit in "
                "the Pulumi state and every plan input. Credentials come from AWS Secrets "
                "Manager through an ExternalSecret (External Secrets Operator).",
    family="supply-chain", types=(K8S_SECRET,), level=ADVISORY, severity=Severity.MEDIUM,
    refs=Refs(other=("k8s-docs:secrets-good-practices", "pulumi-docs:secrets-in-state")),
    config=schema(allowedSecrets={
        "type": "array", "items": {"type": "string"}, "default": [],
        "description": "`namespace/name` of Secrets the stack may write (non-sensitive data)."}),
    remediation="Store the value in Secrets Manager under the stack's prefix and create an "
                "ExternalSecret (components/services/secrets.py external_secret) instead.")
def k8s_secret_from_secret_store(args, cfg, report):
    meta = get(args.props, "metadata") or {}
    ident = f"{get(meta, 'namespace', 'default')}/{get(meta, 'name', short(args.urn))}"
    if ident in [str(a) for a in cfg["allowedSecrets"]]:
        return
    if get(args.props, "data") or get(args.props, "stringData"):
        report(f"Secret {ident} carries literal data: it is stored in the Pulumi state; source "
               "it from Secrets Manager with an ExternalSecret.")
