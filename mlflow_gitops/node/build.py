"""`make node-build`: the node's binaries into ./bin, and its Debian packages.

* kubelet, kube-proxy, kube-scheduler, kube-controller-manager at KUBE_APISERVER_VERSION, from
  tools/node/kubernetes: a copy of the kube-apiserver module (tools/apiserver/kube-apiserver, same
  staging replaces) with one `tool` line per component, built as kube-apiserver is (tags, version
  ldflags: mlflow_gitops.apiserver_build);
* containerd, ctr, containerd-shim-runc-v2 (CONTAINERD_VERSION), crictl (CRI_TOOLS_VERSION) and
  coredns (COREDNS_VERSION) with `go install`, CGO off, each module's own go.mod;
* pause, the pod sandbox's process: tools/node/pause, a few lines of Go;
* runc, the CNI plugins, iptables, conntrack and umoci from Debian, installed like PostgreSQL
  (mlflow_gitops.install_postgres);
* the add-ons of mlflow_gitops.node.addons, each from a module of tools/node/: kube-router, and
  (only when named, `make node-flux`) Flux's source-, kustomize- and helm-controller;
* `cnpg`: the CloudNativePG operator's manager (CNPG_VERSION) into bin/cnpg and Debian's
  postgresql-15 for its operand image (mlflow_gitops.node.operator).

A binary is kept when it already carries its pin: the Kubernetes ones by `--version`, the
`go install` ones by the module version `go version -m` reads from them, pause when newer than its
source. Each build prints its duration.

Usage: python -m mlflow_gitops.node.build [--flux] [--external-secrets] [NAME ...]  (default: all but
the add-ons built apart)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow_gitops import apiserver_build, install_postgres
from mlflow_gitops.node import addons, gobuild
from mlflow_gitops.node.gobuild import BIN, run, timed
from mlflow_gitops.versions import PINS, ROOT

KUBE_MODULE = ROOT / "tools" / "node" / "kubernetes"
PAUSE_MODULE = ROOT / "tools" / "node" / "pause"

# Debian package: a path it installs (install_postgres.main's format).
PACKAGES = {
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "iptables": "/usr/sbin/iptables",
    "conntrack": "/usr/sbin/conntrack",  # kube-proxy clears UDP conntrack entries with it
    "umoci": "/usr/bin/umoci",
    "ipset": "/usr/sbin/ipset",  # kube-router's policy sets (mlflow_gitops.node.addons)
}
CNI_BIN_DIR = Path("/usr/lib/cni")


@dataclass(frozen=True)
class GoInstall:
    """A binary `go install` builds from its module's own go.mod."""

    name: str
    module: str
    package: str
    pin_key: str
    version_var: str = ""  # the package variable -X stamps with the version (empty: none)
    version_prefix: str = "v"  # kept on the stamped value

    @property
    def version(self) -> str:
        return PINS[self.pin_key]

    @property
    def path(self) -> Path:
        return BIN / self.name

    def ldflags(self) -> str:
        flags = "-s -w"
        if self.version_var:
            stamped = self.version if self.version_prefix else self.version.removeprefix("v")
            flags += f" -X {self.version_var}={stamped}"
        return flags


CONTAINERD = "github.com/containerd/containerd/v2"
GO_INSTALLS = tuple(
    GoInstall(name, CONTAINERD, f"{CONTAINERD}/cmd/{name}", "CONTAINERD_VERSION", f"{CONTAINERD}/version.Version")
    for name in ("containerd", "ctr", "containerd-shim-runc-v2")
) + (
    GoInstall(
        "crictl", "sigs.k8s.io/cri-tools", "sigs.k8s.io/cri-tools/cmd/crictl", "CRI_TOOLS_VERSION",
        "sigs.k8s.io/cri-tools/pkg/version.Version", "",
    ),
    GoInstall("coredns", "github.com/coredns/coredns", "github.com/coredns/coredns", "COREDNS_VERSION"),
)  # fmt: skip
KUBE_COMPONENTS = ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager")
KUBE_VERSION_PIN = "KUBE_APISERVER_VERSION"


def kube_version() -> str:
    return PINS[KUBE_VERSION_PIN]


def kube_reported(name: str) -> str | None:
    try:
        out = subprocess.run(
            [str(BIN / name), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    match = re.search(r"^Kubernetes (v\S+)$", out.stdout + out.stderr, re.MULTILINE)
    return match.group(1) if match else None


def check_kube_module() -> None:
    mod = apiserver_build.mod_json(KUBE_MODULE)
    required = {r["Path"]: r["Version"] for r in mod.get("Require") or []}
    found = required.get(apiserver_build.KUBERNETES)
    if found != kube_version():
        raise SystemExit(
            f"tools/node/kubernetes/go.mod requires {apiserver_build.KUBERNETES} {found}, "
            f"{KUBE_VERSION_PIN} is {kube_version()}: copy the go.mod of tools/apiserver/kube-apiserver "
            "(after `python -m mlflow_gitops.apiserver_build --sync`) and keep its tool lines"
        )


def build_kube(name: str) -> str:
    version = kube_version()
    if kube_reported(name) == version:
        return f"{name} {version}: ./bin (up to date)"
    ldflags = apiserver_build.ldflags(apiserver_build.KUBE_APISERVER)  # same version stamp
    cmd = ["go", "build", "-trimpath", "-tags", "selinux,notest,grpcnotrace", "-ldflags", ldflags]
    message = timed(
        f"{name} {version}",
        lambda: run([*cmd, "-o", str(BIN / name), f"k8s.io/kubernetes/cmd/{name}"], cwd=KUBE_MODULE),
    )
    if (found := kube_reported(name)) != version:
        raise SystemExit(f"{name}: built bin/{name} but it reports {found}, not {version}")
    return message


def build_go_install(binary: GoInstall) -> str:
    if gobuild.module_version(binary.path, binary.module) == binary.version:
        return f"{binary.name} {binary.version}: ./bin (up to date)"
    cmd = ["go", "install", "-trimpath", "-ldflags", binary.ldflags(), f"{binary.package}@{binary.version}"]
    env_cmd = ["env", f"GOBIN={BIN}", *cmd]
    message = timed(f"{binary.name} {binary.version}", lambda: run(env_cmd, cwd=BIN))
    if (found := gobuild.module_version(binary.path, binary.module)) != binary.version:
        raise SystemExit(
            f"{binary.name}: built bin/{binary.name} from {binary.module} {found}, not {binary.version}"
        )
    return message


def build_pause() -> str:
    target, source = BIN / "pause", PAUSE_MODULE / "main.go"
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return "pause: ./bin (up to date)"
    return timed(
        "pause",
        lambda: run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(target), "."], PAUSE_MODULE),
    )


def names() -> list[str]:
    return [*KUBE_COMPONENTS, *(b.name for b in GO_INSTALLS), *addons.NAMES, "pause", "debian", "cnpg"]


def defaults() -> list[str]:
    """What `make node-build` builds: everything but the add-ons built apart (addons.APART)."""
    return [name for name in names() if name not in addons.APART]


def missing() -> list[str]:
    """What `make node-build` would still build or install (empty: the node can start)."""
    out = [f"bin/{n} {kube_version()}" for n in KUBE_COMPONENTS if kube_reported(n) != kube_version()]
    out += [
        f"bin/{b.name} {b.version}"
        for b in GO_INSTALLS
        if gobuild.module_version(b.path, b.module) != b.version
    ]
    out += addons.missing(tuple(n for n in addons.NAMES if n not in addons.APART))
    out += [] if (BIN / "pause").exists() else ["bin/pause"]
    out += [f"Debian {p}" for p in install_postgres.missing(PACKAGES)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help=f"any of {', '.join(names())} (default: all but {', '.join(addons.APART)})"
    )
    parser.add_argument(
        "--flux", action="store_true", help=f"build {', '.join(addons.FLUX)} (`make node-flux`)"
    )
    parser.add_argument(
        "--external-secrets",
        action="store_true",
        help="build external-secrets (`make node-external-secrets`)",
    )
    args = parser.parse_args(argv)
    if args.flux:
        args.names = [*args.names, *addons.FLUX]
    if args.external_secrets:
        args.names = [*args.names, *addons.EXTERNAL_SECRETS_NAMES]
    if unknown := set(args.names) - set(names()):
        parser.error(f"unknown {sorted(unknown)}; allowed: {', '.join(names())}")
    wanted = set(args.names or defaults())
    BIN.mkdir(exist_ok=True)
    if "debian" in wanted:
        started = time.monotonic()
        if install_postgres.main(PACKAGES) != 0:
            return 1
        print(f"Debian {', '.join(PACKAGES)}: present ({time.monotonic() - started:.0f} s)", flush=True)
    if wanted & set(KUBE_COMPONENTS):
        check_kube_module()
    for name in KUBE_COMPONENTS:
        if name in wanted:
            print(build_kube(name), flush=True)
    for binary in GO_INSTALLS:
        if binary.name in wanted:
            print(build_go_install(binary), flush=True)
    addons.main(wanted)
    if "pause" in wanted:
        print(build_pause(), flush=True)
    if "cnpg" in wanted:  # the CloudNativePG operator (mlflow_gitops.node.operator)
        from mlflow_gitops.node import operator

        print(operator.build(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
