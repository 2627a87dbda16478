"""Compatibility re-export: the Kubeflow Trainer builders live in components/services/trainjob.py.

They moved there because components/services/kubeflow.py, teams.py and monitoring.py use them and
components/ never imports trainyard/ (docs/ARCHITECTURE "Boundaries"; tests/components/
test_boundaries.py). The packaged workloads `trainyard job render` launches are in
trainyard/job.py. New code imports `components.services.trainjob`; this module only keeps old imports
(`from trainyard import jobspec`) working.
"""

from components.services.trainjob import (  # noqa: F401
    ANCESTOR_LABEL,
    BUDGET,
    FORBIDDEN_ENV,
    FSX_MOUNT,
    MAX_RESTARTS,
    METRICS_LABEL,
    NAME_RE,
    NCCL_DEBUG_LEVELS,
    NODE_JOB,
    PATCH_MANAGER,
    RUNTIME_KIND,
    SHARED_MOUNT,
    SHM_MOUNT,
    TRAINER_API,
    TRAINER_CHART_VERSION,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINJOB_PLURAL,
    WORKLOAD_LABEL,
    InterruptionBudget,
    JobRequest,
    PoolFacts,
    Workload,
    claims_for,
    cluster_training_runtime,
    exporter,
    interruption_budget,
    metrics_file_path,
    nccl_env,
    node_resources,
    pool_facts,
    pool_tolerations,
    runtime_name,
    runtime_ref,
    save_seconds,
    shm_size,
    step_seconds,
    supports_runtime,
    train_job,
    validate_runtime,
    validate_train_job,
    workload_argv,
)
