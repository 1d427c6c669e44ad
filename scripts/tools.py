"""Install the pinned Go tools into ./bin.

A tool is taken from PATH only when it reports exactly the pinned version; otherwise it is built
with `go install` at the pin. helm is built with the version ldflags so that it reports its own
version and the target Kubernetes version of tools/versions.env instead of the default 1.20.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from versions import PINS, ROOT  # noqa: E402

BIN = ROOT / "bin"


@dataclass(frozen=True)
class Tool:
    name: str
    package: str  # go install path without @version
    pin_key: str
    version_args: tuple[str, ...]

    @property
    def version(self) -> str:
        return PINS[self.pin_key]

    def ldflags(self) -> str:
        if self.name != "helm":
            return ""
        major, minor, _ = PINS["KUBE_VERSION"].split(".")
        return " ".join(
            [
                f"-X helm.sh/helm/v3/internal/version.version={self.version}",
                f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor={major}",
                f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}",
            ]
        )


TOOLS = (
    Tool("helm", "helm.sh/helm/v3/cmd/helm", "HELM_VERSION", ("version", "--short")),
    Tool("kubeconform", "github.com/yannh/kubeconform/cmd/kubeconform", "KUBECONFORM_VERSION", ("-v",)),
    Tool("ct", "github.com/helm/chart-testing/v3/ct", "CT_VERSION", ("version",)),
    Tool("kustomize", "sigs.k8s.io/kustomize/kustomize/v5", "KUSTOMIZE_VERSION", ("version",)),
)


def reported_version(binary: str, tool: Tool) -> str | None:
    """The version a binary reports, or None when it cannot be run."""
    try:
        out = subprocess.run(
            [binary, *tool.version_args], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    match = re.search(r"v?\d+\.\d+\.\d+", out.stdout + out.stderr)
    return match.group(0) if match else None


def matches(binary: str, tool: Tool) -> bool:
    found = reported_version(binary, tool)
    return found is not None and found.lstrip("v") == tool.version.lstrip("v")


def install(tool: Tool) -> str:
    target = BIN / tool.name
    if target.exists() and matches(str(target), tool):
        return f"{tool.name} {tool.version}: ./bin (up to date)"
    on_path = shutil.which(tool.name, path=os.environ.get("PATH", "").replace(str(BIN), ""))
    if tool.name != "helm" and on_path and matches(on_path, tool):
        target.unlink(missing_ok=True)
        target.symlink_to(on_path)
        return f"{tool.name} {tool.version}: from PATH ({on_path})"
    env = {**os.environ, "GOBIN": str(BIN), "CGO_ENABLED": "0"}
    cmd = ["go", "install", "-trimpath"]
    if tool.ldflags():
        cmd += ["-ldflags", tool.ldflags()]
    cmd.append(f"{tool.package}@{tool.version}")
    subprocess.run(cmd, env=env, check=True)
    if not matches(str(target), tool):
        raise SystemExit(f"{tool.name}: built {target} but it does not report {tool.version}")
    return f"{tool.name} {tool.version}: built with go install"


def main() -> int:
    BIN.mkdir(exist_ok=True)
    wanted = set(sys.argv[1:])
    for tool in TOOLS:
        if wanted and tool.name not in wanted:
            continue
        print(install(tool), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
