"""Composition root: read the stack's config once, then wire the platform together.

Runs under `pulumi up` / `pulumi preview` (real engine) and under `trainyard plan` (mock runtime).
"""

import json

import pulumi
from pulumi.runtime import config as engine_config

from components.config import ConfigError, load
from components.platform import Platform


def _engine_values() -> dict:
    """Every config key the engine passes, with objects and lists decoded from JSON."""
    raw = {**engine_config.get_config_env(), **engine_config.CONFIG.get()}
    decoded = {}
    for key, value in raw.items():
        if isinstance(value, str) and value[:1] in "[{":
            value = json.loads(value)
        decoded[key] = value
    return decoded


try:
    stack_config = load(_engine_values(), pulumi.get_stack())
except ConfigError as e:  # one line per problem, no traceback from the engine
    raise pulumi.RunError("invalid stack config:\n" + "\n".join(e.problems)) from None

platform = Platform("trainyard", stack_config)
for name, value in platform.stack_outputs().items():
    pulumi.export(name, value)
