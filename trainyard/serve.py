"""`trainyard serve`: the served models of a stack (docs/serving.md).

    trainyard serve render llm --stack prod            # the model's Kubernetes objects (YAML)
    trainyard serve render llm --stack prod --json
    trainyard serve bench --url http://127.0.0.1:8080  # a bounded load test of a model server

Each sub-subcommand lives in its own module exposing `add_arguments(parser)` and `run(args)`
(SUBCOMMANDS below); one whose module is not there is left out of the parser.
"""

from __future__ import annotations

import importlib

SUBCOMMANDS = {
    "render": ("trainyard.serve_render", "print one served model's Kubernetes objects"),
    "bench": ("trainyard.serve_bench", "bounded load test of a model server: latency "
                                       "percentiles, QPS and errors per concurrency level"),
}


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="render served models' objects; load-test a model server",
                       description=__doc__.split("\n\n")[0])
    ssub = p.add_subparsers(dest="serve_command", metavar="SUBCOMMAND", parser_class=type(p))
    ssub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:
                continue  # not built yet
            raise
        s = ssub.add_parser(name, help=help_text,
                            description=(module.__doc__ or help_text).split("\n\n")[0])
        module.add_arguments(s)
        s.set_defaults(func=module.run)


def run(args) -> int:  # every sub-subcommand sets its own func; argparse requires one
    return int(args.func(args) or 0)
