"""`make apiserver`: build the pinned kube-apiserver and etcd into ./bin, for the tests in tests/api.

Neither is on PyPI, npm or in Debian (bookworm's etcd is 3.4), so both are built from the Go module
proxy, each in its own small module under tools/apiserver/ (committed with its go.sum) so that each
binary links the dependency versions its upstream release pins, not a mix of the two:

* kube-apiserver: package k8s.io/kubernetes/cmd/kube-apiserver of k8s.io/kubernetes at
  KUBE_APISERVER_VERSION. That module requires its staging modules (k8s.io/api, k8s.io/apiserver...)
  at v0.0.0 and replaces them with ./staging/src/... in its own repository; outside it every one is
  replaced with the published release v0.<minor>.<patch>. Built as hack/lib/golang.sh builds a
  release: CGO off, -trimpath, tags selinux,notest,grpcnotrace, and the version ldflags of
  hack/lib/version.sh, so that it reports v1.x.y instead of v0.0.0-master.
* etcd: the main package at the root of go.etcd.io/etcd/server/v3 at ETCD_VERSION (its version is a
  constant of go.etcd.io/etcd/api/v3, so it reports itself without ldflags).

The builds use the default Go build cache and GOTOOLCHAIN=local (never another toolchain).
A binary already in ./bin is kept when it reports the pin. `--sync` rewrites the two go.mod files
from the pins (after a bump of tools/versions.env) and runs `go mod tidy`.

Usage: python -m mlflow_gitops.apiserver_build [--sync] [kube-apiserver|etcd ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow_gitops.versions import KUBE_VERSION, PINS, ROOT

BIN = ROOT / "bin"
MODULES = ROOT / "tools" / "apiserver"
KUBERNETES = "k8s.io/kubernetes"
STAGING_PREFIX = "./staging/src/"


@dataclass(frozen=True)
class Binary:
    name: str
    module: str  # the upstream Go module the tools module requires
    package: str  # the main package inside it
    pin_key: str
    version_args: tuple[str, ...]
    version_pattern: str  # regex over the --version output; group 1 is the version without "v"

    @property
    def version(self) -> str:
        return PINS[self.pin_key]

    @property
    def tools_module(self) -> Path:
        return MODULES / self.name

    @property
    def path(self) -> Path:
        return BIN / self.name


KUBE_APISERVER = Binary(
    "kube-apiserver",
    KUBERNETES,
    "k8s.io/kubernetes/cmd/kube-apiserver",
    "KUBE_APISERVER_VERSION",
    ("--version",),
    r"^Kubernetes v(\S+)$",
)
ETCD = Binary(
    "etcd",
    "go.etcd.io/etcd/server/v3",
    "go.etcd.io/etcd/server/v3",
    "ETCD_VERSION",
    ("--version",),
    r"^etcd Version: (\S+)$",
)
BINARIES = (KUBE_APISERVER, ETCD)


def go_env() -> dict[str, str]:
    return {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}


def run(cmd: list[str], cwd: Path | None = None, capture: bool = False) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=go_env(), text=True, check=False, capture_output=capture)
    if result.returncode != 0:
        detail = f": {result.stderr.strip()}" if capture else ""
        raise SystemExit(f"`{' '.join(cmd)}` failed (exit {result.returncode}){detail}")
    return result.stdout if capture else ""


def staging_version(kubernetes_version: str) -> str:
    """k8s.io/kubernetes v1.36.5 -> its staging modules' release v0.36.5."""
    match = re.fullmatch(r"v1\.(\d+)\.(\d+)", kubernetes_version)
    if not match:
        raise SystemExit(f"KUBE_APISERVER_VERSION={kubernetes_version}: expected v1.<minor>.<patch>")
    return f"v0.{match.group(1)}.{match.group(2)}"


def mod_json(directory: Path) -> dict:
    return json.loads(run(["go", "mod", "edit", "-json"], cwd=directory, capture=True))


def module_info(module: str, version: str) -> dict:
    """`go mod download -json` of one module version: Dir, GoMod, Time..."""
    with tempfile.TemporaryDirectory() as outside_any_module:
        info = json.loads(
            run(
                ["go", "mod", "download", "-json", f"{module}@{version}"],
                cwd=Path(outside_any_module),
                capture=True,
            )
        )
    if "Error" in info:
        raise SystemExit(f"go mod download {module}@{version}: {info['Error']}")
    return info


def staging_modules(kubernetes_version: str) -> list[str]:
    """The modules k8s.io/kubernetes replaces with ./staging/src/... in its own go.mod."""
    gomod = Path(module_info(KUBERNETES, kubernetes_version)["GoMod"])
    with tempfile.TemporaryDirectory() as work:
        copy = Path(work) / "go.mod"
        copy.write_text(gomod.read_text())
        mod = mod_json(Path(work))
    required = {r["Path"] for r in mod["Require"]}
    return sorted(
        r["Old"]["Path"]
        for r in mod["Replace"]
        if r["New"]["Path"].startswith(STAGING_PREFIX) and r["Old"]["Path"] in required
    )


def module_problems(binary: Binary) -> list[str]:
    """How the tools module's go.mod disagrees with the pins (empty when it agrees)."""
    mod = mod_json(binary.tools_module)
    required = {r["Path"]: r["Version"] for r in mod.get("Require") or []}
    problems = []
    if required.get(binary.module) != binary.version:
        problems.append(
            f"requires {binary.module} {required.get(binary.module)}, the pin is {binary.version}"
        )
    if binary is KUBE_APISERVER:
        staging = staging_version(binary.version)
        for replace in mod.get("Replace") or []:
            old, new = replace["Old"]["Path"], replace["New"]
            if old.startswith("k8s.io/") and new.get("Version") != staging:
                problems.append(f"replaces {old} with {new.get('Version')}, expected {staging}")
        replaced = {r["Old"]["Path"] for r in mod.get("Replace") or []}
        required_staging = {p for p, v in required.items() if p.startswith("k8s.io/") and v == "v0.0.0"}
        if missing := required_staging - replaced:
            problems.append(f"no replace for {sorted(missing)}")
    return problems


def sync(binary: Binary) -> None:
    """Point the tools module at the pin (and, for kube-apiserver, its staging release), then tidy."""
    edits = [f"-require={binary.module}@{binary.version}"]
    if binary is KUBE_APISERVER:
        old = [r["Old"]["Path"] for r in mod_json(binary.tools_module).get("Replace") or []]
        edits += [f"-dropreplace={path}" for path in old]
    run(["go", "mod", "edit", *edits], cwd=binary.tools_module)
    if binary is KUBE_APISERVER:  # one replace block, as k8s.io/kubernetes writes its own
        staging = staging_version(binary.version)
        lines = [f"\t{path} => {path} {staging}" for path in staging_modules(binary.version)]
        gomod = binary.tools_module / "go.mod"
        gomod.write_text(gomod.read_text().rstrip("\n") + "\n\nreplace (\n" + "\n".join(lines) + "\n)\n")
    run(["go", "mod", "tidy"], cwd=binary.tools_module)


def ldflags(binary: Binary) -> str:
    flags = ["-s", "-w"]
    if binary is KUBE_APISERVER:
        major, minor, _ = binary.version.removeprefix("v").split(".")
        info = Path(module_info(binary.module, binary.version)["Info"])
        build_date = json.loads(info.read_text())["Time"]  # the release time the proxy records
        values = {"gitVersion": binary.version, "gitMajor": major, "gitMinor": minor, "buildDate": build_date}
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [f"-X {package}.{key}={value}" for key, value in values.items()]
    return " ".join(flags)


def reported_version(path: Path, binary: Binary) -> str | None:
    try:
        out = subprocess.run(
            [str(path), *binary.version_args], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    match = re.search(binary.version_pattern, out.stdout + out.stderr, re.MULTILINE)
    return match.group(1) if match else None


def matches(binary: Binary) -> bool:
    return reported_version(binary.path, binary) == binary.version.removeprefix("v")


def build(binary: Binary) -> None:
    tags = "selinux,notest,grpcnotrace" if binary is KUBE_APISERVER else ""
    cmd = ["go", "build", "-trimpath", "-ldflags", ldflags(binary), "-o", str(binary.path)]
    if tags:
        cmd += ["-tags", tags]
    run([*cmd, binary.package], cwd=binary.tools_module)


def install(binary: Binary) -> str:
    if problems := module_problems(binary):
        raise SystemExit(
            f"{binary.tools_module.relative_to(ROOT)}/go.mod does not match tools/versions.env: "
            + "; ".join(problems)
            + " (run `python -m mlflow_gitops.apiserver_build --sync`)"
        )
    if matches(binary):
        return f"{binary.name} {binary.version}: ./bin (up to date)"
    build(binary)
    if not matches(binary):
        found = reported_version(binary.path, binary)
        raise SystemExit(f"{binary.name}: built {binary.path} but it reports {found}, not {binary.version}")
    return f"{binary.name} {binary.version}: built"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sync", action="store_true", help="rewrite the tools modules' go.mod from the pins")
    parser.add_argument("names", nargs="*", help="kube-apiserver, etcd (default: both)")
    args = parser.parse_args(argv)
    if unknown := set(args.names) - {b.name for b in BINARIES}:
        parser.error(f"unknown binaries {sorted(unknown)}")
    minor = ".".join(KUBE_VERSION.split(".")[:2])
    if not KUBE_APISERVER.version.removeprefix("v").startswith(minor + "."):
        print(
            f"warning: kube-apiserver {KUBE_APISERVER.version} is not Kubernetes {minor} (KUBE_VERSION)",
            flush=True,
        )
    BIN.mkdir(exist_ok=True)
    for binary in BINARIES:
        if args.names and binary.name not in args.names:
            continue
        if args.sync:
            sync(binary)
            print(f"{binary.tools_module.relative_to(ROOT)}: synced to {binary.version}", flush=True)
        print(install(binary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
