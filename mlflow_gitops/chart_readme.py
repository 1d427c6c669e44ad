"""`make chart-readme`: generate charts/mlflow-stack/README.md with helm-docs.

helm-docs fills README.md.gotmpl with the chart's metadata (Chart.yaml) and a values table from the
`# --` comments of values.yaml. It runs on a copy of just those files in a temporary directory, so
the result never depends on what else is in the chart directory (the upstream chart in charts/,
which helm-docs would otherwise document too); tests/test_chart_readme.py compares that result
with the committed file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow_gitops import tools
from mlflow_gitops.chart import CHART

TEMPLATE = "README.md.gotmpl"
INPUTS = ("Chart.yaml", "values.yaml", TEMPLATE)
README = CHART / "README.md"


class GenerateError(Exception):
    """helm-docs failed; the message is its own."""


def generate(chart: Path = CHART) -> str:
    """The README helm-docs makes of the chart's Chart.yaml, values.yaml and README.md.gotmpl."""
    with tempfile.TemporaryDirectory() as work:
        copy = Path(work) / chart.name
        copy.mkdir()
        for name in INPUTS:
            shutil.copy2(chart / name, copy / name)
        out = subprocess.run(
            [
                tools.binary("helm-docs"),
                "--chart-search-root",
                str(copy),
                "--template-files",
                TEMPLATE,
                "--sort-values-order",
                "file",
                "--log-level",
                "warning",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        readme = copy / "README.md"
        if out.returncode != 0 or not readme.exists():
            raise GenerateError(f"helm-docs failed for {chart}:\n{out.stdout}{out.stderr}".rstrip())
        return readme.read_text()


def main() -> int:
    try:
        text = generate()
    except GenerateError as err:
        print(err, file=sys.stderr)
        return 1
    changed = not README.exists() or README.read_text() != text
    README.write_text(text)
    print(f"{README.relative_to(CHART.parent.parent)}: {'written' if changed else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
