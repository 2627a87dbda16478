"""policies/facts.py (the pack may not import components/) agrees with the instance catalog."""

from __future__ import annotations

from components.catalog import load_catalog
from policies import facts


def test_facts_table_matches_catalog():
    cat = load_catalog()
    assert set(facts.INSTANCES) == set(cat.instances)
    for name, f in facts.INSTANCES.items():
        it = cat.get(name)
        assert (f.gpus, f.max_efa, f.network_cards) == (it.gpus, it.max_efa, it.network_cards), name
        assert f.vendor == it.vendor, name
        assert f.accelerator == it.gpu_model, name
        assert abs(f.price - it.price_per_hour) < 1e-9, name
        assert f.shape == it.shape, name
    assert facts.PRICE_DATE == cat.price_date
    assert facts.REFERENCE_REGION == cat.reference_region


def test_vendor_of_unknown_types_by_family():
    assert facts.vendor_of("p6e-gb200.36xlarge") == "nvidia"
    assert facts.vendor_of("trn2.48xlarge") == "neuron"
    assert facts.vendor_of("inf2.48xlarge") == "neuron"
    assert facts.vendor_of("m7g.large") is None
    assert facts.vendor_of("c7gn.16xlarge") is None
