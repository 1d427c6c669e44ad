"""A Kubeflow Pipelines (KFP v2) component that logs a run to MLflow through the Service.

The pipeline's pods run in a namespace that networkPolicy.clients admits (values/homelab.yaml:
`kubeflow`, or any namespace labelled mlflow.daviestechlabs.io/client=true).
"""

from kfp import dsl

MLFLOW_TRACKING_URI = "http://mlflow.mlflow.svc.cluster.local"


@dsl.component(base_image="burakince/mlflow:3.15.1")
def train(experiment: str) -> str:
    import mlflow

    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_param("source", "kfp")
        mlflow.log_metric("loss", 0.1)
    return run.info.run_id


@dsl.pipeline(name="train-and-log")
def train_and_log(experiment: str = "pipelines") -> None:
    train(experiment=experiment).set_env_variable("MLFLOW_TRACKING_URI", MLFLOW_TRACKING_URI)
