"""Which conditions restrict a wildcard principal (policies/principals.py)."""

from __future__ import annotations

import pytest

from policies.principals import (
    is_wildcard_principal,
    principal_accounts,
    restricting_conditions,
    unrestricted_wildcards,
)


@pytest.mark.parametrize("condition", [
    {"StringEquals": {"aws:PrincipalOrgID": "o-abc"}},
    {"StringEquals": {"aws:SourceAccount": "123456789012"}},
    {"ArnLike": {"aws:SourceArn": "arn:aws:events:us-east-1:123456789012:rule/x"}},
    {"StringEquals": {"aws:SourceVpce": "vpce-1"}},
    {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-a/r-b/ou-c/*"}},
])
def test_restricting(condition):
    assert restricting_conditions(condition)


@pytest.mark.parametrize("condition", [
    None, {},
    {"Bool": {"aws:SecureTransport": "true"}},
    {"StringLike": {"aws:UserAgent": "x"}},
    {"StringNotEquals": {"aws:PrincipalOrgID": "o-abc"}},          # admits every other org
    {"StringEqualsIfExists": {"aws:SourceAccount": "123456789012"}},  # admits requests without it
    {"StringLike": {"aws:PrincipalArn": "*"}},
    {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/admin"}},  # any account
    {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}},
    {"Null": {"aws:PrincipalOrgID": "false"}},
])
def test_not_restricting(condition):
    assert not restricting_conditions(condition)


def test_wildcard_principal_forms():
    assert is_wildcard_principal("*") and is_wildcard_principal({"AWS": ["*"]})
    assert is_wildcard_principal({"AWS": "arn:aws:iam::*:root"})
    assert not is_wildcard_principal({"Service": "logs.amazonaws.com"})


def test_deny_statements_are_not_judged():
    doc = {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                          "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}
    assert unrestricted_wildcards(doc) == []


def test_principal_accounts():
    assert principal_accounts({"AWS": ["arn:aws:iam::111122223333:role/x", "444455556666"]}) \
        == ["111122223333", "444455556666"]
    assert principal_accounts({"Service": "ec2.amazonaws.com"}) == []
