"""Supply-chain rules: Helm charts pinned to exact versions from trusted repositories, known-bad
chart versions rejected, container images pinned, ECR repositories scanned and immutable."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from pulumi_policy import Severity

from .common import (
    ADVISORY,
    MANDATORY,
    Refs,
    get,
    plain,
    resource_rule,
    schema,
    truthy,
)
from .kubernetes import is_k8s_object

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
HELM_CHART_V4 = "kubernetes:helm.sh/v4:Chart"
HELM_TYPES = (HELM_RELEASE, HELM_CHART_V4)
ECR_REPO = "aws:ecr/repository:Repository"

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


@resource_rule(
    name="ecr-scan-and-immutable-tags",
    description="ECR repositories scan images on push and make tags immutable.",
    family="supply-chain", types=(ECR_REPO,), level=MANDATORY, severity=Severity.MEDIUM,
    refs=Refs(checkov=("CKV_AWS_163", "CKV_AWS_51"), trivy=("AWS-0030", "AWS-0031"),
              cis=("5.1.1",)),
    remediation="Set image_scanning_configuration={'scan_on_push': True} and "
                "image_tag_mutability='IMMUTABLE'.")
def ecr_scan_and_immutable_tags(args, cfg, report):
    if not truthy(get(args.props, "imageScanningConfiguration.scanOnPush")):
        report("scan on push is off: set image_scanning_configuration.scan_on_push=True.")
    if get(args.props, "imageTagMutability", "MUTABLE") != "IMMUTABLE":
        report("image tags are mutable: set image_tag_mutability='IMMUTABLE'.")
