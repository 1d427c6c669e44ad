"""The rendered MLflow pod run on this machine against a real PostgreSQL (see runner.py)."""

from mlflow_gitops.podrunner.runner import (
    DEFAULT_RENDER,
    ROOT,
    VENV,
    PeakSampler,
    PodRunner,
    PodRunnerError,
    Poll,
    Postgres,
    Proc,
    Render,
    Store,
    expand,
    free_port,
    image_of,
    kubelet_env,
    main,
    materialize_volumes,
    mlflow_version,
    postgres_bin,
    preflight,
    process_tree,
)

# The names before the rename, for tests that still spell them; remove once none does.
LocalStack = PodRunner
LocalStackError = PodRunnerError

__all__ = [
    "DEFAULT_RENDER",
    "ROOT",
    "VENV",
    "LocalStack",
    "LocalStackError",
    "PeakSampler",
    "PodRunner",
    "PodRunnerError",
    "Poll",
    "Postgres",
    "Proc",
    "Render",
    "Store",
    "expand",
    "free_port",
    "image_of",
    "kubelet_env",
    "main",
    "materialize_volumes",
    "mlflow_version",
    "postgres_bin",
    "preflight",
    "process_tree",
]
