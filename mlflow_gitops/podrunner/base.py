"""Constants and the error of the pod runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RENDER = ROOT / "rendered" / "homelab.yaml"
VENV = Path(os.environ.get("PODRUNNER_VENV", sys.prefix))  # stands in for the image's /opt/venv
NAMESPACE = "mlflow"
CLUSTER_DOMAIN = "cluster.local"
SERVICE_NET = "127.1.0."  # Service "ClusterIPs" inside the pod's network namespace
SHM_SIZE = "64m"  # a container's default /dev/shm
BUSYBOX = "/usr/bin/busybox"
TOOLS = ("unshare", "nsenter", "setpriv", "mount", "taskset")
# This module's own helpers (`_pause`, `_forward`, `_enter`): run as root on the host's filesystem,
# they import the package before any namespace or chroot could hide it. Spawned with cwd=ROOT, so
# `-m` finds the checkout's package whether or not it is installed.
HELPER = (sys.executable, "-m", "mlflow_gitops.podrunner")

Obj = dict[str, Any]


class PodRunnerError(Exception):
    """The render asks for something this machine cannot provide, or a step failed."""
