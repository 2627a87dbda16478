"""The Pulumi components, grouped by layer: ``network``, ``compute``, ``storage``, ``services``
(platform services) and ``serving``; ``config`` parses the stack configuration once and
``platform`` wires everything together. Components never import ``trainyard``."""
