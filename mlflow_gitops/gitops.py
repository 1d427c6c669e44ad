"""`make gitops`: build every GitOps entry point with kustomize and validate what it would apply.

An entry point is a folder that Flux (a Flux Kustomization's `path`) or `kubectl apply -k` (Argo
CD's Applications) builds, for one environment. Flux builds with no load restriction inside the
repository (so deploy/flux/<env>/ can read values/<env>.yaml); the others build with kustomize's
default, root-only restriction, as kubectl and Argo CD do.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlflow_gitops import tools
from mlflow_gitops.validate import kubeconform
from mlflow_gitops.versions import ROOT

DEPLOY = ROOT / "deploy"
REPOSITORY = DEPLOY / "repository" / "repository.yaml"
FLUX_KUSTOMIZATION = DEPLOY / "flux" / "ks.yaml"  # applied as is, not built
DEPENDS_ON = DEPLOY / "flux" / "depends-on"  # optional component


@dataclass(frozen=True)
class EntryPoint:
    tool: str  # "flux", "argocd" (chart from Git) or "argocd-rendered" (plain manifests)
    env: str  # values/<env>.yaml
    path: Path  # the folder kustomize builds

    @property
    def name(self) -> str:
        return f"{self.tool}/{self.env}"

    @property
    def unrestricted(self) -> bool:
        """Built as Flux's kustomize-controller builds: files from anywhere in the repository."""
        return self.tool == "flux"


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("flux", "homelab", ROOT),
    EntryPoint("flux", "lab-minimal", DEPLOY / "flux" / "lab-minimal"),
    EntryPoint("argocd", "homelab", DEPLOY / "argocd" / "app"),
    EntryPoint("argocd", "lab-minimal", DEPLOY / "argocd" / "lab-minimal"),
    EntryPoint("flux", "homelab-ha", DEPLOY / "flux" / "homelab-ha"),
    EntryPoint("argocd", "homelab-ha", DEPLOY / "argocd" / "homelab-ha"),
    EntryPoint("argocd-rendered", "homelab", DEPLOY / "argocd" / "rendered"),
)


class BuildError(Exception):
    """kustomize refused to build; the message is kustomize's own."""


def kustomize() -> str:
    return tools.binary("kustomize")


def build(path: Path, *, unrestricted: bool = False) -> str:
    """`kustomize build` a folder; raise BuildError with kustomize's message on failure."""
    cmd = [kustomize(), "build", str(path)]
    if unrestricted:
        cmd += ["--load-restrictor", "LoadRestrictionsNone"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise BuildError(out.stderr.strip())
    return out.stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def build_entry(entry: EntryPoint) -> list[dict[str, Any]]:
    return documents(build(entry.path, unrestricted=entry.unrestricted))


def validate_text(text: str) -> str:
    """kubeconform's complaints about a multi-document YAML text, or "" when every object is valid."""
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "objects.yaml"
        path.write_text(text)
        return kubeconform([path])


def build_and_check(entry: EntryPoint) -> tuple[str, str]:
    """kustomize's output for an entry point ("" when the build failed) and the problem with it
    ("" when it builds and every object validates): one build for both."""
    try:
        text = build(entry.path, unrestricted=entry.unrestricted)
    except BuildError as err:
        return "", f"kustomize build failed:\n{err}"
    return text, validate_text(text)


def main() -> int:
    failed = False
    for entry in ENTRY_POINTS:
        text, problem = build_and_check(entry)
        where = entry.path.relative_to(ROOT).as_posix() or "."
        if problem:
            failed = True
            print(f"FAIL {entry.name:<24} {where}\n{problem}")
        else:
            kinds = ", ".join(sorted(d["kind"] for d in documents(text)))
            print(f"ok   {entry.name:<24} {where}: {kinds}")
    problem = kubeconform([FLUX_KUSTOMIZATION])
    print(f"{'FAIL' if problem else 'ok  '} {'flux/ks.yaml':<24} {FLUX_KUSTOMIZATION.relative_to(ROOT)}")
    if problem:
        failed = True
        print(problem)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
