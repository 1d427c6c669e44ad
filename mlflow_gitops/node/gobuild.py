"""What every build of the node shares: where binaries and images go, how a command runs, how long it
took, and which module version a Go binary carries. The builds (build, addons, operator) and the image
recipes import it; it imports none of them."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from mlflow_gitops import apiserver_build
from mlflow_gitops.versions import ROOT

BIN = ROOT / "bin"
# The image tars (render_images, cnpg_images), keyed by their inputs (recipe included), so every
# checkout on the machine shares them as it shares Go's build cache; XDG_CACHE_HOME moves it.
IMAGE_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlflow-gitops" / "node-images"
)


def run(cmd: list[str], cwd: Path | None = None) -> str:
    return apiserver_build.run(cmd, cwd=cwd, capture=True)


def module_version(path: Path, module: str) -> str | None:
    """The version of `module` that `go version -m` finds linked into the binary at `path`."""
    if not path.exists():
        return None
    out = subprocess.run(["go", "version", "-m", str(path)], capture_output=True, text=True, check=False)
    match = re.search(rf"^\s+mod\s+{re.escape(module)}\s+(\S+)", out.stdout, re.MULTILINE)
    return match.group(1) if match else None


def timed(label: str, action: Callable[[], object]) -> str:
    started = time.monotonic()
    action()
    return f"{label}: built in {time.monotonic() - started:.0f} s"
