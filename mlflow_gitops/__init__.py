"""mlflow-gitops: the Python behind the Makefile and the tests (render, validate, tools, the pod runner)."""
