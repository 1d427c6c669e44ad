"""`make render`: render one environment, validate it, and only then write rendered/<env>.yaml.

Nothing is written when the upstream chart is missing, helm fails, or kubeconform rejects an
object: the committed render is only ever replaced by a complete, valid one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

from mlflow_gitops.chart import CHART, RENDERED, VALUES, RenderError, template, upstream_present
from mlflow_gitops.validate import kubeconform


def how_to_provide() -> str:
    """How to put the pinned upstream chart in place (its version read from Chart.yaml)."""
    (dep,) = yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]
    return (
        "the upstream mlflow chart is not in charts/mlflow-stack/charts/: run `make deps` with the chart "
        f"repository reachable, or `make deps MLFLOW_CHART=<dir or .tgz of community-charts mlflow {dep['version']}>`"
    )


def environments() -> list[str]:
    return sorted(p.stem for p in VALUES.glob("*.yaml"))


def render(env: str, *, chart: Path = CHART, out_dir: Path = RENDERED) -> Path:
    values = VALUES / f"{env}.yaml"
    if not values.exists():
        raise SystemExit(f"ENV={env}: no values/{env}.yaml (environments: {', '.join(environments())})")
    if not upstream_present(chart):
        raise SystemExit(f"make render: {how_to_provide()}")
    try:
        out = template([values], chart=chart)
    except RenderError as err:
        raise SystemExit(f"make render ENV={env}: helm failed, nothing written:\n{err}") from None
    text = out.text if out.text.endswith("\n") else out.text + "\n"
    out_dir.mkdir(exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{env}.", suffix=".yaml", dir=out_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        problems = kubeconform([tmp])
        if problems:
            raise SystemExit(
                f"make render ENV={env}: kubeconform rejected the render, nothing written:\n{problems}"
            )
        target = out_dir / f"{env}.yaml"
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("env", nargs="+", help="environment name(s): values/<env>.yaml")
    args = parser.parse_args()
    for env in args.env:
        target = render(env)
        count = len([line for line in target.read_text().splitlines() if line.startswith("kind:")])
        print(f"wrote {target.relative_to(CHART.parent.parent)} ({count} objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
