"""The e2e session: a real PostgreSQL and the rendered MLflow pod (mlflow_gitops.podrunner), started
once for every test under tests/e2e and stopped at the end, failures included.

The render is rendered/homelab.yaml unless E2E_RENDER names another. Without PostgreSQL, busybox
or the pinned MLflow server the tests fail under CI (CI=true) and are skipped elsewhere: `make e2e`
installs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from mlflow_gitops import podrunner
from tests.support.ci import unavailable
from tests.support.pods import RENDER

STATS: dict[str, str] = {}
FIGURES: list[str] = []  # one line per fault or load test: what it did and what it lost


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if STATS:
        terminalreporter.write_sep("-", "e2e harness")
        for key, value in STATS.items():
            terminalreporter.write_line(f"{key}: {value}")
    if FIGURES:
        terminalreporter.write_sep("-", "e2e faults and load")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a test's one-line summary (clients, writes, faults, losses) for the terminal summary."""

    def record(line: str) -> None:
        FIGURES.append(f"{request.node.name}: {line}")
        print(line)

    return record


@pytest.fixture(scope="session")
def stack() -> Iterator[podrunner.PodRunner]:
    try:
        podrunner.preflight()
    except podrunner.PodRunnerError as err:
        unavailable(str(err))
    pod = podrunner.PodRunner(RENDER)
    started = time.monotonic()
    pod.start()  # stops what it started if it fails
    STATS["render"] = str(RENDER)
    STATS["PostgreSQL + init containers + server ready"] = f"{time.monotonic() - started:.1f} s"
    try:
        trees = {
            "pod": pod.server.tree,
            "postgres": lambda: pod.postgres.proc.tree() if pod.postgres.proc else [],
        }
        with podrunner.PeakSampler(trees) as sampler:
            yield pod
        for name, peak in sampler.peaks.items():
            STATS[f"peak PSS, {name} process tree"] = f"{peak / 2**20:.0f} MiB"
    finally:
        stopping = time.monotonic()
        pod.stop()
        STATS["stop (SIGTERM, grace, PostgreSQL fast shutdown)"] = f"{time.monotonic() - stopping:.1f} s"
        if pod.server.leftovers:
            STATS["server descendants alive after it exited (then SIGKILLed)"] = "; ".join(
                pod.server.leftovers
            )
