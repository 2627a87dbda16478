"""The instance catalog pins the facts in AWS_FACTS.md (network cards, EFA maximum, GPUs)."""

import pytest

from components.compute.catalog import load_catalog

CATALOG = load_catalog()

# (type, GPUs, network cards, max EFA, GPUDirect RDMA) from the AWS facts table.
FACTS = [
    ("p4d.24xlarge", 8, 4, 4, True),
    ("p4de.24xlarge", 8, 4, 4, True),
    ("p5.48xlarge", 8, 32, 32, True),
    ("p5e.48xlarge", 8, 32, 32, True),  # not 16, whatever one public repo says
    ("p5en.48xlarge", 8, 16, 16, True),
    ("p6-b200.48xlarge", 8, 8, 8, True),
    ("g6e.24xlarge", 4, 2, 2, False),
    ("g6e.48xlarge", 8, 4, 4, False),
    ("trn1.32xlarge", 16, 8, 8, False),
    ("trn1.2xlarge", 1, 1, 0, False),
]


@pytest.mark.parametrize("name,gpus,cards,efa,rdma", FACTS)
def test_efa_facts(name, gpus, cards, efa, rdma):
    t = CATALOG.get(name)
    assert (t.gpus, t.network_cards, t.max_efa, t.gpudirect_rdma) == (gpus, cards, efa, rdma)


@pytest.mark.parametrize("family", ["g5", "g6"])
def test_g_family_efa_only_on_large_sizes(family):
    for size in ("8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge"):
        assert CATALOG.get(f"{family}.{size}").max_efa == 1
    for size in ("xlarge", "2xlarge"):
        assert CATALOG.get(f"{family}.{size}").max_efa == 0


def test_gpu_models_and_peaks():
    assert CATALOG.get("p4d.24xlarge").gpu_model == "A100-40GB"
    assert CATALOG.get("p5.48xlarge").accelerator.bf16_tflops == 989  # dense, not 1979 sparse
    assert CATALOG.get("p5e.48xlarge").accelerator.memory_gib == 141
    assert CATALOG.get("trn1.32xlarge").vendor == "neuron"
    assert CATALOG.get("p5.48xlarge").bf16_tflops_total == 8 * 989


def test_every_entry_is_consistent():
    for t in CATALOG.instances.values():
        assert 0 <= t.max_efa <= t.network_cards, t.name
        assert t.price_per_hour > 0, t.name
        assert (t.accelerator is None) == (t.gpus == 0), t.name
        assert not t.gpudirect_rdma or t.efa, t.name


def test_unknown_type_message():
    with pytest.raises(KeyError, match="'p4x.24xlarge' is not a known instance type"):
        CATALOG.get("p4x.24xlarge")


def test_price_date_recorded():
    assert CATALOG.price_date and CATALOG.reference_region == "us-east-1"
    assert 0 < CATALOG.services["spot_discount_assumption"] < 1
