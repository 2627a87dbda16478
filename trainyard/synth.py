"""Offline synthesis: run the real `__main__.py` under Pulumi's mock runtime and record the plan.

The plan shape is a contract (see README "Plan JSON"): every resource, component resources
included, with its URN, type, logical name, parent, mock physical id, inputs as the engine sees
them (camelCase) and the outputs the mocks returned. Values the provider would compute are
placeholders. Secrets are masked as "[secret]".
"""

from __future__ import annotations

import gc
import json
import runpy
from pathlib import Path
from typing import Any, Optional

import yaml

from components import config as stack_config
from trainyard.errors import UsageError
from trainyard.project import PROJECT_NAME as PROJECT
from trainyard.project import project_root

SECRET = "[secret]"
STACK_TYPE = "pulumi:pulumi:Stack"
MAX_STACK_FILE_BYTES = 1024 * 1024
"""A stack file is a page of config (the committed ones are ~3 KB); anything near this size is
the wrong file, and parsing it would take seconds to minutes before saying so."""


# ----------------------------------------------------------------------------------------------
# Stack files
# ----------------------------------------------------------------------------------------------
def stack_path(stack: str, stack_file: Optional[Path] = None) -> Path:
    if stack_file is not None:
        return Path(stack_file)
    return project_root() / "stacks" / f"Pulumi.{stack}.yaml"


def known_stacks() -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")]
                  for p in (project_root() / "stacks").glob("Pulumi.*.yaml"))


def __getattr__(name: str) -> Any:
    if name == "ROOT":  # the project root, found from the working directory (trainyard/project.py)
        return project_root()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def stack_name_from_file(path: Path) -> str:
    name = Path(path).name
    if name.startswith("Pulumi.") and name.endswith((".yaml", ".yml")):
        return name.split(".")[1]
    return Path(path).stem


class _StackFileLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one
    silently, so the first setting would be ignored without a word)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys merged in with `<<` may be overridden: that is the point
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in first:
                        raise _DuplicateKey(key, first[key], key_node.start_mark)
                    first[key] = key_node.start_mark.line + 1
                except TypeError:  # an unhashable key: SafeLoader reports it below
                    continue
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first_line: int, mark):
        self.problem = (f"duplicate key {key!r} (first set on line {first_line}; YAML would "
                        "silently keep only the last)")
        self.problem_mark = mark
        super().__init__(self.problem)


def read_stack_file(path: Path, stack: str) -> dict[str, Any]:
    """The stack file's `config:` mapping. UsageError for a missing, oversized or malformed file
    (a key given twice counts as malformed)."""
    if not path.is_file():
        root = project_root()
        if path.parent == root / "stacks":
            raise UsageError(f"unknown stack {stack!r}: no {path.relative_to(root)} "
                             f"(known stacks: {', '.join(known_stacks())})")
        raise UsageError(f"{path}: no such stack file")
    try:
        size = path.stat().st_size
        if size > MAX_STACK_FILE_BYTES:  # refuse before reading: parsing 50 MB takes ~30 s
            raise UsageError(f"{path}: {_size(size)} is too large for a stack file (the limit "
                             f"is {_size(MAX_STACK_FILE_BYTES)}); is this the right file?")
        doc = yaml.load(path.read_text(), Loader=_StackFileLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError(f"{path}:{where}: malformed YAML: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise UsageError(f"{path}: expected a top-level `config:` mapping")
    return doc["config"]


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KiB"


def _iso(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a config value")


def engine_config(raw: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Encode YAML config the way the Pulumi engine hands it to a program: strings as they are,
    everything else as JSON. `{secure: ...}` values cannot be decrypted offline: they become a
    placeholder the program sees as a secret."""
    out, secret_keys = {}, []
    for key, value in raw.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            out[key], secret_keys = SECRET, secret_keys + [key]
        elif isinstance(value, str):
            out[key] = value
        else:
            # YAML parses ISO timestamps into dates; the engine hands them over as strings.
            out[key] = json.dumps(value, default=_iso)
    return out, secret_keys


def load_config(stack: str, stack_file: Optional[Path] = None) -> stack_config.StackConfig:
    path = stack_path(stack, stack_file)
    return stack_config.load(read_stack_file(path, stack), stack)


# ----------------------------------------------------------------------------------------------
# Recording the registrations
# ----------------------------------------------------------------------------------------------
def _mask(value: Any) -> Any:
    from pulumi.runtime import rpc

    if rpc.is_rpc_secret(value):
        return SECRET
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """JSON-able, deterministic: floats that are whole become ints (the engine sends numbers as
    doubles), unknowns become None."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _recording_monitor(mocks):
    from pulumi.runtime import rpc
    from pulumi.runtime.mocks import MockMonitor

    class RecordingMonitor(MockMonitor):
        def __init__(self, m):
            super().__init__(m)
            self.records: dict[str, dict] = {}
            self.stack_urn = ""

        def RegisterResource(self, request):
            resp = super().RegisterResource(request)
            if request.type == STACK_TYPE:
                self.stack_urn = resp.urn
                return resp
            inputs = _mask(rpc.deserialize_properties(request.object))
            state = dict(self.resources[resp.urn].state)
            for key in request.additionalSecretOutputs:
                if key in state:
                    state[key] = SECRET
            for key in [k for k, v in inputs.items() if v == SECRET]:
                state[key] = SECRET
            parent = request.parent if request.parent and request.parent != self.stack_urn else None
            self.records[resp.urn] = {
                "urn": resp.urn, "type": request.type, "name": request.name, "parent": parent,
                "custom": bool(request.custom), "id": resp.id or None,
                "provider": request.provider.split("::")[-2] if "::" in request.provider else None,
                "dependencies": sorted(set(request.dependencies)),
                "protect": bool(request.protect), "retainOnDelete": bool(request.retainOnDelete),
                "inputs": inputs, "outputs": state,
            }
            return resp

    return RecordingMonitor(mocks)


# ----------------------------------------------------------------------------------------------
# Synthesis
# ----------------------------------------------------------------------------------------------
def synthesize(stack: str, stack_file: Optional[Path] = None) -> dict:
    """Plan `stack` offline. Raises UsageError / ConfigError before anything is synthesized."""
    path = stack_path(stack, stack_file)
    raw = read_stack_file(path, stack)
    cfg = stack_config.load(raw, stack)  # fail on bad config before any resource exists
    values, secret_keys = engine_config(raw)
    return _run_program(cfg.stack, cfg.region, values, secret_keys)


def _run_program(stack: str, region: str, values: dict[str, str], secret_keys: list[str]) -> dict:
    import pulumi
    from pulumi.runtime import settings
    from pulumi.runtime.mocks import _sync_await
    from pulumi.runtime.stack import run_pulumi_func

    from trainyard.mocks import TrainyardMocks

    program_path = project_root() / "__main__.py"
    _skip_source_positions()
    mocks = TrainyardMocks(region)
    monitor = _recording_monitor(mocks)
    settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_all_config(values, secret_keys)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()

    exported: dict[str, Any] = {}

    def program():
        runpy.run_path(str(program_path), run_name="__pulumi_program__")
        root = settings.get_root_resource()
        outputs = pulumi.Output.from_input(dict(root.outputs))  # type: ignore[union-attr]

        def keep(value):
            exported.update(value)

        _sync_await(outputs.apply(keep).future())
        secret_names = [k for k, v in root.outputs.items()  # type: ignore[union-attr]
                        if isinstance(v, pulumi.Output) and _sync_await(v.is_secret())]
        for k in secret_names:
            exported[k] = SECRET

    was_enabled = gc.isenabled()
    gc.disable()  # the program allocates many long-lived objects; see trainyard/cli.py
    try:
        _sync_await(run_pulumi_func(program))
    finally:
        if was_enabled:
            gc.enable()

    resources = [_plain(r) for _, r in sorted(monitor.records.items())]
    return {"project": PROJECT, "stack": stack, "resources": resources,
            "outputs": _plain(dict(sorted(exported.items())))}


def _skip_source_positions() -> None:
    """The SDK records a stack trace with a file URI per frame for every resource so the engine
    can point diagnostics at source lines. The offline plan never sends them anywhere, and they
    cost about a second per prod plan, so the offline runner records an empty trace instead."""
    from pulumi.runtime import resource as sdk_resource

    if hasattr(sdk_resource, "_get_stack_trace"):
        from pulumi.runtime.proto import source_pb2

        sdk_resource._get_stack_trace = source_pb2.StackTrace  # type: ignore[attr-defined]


def dump_plan(plan: dict) -> str:
    return json.dumps(plan, indent=2, sort_keys=True) + "\n"
