"""Instance facts the pack needs, kept inside policies/ (the pack never imports components/).

A copy of the relevant columns of components/data/instances.yaml; tests/policies/test_facts.py
fails when the two disagree, so update both together. Prices are Linux on-demand list prices in
the catalog's reference region on PRICE_DATE (used only by the GPU budget rule).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

PRICE_DATE = "2025-06-01"
REFERENCE_REGION = "us-east-1"


class Instance(NamedTuple):
    gpus: int
    max_efa: int
    network_cards: int
    vendor: Optional[str]
    """`nvidia`, `neuron`, or None for CPU types."""
    accelerator: Optional[str]
    price: float
    """On-demand $/hour in REFERENCE_REGION on PRICE_DATE."""
    vcpus: int
    memory_gib: int
    """EC2's nominal memory; the kubelet sees less (see policies/schedulability.py)."""

    @property
    def shape(self) -> tuple:
        """What every type of one pool must share (one launch template serves them all)."""
        return (self.vendor, self.gpus, self.max_efa)


INSTANCES: dict[str, Instance] = {
    "p4d.24xlarge": Instance(8, 4, 4, "nvidia", "A100-40GB", 21.96, 96, 1152),
    "p4de.24xlarge": Instance(8, 4, 4, "nvidia", "A100-80GB", 27.45, 96, 1152),
    "p5.48xlarge": Instance(8, 32, 32, "nvidia", "H100-80GB", 55.04, 192, 2048),
    "p5e.48xlarge": Instance(8, 32, 32, "nvidia", "H200-141GB", 63.30, 192, 2048),
    "p5en.48xlarge": Instance(8, 16, 16, "nvidia", "H200-141GB", 63.30, 192, 2048),
    "p6-b200.48xlarge": Instance(8, 8, 8, "nvidia", "B200-180GB", 113.93, 192, 2048),
    "g5.xlarge": Instance(1, 0, 1, "nvidia", "A10G-24GB", 1.006, 4, 16),
    "g5.2xlarge": Instance(1, 0, 1, "nvidia", "A10G-24GB", 1.212, 8, 32),
    "g5.8xlarge": Instance(1, 1, 1, "nvidia", "A10G-24GB", 2.448, 32, 128),
    "g5.12xlarge": Instance(4, 1, 1, "nvidia", "A10G-24GB", 5.672, 48, 192),
    "g5.16xlarge": Instance(1, 1, 1, "nvidia", "A10G-24GB", 4.096, 64, 256),
    "g5.24xlarge": Instance(4, 1, 1, "nvidia", "A10G-24GB", 8.144, 96, 384),
    "g5.48xlarge": Instance(8, 1, 1, "nvidia", "A10G-24GB", 16.288, 192, 768),
    "g6.xlarge": Instance(1, 0, 1, "nvidia", "L4-24GB", 0.8048, 4, 16),
    "g6.2xlarge": Instance(1, 0, 1, "nvidia", "L4-24GB", 0.9776, 8, 32),
    "g6.8xlarge": Instance(1, 1, 1, "nvidia", "L4-24GB", 2.0144, 32, 128),
    "g6.12xlarge": Instance(4, 1, 1, "nvidia", "L4-24GB", 4.6016, 48, 192),
    "g6.16xlarge": Instance(1, 1, 1, "nvidia", "L4-24GB", 3.3968, 64, 256),
    "g6.24xlarge": Instance(4, 1, 1, "nvidia", "L4-24GB", 6.6752, 96, 384),
    "g6.48xlarge": Instance(8, 1, 1, "nvidia", "L4-24GB", 13.3504, 192, 768),
    "g6e.24xlarge": Instance(4, 2, 2, "nvidia", "L40S-48GB", 15.0656, 96, 768),
    "g6e.48xlarge": Instance(8, 4, 4, "nvidia", "L40S-48GB", 30.1310, 192, 1536),
    "trn1.2xlarge": Instance(1, 0, 1, "neuron", "Trainium1-32GB", 1.3438, 8, 32),
    "trn1.32xlarge": Instance(16, 8, 8, "neuron", "Trainium1-32GB", 21.50, 128, 512),
    "m6i.large": Instance(0, 0, 1, None, None, 0.096, 2, 8),
    "m6i.xlarge": Instance(0, 0, 1, None, None, 0.192, 4, 16),
    "m6i.2xlarge": Instance(0, 0, 1, None, None, 0.384, 8, 32),
    "m7i.xlarge": Instance(0, 0, 1, None, None, 0.2016, 4, 16),
    "m7i.2xlarge": Instance(0, 0, 1, None, None, 0.4032, 8, 32),
    "c6i.2xlarge": Instance(0, 0, 1, None, None, 0.34, 8, 16),
}

# Accelerated families by prefix, for types missing from the table (a node group of an unknown
# `p6e` type is still a GPU pool and must be tainted).
ACCELERATED_PREFIXES = {"p": "nvidia", "g": "nvidia", "trn": "neuron", "inf": "neuron"}

# EKS AMI types and the accelerator vendor they carry drivers for (None: CPU-only AMI).
AMI_VENDOR = {
    "AL2023_x86_64_NVIDIA": "nvidia",
    "AL2023_ARM_64_NVIDIA": "nvidia",
    "BOTTLEROCKET_x86_64_NVIDIA": "nvidia",
    "BOTTLEROCKET_ARM_64_NVIDIA": "nvidia",
    "AL2023_x86_64_NEURON": "neuron",
    "AL2_x86_64_GPU": "nvidia",
    "AL2023_x86_64_STANDARD": None,
    "AL2023_ARM_64_STANDARD": None,
    "BOTTLEROCKET_x86_64": None,
    "BOTTLEROCKET_ARM_64": None,
    "AL2_x86_64": None,
    "AL2_ARM_64": None,
}

# Taint key each accelerator vendor's device plugin tolerates.
GPU_TAINT_KEY = {"nvidia": "nvidia.com/gpu", "neuron": "aws.amazon.com/neuron"}


def family(instance_type: str) -> str:
    return instance_type.split(".", 1)[0]


def lookup(instance_type: str) -> Optional[Instance]:
    return INSTANCES.get(instance_type)


def vendor_of(instance_type: str) -> Optional[str]:
    """Accelerator vendor of a type, from the table or (unknown types) its family prefix."""
    known = INSTANCES.get(instance_type)
    if known is not None:
        return known.vendor
    fam = family(instance_type)
    for prefix in sorted(ACCELERATED_PREFIXES, key=len, reverse=True):
        if fam.startswith(prefix) and fam[len(prefix):len(prefix) + 1].isdigit():
            return ACCELERATED_PREFIXES[prefix]
    return None
