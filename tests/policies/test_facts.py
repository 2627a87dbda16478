"""policies/facts.py (the pack may not import components/) agrees with the instance catalog."""

from __future__ import annotations

from components.compute.catalog import load_catalog
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
        assert (f.vcpus, f.memory_gib) == (it.vcpus, it.memory_gib), name
        assert f.shape == it.shape, name
    assert facts.PRICE_DATE == cat.price_date
    assert facts.REFERENCE_REGION == cat.reference_region


def test_vendor_of_unknown_types_by_family():
    assert facts.vendor_of("p6e-gb200.36xlarge") == "nvidia"
    assert facts.vendor_of("trn2.48xlarge") == "neuron"
    assert facts.vendor_of("inf2.48xlarge") == "neuron"
    assert facts.vendor_of("m7g.large") is None
    assert facts.vendor_of("c7gn.16xlarge") is None


def test_every_type_has_cpu_and_memory():
    """The schedulability rule derives allocatable CPU and memory from these columns."""
    for name, f in facts.INSTANCES.items():
        assert f.vcpus >= 2 and f.memory_gib >= 4, name
        assert f.memory_gib >= 2 * f.vcpus, name  # every family in the catalog has >= 2 GiB/vCPU


def test_eks_calendar_matches_components():
    """The pack keeps its own copy of the EKS calendar (it may not import components/): both
    must say the same for every version config accepts."""
    from components.compute import eks_versions as ours
    from policies import eks_versions as pack

    assert set(ours.CALENDAR) <= set(pack.CALENDAR)
    for version, v in ours.CALENDAR.items():
        p = pack.CALENDAR[version]
        assert (p.released, p.end_of_standard, p.end_of_extended, p.confirmed) == \
            (v.eks_release, v.end_of_standard, v.end_of_extended, v.confirmed), version


def test_node_label_names_match_components():
    """The pack keeps its own copies (it runs without components/); they must not drift."""
    from components.services import k8s_names as ours
    from policies import common

    for name in ("POOL_LABEL", "EFA_LABEL", "ACCELERATOR_LABEL", "PURPOSE_LABEL"):
        assert getattr(common, name) == getattr(ours, name), name
