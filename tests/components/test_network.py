"""Network component as planned for each committed stack."""

import ipaddress
import json

from tests.conftest import by_id, resources


def test_subnets_per_az_inside_vpc(any_plan):
    vpc = resources(any_plan, "aws:ec2/vpc:Vpc")
    assert len(vpc) == 1
    vpc_net = ipaddress.ip_network(vpc[0]["inputs"]["cidrBlock"])
    subnets = resources(any_plan, "aws:ec2/subnet:Subnet")
    azs = {s["inputs"]["availabilityZone"] for s in subnets}
    assert len(subnets) == 2 * len(azs)
    nets = [ipaddress.ip_network(s["inputs"]["cidrBlock"]) for s in subnets]
    assert all(n.subnet_of(vpc_net) for n in nets)
    assert all(s["inputs"]["vpcId"] == vpc[0]["id"] for s in subnets)
    assert not any(s["inputs"]["mapPublicIpOnLaunch"] for s in subnets)
    private = [s for s in subnets if s["inputs"]["tags"]["trainyard.io/tier"] == "private"]
    assert all(s["inputs"]["tags"]["kubernetes.io/role/internal-elb"] == "1" for s in private)
    assert all(ipaddress.ip_network(s["inputs"]["cidrBlock"]).num_addresses >= 2 ** 14
               for s in private)


def test_nat_strategy(plan_for):
    assert len(resources(plan_for("dev"), "aws:ec2/natGateway:NatGateway")) == 1
    prod = plan_for("prod")
    nats = resources(prod, "aws:ec2/natGateway:NatGateway")
    assert len(nats) == 3
    ids = by_id(prod)
    # each private route table routes through the NAT of its own AZ
    for route in resources(prod, "aws:ec2/route:Route"):
        if "natGatewayId" in route["inputs"]:
            nat = ids[route["inputs"]["natGatewayId"]]
            assert route["name"].rsplit("-", 3)[-3:] == nat["name"].rsplit("-", 3)[-3:]


def test_endpoints(any_plan):
    eps = resources(any_plan, "aws:ec2/vpcEndpoint:VpcEndpoint")
    services = {e["inputs"]["serviceName"].split("us-east-1.")[1]: e for e in eps}
    assert services["s3"]["inputs"]["vpcEndpointType"] == "Gateway"
    for svc in ("ecr.api", "ecr.dkr", "sts", "ec2", "logs"):
        assert services[svc]["inputs"]["vpcEndpointType"] == "Interface"
        assert services[svc]["inputs"]["privateDnsEnabled"] is True


def test_flow_logs_encrypted_with_retention(any_plan):
    ids = by_id(any_plan)
    (fl,) = resources(any_plan, "aws:ec2/flowLog:FlowLog")
    assert fl["inputs"]["trafficType"] == "ALL"
    group = [g for g in resources(any_plan, "aws:cloudwatch/logGroup:LogGroup")
             if g["outputs"]["arn"] == fl["inputs"]["logDestination"]][0]
    assert group["inputs"]["retentionInDays"] > 0
    key = [k for k in resources(any_plan, "aws:kms/key:Key")
           if k["outputs"]["arn"] == group["inputs"]["kmsKeyId"]][0]
    assert key["inputs"]["enableKeyRotation"] is True
    policy = json.loads(key["inputs"]["policy"])
    assert any(s["Principal"].get("Service") == "logs.us-east-1.amazonaws.com"
               for s in policy["Statement"])
    assert ids[fl["inputs"]["vpcId"]]["type"] == "aws:ec2/vpc:Vpc"


def test_default_security_group_locked(any_plan):
    (dsg,) = resources(any_plan, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert dsg["inputs"]["ingress"] == [] and dsg["inputs"]["egress"] == []


def test_efa_security_group_self_ingress_and_egress(any_plan):
    efa = [g for g in resources(any_plan, "aws:ec2/securityGroup:SecurityGroup")
           if g["name"].endswith("-efa")]
    assert len(efa) == 1
    sg_id = efa[0]["id"]
    for kind in ("Ingress", "Egress"):
        rules = [r for r in resources(any_plan, f"aws:vpc/securityGroup{kind}Rule:SecurityGroup{kind}Rule")
                 if r["inputs"]["securityGroupId"] == sg_id]
        assert any(r["inputs"].get("referencedSecurityGroupId") == sg_id
                   and r["inputs"]["ipProtocol"] == "-1" for r in rules), kind


def test_every_taggable_network_resource_is_tagged(any_plan):
    for r in any_plan["resources"]:
        if r["type"].startswith("aws:ec2/") and "tags" in r["inputs"]:
            tags = r["inputs"]["tags"]
            assert {"environment", "owner", "cost-center", "Name"} <= set(tags), r["urn"]
