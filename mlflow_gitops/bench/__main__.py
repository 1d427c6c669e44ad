"""`python -m mlflow_gitops.bench` (`make bench`), and the load generator it runs in the pod (`_load`)."""

import sys

from mlflow_gitops.bench.run import main
from mlflow_gitops.podrunner import PodRunnerError

if __name__ == "__main__":
    try:
        sys.exit(main())
    except PodRunnerError as err:
        sys.exit(f"bench: {err}")
