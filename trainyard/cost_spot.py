"""`trainyard cost`: where Spot prices come from: the catalog's documented discount
assumption, or EC2's spot price history (`--live-spot`, needs AWS credentials)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from trainyard.errors import UsageError

SpotPrice = Callable[[str, float], tuple[float, str, str]]
"""(instance type, on-demand price) -> (spot $/h, date, source)."""


def assumed_spot(catalog) -> SpotPrice:
    discount = catalog.services["spot_discount_assumption"]

    def price(instance_type: str, on_demand: float) -> tuple[float, str, str]:
        return (on_demand * (1 - discount), catalog.price_date,
                f"assumption: on-demand minus {discount:.0%} "
                "(catalog services.spot_discount_assumption)")
    return price


def live_spot(region: str) -> SpotPrice:  # pragma: no cover - needs AWS credentials
    """Current spot prices from EC2 (the mean over the region's AZs of the latest price)."""
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise UsageError("--live-spot needs boto3 (pip install boto3)") from None
    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise UsageError("--live-spot needs AWS credentials (none found); drop the flag to use "
                         "the catalog's spot discount assumption")
    ec2 = session.client("ec2", region_name=region)
    cache: dict[str, tuple[float, str, str]] = {}

    def price(instance_type: str, on_demand: float) -> tuple[float, str, str]:
        if instance_type not in cache:
            try:
                resp = ec2.describe_spot_price_history(
                    InstanceTypes=[instance_type], ProductDescriptions=["Linux/UNIX"],
                    StartTime=dt.datetime.now(dt.UTC), MaxResults=100)
            except botocore.exceptions.BotoCoreError as e:
                raise UsageError(f"--live-spot: EC2 spot price history failed: {e}") from None
            except botocore.exceptions.ClientError as e:
                raise UsageError(f"--live-spot: EC2 spot price history failed: {e}") from None
            latest: dict[str, Any] = {}
            for h in resp.get("SpotPriceHistory", []):
                az = h["AvailabilityZone"]
                if az not in latest or h["Timestamp"] > latest[az]["Timestamp"]:
                    latest[az] = h
            if not latest:
                raise UsageError(f"--live-spot: no spot price for {instance_type} in {region}")
            mean = sum(float(h["SpotPrice"]) for h in latest.values()) / len(latest)
            when = max(h["Timestamp"] for h in latest.values()).date().isoformat()
            cache[instance_type] = (mean, when, f"EC2 spot price history, {region}, mean of "
                                                f"{len(latest)} AZs")
        return cache[instance_type]
    return price
