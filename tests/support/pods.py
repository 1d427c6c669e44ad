"""Pods for the e2e tests beyond the session's: stacks of their own for tests that break them,
what-if renders, and pods started at the same moment."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from mlflow_gitops import podrunner
from tests.support.ci import unavailable

RENDER = Path(os.environ.get("E2E_RENDER", str(podrunner.DEFAULT_RENDER)))
# The previous MLflow minor's server (requirements-previous.txt, `make e2e-deps`): the image before
# an upgrade, for the upgrade rehearsal.
PREVIOUS_VENV = podrunner.ROOT / ".venv-previous"


@contextmanager
def own_stack(
    *, with_pod: bool = True, render: Path = RENDER, **kwargs: Any
) -> Iterator[podrunner.PodRunner]:
    """A stack of the render for one test (or module), stopped afterwards whatever happened."""
    try:
        podrunner.preflight()
    except podrunner.PodRunnerError as err:
        unavailable(str(err))
    stack = podrunner.PodRunner(render, **kwargs)
    stack.start(pod=with_pod)
    try:
        yield stack
    finally:
        stack.stop()


def edited_render(directory: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the render whose Deployment `edit` changed in place (a what-if pod)."""
    docs = [d for d in yaml.safe_load_all(RENDER.read_text()) if d]
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    assert len(deployments) == 1, f"{RENDER}: expected one Deployment"
    edit(deployments[0])
    out = directory / "render.yaml"
    out.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return out


def start_together(pods: Sequence[podrunner.PodRunner]) -> list[str | None]:
    """Start every pod at the same moment; per pod None when it became ready, else why it did not."""
    results: list[str | None] = [None] * len(pods)

    def start(i: int) -> None:
        try:
            pods[i].start()
        except Exception as err:  # noqa: BLE001 - any failure is an outcome to report
            results[i] = f"{type(err).__name__}: {err}"

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(pods))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
