"""Subnet carving and IP budgeting for many-NIC GPU nodes. Pure functions.

Layout of the VPC (a /16 with 3 AZs shown):

    10.0.0.0/18    private us-east-1a   16,379 usable
    10.0.64.0/18   private us-east-1b
    10.0.128.0/18  private us-east-1c
    10.0.192.0/24  public  us-east-1a   NAT gateways and load balancers only
    10.0.193.0/24  public  us-east-1b
    10.0.194.0/24  public  us-east-1c

Why private subnets are this large: with the VPC CNI every pod takes a VPC address, and the
CNI keeps warm addresses per node. A GPU node can host up to MAX_PODS_PER_NODE pods, so a pool
of 16 p4d nodes can hold ~1,900 addresses in one AZ. EFA pools also sit in ONE AZ, so the whole
pool's demand lands on one subnet. With the `current` EFA layout the extra interfaces are
`efa-only` and take no IP address; the `legacy` layout gives every EFA interface an address
(32 more per p5 node).

Per node (upper bound):  1 primary address
                       + 1 per extra IP-bearing interface (legacy EFA layout)
                       + MAX_PODS_PER_NODE pod addresses
                       + WARM_IP_TARGET warm addresses the CNI holds in reserve
Per AZ:  every pool that may use the AZ at its max size (worst case: the other AZs are down)
       + the system node group at its max size, + one address per interface endpoint
       + EFS / FSx network interfaces (RESERVED_SERVICE_IPS).
AWS reserves 5 addresses in every subnet.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Optional, Protocol

MAX_PODS_PER_NODE = 110
"""Kubelet's default max pods, which nodeadm keeps for our GPU nodes."""
WARM_IP_TARGET = 5
"""Set on the vpc-cni add-on so nodes don't pre-allocate a whole ENI's worth of addresses."""
AWS_RESERVED_PER_SUBNET = 5
RESERVED_SERVICE_IPS = 16
"""EFS mount targets, FSx ENIs, load-balancer nodes and headroom."""


# What the IP budget reads from the config and the catalog, as structural types: this module
# imports nothing of components/ (components/config/__init__.py imports it to validate a stack).
class PoolLike(Protocol):
    """A GPU pool (components.config.GpuPoolConfig)."""

    @property
    def availability_zones(self) -> Sequence[str]: ...
    @property
    def instance_types(self) -> Sequence[str]: ...
    @property
    def max_size(self) -> int: ...
    @property
    def efa(self) -> bool: ...
    @property
    def efa_layout(self) -> str: ...


class SystemNodesLike(Protocol):
    """The system node group (components.config.SystemNodesConfig)."""

    @property
    def max_size(self) -> int: ...


class NetworkLike(Protocol):
    """The network section (components.config.NetworkConfig)."""

    @property
    def interface_endpoints(self) -> Sequence[str]: ...


class InstanceLike(Protocol):
    @property
    def max_efa(self) -> int: ...


class CatalogLike(Protocol):
    """The instance catalog (components.compute.catalog.Catalog)."""

    def knows(self, name: str) -> bool: ...
    def get(self, name: str) -> InstanceLike: ...


@dataclass(frozen=True)
class SubnetPlan:
    private: dict[str, str]
    """AZ -> private subnet CIDR (nodes and pods)."""
    public: dict[str, str]
    """AZ -> public subnet CIDR (NAT gateways and load balancers)."""


def default_private_prefix(vpc_prefix: int, n_azs: int) -> int:
    """The largest equal private blocks that still leave one block free for public subnets."""
    return vpc_prefix + math.ceil(math.log2(n_azs + 1))


def carve_subnets(vpc_cidr: str, azs: Sequence[str], private_prefix: Optional[int] = None,
                  public_prefix: int = 24) -> SubnetPlan:
    """Split `vpc_cidr` into one private and one public subnet per AZ (see module docstring).

    Raises ValueError when the blocks don't fit."""
    vpc = ipaddress.ip_network(vpc_cidr, strict=True)
    if not azs:
        raise ValueError("no availability zones given")
    if private_prefix is None:
        private_prefix = default_private_prefix(vpc.prefixlen, len(azs))
    if private_prefix < vpc.prefixlen:
        raise ValueError(f"private subnet prefix /{private_prefix} is larger than the VPC")
    if public_prefix < vpc.prefixlen:
        raise ValueError(f"public subnet prefix /{public_prefix} is larger than the VPC")
    if private_prefix > 28 or public_prefix > 28:
        raise ValueError("subnets smaller than /28 are not allowed by AWS")

    start = int(vpc.network_address)
    end = int(vpc.broadcast_address) + 1
    priv_size = 2 ** (32 - private_prefix)
    pub_size = 2 ** (32 - public_prefix)

    cursor = start
    private = {}
    for az in azs:
        private[az] = str(ipaddress.ip_network((cursor, private_prefix)))
        cursor += priv_size
    cursor = -(-cursor // pub_size) * pub_size  # align up
    public = {}
    for az in azs:
        public[az] = str(ipaddress.ip_network((cursor, public_prefix)))
        cursor += pub_size
    if cursor > end:
        raise ValueError(
            f"{len(azs)} private /{private_prefix} and {len(azs)} public /{public_prefix} "
            f"subnets need {cursor - start} addresses, the VPC has {end - start}")
    return SubnetPlan(private=private, public=public)


def usable_addresses(cidr: str) -> int:
    return ipaddress.ip_network(cidr).num_addresses - AWS_RESERVED_PER_SUBNET


def ips_per_node(ip_interfaces: int = 1) -> int:
    """Addresses one node may hold; `ip_interfaces` counts interfaces that carry an address."""
    return ip_interfaces + MAX_PODS_PER_NODE + WARM_IP_TARGET


def ip_bearing_interfaces(max_efa: int, efa: bool, layout: str) -> int:
    """Interfaces with a private IP: the primary always; with the legacy layout every EFA one."""
    if not efa or max_efa <= 1 or layout == "current":
        return 1
    return max_efa


def ips_needed_in_az(az: str, pools: Iterable[PoolLike], system: SystemNodesLike,
                     network: NetworkLike, catalog: CatalogLike) -> int:
    need = system.max_size * ips_per_node() + len(network.interface_endpoints) + \
        RESERVED_SERVICE_IPS
    for p in pools:
        if az not in p.availability_zones or not p.instance_types:
            continue
        worst = max((catalog.get(t).max_efa for t in p.instance_types if catalog.knows(t)),
                    default=0)
        need += p.max_size * ips_per_node(ip_bearing_interfaces(worst, p.efa, p.efa_layout))
    return need
