"""`python -m mlflow_gitops.podrunner`: `up`, `env`, and the helpers the harness spawns of itself."""

import sys

from mlflow_gitops.podrunner import PodRunnerError, main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except PodRunnerError as err:
        sys.exit(f"podrunner: {err}")
