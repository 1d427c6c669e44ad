"""The running server's /metrics as Prometheus scrapes it (Host: the pod's address and port, which
the homelab allows as `10.*:5000`), after some load: the metric names really exposed are the ones
tests/monitoring/mlflow-metrics.txt records and the alerts and dashboard use (RECORD_METRICS=1
rewrites the file), and the counters move with the requests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mlflow_gitops import podrunner
from mlflow_gitops.versions import ROOT

pytestmark = pytest.mark.e2e

SEEN = ROOT / "tests" / "monitoring" / "mlflow-metrics.txt"
POD_ADDRESS = "10.42.0.17:5000"  # what Prometheus sends as Host when it scrapes the pod


def scrape(stack: podrunner.PodRunner, host: str = POD_ADDRESS) -> requests.Response:
    return requests.get(f"{stack.url}/metrics", headers={"Host": host}, timeout=30)


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def total(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in found.get(name, []) if all(lab.get(k) == want for k, want in labels.items()))


def recorded() -> set[str]:
    return {line for line in SEEN.read_text().splitlines() if line and not line.startswith("#")}


def load(stack: podrunner.PodRunner, runs: int) -> None:
    """Some writes (200), a read of something missing (404): what the counters must show."""
    http = requests.Session()
    http.headers["Host"] = stack.service_host
    base = f"{stack.url}/api/2.0/mlflow"
    exp = http.post(
        f"{base}/experiments/create", json={"name": f"metrics-{uuid.uuid4().hex[:8]}"}, timeout=30
    )
    exp.raise_for_status()
    for _ in range(runs):
        run = http.post(
            f"{base}/runs/create", json={"experiment_id": exp.json()["experiment_id"]}, timeout=30
        )
        run.raise_for_status()
        logged = http.post(
            f"{base}/runs/log-metric",
            json={"run_id": run.json()["run"]["info"]["run_id"], "key": "loss", "value": 0.5, "timestamp": 0},
            timeout=30,
        )
        logged.raise_for_status()
    missing = http.get(f"{base}/runs/get", params={"run_id": uuid.uuid4().hex}, timeout=30)
    assert missing.status_code == 404


def test_prometheus_scrapes_the_metrics_the_alerts_use(
    stack: podrunner.PodRunner, figures: Callable[[str], None]
) -> None:
    before = scrape(stack)
    assert before.status_code == 200, before.text[:300]
    load(stack, runs=20)
    after = scrape(stack)
    assert after.status_code == 200
    found = samples(after.text)
    seen = {name for name in found if name.startswith("mlflow_")}
    if os.environ.get("RECORD_METRICS") == "1":
        header = [line for line in SEEN.read_text().splitlines() if line.startswith("#")]
        SEEN.write_text("\n".join([*header, *sorted(seen)]) + "\n")
    assert seen == recorded(), f"the server exposes {sorted(seen)}: RECORD_METRICS=1 rewrites {SEEN.name}"

    grew = total(found, "mlflow_http_request_total", status="200") - total(
        samples(before.text), "mlflow_http_request_total", status="200"
    )
    assert grew >= 41, f"1 + 20 + 20 writes answered 200, the counter grew by {grew}"
    assert total(found, "mlflow_http_request_total", status="404") >= 1
    buckets = sorted(
        (
            (float(lab["le"]), v)
            for lab, v in found["mlflow_http_request_duration_seconds_bucket"]
            if lab.get("status") == "200"
        ),
    )
    by_le: dict[float, float] = {}
    for le, v in buckets:
        by_le[le] = by_le.get(le, 0) + v
    count = by_le[float("inf")]
    p95 = next(le for le, v in sorted(by_le.items()) if v >= 0.95 * count)
    labels = sorted({k for lab, _ in found["mlflow_http_request_duration_seconds_bucket"] for k in lab})
    figures(
        f"{len(seen)} mlflow_* names ({', '.join(sorted(seen))}); duration labels {labels}; "
        f"{count:.0f} requests answered 200, p95 bucket <= {p95} s"
    )


def test_metrics_refuse_a_host_that_is_not_allowed(stack: podrunner.PodRunner) -> None:
    """/metrics is not exempt from the Host check: the `10.*:5000` entry is what lets Prometheus in."""
    assert scrape(stack, host="192.168.1.20:5000").status_code == 403
    assert scrape(stack, host="10.42.0.17:9090").status_code == 403


def test_the_exporter_writes_its_files_to_the_metrics_volume(stack: podrunner.PodRunner) -> None:
    scrape(stack).raise_for_status()
    files = sorted(p.name for p in Path(stack.volume_path("metrics")).glob("*.db"))
    assert files, "prometheus_client's multiprocess files are not in the emptyDir"
