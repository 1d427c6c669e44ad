"""The MLflow UI of the rendered pod in a real browser: Debian's Chromium, headless, driven by
Playwright (mlflow_gitops/ui).

The ways people open it: the route, https://<HTTPRoute hostname>, with TLS terminated locally as the
Gateway does; a port-forward at http://localhost:5000 (`kubectl port-forward svc/mlflow 5000:80`,
and the address `make up` prints); and `make up` itself on another port. Through each, the UI's
pages are opened and an experiment is created through its "Create" dialog, recording every answer
of the server: none of the UI's calls may answer 403 or 5xx, and the POSTs MLflow's security
middleware gates (runs/search, experiments/search-datasets, logged-models/search,
experiments/create) must have been answered 200. A failed step leaves a screenshot under
test-artifacts/ui/ (git-ignored) and names it in the failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from mlflow_gitops import podrunner
from mlflow_gitops.podrunner import preview
from mlflow_gitops.ui.browser import Access, Calls, chromium, missing, through_port_forward, through_route
from mlflow_gitops.ui.tour import Seeded, Tour, rest, seed
from tests.support.ci import unavailable
from tests.support.pods import RENDER

pytestmark = pytest.mark.e2e

ARTIFACTS = podrunner.ROOT / "test-artifacts" / "ui"
GATED_POSTS = (
    "/ajax-api/2.0/mlflow/runs/search",
    "/ajax-api/2.0/mlflow/experiments/search-datasets",
    "/ajax-api/2.0/mlflow/logged-models/search",
    "/ajax-api/2.0/mlflow/experiments/create",
)


def make_up_default_port() -> int:
    (port,) = re.findall(r"^UP_PORT \?= (\d+)$", (podrunner.ROOT / "Makefile").read_text(), re.MULTILINE)
    return int(port)


@pytest.fixture(scope="module", autouse=True)
def browser() -> None:
    if gaps := missing():
        unavailable(f"no browser: missing {'; '.join(gaps)} (`make e2e-deps` installs them)")


def _assert_ui_worked(calls: Calls, where: str) -> None:
    failed = calls.failed()
    assert not failed, f"{where}: the UI's calls failed:\n{calls.table(failed)}\nall calls:\n{calls.table()}"
    answered = {(c.method, c.path) for c in calls.api() if c.status == 200}
    unanswered = [path for path in GATED_POSTS if ("POST", path) not in answered]
    assert not unanswered, f"{where}: no POST answered 200 for {unanswered}:\n{calls.table()}"


def _created(server: str, host: str, name: str) -> str:
    query = urllib.parse.urlencode({"experiment_name": name})
    return str(rest(server, host, f"experiments/get-by-name?{query}")["experiment"]["experiment_id"])


def _walk(server: str, access: Access, test: str, figures: Callable[[str], None]) -> None:
    """Every page of the tour, then an experiment created in the UI, found through the API."""
    seeded: Seeded = seed(server, access.host, f"ui-{access.name}-{uuid.uuid4().hex[:8]}")
    name = f"created-in-the-ui-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with chromium(access) as context:
        tour = Tour(context, access, ARTIFACTS / test)
        tour.experiment_list(seeded)
        tour.experiment_runs(seeded)
        tour.run_chart(seeded)
        tour.model_registry(seeded)
        experiment_id = tour.create_experiment(name)
    assert _created(server, access.host, name) == experiment_id
    _assert_ui_worked(tour.calls, f"{access.name} {access.url}")
    figures(
        f"{access.url}: {len(tour.pages)} steps ({', '.join(tour.pages)}) in {time.monotonic() - started:.1f} s; "
        f"{len(tour.calls.seen)} responses, {len(tour.calls.api())} API calls, none 403/5xx"
    )
    print(f"the UI's calls through {access.url}:\n{tour.calls.table()}")


def test_ui_through_the_route_host_reads_and_writes(
    stack: podrunner.PodRunner, tmp_path: Path, figures: Callable[[str], None]
) -> None:
    assert stack.local_port is not None
    with through_route(stack.route_host, stack.local_port, tmp_path) as access:
        _walk(stack.url, access, "route", figures)


def test_ui_through_a_port_forward_at_localhost_5000_reads_and_writes(
    stack: podrunner.PodRunner, figures: Callable[[str], None]
) -> None:
    """The address `make up` prints for its default port, which is also what `kubectl port-forward
    svc/mlflow 5000:80` serves: the render must allow it as is (no preview-only entries)."""
    assert stack.local_port is not None
    access = preview.browser_access(stack.server_env, make_up_default_port())
    assert access.url == "http://localhost:5000"
    assert access.as_rendered, f"{RENDER} lacks {access.added} for http://localhost:5000"
    _walk(stack.url, through_port_forward(access.url, stack.local_port), "port-forward", figures)


def test_ui_at_a_port_the_render_does_not_allow_is_refused(stack: podrunner.PodRunner) -> None:
    """The control: the browser's Host really is the address bar's, so another port is refused."""
    assert stack.local_port is not None
    access = through_port_forward("http://localhost:5001", stack.local_port)
    with chromium(access) as context:
        page = context.new_page()
        calls = Calls(access.url)
        calls.watch(page)
        response = page.goto(f"{access.url}/#/experiments", wait_until="load", timeout=120_000)
        assert response is not None and response.status == 403, (
            f"GET / answered {response and response.status}"
        )
        assert "Invalid Host header" in page.content()
    assert [str(c) for c in calls.failed()] == ["GET / 403"]


def _read_until(
    stream: list[str], proc: subprocess.Popen[str], pattern: str, timeout: float
) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(stream):
            if found := re.search(pattern, line):
                return found
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"`up` did not print /{pattern}/ within {timeout:.0f} s:\n{''.join(stream)[-3000:]}")


def test_make_up_serves_a_ui_that_reads_and_writes_at_the_address_it_prints(
    figures: Callable[[str], None],
) -> None:
    """`make up UP_PORT=<another port>`: it says which entries it adds for the preview only, and
    the address it prints then works in the browser as printed (no host mapping)."""
    port = podrunner.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow_gitops.podrunner", "up", "--render", str(RENDER), "--port", str(port)],
        cwd=podrunner.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    output: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        notice = _read_until(output, proc, rf"make up UP_PORT={port}\).*", 120).group(0)
        assert "localhost:5000" in notice, notice
        opened = _read_until(output, proc, r"Open (http://\S+) in a browser", 600).group(1)
        assert opened == f"http://localhost:{port}"
        added = "".join(output)
        assert f"localhost:{port}" in added and "unchanged" in added, added
        _walk(f"http://127.0.0.1:{port}", through_port_forward(opened, port), "make-up", figures)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        reader.join(timeout=10)
    assert code == 0 and "podrunner: stopped." in "".join(output), "".join(output)[-3000:]
