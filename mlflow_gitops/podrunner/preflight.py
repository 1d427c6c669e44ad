"""What the pod runner needs of the machine."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mlflow_gitops.podrunner.base import BUSYBOX, TOOLS, VENV, PodRunnerError
from mlflow_gitops.podrunner.images import images, mlflow_version
from mlflow_gitops.podrunner.postgres import postgres_bin


def preflight() -> None:
    """What the harness needs of the machine; raises PodRunnerError naming what is missing."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (namespaces, chroot and setpriv need it)")
    missing += [t for t in TOOLS if shutil.which(t) is None]
    if postgres_bin() is None:
        missing.append("PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    stand_ins = [BUSYBOX, *(path for image in images().values() for _name, path in image.applet_overrides)]
    missing += [path for path in stand_ins if not Path(path).exists()]
    if mlflow_version() is None:
        missing.append(f"mlflow in {VENV}")
    if missing:
        raise PodRunnerError("missing: " + "; ".join(missing) + " (`make e2e` installs them)")
