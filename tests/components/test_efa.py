"""EFA NIC layout: pinned against AWS_FACTS for every catalog type, property-tested, and checked
in the committed stacks' launch templates."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.compute.catalog import InstanceType, load_catalog
from components.network import netmath
from components.network.efa import LAYOUTS, Nic, efa_interfaces, ip_bearing, pool_interfaces
from tests.conftest import by_id, resources

CATALOG = load_catalog()
LT = "aws:ec2/launchTemplate:LaunchTemplate"
NG = "aws:eks/nodeGroup:NodeGroup"

# AWS_FACTS "Network cards and EFA per instance type": EFA interfaces per type (0 = no EFA).
FACTS_MAX_EFA = {
    "p4d.24xlarge": 4, "p4de.24xlarge": 4, "p5.48xlarge": 32, "p5e.48xlarge": 32,
    "p5en.48xlarge": 16, "p6-b200.48xlarge": 8,
    "g5.xlarge": 0, "g5.2xlarge": 0, "g5.8xlarge": 1, "g5.12xlarge": 1, "g5.16xlarge": 1,
    "g5.24xlarge": 1, "g5.48xlarge": 1,
    "g6.xlarge": 0, "g6.2xlarge": 0, "g6.8xlarge": 1, "g6.12xlarge": 1, "g6.16xlarge": 1,
    "g6.24xlarge": 1, "g6.48xlarge": 1,
    "g6e.24xlarge": 2, "g6e.48xlarge": 4, "trn1.2xlarge": 0, "trn1.32xlarge": 8,
}
EFA_TYPES = [n for n in CATALOG.names() if CATALOG.get(n).efa]


def test_catalog_matches_facts():
    for name, want in FACTS_MAX_EFA.items():
        assert CATALOG.get(name).max_efa == want, name


@pytest.mark.parametrize("name", EFA_TYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_efa_type(name, layout):
    spec = CATALOG.get(name)
    nics = efa_interfaces(spec, layout)
    assert len(nics) == spec.max_efa == FACTS_MAX_EFA.get(name, spec.max_efa)
    assert [n.network_card_index for n in nics] == list(range(spec.max_efa))  # one per card
    assert nics[0] == Nic(0, 0, "efa")  # primary: card 0 / device 0, EFA with ENA
    for nic in nics[1:]:
        if layout == "current":
            assert (nic.device_index, nic.interface_type) == (0, "efa-only")
        else:
            assert (nic.device_index, nic.interface_type) == (1, "efa")


@pytest.mark.parametrize("name", [n for n in CATALOG.names() if not CATALOG.get(n).efa])
def test_types_without_efa_have_no_layout(name):
    with pytest.raises(ValueError, match="no EFA"):
        efa_interfaces(CATALOG.get(name))
    assert pool_interfaces([CATALOG.get(name)], efa=False) == ()


def test_unknown_layout_rejected():
    with pytest.raises(ValueError, match="unknown EFA layout"):
        efa_interfaces(CATALOG.get("p4d.24xlarge"), "all-efa")


def test_pool_layout_needs_one_shape():
    same = [CATALOG.get("g5.48xlarge"), CATALOG.get("g6.48xlarge")]
    assert len(pool_interfaces(same, efa=True)) == 1
    with pytest.raises(ValueError, match="different EFA layouts"):
        pool_interfaces([CATALOG.get("p4d.24xlarge"), CATALOG.get("p5.48xlarge")], efa=True)
    assert pool_interfaces(same, efa=False) == ()


@pytest.mark.parametrize("name", EFA_TYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_ip_budget_agrees_with_netmath(name, layout):
    """netmath sizes subnets from the same rule: `current` takes one address per node."""
    spec = CATALOG.get(name)
    assert ip_bearing(efa_interfaces(spec, layout)) == \
        netmath.ip_bearing_interfaces(spec.max_efa, True, layout)


# -- properties over synthetic instance types ----------------------------------------------
@st.composite
def efa_instance(draw):
    cards = draw(st.integers(1, 64))
    return InstanceType(name="x.test", vcpus=8, memory_gib=32, network_cards=cards,
                        max_efa=draw(st.integers(1, cards)), price_per_hour=1.0)


@given(efa_instance(), st.sampled_from(LAYOUTS))
def test_layout_properties(spec, layout):
    nics = efa_interfaces(spec, layout)
    pairs = [(n.network_card_index, n.device_index) for n in nics]
    assert len(set(pairs)) == len(pairs)  # no duplicate card/device pair
    assert len({n.network_card_index for n in nics}) == len(nics)  # at most one per card
    assert len(nics) == spec.max_efa  # count = the EFA maximum
    assert all(0 <= n.network_card_index < spec.network_cards for n in nics)
    primaries = [n for n in nics if n.primary]
    assert len(primaries) == 1 and primaries[0].interface_type != "efa-only"
    assert all(n.is_efa for n in nics)
    assert ip_bearing(nics) == (1 if layout == "current" else spec.max_efa)


# -- the committed stacks ---------------------------------------------------------------------
def _pool_lts(plan):
    ids = by_id(plan)
    out = {}
    for ng in resources(plan, NG):
        pool = ng["inputs"]["labels"]["trainyard.io/pool"]
        out[pool] = (ng, ids[ng["inputs"]["launchTemplate"]["id"]])
    return out


def _nic_summary(lt):
    return [(n["networkCardIndex"], n["deviceIndex"], n["interfaceType"])
            for n in lt["inputs"].get("networkInterfaces") or []]


def test_prod_nic_counts(managed_plan_for):
    lts = _pool_lts(managed_plan_for("prod"))  # Karpenter's layout: tests/components/test_karpenter.py
    assert _nic_summary(lts["a100"][1]) == [(0, 0, "efa")] + [(c, 0, "efa-only") for c in (1, 2, 3)]
    assert len(_nic_summary(lts["h100"][1])) == 32
    assert sorted(c for c, _, _ in _nic_summary(lts["h100"][1])) == list(range(32))
    assert _nic_summary(lts["g-spot"][1]) == [(0, 0, "efa")]
    assert _nic_summary(lts["eval-spot"][1]) == []
    assert _nic_summary(lts["system"][1]) == []


def test_staging_spot_efa_pool(managed_plan_for):
    lts = _pool_lts(managed_plan_for("staging"))
    assert len(_nic_summary(lts["a100-spot"][1])) == 4


def test_efa_pools_security_groups_and_subnet(any_plan):
    """EFA interfaces carry the cluster SG and the EFA SG; no subnet in any launch template; an
    EFA pool's node group gets exactly the private subnet of its one AZ."""
    efa_sg = any_plan["outputs"]["efaSecurityGroupId"]
    cluster = resources(any_plan, "aws:eks/cluster:Cluster")[0]
    cluster_sg = cluster["outputs"]["vpcConfig"]["clusterSecurityGroupId"]
    subnets = any_plan["outputs"]["privateSubnetIds"]
    pools = any_plan["outputs"]["gpuPools"]
    for pool, (ng, lt) in _pool_lts(any_plan).items():
        i = lt["inputs"]
        assert "subnetId" not in str(i)
        nics = i.get("networkInterfaces") or []
        if pool != "system" and pools[pool]["efa"]:
            assert nics and not i.get("vpcSecurityGroupIds")
            for nic in nics:
                assert nic["securityGroups"] == [cluster_sg, efa_sg]
            (az,) = pools[pool]["availabilityZones"]
            assert ng["inputs"]["subnetIds"] == [subnets[az]]
        else:
            assert not nics and i["vpcSecurityGroupIds"] == [cluster_sg]
