"""32 tracking clients at once against the rendered pod with the shipped settings (workers, pool,
probes as rendered): every acknowledged write is stored exactly once, no request is refused for
want of a database connection, and /health keeps answering within the liveness probe's timeout.

Why a refusal can happen at all: MLflow's log-batch holds one pooled connection and asks for more
(each of _log_params, _log_metrics, _set_tags opens its own session). When as many log-batches as
a worker's pool holds (size + overflow, 5 + 10 by default) are in their first session at once, all
wait for a second connection that never frees: after the pool timeout (30 s) each answers HTTP 400
"QueuePool limit ... reached". A worker runs up to 40 requests at once (the thread pool behind
Starlette's WSGI bridge), so the burst test sends 40 per worker at once: deadlock-free only when
the pool holds more than 40.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import requests

from mlflow_gitops import podrunner
from mlflow_gitops.podrunner import Poll
from tests.support.readback import Reader
from tests.support.run_plans import compare, digest, facts, plan, tally
from tests.support.workload import Ledger, health_latency, join_all, run_clients

pytestmark = pytest.mark.e2e

CLIENTS = 32
RUNS_PER_CLIENT = 3
KUBELET_HOST = "10.42.0.17:5000"  # the kubelet probes the pod IP
THREADS_PER_WORKER = 40  # anyio's default thread limiter: Flask handlers running at once per worker


@dataclass
class Load:
    expected: Counter[tuple[str, ...]]
    observed: Counter[tuple[str, ...]]
    statuses: Counter[str]
    ledger: Ledger
    seconds: float
    health: list[float]
    peak_connections: int
    max_connections: int


@pytest.fixture(scope="module")
def load(stack: podrunner.PodRunner) -> Load:
    """The load, once: 32 clients x 3 runs, /health timed every 0.2 s, connections counted."""
    reader = Reader(stack.url, stack.route_host)
    experiment = reader.create_experiment(f"load-{uuid.uuid4().hex[:8]}")
    plans = plan(CLIENTS, RUNS_PER_CLIENT, prefix="load")
    ledger = Ledger()
    started = time.monotonic()
    with (
        Poll(lambda: health_latency(stack.url, KUBELET_HOST), 0.2) as health,
        Poll(lambda: float(stack.postgres.connections()), 0.5) as connections,
    ):
        join_all(run_clients(stack.url, stack.route_host, experiment, plans, ledger), timeout=600)
    seconds = time.monotonic() - started
    observed, statuses = reader.experiment_facts(experiment)
    return Load(
        expected=facts([p for runs in plans for p in runs]),
        observed=observed,
        statuses=statuses,
        ledger=ledger,
        seconds=seconds,
        health=health.values,
        peak_connections=int(max(connections.values, default=0)),
        max_connections=stack.postgres.max_connections(),
    )


def test_32_clients_every_acknowledged_write_is_stored_exactly_once(
    load: Load, figures: Callable[[str], None]
) -> None:
    counts = tally(load.expected)
    lost = compare(load.expected, load.observed)
    figures(
        f"clients={CLIENTS} runs={counts['run']} write requests acked={len(load.ledger.acked)} "
        f"params={counts['param']} tags={counts['tag']} metric points={counts['metric']} "
        f"artifacts={counts['artifact']} ({counts['artifact bytes'] / 2**20:.1f} MiB) "
        f"in {load.seconds:.1f} s; faults=0; facts lost or duplicated={len(lost)}; "
        f"checksum expected {digest(load.expected)} stored {digest(load.observed)}"
    )
    assert not load.ledger.given_up and not load.ledger.refused
    assert not lost, "\n".join(lost[:20])
    assert load.statuses == Counter({"FINISHED": counts["run"]})


def test_32_clients_no_request_is_refused(load: Load, figures: Callable[[str], None]) -> None:
    """No 4xx/5xx at all, in particular no HTTP 400 "QueuePool limit ... reached"."""
    figures(
        f"answers={dict(load.ledger.answers)}; peak database connections {load.peak_connections} "
        f"of max_connections {load.max_connections}"
    )
    assert load.ledger.failures == 0, (
        f"answers other than 200: {dict(load.ledger.answers)}; {load.ledger.refused[:5]}"
    )
    assert load.peak_connections < load.max_connections


def test_health_answers_within_the_liveness_timeout_under_32_clients(
    stack: podrunner.PodRunner, load: Load, figures: Callable[[str], None]
) -> None:
    probe = stack.main_container["livenessProbe"]
    timeout = float(probe.get("timeoutSeconds", 1))
    latencies = sorted(load.health)
    assert latencies, "no /health sample was taken during the load"
    slow = [t for t in latencies if t >= timeout]
    figures(
        f"/health during the load: {len(latencies)} probes, median {latencies[len(latencies) // 2]:.2f} s, "
        f"max {latencies[-1]:.2f} s, {len(slow)} at or over the liveness timeout {timeout:.0f} s "
        f"(failureThreshold {probe.get('failureThreshold', 3)}, period {probe.get('periodSeconds', 10)} s)"
    )
    assert not slow, f"/health took {slow} s, the liveness probe gives up after {timeout:.0f} s"


def test_a_burst_as_large_as_the_servers_concurrency_is_not_refused(
    stack: podrunner.PodRunner, figures: Callable[[str], None]
) -> None:
    """40 log-batches per uvicorn worker at the same moment, each on a run of its own."""
    workers = next(
        (int(a.split("=", 1)[1]) for a in stack.server_argv if a.startswith("--workers=")),
        4,  # MLflow's default
    )
    burst = THREADS_PER_WORKER * workers
    reader = Reader(stack.url, stack.route_host)
    experiment = reader.create_experiment(f"burst-{uuid.uuid4().hex[:8]}")
    runs = [
        reader.post("/api/2.0/mlflow/runs/create", {"experiment_id": experiment})["run"]["info"]["run_id"]
        for _ in range(burst)
    ]
    answers: Counter[str] = Counter()
    refusals: list[str] = []
    start, lock = threading.Barrier(burst), threading.Lock()

    def batch(run_id: str) -> None:
        body = {
            "run_id": run_id,
            "params": [{"key": f"p{i}", "value": "v"} for i in range(5)],
            "metrics": [{"key": "m", "value": 1.0, "step": 0, "timestamp": 0}],
            "tags": [{"key": "t", "value": "v"}],
        }
        start.wait(30)
        try:
            resp = requests.post(
                f"{stack.url}/api/2.0/mlflow/runs/log-batch",
                json=body,
                headers={"Host": stack.route_host},
                timeout=120,
            )
            answer, text = str(resp.status_code), resp.text[:160]
        except requests.RequestException as err:
            answer, text = "connection error", str(err)[:160]
        with lock:
            answers[answer] += 1
            if answer != "200":
                refusals.append(text)

    started = time.monotonic()
    with (
        Poll(lambda: float(stack.postgres.connections()), 0.25) as connections,
        Poll(lambda: health_latency(stack.url, KUBELET_HOST), 0.2) as health,
    ):
        threads = [threading.Thread(target=batch, args=(run_id,)) for run_id in runs]
        for t in threads:
            t.start()
        join_all(threads, 300)
    figures(
        f"{burst} log-batches at once ({workers} worker(s) x {THREADS_PER_WORKER} threads): "
        f"answers {dict(answers)} in {time.monotonic() - started:.1f} s; "
        f"peak database connections {max(connections.values, default=0):.0f}; "
        f"/health max {max(health.values, default=0):.2f} s" + (f"; e.g. {refusals[0]!r}" if refusals else "")
    )
    assert answers == Counter({"200": burst}), refusals[:3]
