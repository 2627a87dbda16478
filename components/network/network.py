"""Network: VPC for distributed training (subnets sized for many-NIC nodes, NAT, endpoints,
flow logs, locked default SG, EFA security group)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.aws_context import aws_context
from components.config import NetworkConfig
from components.network import netmath


@dataclass(frozen=True)
class NetworkArgs:
    config: NetworkConfig
    """Typed `trainyard:network` section."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on every taggable resource (environment, owner, cost-center)."""


def flow_log_key_policy(account_id: str, region: str, partition: str) -> str:
    """Key policy letting CloudWatch Logs in this account and region use the flow-log key.
    The account root keeps full control (so IAM policies can grant use); the service is
    limited to log groups of this account through the encryption context."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "AccountAdmin", "Effect": "Allow",
             "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "CloudWatchLogs", "Effect": "Allow",
             "Principal": {"Service": f"logs.{region}.amazonaws.com"},
             "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                        "kms:Describe*"],
             "Resource": "*",
             "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn":
                                       f"arn:{partition}:logs:{region}:{account_id}:log-group:*"}}},
        ],
    }, sort_keys=True)


def flow_log_role_policy(log_group_arn: str) -> str:
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow",
                       "Action": ["logs:CreateLogStream", "logs:PutLogEvents",
                                  "logs:DescribeLogStreams"],
                       "Resource": [log_group_arn, f"{log_group_arn}:*"]}],
    }, sort_keys=True)


def assume_role_policy(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]},
        sort_keys=True)


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    private_subnet_ids: dict[str, pulumi.Output[str]]
    public_subnet_ids: dict[str, pulumi.Output[str]]
    efa_security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Network", name, None, opts)
        self._name, self._args, c = name, args, args.config
        self._plan = netmath.carve_subnets(c.vpc_cidr, c.availability_zones,
                                           c.private_subnet_prefix, c.public_subnet_prefix)
        self._child = pulumi.ResourceOptions(parent=self)

        self.vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=c.vpc_cidr, enable_dns_hostnames=True,
                               enable_dns_support=True, tags=self._tags(f"{name}-vpc"),
                               opts=self._child)
        self.vpc_id = self.vpc.id
        self._create_subnets()
        self._create_routing()
        self._create_endpoints()
        self._create_flow_logs()
        self._lock_default_security_group()
        self._create_efa_security_group()

        self.register_outputs({
            "vpcId": self.vpc_id,
            "privateSubnetIds": self.private_subnet_ids,
            "publicSubnetIds": self.public_subnet_ids,
            "efaSecurityGroupId": self.efa_security_group_id,
        })

    def _tags(self, name: str, **extra: str) -> dict[str, str]:
        return {**self._args.tags, "Name": name, **extra}

    def _create_subnets(self) -> None:
        n, azs = self._name, self._args.config.availability_zones
        self.private_subnets, self.public_subnets = {}, {}
        for az in azs:
            self.private_subnets[az] = aws.ec2.Subnet(
                f"{n}-private-{az}", vpc_id=self.vpc.id, cidr_block=self._plan.private[az],
                availability_zone=az, map_public_ip_on_launch=False,
                tags=self._tags(f"{n}-private-{az}", **{"kubernetes.io/role/internal-elb": "1",
                                                        "trainyard.io/tier": "private"}),
                opts=self._child)
            self.public_subnets[az] = aws.ec2.Subnet(
                f"{n}-public-{az}", vpc_id=self.vpc.id, cidr_block=self._plan.public[az],
                availability_zone=az, map_public_ip_on_launch=False,
                tags=self._tags(f"{n}-public-{az}", **{"kubernetes.io/role/elb": "1",
                                                       "trainyard.io/tier": "public"}),
                opts=self._child)
        self.private_subnet_ids = {az: s.id for az, s in self.private_subnets.items()}
        self.public_subnet_ids = {az: s.id for az, s in self.public_subnets.items()}

    def _create_routing(self) -> None:
        n, c = self._name, self._args.config
        igw = aws.ec2.InternetGateway(f"{n}-igw", vpc_id=self.vpc.id, tags=self._tags(f"{n}-igw"),
                                      opts=self._child)
        public_rt = aws.ec2.RouteTable(f"{n}-public-rt", vpc_id=self.vpc.id,
                                       tags=self._tags(f"{n}-public-rt"), opts=self._child)
        aws.ec2.Route(f"{n}-public-default", route_table_id=public_rt.id,
                      destination_cidr_block="0.0.0.0/0", gateway_id=igw.id, opts=self._child)
        for az, subnet in self.public_subnets.items():
            aws.ec2.RouteTableAssociation(f"{n}-public-{az}", subnet_id=subnet.id,
                                          route_table_id=public_rt.id, opts=self._child)

        nat_azs = c.availability_zones if c.nat_gateways == "perAz" else c.availability_zones[:1]
        nats = {}
        for az in nat_azs:
            eip = aws.ec2.Eip(f"{n}-nat-{az}", domain="vpc", tags=self._tags(f"{n}-nat-{az}"),
                              opts=self._child)
            nats[az] = aws.ec2.NatGateway(
                f"{n}-nat-{az}", allocation_id=eip.id, subnet_id=self.public_subnets[az].id,
                connectivity_type="public", tags=self._tags(f"{n}-nat-{az}"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]))
        self.private_route_tables = {}
        for az, subnet in self.private_subnets.items():
            rt = aws.ec2.RouteTable(f"{n}-private-rt-{az}", vpc_id=self.vpc.id,
                                    tags=self._tags(f"{n}-private-rt-{az}"), opts=self._child)
            nat = nats.get(az) or nats[nat_azs[0]]
            aws.ec2.Route(f"{n}-private-default-{az}", route_table_id=rt.id,
                          destination_cidr_block="0.0.0.0/0", nat_gateway_id=nat.id,
                          opts=self._child)
            aws.ec2.RouteTableAssociation(f"{n}-private-{az}", subnet_id=subnet.id,
                                          route_table_id=rt.id, opts=self._child)
            self.private_route_tables[az] = rt
        self.nat_gateway_count = len(nats)

    def _create_endpoints(self) -> None:
        n, c = self._name, self._args.config
        region = aws_context(self).region
        aws.ec2.VpcEndpoint(
            f"{n}-s3", vpc_id=self.vpc.id, vpc_endpoint_type="Gateway",
            service_name=region.apply(lambda r: f"com.amazonaws.{r}.s3"),
            route_table_ids=[rt.id for rt in self.private_route_tables.values()],
            tags=self._tags(f"{n}-s3"), opts=self._child)
        if not c.interface_endpoints:
            return
        sg = aws.ec2.SecurityGroup(
            f"{n}-endpoints", vpc_id=self.vpc.id,
            description="HTTPS from inside the VPC to AWS interface endpoints",
            tags=self._tags(f"{n}-endpoints"), opts=self._child)
        aws.vpc.SecurityGroupIngressRule(
            f"{n}-endpoints-https", security_group_id=sg.id, cidr_ipv4=c.vpc_cidr,
            ip_protocol="tcp", from_port=443, to_port=443,
            description="HTTPS from the VPC", tags=self._tags(f"{n}-endpoints-https"),
            opts=self._child)
        for svc in c.interface_endpoints:
            aws.ec2.VpcEndpoint(
                f"{n}-{svc.replace('.', '-')}", vpc_id=self.vpc.id,
                vpc_endpoint_type="Interface", private_dns_enabled=True,
                service_name=region.apply(lambda r, s=svc: f"com.amazonaws.{r}.{s}"),
                subnet_ids=[s.id for s in self.private_subnets.values()],
                security_group_ids=[sg.id], tags=self._tags(f"{n}-{svc}"), opts=self._child)

    def _create_flow_logs(self) -> None:
        n, c = self._name, self._args.config
        ctx = aws_context(self)
        key = aws.kms.Key(
            f"{n}-flow-logs", description="Encrypts the VPC flow-log group",
            enable_key_rotation=True, deletion_window_in_days=30,
            policy=pulumi.Output.all(*ctx).apply(lambda a: flow_log_key_policy(*a)),
            tags=self._tags(f"{n}-flow-logs"), opts=self._child)
        group = aws.cloudwatch.LogGroup(
            f"{n}-flow-logs", retention_in_days=c.flow_log_retention_days, kms_key_id=key.arn,
            tags=self._tags(f"{n}-flow-logs"), opts=self._child)
        role = aws.iam.Role(
            f"{n}-flow-logs", assume_role_policy=assume_role_policy("vpc-flow-logs.amazonaws.com"),
            description="Lets VPC Flow Logs write to its log group",
            tags=self._tags(f"{n}-flow-logs"), opts=self._child)
        aws.iam.RolePolicy(f"{n}-flow-logs", role=role.id,
                           policy=group.arn.apply(flow_log_role_policy), opts=self._child)
        aws.ec2.FlowLog(f"{n}-flow-logs", vpc_id=self.vpc.id, traffic_type="ALL",
                        log_destination_type="cloud-watch-logs", log_destination=group.arn,
                        iam_role_arn=role.arn, max_aggregation_interval=60,
                        tags=self._tags(f"{n}-flow-logs"), opts=self._child)
        self.flow_log_group = group

    def _lock_default_security_group(self) -> None:
        # Adopting the default SG with no rules removes AWS's allow-all rules (CIS 5.4 / CKV2_AWS_12).
        aws.ec2.DefaultSecurityGroup(f"{self._name}-default-sg", vpc_id=self.vpc.id,
                                     ingress=[], egress=[],
                                     tags=self._tags(f"{self._name}-default-locked"),
                                     opts=self._child)

    def _create_efa_security_group(self) -> None:
        n = self._name
        sg = aws.ec2.SecurityGroup(
            f"{n}-efa", vpc_id=self.vpc.id,
            description="EFA: all traffic to and from members of this group",
            tags=self._tags(f"{n}-efa"), opts=self._child)
        # Both directions are needed: the egress self rule is the one people miss, and EFA's
        # SRD traffic fails without it.
        aws.vpc.SecurityGroupIngressRule(f"{n}-efa-self-in", security_group_id=sg.id,
                                         referenced_security_group_id=sg.id, ip_protocol="-1",
                                         description="EFA from group members",
                                         tags=self._tags(f"{n}-efa-self-in"), opts=self._child)
        aws.vpc.SecurityGroupEgressRule(f"{n}-efa-self-out", security_group_id=sg.id,
                                        referenced_security_group_id=sg.id, ip_protocol="-1",
                                        description="EFA to group members",
                                        tags=self._tags(f"{n}-efa-self-out"), opts=self._child)
        self.efa_security_group = sg
        self.efa_security_group_id = sg.id
