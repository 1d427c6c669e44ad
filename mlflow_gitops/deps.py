"""`make deps`: put the upstream mlflow chart into charts/mlflow-stack/charts/.

With MLFLOW_CHART=<dir or .tgz> (the air-gapped path) that local copy is checked against the
version Chart.lock pins and copied in; otherwise `helm dependency build` downloads it from the
chart repository. Either way charts/mlflow-stack/charts/ is git-ignored: the upstream chart is a
build input, never part of this repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from mlflow_gitops.chart import CHART, UPSTREAM, helm
from mlflow_gitops.versions import ROOT


def pinned() -> dict[str, str]:
    lock = yaml.safe_load((CHART / "Chart.lock").read_text())
    for dep in lock["dependencies"]:
        if dep["name"] == UPSTREAM:
            return {"version": str(dep["version"]), "repository": str(dep["repository"])}
    raise SystemExit(f"{CHART}/Chart.lock has no {UPSTREAM} dependency")


def chart_meta(source: Path) -> dict[str, object]:
    if source.is_dir():
        return yaml.safe_load((source / "Chart.yaml").read_text())
    with tarfile.open(source) as archive:
        member = next(
            (m for m in archive.getmembers() if m.name.endswith("/Chart.yaml") and m.name.count("/") == 1),
            None,
        )
        if member is None:
            raise SystemExit(f"MLFLOW_CHART={source}: no Chart.yaml at the top of the archive")
        handle = archive.extractfile(member)
        assert handle is not None
        return yaml.safe_load(handle.read())


def install_local(source: Path) -> str:
    want = pinned()["version"]
    if not (source.is_dir() or source.suffix == ".tgz"):
        raise SystemExit(f"MLFLOW_CHART={source}: expected a chart directory or a .tgz")
    if source.is_dir() and not (source / "Chart.yaml").exists():
        raise SystemExit(f"MLFLOW_CHART={source}: not a chart directory (no Chart.yaml)")
    meta = chart_meta(source)
    if meta.get("name") != UPSTREAM or str(meta.get("version")) != want:
        raise SystemExit(
            f"MLFLOW_CHART={source}: is {meta.get('name')} {meta.get('version')}, "
            f"but Chart.lock pins {UPSTREAM} {want}"
        )
    target_dir = CHART / "charts"
    shutil.rmtree(target_dir, ignore_errors=True)
    target_dir.mkdir()
    if source.is_dir():
        shutil.copytree(source, target_dir / UPSTREAM)
    else:
        shutil.copy2(source, target_dir / f"{UPSTREAM}-{want}.tgz")
    return f"{UPSTREAM} {want} from {source}"


def download() -> str:
    pin = pinned()
    work = ROOT / ".work" / "helm"
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HELM_REPOSITORY_CONFIG": str(work / "repositories.yaml"),
        "HELM_REPOSITORY_CACHE": str(work / "cache"),
    }
    steps = [
        [helm(), "repo", "add", "--force-update", "community-charts", pin["repository"]],
        [helm(), "dependency", "build", str(CHART)],
    ]
    for cmd in steps:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(
                f"make deps: could not download {UPSTREAM} {pin['version']} from {pin['repository']}:\n"
                f"{out.stderr.strip()}\n"
                "Offline, point MLFLOW_CHART at a local copy: make deps MLFLOW_CHART=<dir or .tgz>"
            )
    return f"{UPSTREAM} {pin['version']} from {pin['repository']}"


def main() -> int:
    source = os.environ.get("MLFLOW_CHART", "")
    done = install_local(Path(source).resolve()) if source else download()
    print(f"charts/mlflow-stack/charts/: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
