"""no-public-ingress-beyond-allow-list over every resource type that carries ingress."""

from __future__ import annotations

import pytest
from policy_fixtures import IN, SG, R

from policies import by_name
from trainyard.check import PolicyConfig, run_checks

SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
NAME = "no-public-ingress-beyond-allow-list"


def _violations(resources, allowed=()):
    cfg = PolicyConfig(source="test", properties={NAME: {"allowedPublicPorts": list(allowed)}})
    report = run_checks({"project": "trainyard", "stack": "test", "resources": resources}, cfg,
                        [by_name()[NAME]])
    assert not report.errors
    return [v for v in report.violations if v["policy"] == NAME]


@pytest.mark.parametrize("res", [
    R(IN, "r", {"securityGroupId": "sg", "cidrIpv4": "0.0.0.0/0", "ipProtocol": "tcp",
                "fromPort": 10250, "toPort": 10250}),
    R(SG_RULE, "r", {"type": "ingress", "securityGroupId": "sg", "protocol": "tcp",
                     "fromPort": 2049, "toPort": 2049, "cidrBlocks": ["0.0.0.0/0"]}),
    R(SG, "r", {"description": "x", "ingress": [{"protocol": "udp", "fromPort": 53, "toPort": 53,
                                                 "ipv6CidrBlocks": ["::/0"]}]}),
    R(IN, "r", {"securityGroupId": "sg", "cidrIpv4": "0.0.0.0/0", "ipProtocol": "-1"}),
    R(IN, "r", {"securityGroupId": "sg", "cidrIpv4": "0.0.0.0/0", "ipProtocol": "icmp",
                "fromPort": -1, "toPort": -1}),
])
def test_open_ingress_is_caught_on_each_type(res):
    assert _violations([res])


def test_allow_list_and_private_sources_pass():
    ok = [R(IN, "lb", {"securityGroupId": "sg", "cidrIpv4": "0.0.0.0/0", "ipProtocol": "tcp",
                       "fromPort": 443, "toPort": 443}),
          R(SG_RULE, "egress", {"type": "egress", "securityGroupId": "sg", "protocol": "-1",
                                "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]}),
          R(IN, "vpc", {"securityGroupId": "sg", "cidrIpv4": "10.0.0.0/8", "ipProtocol": "-1"})]
    assert not _violations(ok, allowed=[443])
    assert _violations(ok[:1])  # without the allow-list, 443 is not open either
