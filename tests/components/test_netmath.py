"""Subnet carving: no overlaps, inside the VPC, enough addresses (property-based)."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.network import netmath


def test_default_layout_for_a_16_with_three_azs():
    plan = netmath.carve_subnets("10.0.0.0/16", ["a", "b", "c"])
    assert plan.private == {"a": "10.0.0.0/18", "b": "10.0.64.0/18", "c": "10.0.128.0/18"}
    assert plan.public == {"a": "10.0.192.0/24", "b": "10.0.193.0/24", "c": "10.0.194.0/24"}
    assert netmath.usable_addresses(plan.private["a"]) == 16379


def test_too_small_vpc_is_rejected():
    with pytest.raises(ValueError, match="need"):
        netmath.carve_subnets("10.0.0.0/24", ["a", "b"], private_prefix=25)


@settings(max_examples=200, deadline=None)
@given(prefix=st.integers(min_value=16, max_value=22), n=st.integers(min_value=1, max_value=6),
       base=st.integers(min_value=0, max_value=255), pub=st.integers(min_value=24, max_value=28))
def test_carving_properties(prefix, n, base, pub):
    vpc = ipaddress.ip_network(f"10.{base}.0.0/{prefix}", strict=False)
    azs = [f"az{i}" for i in range(n)]
    try:
        plan = netmath.carve_subnets(str(vpc), azs, public_prefix=pub)
    except ValueError:
        # Only acceptable when the blocks genuinely do not fit.
        priv = netmath.default_private_prefix(vpc.prefixlen, n)
        need = n * 2 ** (32 - priv) + n * 2 ** (32 - pub)
        assert priv > 28 or need > vpc.num_addresses
        return
    nets = [ipaddress.ip_network(c) for c in [*plan.private.values(), *plan.public.values()]]
    assert len(nets) == 2 * n
    for net in nets:
        assert net.subnet_of(vpc)
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            assert not a.overlaps(b)
    # private subnets are all the same size and at least as large as public ones
    sizes = {ipaddress.ip_network(c).num_addresses for c in plan.private.values()}
    assert len(sizes) == 1 and sizes.pop() >= 2 ** (32 - pub) or pub < plan_prefix(plan)


def plan_prefix(plan):
    return ipaddress.ip_network(next(iter(plan.private.values()))).prefixlen


def test_ip_budget_per_node():
    # current layout: efa-only interfaces carry no address
    assert netmath.ip_bearing_interfaces(32, True, "current") == 1
    # legacy layout: every EFA interface takes an address
    assert netmath.ip_bearing_interfaces(32, True, "legacy") == 32
    assert netmath.ips_per_node(1) == 1 + netmath.MAX_PODS_PER_NODE + netmath.WARM_IP_TARGET
