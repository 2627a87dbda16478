"""Every class of bad stack config is refused at its root, once, with its key path and value.

Classes: values that used to crash validation (missing / null / wrongly typed fields read by
cross-field rules, absent sections), values that used to be accepted (regions, zones and instance
types that do not exist or are not offered, duplicate YAML keys), and misleading messages.
tests/components/test_broken_stacks.py runs the same classes end to end over stack files.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from pathlib import Path

import pytest
import yaml

from components import config
from components.compute.catalog import load_catalog
from components.config import ConfigError, load
from components.config.reader import Reader
from trainyard.errors import UsageError
from trainyard.synth import MAX_STACK_FILE_BYTES, read_stack_file

ROOT = Path(__file__).resolve().parents[2]
P = "trainyard:gpuPools"


def stack_raw(stack: str) -> dict:
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


def problems(raw: dict, stack: str = "bad") -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(raw, stack)
    return e.value.problems


def one_problem(raw: dict) -> str:
    found = problems(raw)
    assert len(found) == 1, found
    return found[0]


def changed(stack: str, edit) -> dict:
    raw = copy.deepcopy(stack_raw(stack))
    edit(raw)
    return raw


# ----------------------------------------------------------------------------------------------
# The reader: rejected values read as absent, rules ask whether a field parsed
# ----------------------------------------------------------------------------------------------
def test_reader_rejected_value_reads_as_absent_and_is_not_parsed():
    found: list[str] = []
    r = Reader({"a": True, "b": 5, "c": 0, "d": "x"}, "ns:", found)
    assert r.int("a") is None  # bool is an int subclass in Python; YAML `true` is not a number
    assert r.int("b", 3, max=4) == 3  # out of range: the default stands in, never the bad value
    assert r.bool("c", False) is False
    assert r.str("d", check=lambda v: "is bad") is None
    assert not r.parsed("a") and not r.parsed("b") and not r.parsed("c") and not r.parsed("d")
    assert r.parsed("e")  # absent, defaulted: parsed
    assert found == ["ns:a: expected an integer, got a boolean True",
                     "ns:b: 5 is above the maximum 4",
                     "ns:c: expected true or false, got an integer 0",
                     "ns:d: 'x' is bad"]


def test_reader_rejected_mapping_is_reported_once():
    found: list[str] = []
    root = Reader({"net": "10.0.0.0/16", "items": ["x"]}, "ns:", found)
    net = root.child("net")
    assert net.str("cidr") is None and net.str_list("azs") == ()  # required, not reported again
    net.finish()
    (item,) = root.items("items")
    item.int("size")
    missing = root.child("absent", required=True)
    missing.str("inner")
    assert found == ["ns:net: expected a mapping, got a string",
                     "ns:items[0]: expected a mapping, got a string",
                     "ns:absent: is required"]
    assert not root.parsed("net.cidr") and not root.parsed("items[0].size")
    assert not net.parsed("cidr") and root.parsed("other")


def test_reader_unknown_keys_that_are_not_strings():
    found: list[str] = []
    r = Reader({1: "one", "b": 2, 2.5: 3}, "ns:", found)
    r.finish()
    assert found == ["ns:1: unknown key (allowed: )", "ns:2.5: unknown key (allowed: )",
                     "ns:b: unknown key (allowed: )"]


# ----------------------------------------------------------------------------------------------
# Class 1: values that crashed validation
# ----------------------------------------------------------------------------------------------
MAX_SIZE = [
    ("missing", None, "is required"),
    ("string", "2", "expected an integer, got a string '2'"),
    ("float", 2.5, "expected an integer, got a number 2.5"),
    ("bool", True, "expected an integer, got a boolean True"),
    ("zero", 0, "0 is below the minimum 1"),
]


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("label,value,message", MAX_SIZE, ids=[m[0] for m in MAX_SIZE])
def test_pool_max_size_refused_once(stack, label, value, message):
    def edit(raw):
        raw[P][0]["maxSize"] = value  # None: YAML `maxSize:` (null), same as missing

    assert one_problem(changed(stack, edit)) == f"{P}[0].maxSize: {message}"


@pytest.mark.parametrize("value,message", [
    (None, "trainyard:network: is required"),
    ("10.0.0.0/16", "trainyard:network: expected a mapping, got a string"),
    ([{"vpcCidr": "10.0.0.0/16"}], "trainyard:network: expected a mapping, got a list"),
    ({"vpcCidr": "10.10.0.0/16"}, "trainyard:network.availabilityZones: is required"),
], ids=["absent", "scalar", "list", "no-azs"])
def test_network_section_refused_once(value, message):
    def edit(raw):
        if value is None:
            del raw["trainyard:network"]
        else:
            raw["trainyard:network"] = value

    assert one_problem(changed("prod", edit)) == message


@pytest.mark.parametrize("value", [None, []], ids=["absent", "empty"])
def test_a_gpu_pool_is_required(value):
    def edit(raw):
        if value is None:
            del raw[P]
        else:
            raw[P] = value

    found = one_problem(changed("dev", edit))
    assert found.startswith(f"{P}: at least one GPU pool is required: trainyard is a GPU "
                            "training platform")


@pytest.mark.parametrize("path,value,message", [
    (("trainyard:teams", 0, "gpuQuota"), True, "trainyard:teams[0].gpuQuota: expected an "
                                                "integer, got a boolean True"),
    ((P, 0, "efa"), 1, f"{P}[0].efa: expected true or false, got an integer 1"),
    ((P, 0, "minSize"), False, f"{P}[0].minSize: expected an integer, got a boolean False"),
    (("trainyard:cluster", "systemNodes", "maxSize"), True,
     "trainyard:cluster.systemNodes.maxSize: expected an integer, got a boolean True"),
], ids=["quota-true", "efa-1", "min-false", "system-max-true"])
def test_bool_and_int_are_not_confused(path, value, message):
    def edit(raw):
        node = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    assert one_problem(changed("prod", edit)) == message


def test_a_pool_that_is_not_a_mapping_is_reported_once():
    assert one_problem(changed("prod", lambda raw: raw[P].insert(0, "a100"))) == \
        f"{P}[0]: expected a mapping, got a string"


def test_config_keys_must_be_strings():
    assert one_problem(changed("dev", lambda raw: raw.update({42: "x"}))) == \
        "config: key 42 is not a string (config keys look like trainyard:network)"


# ----------------------------------------------------------------------------------------------
# Class 2: values that used to be accepted (offline region data)
# ----------------------------------------------------------------------------------------------
def test_availability_zone_must_exist():
    raw = changed("dev", lambda r: r["trainyard:network"].update(
        availabilityZones=["us-east-1a", "us-east-1z"]))
    found = one_problem(raw)
    assert found.startswith("trainyard:network.availabilityZones[1]: 'us-east-1z' is not an "
                            "availability zone of us-east-1 (us-east-1a, ")
    assert config.data_source() in found and "`trainyard preflight` checks live" in found


def test_zone_names_only_some_accounts_see_are_accepted():
    """Older accounts still have ap-northeast-1b; some accounts see us-west-1c (not in moto's
    snapshot account): scripts/refresh_region_data.py adds them."""
    raw = changed("dev", lambda r: (r.update({"aws:region": "ap-northeast-1"}), r[
        "trainyard:network"].update(availabilityZones=["ap-northeast-1b", "ap-northeast-1c"])))
    assert load(raw, "dev").network.availability_zones == ("ap-northeast-1b", "ap-northeast-1c")
    assert "us-west-1c" in config.region_facts("us-west-1")[0].azs


@pytest.mark.parametrize("region,hint", [("us-foo-9", "e.g. us-east-1"),
                                         ("us-eats-1", "did you mean 'us-east-1'?"),
                                         ("mars-1", "e.g. us-east-1")])
def test_region_must_exist(region, hint):
    raw = changed("dev", lambda r: r.update({"aws:region": region}))
    found = one_problem(raw)  # the AZs are not judged against a region that was rejected
    assert found.startswith(f"aws:region: {region!r} is not an AWS region (not in the region "
                            "list of botocore ")
    assert found.endswith(f"; {hint})")


def test_instance_type_must_be_offered_in_the_region():
    def edit(raw):
        raw["aws:region"] = "af-south-1"
        raw["trainyard:network"]["availabilityZones"] = ["af-south-1a", "af-south-1b"]
        raw[P] = [{"name": "h100", "instanceTypes": ["p5.48xlarge"], "efa": True,
                   "availabilityZones": ["af-south-1a"], "maxSize": 2}]

    raw = changed("dev", edit)
    assert one_problem(raw) == (
        f"{P}[0].instanceTypes[0]: 'p5.48xlarge' is not offered in af-south-1 "
        f"({config.data_source()}; `trainyard preflight` checks live)")


def test_system_node_type_must_be_offered_in_the_region():
    def edit(raw):
        raw["aws:region"] = "af-south-1"
        raw["trainyard:network"]["availabilityZones"] = ["af-south-1a", "af-south-1b"]
        raw["trainyard:cluster"]["systemNodes"]["instanceTypes"] = ["g5.2xlarge"]
        raw[P] = [{"name": "cpu-only-region", "instanceTypes": ["g5.xlarge"], "maxSize": 1}]

    found = problems(changed("dev", edit))
    assert "trainyard:cluster.systemNodes.instanceTypes[0]: 'g5.2xlarge' is not offered in " \
           "af-south-1" in found[0]


def test_reserved_pools_are_not_judged_by_the_offline_offerings():
    """A Capacity Block or ODCR proves its type is offered where it was bought; the offline
    snapshot may not list Capacity Block types (preflight checks the reservation live)."""
    def edit(raw):
        raw[P][1]["instanceTypes"] = ["p5e.48xlarge"]  # not in us-east-1 in the snapshot

    assert config.region_facts("us-east-1")[0].offers("p5e.48xlarge") is False
    assert load(changed("prod", edit), "prod").pool("h100").instance_types == ("p5e.48xlarge",)


def test_region_without_offline_zones_is_accepted_unchecked():
    assert config.region_data()["regions"]["mx-central-1"] is None
    raw = changed("dev", lambda r: (r.update({"aws:region": "mx-central-1"}), r[
        "trainyard:network"].update(availabilityZones=["mx-central-1a", "mx-central-1x"])))
    assert load(raw, "dev").region == "mx-central-1"


def test_region_newer_than_the_offline_data_but_known_to_botocore(monkeypatch):
    data = copy.deepcopy(config.region_data())
    del data["regions"]["us-east-2"]
    monkeypatch.setattr(config, "region_data", lambda: data)
    facts, problem = config.region_facts("us-east-2")
    assert problem is None and facts.azs is None and facts.offers("p5.48xlarge") is None


def test_region_data_covers_the_catalog_and_names_its_sources():
    data = config.region_data()
    assert set(data["instanceTypes"]) >= set(load_catalog().names())
    assert data["sources"]["moto"] and data["sources"]["botocore"]
    dt.date.fromisoformat(data["extracted"])
    for stack in ("dev", "staging", "prod"):
        region = stack_raw(stack)["aws:region"]
        assert data["regions"][region]["azs"], region


def test_region_data_is_what_the_script_extracts():
    pytest.importorskip("moto")
    from importlib import metadata

    import scripts.refresh_region_data as refresh

    data = config.region_data()
    installed = {"botocore": metadata.version("botocore"), "moto": metadata.version("moto")}
    if installed != data["sources"]:
        pytest.skip(f"installed {installed} differ from the data's {data['sources']}: run "
                    "scripts/refresh_region_data.py")
    fresh = refresh.extract(dt.date.fromisoformat(data["extracted"]))
    assert fresh == data
    assert refresh.render(fresh) == config.REGIONS_PATH.read_text()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,line,key", [
    ("config:\n  aws:region: us-east-1\n  aws:region: us-west-2\n", 3, "'aws:region'"),
    ("config:\n  trainyard:gpuPools:\n    - {name: a, maxSize: 1, maxSize: 2}\n", 3, "'maxSize'"),
    ("config:\n  trainyard:network:\n    vpcCidr: 10.0.0.0/16\n\n    vpcCidr: 10.1.0.0/16\n",
     5, "'vpcCidr'"),
])
def test_duplicate_yaml_keys_are_refused_with_lines(tmp_path, text, line, key):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as e:
        read_stack_file(path, "bad")
    message = str(e.value)
    assert message.startswith(f"{path}: line {line}, column ")
    assert f"malformed YAML: duplicate key {key} (first set on line " in message
    assert "\n" not in message


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    path = write(tmp_path, "pools: &p {maxSize: 2, minSize: 0}\n"
                           "config:\n  x:\n    <<: *p\n    maxSize: 4\n")
    assert read_stack_file(path, "bad") == {"x": {"maxSize": 4, "minSize": 0}}


# ----------------------------------------------------------------------------------------------
# Class 3: misleading messages
# ----------------------------------------------------------------------------------------------
def test_world_open_public_endpoint_is_named_as_such():
    raw = changed("dev", lambda r: r["trainyard:cluster"].update(publicAccessCidrs=["0.0.0.0/0"]))
    assert one_problem(raw).startswith("trainyard:cluster.publicAccessCidrs[0]: '0.0.0.0/0' opens "
                                       "the API endpoint to the whole internet")


@pytest.mark.parametrize("value,message", [
    (None, "aws:region: is required (e.g. us-east-1)"),
    (1, "aws:region: expected a string, got an integer 1"),
], ids=["missing", "integer"])
def test_region_missing_or_not_a_string(value, message):
    def edit(raw):
        if value is None:
            del raw["aws:region"]
        else:
            raw["aws:region"] = value

    assert one_problem(changed("dev", edit)) == message


@pytest.mark.parametrize("label,edit,message", [
    ("az-twice", lambda r: (r["trainyard:network"].update(availabilityZones=["us-east-1a",
                                                                            "us-east-1z"]),
                            r[P][0].update(availabilityZones=["us-east-1z"])),
     "trainyard:network.availabilityZones[1]: 'us-east-1z' is not an availability zone"),
    ("capacity-typo", lambda r: r[P][0].update(capacityType="SPOTT"),
     f"{P}[0].capacityType: 'SPOTT' is not one of"),
    ("support-typo", lambda r: r["trainyard:cluster"].update(kubernetesVersion="1.32",
                                                             supportType="EXTENDD"),
     "trainyard:cluster.supportType: 'EXTENDD' is not one of"),
    ("prefix-range", lambda r: r["trainyard:network"].update(privateSubnetPrefix=30),
     "trainyard:network.privateSubnetPrefix: 30 is above the maximum 26"),
    ("quota-negative", lambda r: r["trainyard:teams"][0].update(gpuQuota=-2),
     "trainyard:teams[0].gpuQuota: -2 is below the minimum 0"),
    ("reservation-scalar", None, f"{P}[1].capacityReservation: expected a mapping, got a string"),
    ("public-endpoint-string", lambda r: r["trainyard:cluster"].update(
        endpointPublicAccess="yes", publicAccessCidrs=None),
     "trainyard:cluster.endpointPublicAccess: expected true or false, got a string 'yes'"),
])
def test_no_problem_is_computed_from_a_rejected_value(label, edit, message):
    if edit is None:
        raw = changed("prod", lambda r: r[P][1].update(capacityReservation="cr-0a1b2c3d4e5f60718"))
    else:
        raw = changed("dev", edit)
    assert one_problem(raw).startswith(message)


def test_subnet_shortfall_is_one_problem_naming_every_short_zone():
    raw = changed("prod", lambda r: r["trainyard:network"].update(privateSubnetPrefix=24))
    found = one_problem(raw)
    assert found.startswith("trainyard:network.privateSubnetPrefix: private subnet 10.30.0.0/24 "
                            "in us-east-1a has 251 usable addresses but the pools may need ")
    assert "(also short: us-east-1b needs " in found and "us-east-1c needs " in found


def test_oversized_stack_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "Pulumi.huge.yaml"
    with path.open("wb") as f:
        f.truncate(50 * 1024 * 1024)  # sparse: 50 MiB that are never read
    started = time.perf_counter()
    with pytest.raises(UsageError) as e:
        read_stack_file(path, "huge")
    assert time.perf_counter() - started < 0.5
    assert str(e.value) == (f"{path}: 50.0 MiB is too large for a stack file (the limit is "
                            "1.0 MiB); is this the right file?")


def test_committed_stacks_are_far_below_the_size_limit():
    for path in (ROOT / "stacks").glob("Pulumi.*.yaml"):
        assert path.stat().st_size < MAX_STACK_FILE_BYTES / 50, path


def test_region_data_file_is_compact():
    assert config.REGIONS_PATH.stat().st_size < 64 * 1024
    json.loads(config.REGIONS_PATH.read_text())


# ----------------------------------------------------------------------------------------------
# Every key of every committed stack, given a wrong value: parsed or refused, never a crash
# ----------------------------------------------------------------------------------------------
ODD_VALUES = [None, True, False, 0, -1, 2.5, "x", "", [], {}, [1], {"a": 1}, "0.0.0.0/0"]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_any_value_anywhere_is_parsed_or_refused_once(stack):
    base = stack_raw(stack)
    for path in list(_paths(base))[1:]:
        node = base
        for key in path[:-1]:
            node = node[key]
        leaf = not isinstance(node[path[-1]], dict) and not (
            isinstance(node[path[-1]], list) and any(isinstance(v, dict)
                                                     for v in node[path[-1]]))
        for value in ODD_VALUES:
            raw = copy.deepcopy(base)
            target = raw
            for key in path[:-1]:
                target = target[key]
            old = target[path[-1]]
            target[path[-1]] = value
            try:
                load(raw, stack)
            except ConfigError as e:
                # A mapping replaced by {} lacks several required keys; a scalar is one value,
                # except a name other sections refer to (a pool renamed): then one problem per
                # reference, each naming the old value.
                refs = isinstance(old, str) and all(f"{old!r}" in p for p in e.problems)
                assert not leaf or len(e.problems) == 1 or refs, (path, value, e.problems)
