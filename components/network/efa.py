"""EFA network-interface layout of a GPU pool's launch template. Pure functions.

One EFA interface per network card at most, up to the instance type's EFA maximum (catalog
`max_efa`). The primary interface is always network card 0 / device index 0 and can never be
`efa-only` (it carries the node's IP address and the pods' secondary addresses).

`current` (AWS's present guidance, the default)::

    card 0, device 0   efa        primary: ENA + EFA, the only IP-bearing interface
    card n, device 0   efa-only   n = 1 .. max_efa-1: no IP address, no ENA routing

`legacy` (eksctl / aws-do-eks)::

    card 0, device 0   efa        primary
    card n, device 1   efa        every interface gets an IP (32 more addresses per p5 node)

`efa-only` needs VPC CNI >= 1.18.5 (components/data/addons.yaml pins a newer one). Changing the
layout of a pool replaces its nodes: EFA interfaces cannot be hot-attached.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from components.compute.catalog import InstanceType

LAYOUTS = ("current", "legacy")
INTERFACE_TYPES = ("interface", "efa", "efa-only")


@dataclass(frozen=True)
class Nic:
    network_card_index: int
    device_index: int
    interface_type: str
    """`efa` (EFA with ENA), `efa-only`, or `interface` (plain ENA)."""

    @property
    def primary(self) -> bool:
        return self.network_card_index == 0 and self.device_index == 0

    @property
    def carries_ip(self) -> bool:
        return self.interface_type != "efa-only"

    @property
    def is_efa(self) -> bool:
        return self.interface_type in ("efa", "efa-only")


def efa_interfaces(spec: InstanceType, layout: str = "current") -> tuple[Nic, ...]:
    """Every EFA interface `spec` supports, laid out per `layout` (see module docstring).

    Raises ValueError for a type without EFA or an unknown layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown EFA layout {layout!r} (one of {', '.join(LAYOUTS)})")
    if not spec.efa:
        raise ValueError(f"{spec.name} has no EFA support")
    count = min(spec.max_efa, spec.network_cards)
    nics = [Nic(0, 0, "efa")]
    for card in range(1, count):
        nics.append(Nic(card, 0, "efa-only") if layout == "current" else Nic(card, 1, "efa"))
    return tuple(nics)


def pool_interfaces(specs: Iterable[InstanceType], efa: bool,
                    layout: str = "current") -> tuple[Nic, ...]:
    """The launch-template interfaces of a pool: none unless `efa`. Every type of the pool must
    give the same layout, because one launch template serves them all."""
    specs = list(specs)
    if not efa or not specs:
        return ()
    layouts = {efa_interfaces(s, layout) for s in specs}
    if len(layouts) != 1:
        names = ", ".join(s.name for s in specs)
        raise ValueError(f"instance types {names} need different EFA layouts; one launch "
                         "template cannot serve them")
    return layouts.pop()


def ip_bearing(nics: Iterable[Nic]) -> int:
    """Interfaces that take a private IP address (at least the primary one)."""
    return max(1, sum(1 for n in nics if n.carries_ip))
