"""NetworkPolicy content (policies/netpol.py) against the builders the components use
(components/services/netpol.py): what the platform emits passes for the right reason, and the
shapes that silently undo isolation are caught."""

from __future__ import annotations

import pytest

from components.services import netpol as build
from policies import netpol as N


def test_default_deny_closes_both_directions_and_allows_do_not():
    assert N.denies(build.deny_all()) == {"Ingress", "Egress"}
    for allow in (build.allow_dns(), build.allow_same_namespace(),
                  build.allow_ingress_on([9443]), build.allow_egress_to("0.0.0.0/0", [443])):
        assert N.denies(allow) == set()


def test_a_deny_that_selects_some_pods_denies_nothing_namespace_wide():
    spec = {**build.deny_all(), "podSelector": {"matchLabels": {"app": "x"}}}
    assert N.denies(spec) == set()


@pytest.mark.parametrize("peer,is_open", [
    ({"ipBlock": {"cidr": "0.0.0.0/0"}}, True), ({"ipBlock": {"cidr": "::/0"}}, True),
    ({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}, False),
    ({"ipBlock": {"cidr": "10.0.0.0/8"}}, False), ({"podSelector": {}}, False)])
def test_open_peers(peer, is_open):
    assert N.open_peer(peer) is is_open


def test_webhook_ingress_comes_from_private_ranges_only():
    rule = build.allow_ingress_on([9443])["ingress"][0]
    assert not N.anywhere(rule, "from")
    cidrs = [p["ipBlock"]["cidr"] for p in rule["from"]]
    assert "0.0.0.0/0" not in cidrs and "10.0.0.0/8" in cidrs


def test_private_egress_on_every_port_is_not_open_egress():
    rule = build.allow_egress_to_cidrs(build.PRIVATE_RANGES)["egress"][0]
    assert "ports" not in rule and not N.anywhere(rule, "to")
    assert N.anywhere(build.allow_all_egress()["egress"][0], "to")


def test_exceptions_match_namespace_and_policy_patterns():
    props = {"metadata": {"name": "allow-https-egress", "namespace": "research"}}
    assert N.excepted(props, [{"namespace": "res*", "policy": "allow-https-egress",
                               "reason": "S3"}]) == "S3"
    assert N.excepted(props, [{"namespace": "research", "policy": "allow-https-egress"}]) is None
    assert N.excepted(props, [{"namespace": "applied", "policy": "*", "reason": "x"}]) is None
