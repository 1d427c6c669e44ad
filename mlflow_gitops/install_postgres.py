"""Install the Debian packages the e2e harness (mlflow_gitops.podrunner) needs, when missing.

* postgresql: the server that stands in for the CNPG Cluster (any /usr/lib/postgresql/N);
* busybox: the image of the chart's busybox init containers (the upstream `dbchecker` script needs
  ash), with netcat-openbsd for the `nc -z` that Debian's busybox lacks;
* chromium: the browser of the UI tests and `make screenshot` (mlflow_gitops/ui), driven by
  Playwright (requirements-browser.txt), which never downloads one.

Idempotent and quiet when both are present; otherwise `apt-get update` once and `apt-get install`,
as root (the developers' machines, CI in a container) or through passwordless sudo (a hosted CI
runner's VM, where the job runs as an ordinary user).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES = {
    "postgresql": "/usr/lib/postgresql/*/bin/postgres",
    "busybox": "/usr/bin/busybox",
    "netcat-openbsd": "/usr/bin/nc.openbsd",  # Debian's busybox nc has no -z
    "chromium": "/usr/bin/chromium",
}


def missing(packages: dict[str, str] = PACKAGES) -> list[str]:
    return [pkg for pkg, pattern in packages.items() if not list(Path("/").glob(pattern.lstrip("/")))]


def as_root() -> list[str] | None:
    """The prefix that runs a command as root: none for root, `sudo -n` where sudo needs no password."""
    if os.geteuid() == 0:
        return []
    if (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    ):
        return ["sudo", "-n"]
    return None


def main(packages: dict[str, str] = PACKAGES) -> int:
    """Install what is missing of `packages` (Debian package: a path glob it installs; the node's
    packages too, mlflow_gitops.node.build)."""
    todo = missing(packages)
    if not todo:
        return 0
    prefix = as_root()
    if prefix is None or shutil.which("apt-get") is None:
        print(
            f"install_postgres: missing {', '.join(todo)}; install them with apt-get as root "
            "(or through passwordless sudo)",
            file=sys.stderr,
        )
        return 1
    print(f"install_postgres: apt-get install {' '.join(todo)}", file=sys.stderr)
    apt = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    for argv in (
        [*apt, "update", "-qq"],
        [*apt, "install", "-y", "-qq", "--no-install-recommends", *todo],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stdout + done.stderr, file=sys.stderr)
            print(f"install_postgres: {' '.join(argv)} exited {done.returncode}", file=sys.stderr)
            return 1
    if still := missing(packages):
        print(f"install_postgres: still missing after apt-get: {', '.join(still)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
