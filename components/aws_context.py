"""The account, region and partition a component deploys into, for ARNs and policies."""

from __future__ import annotations

from typing import NamedTuple

import pulumi
import pulumi_aws as aws


class AwsContext(NamedTuple):
    account_id: pulumi.Output[str]
    region: pulumi.Output[str]
    partition: pulumi.Output[str]


def aws_context(parent: pulumi.Resource) -> AwsContext:
    """Looked up through the provider (invokes, not resources: nothing appears in the plan)."""
    invoke = pulumi.InvokeOutputOptions(parent=parent)
    return AwsContext(aws.get_caller_identity_output(opts=invoke).account_id,
                      aws.get_region_output(opts=invoke).region,
                      aws.get_partition_output(opts=invoke).partition)
