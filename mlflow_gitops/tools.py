"""Install the pinned Go tools into ./bin.

A tool is taken from PATH only when it reports exactly the pinned version; otherwise it is built
with `go install` at the pin, stamped with its version where the tool has a version variable;
a tool without a version command (netpolicy) is identified by the module version Go records in the
binary (`go version -m`). Each build prints how long it took. Helm 4 has no ldflags for its default
Kubernetes version: it derives it from the k8s.io/client-go it links (v0.36 -> 1.36), so the renders
pass --kube-version explicitly and tests/test_toolchain.py checks that the default is KUBE_VERSION too.
The Pod Security checker, a module of this repository, is built by mlflow_gitops/podsecurity.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from mlflow_gitops import podsecurity
from mlflow_gitops.versions import PINS, ROOT

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

    version_var: str = ""  # the Go variable the version is stamped into at build time, if any

    def ldflags(self) -> str:
        return f"-X {self.version_var}={self.version}" if self.version_var else ""


TOOLS = (
    Tool(
        "helm",
        "helm.sh/helm/v4/cmd/helm",
        "HELM_VERSION",
        ("version", "--short"),
        "helm.sh/helm/v4/internal/version.version",
    ),
    Tool(
        "kubeconform",
        "github.com/yannh/kubeconform/cmd/kubeconform",
        "KUBECONFORM_VERSION",
        ("-v",),
        "main.version",
    ),
    Tool(
        "actionlint",
        "github.com/rhysd/actionlint/cmd/actionlint",
        "ACTIONLINT_VERSION",
        ("-version",),
        "github.com/rhysd/actionlint.version",
    ),
    Tool(
        "ct",
        "github.com/helm/chart-testing/v3/ct",
        "CT_VERSION",
        ("version",),
        "github.com/helm/chart-testing/v3/ct/cmd.Version",
    ),
    Tool(
        "kustomize",
        "sigs.k8s.io/kustomize/kustomize/v5",
        "KUSTOMIZE_VERSION",
        ("version",),
        "sigs.k8s.io/kustomize/api/provenance.version",
    ),
    Tool(
        "netpolicy",  # np-guard's netpol-analyzer; no version command (tests/support/netpol_analyzer.py)
        "github.com/np-guard/netpol-analyzer/cmd/netpolicy",
        "NETPOL_ANALYZER_VERSION",
        (),
    ),
    Tool(
        "kube-score",
        "github.com/zegl/kube-score/cmd/kube-score",
        "KUBE_SCORE_VERSION",
        ("version",),
        "main.version",
    ),
    Tool(
        # Prometheus release 3.N.M is Go module v0.3NN.M; stamped with the module version (the pin).
        "promtool",
        "github.com/prometheus/prometheus/cmd/promtool",
        "PROMTOOL_VERSION",
        ("--version",),
        "github.com/prometheus/common/version.Version",
    ),
    Tool(
        "helm-docs",
        "github.com/norwoodj/helm-docs/cmd/helm-docs",
        "HELM_DOCS_VERSION",
        ("--version",),
        "main.version",
    ),
)


def binary(name: str) -> str:
    """The path of an installed tool: ./bin first, then PATH; stop with how to install it."""
    local = BIN / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed: run `make tools`")
    return found


def module_version(binary: str, tool: Tool) -> str | None:
    """The version Go recorded for the module that holds the tool's package (`go version -m`)."""
    out = subprocess.run(["go", "version", "-m", binary], capture_output=True, text=True, check=False)
    found = re.findall(r"^\t(?:mod|dep)\t(\S+)\t(v\S+)", out.stdout, re.MULTILINE)
    owners = [(path, version) for path, version in found if f"{tool.package}/".startswith(f"{path}/")]
    return max(owners, key=lambda owner: len(owner[0]))[1] if owners else None


def reported_version(binary: str, tool: Tool) -> str | None:
    """The version a binary reports, or None when it cannot be run."""
    if not tool.version_args:
        return module_version(binary, tool)
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


def build(tool: Tool) -> None:
    """`go install` the pin; where the proxy refuses the module's version list (which go install
    reads to check for deprecation), build the same package inside a throwaway module instead."""
    env = {**os.environ, "GOBIN": str(BIN), "CGO_ENABLED": "0"}
    flags = ["-trimpath", "-ldflags", tool.ldflags()]
    ref = f"{tool.package}@{tool.version}"
    if subprocess.run(["go", "install", *flags, ref], env=env, check=False).returncode == 0:
        return
    print(f"{tool.name}: go install refused, building {ref} in a throwaway module", flush=True)
    with tempfile.TemporaryDirectory() as work:
        for cmd in (
            ["go", "mod", "init", "tools.local/build"],
            ["go", "get", ref],
            ["go", "build", *flags, "-o", str(BIN / tool.name), tool.package],
        ):
            subprocess.run(cmd, env=env, cwd=work, check=True)


def install(tool: Tool) -> str:
    target = BIN / tool.name
    if target.exists() and matches(str(target), tool):
        return f"{tool.name} {tool.version}: ./bin (up to date)"
    on_path = shutil.which(tool.name, path=os.environ.get("PATH", "").replace(str(BIN), ""))
    if on_path and matches(on_path, tool):
        target.unlink(missing_ok=True)
        target.symlink_to(on_path)
        return f"{tool.name} {tool.version}: from PATH ({on_path})"
    started = time.monotonic()
    build(tool)
    if not matches(str(target), tool):
        raise SystemExit(f"{tool.name}: built {target} but it does not report {tool.version}")
    return f"{tool.name} {tool.version}: built in {time.monotonic() - started:.0f} s"


def main() -> int:
    BIN.mkdir(exist_ok=True)
    wanted = set(sys.argv[1:])
    for tool in TOOLS:
        if wanted and tool.name not in wanted:
            continue
        print(install(tool), flush=True)
    if not wanted or "podsecurity" in wanted:
        print(podsecurity.install(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
