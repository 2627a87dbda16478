"""preflight against moto's copy of the EC2 API (DescribeInstanceTypes data as AWS publishes it)."""

import boto3
import pytest
from moto import mock_aws

from components.compute.catalog import load_catalog
from trainyard.preflight import (
    addon_findings,
    compare_instance,
    run_checks,
    vcpu_demand,
    version_findings,
)
from trainyard.synth import load_config

CATALOG = load_catalog()


@pytest.fixture
def session(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        yield boto3.Session(region_name="us-east-1")


def test_catalog_agrees_with_ec2_data(session):
    """Every catalog type moto knows agrees on vCPUs, cards, EFA and accelerator count."""
    ec2 = session.client("ec2")
    names = CATALOG.names()
    known = {}
    for i in range(0, len(names), 100):
        try:
            items = ec2.describe_instance_types(InstanceTypes=names[i:i + 100])["InstanceTypes"]
        except Exception:  # moto may not know the newest types: query one by one
            items = []
            for n in names[i:i + 100]:
                try:
                    items += ec2.describe_instance_types(InstanceTypes=[n])["InstanceTypes"]
                except Exception:
                    pass
        known.update({t["InstanceType"]: t for t in items})
    assert {"p4d.24xlarge", "p5.48xlarge", "g5.48xlarge"} <= set(known)
    bad = [f for n, item in known.items() for f in compare_instance(CATALOG.get(n), item) if not f.ok]
    assert not bad, [f.subject + ": " + f.detail for f in bad]


def test_compare_flags_a_wrong_fact():
    live = {"VCpuInfo": {"DefaultVCpus": 96}, "MemoryInfo": {"SizeInMiB": 1152 * 1024}, "NetworkInfo": {"MaximumNetworkCards": 4,
            "EfaInfo": {"MaximumEfaInterfaces": 2}}, "GpuInfo": {"Gpus": [{"Count": 8}]}}
    bad = [f for f in compare_instance(CATALOG.get("p4d.24xlarge"), live) if not f.ok]
    assert [f.detail for f in bad] == ["max EFA interfaces: catalog 4, EC2 2"]


def test_run_checks_on_prod(session):
    cfg = load_config("prod")
    findings = run_checks(cfg, session)
    by = {(f.check, f.subject, f.detail): f.ok for f in findings}
    assert by[("offering", "a100/p4d.24xlarge", "p4d.24xlarge in us-east-1a")]
    # the example reservation id does not exist in this account: reported, not crashed
    assert any(f.check == "reservation" and not f.ok for f in findings)


def test_vcpu_demand_counts_p_family_only():
    cfg = load_config("prod")
    demand = vcpu_demand(cfg, CATALOG)
    # a100: 16 x p4d (96 vCPUs); h100 is a Capacity Block (not counted); g pools are not P family
    assert demand == {"ON_DEMAND": 16 * 96, "SPOT": 0}


def test_addon_pins_checked_against_describe_addon_versions():
    from botocore.stub import Stubber

    eks = boto3.client("eks", region_name="us-east-1", aws_access_key_id="x",
                       aws_secret_access_key="x")
    pins = {"coredns": "v1.12.1-eksbuild.2", "vpc-cni": "v1.99.0-eksbuild.1"}
    with Stubber(eks) as stub:
        stub.add_response("describe_addon_versions", {"addons": [{"addonName": "coredns",
            "addonVersions": [{"addonVersion": "v1.12.1-eksbuild.2"}]}]},
            {"addonName": "coredns", "kubernetesVersion": "1.33"})
        stub.add_response("describe_addon_versions", {"addons": [{"addonName": "vpc-cni",
            "addonVersions": [{"addonVersion": "v1.20.4-eksbuild.2"}]}]},
            {"addonName": "vpc-cni", "kubernetesVersion": "1.33"})
        found = {f.subject: f for f in addon_findings(pins, "1.33", eks)}
    assert found["coredns"].ok
    assert not found["vpc-cni"].ok
    assert found["vpc-cni"].detail == ("v1.99.0-eksbuild.1 for Kubernetes 1.33 is not offered "
                                       "(offered: v1.20.4-eksbuild.2)")


def test_prod_pins_include_fsx_csi_driver():
    from trainyard.preflight import pinned_addons

    prod, dev = pinned_addons(load_config("prod")), pinned_addons(load_config("dev"))
    assert "aws-fsx-csi-driver" in prod and "aws-fsx-csi-driver" not in dev
    assert {"vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent", "aws-ebs-csi-driver",
            "aws-efs-csi-driver", "eks-node-monitoring-agent"} <= set(dev)


def _versions_client(versions):
    import datetime as dt

    from botocore.stub import Stubber

    eks = boto3.client("eks", region_name="us-east-1", aws_access_key_id="x",
                       aws_secret_access_key="x")
    stub = Stubber(eks)
    items = [{"clusterVersion": v, "clusterType": "eks", "versionStatus": status,
              "endOfStandardSupportDate": dt.datetime.fromisoformat(std + "T00:00:00+00:00"),
              "endOfExtendedSupportDate": dt.datetime.fromisoformat(ext + "T00:00:00+00:00")}
             for v, status, std, ext in versions]
    # two pages: the paginator must follow nextToken
    stub.add_response("describe_cluster_versions", {"clusterVersions": items[:1], "nextToken": "t"},
                      {"clusterType": "eks", "includeAll": True})
    stub.add_response("describe_cluster_versions", {"clusterVersions": items[1:]},
                      {"clusterType": "eks", "includeAll": True, "nextToken": "t"})
    return eks, stub


LIVE = [("1.33", "EXTENDED_SUPPORT", "2026-07-29", "2027-07-29"),
        ("1.36", "STANDARD_SUPPORT", "2027-08-02", "2028-08-02"),
        ("1.37", "STANDARD_SUPPORT", "2027-12-23", "2028-12-23")]


def test_version_in_standard_support_and_newer_one_named():
    import datetime as dt

    eks, stub = _versions_client(LIVE)
    with stub:
        found = version_findings("1.36", "STANDARD", eks, dt.date(2026, 11, 27))
    assert [f.ok for f in found] == [True, True]
    assert found[0].detail == ("Kubernetes 1.36: STANDARD_SUPPORT, standard support until "
                               "2027-08-02")
    assert found[1].subject == "1.37" and "newest in standard support" in found[1].detail


def test_version_past_standard_support_fails_unless_extended():
    import datetime as dt

    for support, ok in (("STANDARD", False), ("EXTENDED", True)):
        eks, stub = _versions_client(LIVE)
        with stub:
            found = version_findings("1.33", support, eks, dt.date(2026, 11, 27))
        assert found[0].ok is ok, support


def test_version_not_offered_and_calendar_drift():
    import datetime as dt

    eks, stub = _versions_client(LIVE)
    with stub:
        (missing,) = version_findings("1.35", "STANDARD", eks, dt.date(2026, 11, 27))
    assert not missing.ok and "does not offer Kubernetes 1.35" in missing.detail
    drift = [("1.36", "STANDARD_SUPPORT", "2027-07-01", "2028-07-01"), LIVE[2]]
    eks, stub = _versions_client(drift)
    with stub:
        found = version_findings("1.36", "STANDARD", eks, dt.date(2026, 11, 27))
    assert any(not f.ok and "update the calendar" in f.detail for f in found)


def test_version_api_refusal_is_a_failed_check():
    from botocore.stub import Stubber

    eks = boto3.client("eks", region_name="us-east-1", aws_access_key_id="x",
                       aws_secret_access_key="x")
    with Stubber(eks) as stub:
        stub.add_client_error("describe_cluster_versions", "AccessDeniedException", "no")
        (f,) = version_findings("1.36", "STANDARD", eks)
    assert not f.ok and f.detail.startswith("could not list EKS versions")


def test_cost_allocation_tags_active_or_named_with_the_fix():
    from botocore.stub import Stubber

    from trainyard.preflight import cost_tag_findings

    ce = boto3.client("ce", region_name="us-east-1", aws_access_key_id="x",
                      aws_secret_access_key="y")
    with Stubber(ce) as stub:
        stub.add_response("list_cost_allocation_tags", {"CostAllocationTags": [
            {"TagKey": "trainyard.io/stack", "Type": "UserDefined", "Status": "Active"},
            {"TagKey": "trainyard.io/pool", "Type": "UserDefined", "Status": "Inactive"}]},
            {"TagKeys": ["trainyard.io/stack", "trainyard.io/pool"]})
        found = {f.subject: f for f in cost_tag_findings(ce)}
        stub.add_client_error("list_cost_allocation_tags", "AccessDeniedException", "no")
        refused = cost_tag_findings(ce)
    assert found["trainyard.io/stack"].ok
    assert not found["trainyard.io/pool"].ok
    assert "activate it" in found["trainyard.io/pool"].detail
    assert len(refused) == 1 and not refused[0].ok and "payer account" in refused[0].detail
