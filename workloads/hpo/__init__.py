"""Hyperparameter search over the packaged workloads: Optuna's HyperbandPruner deciding, from each
trial's own eval metrics, which trials stop early (docs/hpo.md).

    python -m workloads.hpo.local --spec examples/hpo/llm-tiny.yaml        # CPU, real trials
    trainyard hpo render --stack prod --spec examples/hpo/llm-a10g.yaml --team research \\
        > hpo.yaml && kubectl apply -f hpo.yaml                          # TrainJob trials

Files: ``spec`` (the YAML spec, parsed once, strictly), ``tail`` (reading a trial's metrics
file as it grows), ``search`` (the study and the loop that starts, watches, prunes and stops
trials against the budget), ``local`` (trials as subprocesses), ``jobs`` and ``run`` (trials as
TrainJobs, the in-cluster controller).
"""
