"""A walk through the MLflow UI as a person takes it, recording every answer of the server.

`seed` writes an experiment, a finished run with a metric history and a registered model through
the REST API (with the Host header of the path under test); `Tour` then opens, in the browser, the
experiment list, the experiment's runs, the run's metric chart (waits for the plotted line), the
model registry, and creates an experiment through the "Create" dialog. A failed step saves a
screenshot of the page into `artifacts` and names it in the error.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_gitops.ui.browser import Access, Calls

TIMEOUT_MS = 120_000  # a page of a busy 2-core machine may take that long the first time
CHART_LINE = ".js-plotly-plot .scatterlayer path.js-line"


def rest(server: str, host: str, endpoint: str, body: dict[str, Any] | None = None) -> Any:
    """One MLflow REST call to `server` (the port-forward) with Host `host`; POST when `body`."""
    request = urllib.request.Request(
        f"{server}/api/2.0/mlflow/{endpoint}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Host": host, "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read() or b"{}")


@dataclass(frozen=True)
class Seeded:
    experiment_id: str
    experiment: str
    run_id: str
    run: str
    model: str
    metrics: tuple[str, ...]


def seed(server: str, host: str, prefix: str) -> Seeded:
    """An experiment `<prefix>` with one finished run `train` (loss, accuracy over 30 steps) and a
    registered model `<prefix>-model`."""
    now = int(time.time() * 1000)
    experiment_id = rest(server, host, "experiments/create", {"name": prefix})["experiment_id"]
    run = rest(
        server, host, "runs/create", {"experiment_id": experiment_id, "start_time": now, "run_name": "train"}
    )
    run_id = run["run"]["info"]["run_id"]
    metrics = [
        {"key": "loss", "value": 1.2 / (1 + 0.3 * s), "timestamp": now + s, "step": s} for s in range(30)
    ] + [
        {"key": "accuracy", "value": 0.95 - 0.5 / (1 + 0.4 * s), "timestamp": now + s, "step": s}
        for s in range(30)
    ]
    params = [{"key": "learning_rate", "value": "0.01"}, {"key": "epochs", "value": "30"}]
    rest(server, host, "runs/log-batch", {"run_id": run_id, "metrics": metrics, "params": params})
    rest(server, host, "runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": now + 30_000})
    rest(server, host, "registered-models/create", {"name": f"{prefix}-model"})
    return Seeded(experiment_id, prefix, run_id, "train", f"{prefix}-model", ("loss", "accuracy"))


@dataclass
class Tour:
    """The UI at `access.url` in the browser `context`; `pages` lists what was opened, in order."""

    context: Any
    access: Access
    artifacts: Path
    pages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.calls = Calls(self.access.url)
        self.calls.watch(self.page)

    @contextmanager
    def step(self, name: str) -> Iterator[Any]:
        """One step of the walk; on failure a screenshot `<n>-<name>.png` in `artifacts`."""
        self.pages.append(name)
        try:
            yield self.page
        except Exception as err:
            self.artifacts.mkdir(parents=True, exist_ok=True)
            shot = self.artifacts / f"{len(self.pages):02d}-{name}.png"
            self.page.screenshot(path=str(shot))
            raise AssertionError(
                f"{self.access.name} {self.access.url}: step {name!r} failed at {self.page.url}: {err}\n"
                f"screenshot: {shot}\nthe UI's calls so far:\n{self.calls.table()}"
            ) from err

    def open(self, fragment: str) -> None:
        """Load the UI at `#/<fragment>` as a fresh page, as a typed address or a bookmark does.

        A mere fragment change in the same document can lose to the page before it, which
        rewrites its own address (the runs page keeps its filters there)."""
        self.page.goto("about:blank")
        self.page.goto(f"{self.access.url}/#/{fragment}", wait_until="load")

    def experiment_list(self, seeded: Seeded) -> None:
        with self.step("experiment list") as page:
            self.open("experiments")
            page.get_by_test_id("experiment-list-item-link").filter(has_text=seeded.experiment).wait_for()

    def experiment_runs(self, seeded: Seeded) -> None:
        """The experiment's runs in the "Model training" view (POST runs/search, search-datasets,
        logged-models/search)."""
        with self.step("experiment runs") as page:
            self.open("experiments")
            page.get_by_role("button", name="Model training", exact=True).click()
            page.get_by_test_id("experiment-list-item-link").filter(has_text=seeded.experiment).click()
            page.wait_for_url(re.compile(rf"#/experiments/{seeded.experiment_id}\b"))
            page.get_by_role("link", name=seeded.run, exact=True).wait_for()

    def run_chart(self, seeded: Seeded) -> None:
        with self.step("run metric chart") as page:
            self.open(f"experiments/{seeded.experiment_id}/runs/{seeded.run_id}/model-metrics")
            lines = page.locator(CHART_LINE)
            lines.first.wait_for()
            page.wait_for_function(
                f"document.querySelectorAll({CHART_LINE!r}).length >= {len(seeded.metrics)}",
                timeout=TIMEOUT_MS,
            )
            empty = [d for d in lines.evaluate_all("els => els.map(e => e.getAttribute('d') || '')") if not d]
            assert not empty, f"{len(empty)} chart line(s) without a path"

    def model_registry(self, seeded: Seeded) -> None:
        with self.step("model registry") as page:
            self.open("models")
            page.get_by_role("link", name=seeded.model, exact=True).wait_for()

    def create_experiment(self, name: str) -> str:
        """Create `name` through the dialog; returns the id the UI navigates to."""
        with self.step("create experiment") as page:
            self.open("experiments")
            page.get_by_test_id("create-experiment-button").click()
            dialog = page.get_by_role("dialog")
            dialog.locator("#experimentName").fill(name)
            with page.expect_response(
                lambda r: r.url.endswith("/experiments/create") and r.request.method == "POST"
            ) as created:
                dialog.get_by_role("button", name="Create", exact=True).click()
            assert created.value.status == 200, f"experiments/create answered {created.value.status}"
            experiment_id = str(created.value.json()["experiment_id"])
            page.wait_for_url(re.compile(rf"#/experiments/{experiment_id}\b"))
            return experiment_id

    def close_side_panels(self) -> None:
        """Close the assistant's side panel (for a clean screenshot)."""
        close = self.page.get_by_role("button", name="Close")
        if close.count():
            close.first.click()
