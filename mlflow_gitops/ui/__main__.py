"""`make screenshot`: docs/ui.png, the UI of the rendered pod as a browser shows it through the route.

Starts the render's pod and PostgreSQL (mlflow_gitops.podrunner), seeds an experiment with a run
and its metrics, opens the run's metric charts through https://<route hostname> (or, for a render
without a route, http://localhost:5000) in Debian's Chromium at 1280x800, and writes the PNG.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow_gitops import podrunner
from mlflow_gitops.ui.browser import Access, chromium, missing, through_port_forward, through_route
from mlflow_gitops.ui.tour import CHART_LINE, Tour, seed

ROOT = podrunner.ROOT
MAX_BYTES = 200_000  # the README's image stays small


@contextmanager
def access_to(stack: podrunner.PodRunner, workdir: Path) -> Iterator[Access]:
    assert stack.local_port is not None
    if stack.render.route_hostnames():
        with through_route(stack.route_host, stack.local_port, workdir) as access:
            yield access
    else:
        yield through_port_forward("http://localhost:5000", stack.local_port)


def screenshot(render: Path, out: Path) -> int:
    if gaps := missing():
        print(f"screenshot: missing {'; '.join(gaps)} (`make e2e-deps` installs them)", file=sys.stderr)
        return 1
    started = time.monotonic()
    with (
        podrunner.PodRunner(render) as stack,
        tempfile.TemporaryDirectory() as tmp,
        access_to(stack, Path(tmp)) as access,
        chromium(access) as context,
    ):
        seeded = seed(stack.url, access.host, "image-classifier")
        tour = Tour(context, access, Path(tmp) / "artifacts")
        tour.experiment_runs(seeded)  # switches the UI to its "Model training" view
        tour.run_chart(seeded)
        tour.close_side_panels()
        tour.page.locator(CHART_LINE).first.wait_for()
        tour.page.mouse.move(0, 0)
        out.parent.mkdir(parents=True, exist_ok=True)
        tour.page.screenshot(path=str(out))
        if failed := tour.calls.failed():
            print("screenshot: the UI's calls failed:\n" + tour.calls.table(failed), file=sys.stderr)
            return 1
    size = out.stat().st_size
    print(f"screenshot: {out} ({size // 1000} kB, {access.url}, {time.monotonic() - started:.0f} s)")
    if size > MAX_BYTES:
        print(f"screenshot: {out} is {size} bytes, over {MAX_BYTES}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlflow_gitops.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--render", type=Path, default=podrunner.DEFAULT_RENDER)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui.png")
    args = parser.parse_args(argv)
    try:
        return screenshot(args.render, args.out)
    except podrunner.PodRunnerError as err:
        print(f"screenshot: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
