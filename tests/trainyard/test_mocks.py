"""trainyard.mocks.placeholder_reason: what the offline mocks make up is recognised as made up
(by how the mocks generate it), and what AWS and the Pulumi engine would produce is not."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from trainyard.mocks import ACCOUNT_ID, TrainyardMocks, placeholder_reason
from trainyard.synth import SECRET

BUCKET = "aws:s3/bucket:Bucket"
NAMES = st.from_regex(r"[a-z][a-z0-9-]{2,40}[a-z0-9]", fullmatch=True)


def mock_bucket(name: str, prefix: str | None = None) -> str:
    inputs = {"bucketPrefix": prefix} if prefix else {}
    _, out = TrainyardMocks("us-east-1").new_resource(
        type("Args", (), {"typ": BUCKET, "name": name, "inputs": inputs, "custom": True})())
    return out["bucket"]


@given(NAMES, st.sampled_from(["trainyard-prod-checkpoints-", "acme-ml-datasets-", None]))
def test_every_mock_bucket_name_is_a_placeholder(name, prefix):
    assert placeholder_reason(mock_bucket(name, prefix)), mock_bucket(name, prefix)


@given(NAMES)
def test_every_mock_arn_is_a_placeholder(name):
    mocks = TrainyardMocks("eu-west-1")
    assert placeholder_reason(mocks.arn("iam", f"role/{name}", region=False))
    assert placeholder_reason(f"{ACCOUNT_ID}.dkr.ecr.eu-west-1.amazonaws.com/{name}")


@given(NAMES, st.integers(min_value=0, max_value=10**26 - 1))
def test_names_s3_gives_a_bucket_prefix_are_not(prefix, serial):
    assert placeholder_reason(f"{prefix}-{serial:026d}") is None


@given(NAMES, st.randoms(use_true_random=False))
def test_pulumi_auto_names_are_not(name, rnd: random.Random):
    suffix = "".join(rnd.choice("0123456789abcdef") for _ in range(7))
    value = f"{name}-{suffix}"
    if value == TrainyardMocks.physical_name(name, BUCKET):  # 1 in 16^7
        return
    assert placeholder_reason(value) is None


def test_names_taken_from_config_are_not():
    for value in ("checkpoints/", "trainer", "shared-efs", "fsx-lustre", "torch-efa-a100",
                  "trainyard-prod", "arn:aws:kms:us-east-1:210987654321:key/abc", SECRET, "",
                  None, 3):
        assert placeholder_reason(value) is None, value
