"""CRD sources in Go modules: a module unpacked at a pinned version, and CRDs generated from one.

`module_dir` runs `go mod download` (module cache or the Go module proxy); `generated_crds` runs
controller-gen, pinned in tools/versions.env, over a module that ships only the Go types of its API.
Both are read by mlflow_gitops/schemas.py (and, through it, by the API server tests).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mlflow_gitops.versions import PINS, ROOT


def module_dir(module: str, version: str) -> Path:
    """The unpacked module, from the module cache or downloaded through the Go module proxy."""
    with tempfile.TemporaryDirectory() as outside_any_module:
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            capture_output=True, text=True, cwd=outside_any_module, check=False,
        )  # fmt: skip
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"go mod download {module}@{version} failed: {result.stderr.strip()}") from None
    if "Error" in info or "Dir" not in info:
        raise SystemExit(f"go mod download {module}@{version}: {info.get('Error', result.stderr.strip())}")
    return Path(info["Dir"])


CONTROLLER_GEN = "sigs.k8s.io/controller-tools/cmd/controller-gen"
WORK = ROOT / ".work"  # git-ignored: the controller-gen binary and the CRDs it generated


def controller_gen() -> Path:
    """controller-gen at CONTROLLER_GEN_VERSION, built once into .work/bin."""
    version = PINS["CONTROLLER_GEN_VERSION"]
    target = WORK / "bin" / f"controller-gen-{version}"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as gobin:
        result = subprocess.run(
            ["go", "install", f"{CONTROLLER_GEN}@{version}"],
            capture_output=True, text=True, cwd=gobin, check=False,
            env={**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"},
        )  # fmt: skip
        if result.returncode != 0:
            raise SystemExit(f"go install {CONTROLLER_GEN}@{version} failed: {result.stderr.strip()}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(Path(gobin) / "controller-gen", target)
    return target


def generated_crds(module: str, version: str) -> Path:
    """The CRDs controller-gen generates from a module's API types, cached in .work/crds.

    Runs what the Flux controllers' `make manifests` runs in their api module
    (`controller-gen crd:crdVersions=v1 paths=./...`), in a writable copy of the downloaded module
    (the module cache is read-only). The result depends only on the two pinned versions.
    """
    gen_version = PINS["CONTROLLER_GEN_VERSION"]
    out = WORK / "crds" / f"{module.replace('/', '_')}@{version}+controller-gen-{gen_version}"
    if out.is_dir():
        return out
    binary = controller_gen()
    source = module_dir(module, version)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as work:
        copy = Path(work) / "module"
        shutil.copytree(source, copy)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        staging = Path(work) / "crds"
        result = subprocess.run(
            [str(binary), "crd:crdVersions=v1", "paths=./...", f"output:crd:artifacts:config={staging}"],
            capture_output=True, text=True, cwd=copy, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise SystemExit(f"controller-gen over {module}@{version} failed: {result.stderr.strip()}")
        staging.rename(out)
    return out
