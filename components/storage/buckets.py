"""Buckets: S3 for training datasets and checkpoints, plus the bucket their access logs go to.

Each bucket gets its settings as pulumi-aws v7 sibling resources: default encryption, versioning,
public access block, ownership controls (ACLs disabled), a TLS-only bucket policy, lifecycle rules
and (for the data buckets) server access logging. The decisions (policy documents, lifecycle
rules) are pure functions below.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
import pulumi_aws as aws

from components.config import StorageConfig

ROLES = ("datasets", "checkpoints", "access-logs")
"""Bucket roles; each is part of the logical name and of the physical name prefix."""
LOGGED_ROLES = ("datasets", "checkpoints")
ABORT_MULTIPART_DAYS = 7
"""Incomplete multipart uploads are aborted after a week: long enough for a slow multi-GB
checkpoint shard, short enough not to pay for abandoned parts."""
DATASET_NONCURRENT_DAYS = 90
"""Replaced or deleted dataset objects stay recoverable for 90 days."""
ACCESS_LOG_NONCURRENT_DAYS = 7
ROLE_TAG = "trainyard.io/bucket-role"
"""Tag naming each bucket's role; policies use it to tell the access-log bucket apart (it can't
log to itself and S3 log delivery needs SSE-S3)."""


# ----------------------------------------------------------------------------------------------
# Pure decisions
# ----------------------------------------------------------------------------------------------
def bucket_prefix(prefix: Optional[str], role: str) -> Optional[str]:
    """Physical name prefix for a bucket; S3 appends a 26-character unique suffix. None means
    Pulumi auto-naming from the logical name."""
    return f"{prefix}-{role}-" if prefix else None


def tls_only_statement(bucket_arn: str) -> dict:
    return {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*",
            "Action": "s3:*", "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


def bucket_policy(bucket_arn: str) -> str:
    """TLS-only policy for a data bucket; access itself is granted by IAM (Pod Identity)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [tls_only_statement(bucket_arn)]},
                      sort_keys=True)


def access_log_bucket_policy(log_bucket_arn: str, source_bucket_arns: Sequence[str],
                             account_id: str) -> str:
    """TLS-only, plus S3 server access log delivery from exactly our source buckets."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        tls_only_statement(log_bucket_arn),
        {"Sid": "S3ServerAccessLogDelivery", "Effect": "Allow",
         "Principal": {"Service": "logging.s3.amazonaws.com"},
         "Action": "s3:PutObject", "Resource": f"{log_bucket_arn}/*",
         "Condition": {"ArnLike": {"aws:SourceArn": sorted(source_bucket_arns)},
                       "StringEquals": {"aws:SourceAccount": account_id}}},
    ]}, sort_keys=True)


def _abort_multipart() -> dict:
    return {"id": "abort-incomplete-multipart-uploads", "status": "Enabled", "filter": {},
            "abort_incomplete_multipart_upload": {"days_after_initiation": ABORT_MULTIPART_DAYS}}


def _noncurrent(days: int) -> dict:
    return {"id": "expire-noncurrent-versions", "status": "Enabled", "filter": {},
            "noncurrent_version_expiration": {"noncurrent_days": days}}


def lifecycle_rules(role: str, config: StorageConfig) -> list[dict[str, Any]]:
    """Lifecycle rules per bucket role (arguments of BucketLifecycleConfiguration `rules`)."""
    if role == "datasets":
        return [_abort_multipart(), _noncurrent(DATASET_NONCURRENT_DAYS),
                {"id": "intelligent-tiering", "status": "Enabled", "filter": {},
                 "transitions": [{"days": config.dataset_tiering_days,
                                  "storage_class": "INTELLIGENT_TIERING"}]}]
    if role == "checkpoints":
        return [_abort_multipart(), _noncurrent(config.checkpoint_noncurrent_days),
                {"id": "remove-expired-delete-markers", "status": "Enabled", "filter": {},
                 "expiration": {"expired_object_delete_marker": True}}]
    if role == "access-logs":
        return [_abort_multipart(), _noncurrent(ACCESS_LOG_NONCURRENT_DAYS),
                {"id": "expire-access-logs", "status": "Enabled", "filter": {},
                 "expiration": {"days": config.access_log_retention_days}}]
    raise ValueError(f"unknown bucket role {role!r} (known: {', '.join(ROLES)})")


def encryption_rule(role: str, key_arn: pulumi.Input[str]) -> dict[str, Any]:
    """SSE-KMS with an S3 Bucket Key on data buckets. The access-log bucket uses SSE-S3: S3
    server access logging cannot deliver to a bucket whose default encryption is SSE-KMS."""
    if role == "access-logs":
        return {"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"},
                "bucket_key_enabled": False}
    return {"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms",
                                                        "kms_master_key_id": key_arn},
            "bucket_key_enabled": True}


# ----------------------------------------------------------------------------------------------
# Component
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BucketsArgs:
    config: StorageConfig
    """Typed `trainyard:storage` section (required)."""
    key_arn: pulumi.Input[str]
    """Storage KMS key for SSE-KMS on the data buckets (required)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on every taggable resource. Default none."""


class Buckets(pulumi.ComponentResource):
    buckets: dict[str, aws.s3.Bucket]
    datasets: aws.s3.Bucket
    checkpoints: aws.s3.Bucket
    access_logs: aws.s3.Bucket

    def __init__(self, name: str, args: BucketsArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Buckets", name, None, opts)
        self._name, self._args = name, args
        # With retainOnDelete the settings stay too: deleting them would, for example, lift the
        # public access block or the TLS-only policy from a bucket that outlives the stack.
        self._keep = pulumi.ResourceOptions(parent=self,
                                            retain_on_delete=args.config.retain_on_delete or None)
        self._account = aws.get_caller_identity_output(
            opts=pulumi.InvokeOutputOptions(parent=self)).account_id
        self.buckets = {}
        for role in ROLES:  # access-logs last: its policy names the data buckets
            self.buckets[role] = self._create_bucket(role)
        self.datasets = self.buckets["datasets"]
        self.checkpoints = self.buckets["checkpoints"]
        self.access_logs = self.buckets["access-logs"]
        self._create_logging()
        self.register_outputs({f"{role}Bucket": b.bucket for role, b in self.buckets.items()})

    def _create_bucket(self, role: str) -> aws.s3.Bucket:
        n, a = f"{self._name}-{role}", self._args
        bucket = aws.s3.Bucket(n, bucket_prefix=bucket_prefix(a.config.bucket_prefix, role),
                               force_destroy=False,
                               tags={**a.tags, "Name": n, ROLE_TAG: role}, opts=self._keep)
        aws.s3.BucketOwnershipControls(n, bucket=bucket.id,
                                       rule={"object_ownership": "BucketOwnerEnforced"},
                                       opts=self._keep)
        pab = aws.s3.BucketPublicAccessBlock(n, bucket=bucket.id, block_public_acls=True,
                                             block_public_policy=True, ignore_public_acls=True,
                                             restrict_public_buckets=True, opts=self._keep)
        aws.s3.BucketServerSideEncryptionConfiguration(
            n, bucket=bucket.id, rules=[encryption_rule(role, a.key_arn)], opts=self._keep)
        versioning = aws.s3.BucketVersioning(n, bucket=bucket.id,
                                             versioning_configuration={"status": "Enabled"},
                                             opts=self._keep)
        if role == "access-logs":
            policy = pulumi.Output.all(bucket.arn, *[self.buckets[r].arn for r in LOGGED_ROLES],
                                       self._account) \
                .apply(lambda v: access_log_bucket_policy(v[0], v[1:-1], v[-1]))
        else:
            policy = bucket.arn.apply(bucket_policy)
        # After the public access block, so the policy is never briefly judged without it.
        aws.s3.BucketPolicy(n, bucket=bucket.id, policy=policy,
                            opts=pulumi.ResourceOptions.merge(
                                self._keep, pulumi.ResourceOptions(depends_on=[pab])))
        # Lifecycle rules on noncurrent versions need versioning in place first.
        aws.s3.BucketLifecycleConfiguration(n, bucket=bucket.id,
                                            rules=lifecycle_rules(role, a.config),
                                            opts=pulumi.ResourceOptions.merge(
                                                self._keep,
                                                pulumi.ResourceOptions(depends_on=[versioning])))
        return bucket

    def _create_logging(self) -> None:
        for role in LOGGED_ROLES:
            aws.s3.BucketLogging(
                f"{self._name}-{role}", bucket=self.buckets[role].id,
                target_bucket=self.access_logs.id, target_prefix=f"{role}/",
                target_object_key_format={"partitioned_prefix": {
                    "partition_date_source": "EventTime"}},
                opts=self._keep)
