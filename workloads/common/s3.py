"""Small boto3 helpers for checkpoints and data on S3.

Transient failures (500/503 SlowDown, throttling, connection resets) are retried by botocore's
retry handler, configured here once: ``standard`` mode (exponential backoff with jitter, retries
5xx, throttling and connection errors) with ``TRAINYARD_S3_MAX_ATTEMPTS`` attempts (default 10;
``TRAINYARD_S3_RETRY_MODE=adaptive`` adds client-side rate limiting). Endpoint and credentials
come from the usual AWS environment (``AWS_ENDPOINT_URL_S3`` points it at MinIO or moto; on EKS
Pod Identity supplies credentials).
"""

from __future__ import annotations

import os
from pathlib import Path

from workloads.common.cli import ConfigError, parse_s3_url

S3_MAX_ATTEMPTS = int(os.environ.get("TRAINYARD_S3_MAX_ATTEMPTS", "10"))
S3_RETRY_MODE = os.environ.get("TRAINYARD_S3_RETRY_MODE", "standard")


def s3_client(max_attempts: int | None = None):  # -> botocore client (boto3 imported lazily)
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": max_attempts or S3_MAX_ATTEMPTS, "mode": S3_RETRY_MODE},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client("s3", config=config)


CREDENTIALS_HELP = (
    "provide them with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for "
    "temporary ones), or AWS_PROFILE naming a profile in ~/.aws (aws configure / aws sso login); "
    "on EKS, Pod Identity supplies them to the job's service account, on EC2 the instance role")
REJECTED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
            "TokenRefreshRequired", "RequestExpired"}


def check_access(url: str, flag: str) -> None:
    """ConfigError (naming ``flag``) unless ``url`` is usable: credentials found and accepted,
    the bucket there, listing allowed. One ListObjectsV2 of at most one key under the prefix
    (what a resume does first anyway), with 3 attempts so a bad endpoint fails in seconds."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    bucket, prefix = parse_s3_url(url, flag)
    try:
        client = s3_client(max_attempts=min(S3_MAX_ATTEMPTS, 3))
        client.list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/" if prefix else "",
                               MaxKeys=1)
    except (NoCredentialsError, PartialCredentialsError) as e:
        raise ConfigError(flag, f"{url}: no AWS credentials found ({e}); "
                                f"{CREDENTIALS_HELP}") from None
    except ProfileNotFound as e:
        raise ConfigError(flag, f"{url}: {e}; {CREDENTIALS_HELP}") from None
    except ClientError as e:
        err = e.response.get("Error", {})
        code = err.get("Code", "?")
        if code in REJECTED:
            why = f"AWS rejected the credentials ({code}): refresh or replace them"
        elif code == "NoSuchBucket":
            why = f"bucket {bucket!r} does not exist (or is in another account or partition)"
        elif code in ("AccessDenied", "403", "AllAccessDisabled"):
            why = (f"access denied listing s3://{bucket}/{prefix}: the identity needs "
                   f"s3:ListBucket on the bucket and object read/write under the prefix")
        else:
            why = f"{code}: {err.get('Message', e)}"
        raise ConfigError(flag, f"{url}: {why}") from None
    except BotoCoreError as e:
        raise ConfigError(flag, f"{url}: cannot reach S3 ({e})") from None


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def list_objects(client, bucket: str, prefix: str) -> dict[str, int]:
    """Every key under ``prefix`` (a "directory": a trailing / is implied) with its size."""
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    out: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = int(obj["Size"])
    return out


def list_dirs(client, bucket: str, prefix: str) -> list[str]:
    """Immediate "sub-directory" names under ``prefix``."""
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    out = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter="/"
    )
    for page in pages:
        for cp in page.get("CommonPrefixes", []):
            out.append(cp["Prefix"][len(prefix):].strip("/"))
    return out


def get_bytes(client, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None if it does not exist."""
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None


def put_bytes(client, bucket: str, key: str, data: bytes) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=data)


def upload_dir(client, local: Path, bucket: str, prefix: str, names: list[str]) -> None:
    """Upload ``local/name`` for each name to ``prefix/name`` (multipart for large files)."""
    for name in names:
        client.upload_file(str(local / name), bucket, join_key(prefix, name))


def download_file(client, bucket: str, key: str, dest: Path) -> None:
    """``key`` to ``dest`` via a ``.part`` file renamed into place (never a half file there)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    try:
        client.download_file(bucket, key, str(tmp))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def download_prefix(client, bucket: str, prefix: str, dest: Path) -> dict[str, int]:
    """Download every object under ``prefix`` into ``dest`` (keeping relative paths)."""
    objs = list_objects(client, bucket, prefix)
    base = prefix.rstrip("/") + "/" if prefix else ""
    for key in objs:
        target = dest / key[len(base):]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        client.download_file(bucket, key, str(tmp))
        os.replace(tmp, target)
    return {key[len(base):]: size for key, size in objs.items()}


def delete_prefix(client, bucket: str, prefix: str) -> None:
    keys = list(list_objects(client, bucket, prefix))
    for i in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[i:i + 1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
