"""Launch-template user data for GPU nodes. Pure functions.

Managed node groups with an `amiType` (no custom AMI) merge our user data with their own
bootstrap, so we only say what differs from EKS's defaults:

- AL2023 (nodeadm): a MIME multipart document with one `application/node.eks.aws` part holding
  a NodeConfig. Instances with local NVMe get `spec.instance.localStorage.strategy: RAID0`, which
  stripes the instance-store disks and mounts them under containerd/kubelet (p4d: 8 x 1 TB).
- Bottlerocket: TOML settings. Local NVMe is striped by `apiclient ephemeral-storage` in a
  bootstrap command and bound to the containerd/kubelet/pod-log directories.

Nothing secret ever goes here (it is readable from the instance metadata service).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Optional

from components.compute.catalog import InstanceType

MIME_BOUNDARY = "==TRAINYARD=="
NODEADM_API = "node.eks.aws/v1alpha1"
EPHEMERAL_DIRS = ("/var/lib/containerd", "/var/lib/kubelet", "/var/log/pods")


def has_local_nvme(specs: Iterable[InstanceType]) -> bool:
    """RAID0 only when every type of the pool has instance-store NVMe."""
    specs = list(specs)
    return bool(specs) and all(s.nvme_count > 0 for s in specs)


def is_bottlerocket(ami_type: str) -> bool:
    return ami_type.startswith("BOTTLEROCKET")


def nodeadm_config(local_nvme: bool) -> Optional[str]:
    """A NodeConfig YAML document, or None when EKS's defaults need no change."""
    if not local_nvme:
        return None
    return (f"apiVersion: {NODEADM_API}\n"
            "kind: NodeConfig\n"
            "spec:\n"
            "  instance:\n"
            "    localStorage:\n"
            "      strategy: RAID0\n")


def al2023_user_data(local_nvme: bool) -> Optional[str]:
    config = nodeadm_config(local_nvme)
    if config is None:
        return None
    return ("MIME-Version: 1.0\n"
            f'Content-Type: multipart/mixed; boundary="{MIME_BOUNDARY}"\n'
            "\n"
            f"--{MIME_BOUNDARY}\n"
            "Content-Type: application/node.eks.aws\n"
            "\n"
            "---\n"
            f"{config}"
            "\n"
            f"--{MIME_BOUNDARY}--\n")


def bottlerocket_user_data(local_nvme: bool) -> Optional[str]:
    if not local_nvme:
        return None
    dirs = ", ".join(f'"{d}"' for d in EPHEMERAL_DIRS)
    return ("[settings.bootstrap-commands.k8s-ephemeral-storage]\n"
            "commands = [\n"
            '  ["apiclient", "ephemeral-storage", "init"],\n'
            f'  ["apiclient", "ephemeral-storage", "bind", "--dirs", {dirs}],\n'
            "]\n"
            'mode = "always"\n'
            "essential = true\n")


def user_data(ami_type: str, specs: Iterable[InstanceType]) -> Optional[str]:
    """Plain-text user data for a pool's launch template, or None."""
    nvme = has_local_nvme(specs)
    return bottlerocket_user_data(nvme) if is_bottlerocket(ami_type) else al2023_user_data(nvme)


def encoded_user_data(ami_type: str, specs: Iterable[InstanceType]) -> Optional[str]:
    """`user_data` base64-encoded, as launch templates take it."""
    text = user_data(ami_type, specs)
    return base64.b64encode(text.encode()).decode() if text is not None else None
