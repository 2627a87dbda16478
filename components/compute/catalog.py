"""Instance catalog: typed, read-only access to components/data/instances.yaml.

Pure functions only; everything that needs to know what an instance type *is* (planning, config
validation, NIC layout, cost, mocks, job rendering) asks here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

CATALOG_PATH = Path(__file__).resolve().parents[1] / "data" / "instances.yaml"


@dataclass(frozen=True)
class Accelerator:
    model: str
    vendor: str
    """`nvidia` or `neuron`: decides the AMI type and device plugin."""
    memory_gib: int
    bf16_tflops: float
    """Dense BF16 peak per accelerator (never the sparsity figure)."""


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: int
    network_cards: int
    max_efa: int
    """EFA interfaces the type supports: one per network card at most; 0 means no EFA."""
    price_per_hour: float
    """On-demand Linux list price in the catalog's reference region."""
    accelerator: Optional[Accelerator] = None
    gpus: int = 0
    gpudirect_rdma: bool = False
    nvme_count: int = 0
    nvme_size_gb: int = 0

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def efa(self) -> bool:
        return self.max_efa > 0

    @property
    def is_accelerated(self) -> bool:
        return self.gpus > 0

    @property
    def vendor(self) -> Optional[str]:
        return self.accelerator.vendor if self.accelerator else None

    @property
    def gpu_model(self) -> Optional[str]:
        return self.accelerator.model if self.accelerator else None

    @property
    def bf16_tflops_total(self) -> float:
        return self.gpus * self.accelerator.bf16_tflops if self.accelerator else 0.0

    @property
    def shape(self) -> tuple:
        """What must match across the instance types of one diversified pool: same accelerator
        vendor, same accelerator count, and the same EFA interface count (one launch template
        serves every type in the pool)."""
        return (self.vendor, self.gpus, self.max_efa)


@dataclass(frozen=True)
class Catalog:
    reference_region: str
    price_date: str
    instances: dict[str, InstanceType]
    services: dict[str, float]

    def get(self, name: str) -> InstanceType:
        try:
            return self.instances[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a known instance type") from None

    def knows(self, name: str) -> bool:
        return name in self.instances

    def names(self) -> list[str]:
        return sorted(self.instances)


def parse_catalog(raw: dict) -> Catalog:
    gpus = {
        model: Accelerator(model, g["vendor"], int(g["memory_gib"]), float(g["bf16_tflops"]))
        for model, g in raw["gpus"].items()
    }
    instances = {}
    for name, spec in raw["instances"].items():
        nvme = spec.get("nvme") or {}
        instances[name] = InstanceType(
            name=name,
            vcpus=int(spec["vcpus"]),
            memory_gib=int(spec["memory_gib"]),
            network_cards=int(spec["network_cards"]),
            max_efa=int(spec["max_efa"]),
            price_per_hour=float(spec["price"]),
            accelerator=gpus[spec["gpu"]] if "gpu" in spec else None,
            gpus=int(spec.get("gpus", 0)),
            gpudirect_rdma=bool(spec.get("gpudirect_rdma", False)),
            nvme_count=int(nvme.get("count", 0)),
            nvme_size_gb=int(nvme.get("size_gb", 0)),
        )
    return Catalog(
        reference_region=raw["reference_region"],
        price_date=str(raw["price_date"]),
        instances=instances,
        services={k: float(v) for k, v in raw["services"].items()},
    )


@functools.lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    with CATALOG_PATH.open() as f:
        return parse_catalog(yaml.safe_load(f))
