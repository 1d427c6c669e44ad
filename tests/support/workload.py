"""A tracking workload for the e2e fault tests: clients that log runs through the MLflow REST API
(Host header of the HTTPRoute, as through the gateway) and a ledger of every write and of the
server's answers. What they write is planned in run_plans.py; readback.py reads back what the
server holds, to compare with the plan.

The clients' retry semantics, which the fault tests assert:

* A write is acknowledged when the server answers 200. A connection error or a timeout leaves its
  outcome unknown; a 5xx says the server or its database could not complete it. Both are retried
  (backoff 0.2 s doubling to 2 s) until the write's deadline. A 4xx is never retried: it is a
  refusal, and the write is recorded as refused (lost).
* Every write is idempotent, so a retry lands exactly once whether or not the lost attempt did:
  a run is created under a client-chosen unique name, and a retried create first looks that name
  up in the experiment and adopts the run if the earlier attempt landed; a parameter is re-logged
  with the same value (the server accepts it), a tag overwritten, a metric re-logged with the same
  key, value, step and timestamp (the server keeps one row), an artifact uploaded again to the same
  path (replaced whole: the server renames a complete temp file into place), the run finished again.
* A write not acknowledged by its deadline is given up and reported. Whatever was acknowledged,
  and whatever was retried to an acknowledgement, must then be on the server exactly once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.support.run_plans import BASE_TS, RunPlan


@dataclass
class Ledger:
    """Every write the clients made and every answer they got; safe to share between threads."""

    answers: Counter[str] = field(default_factory=Counter)  # "200", "503", "connection error", ...
    acked: list[tuple[float, str, str]] = field(default_factory=list)  # (time, run name, write)
    retried: list[tuple[str, str]] = field(default_factory=list)  # writes acked after a failed attempt
    refused: list[str] = field(default_factory=list)  # 4xx answers to writes, with their message
    given_up: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)  # runs whose unacknowledged create had landed
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def failures(self) -> int:
        """Answers other than 200 (HTTP errors and connection errors alike)."""
        return sum(n for answer, n in self.answers.items() if answer != "200")

    def acked_before(self, moment: float) -> list[tuple[str, str]]:
        return [(run, what) for t, run, what in self.acked if t < moment]


class Client:
    """One tracking client: a session, the experiment it writes into, the retry semantics above."""

    def __init__(
        self, base: str, host: str, ledger: Ledger, experiment_id: str, deadline: float = 180
    ) -> None:
        self.base, self.ledger, self.experiment_id, self.deadline = base, ledger, experiment_id, deadline
        self.http = requests.Session()
        self.http.headers["Host"] = host

    def write(self, run: str, what: str, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        """Send one write until acknowledged; its answer's JSON body, or None when refused or given
        up. `kwargs["data"]` may be a Generated body: it is replayed from its seed on every attempt."""
        deadline, delay, attempt = time.monotonic() + self.deadline, 0.2, 0
        while True:
            attempt += 1
            answer, resp = self._send(method, path, **kwargs)
            if answer == "200" and resp is not None:
                with self.ledger.lock:
                    self.ledger.acked.append((time.monotonic(), run, what))
                    if attempt > 1:
                        self.ledger.retried.append((run, what))
                body: dict[str, Any] = resp.json() if resp.content else {}
                return body
            if resp is not None and 400 <= resp.status_code < 500:
                with self.ledger.lock:
                    self.ledger.refused.append(f"{run} {what}: {resp.status_code} {resp.text[:200]}")
                return None
            if time.monotonic() + delay > deadline:
                with self.ledger.lock:
                    self.ledger.given_up.append(f"{run} {what}: last answer {answer}")
                return None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            if what == "create":
                found = self.find_run(run)
                if found is not None:
                    with self.ledger.lock:
                        self.ledger.acked.append((time.monotonic(), run, what))
                        self.ledger.adopted.append(run)
                    return found

    def _send(self, method: str, path: str, **kwargs: Any) -> tuple[str, requests.Response | None]:
        resp: requests.Response | None
        try:
            resp = self.http.request(method, f"{self.base}{path}", timeout=120, **kwargs)
            answer = str(resp.status_code)
        except requests.RequestException:
            answer, resp = "connection error", None
        with self.ledger.lock:
            self.ledger.answers[answer] += 1
        return answer, resp

    def find_run(self, name: str) -> dict[str, Any] | None:
        """The run named `name` in the experiment, as a runs/create answer would carry it; None if
        absent or the lookup itself failed (then the create is sent again)."""
        answer, resp = self._send(
            "POST",
            "/api/2.0/mlflow/runs/search",
            json={"experiment_ids": [self.experiment_id], "filter": f"attributes.run_name = '{name}'"},
        )
        runs = resp.json().get("runs", []) if answer == "200" and resp is not None else []
        return {"run": runs[0]} if len(runs) == 1 else None

    def log_run(self, p: RunPlan) -> bool:
        """All writes of one run, in order; False as soon as one is refused or given up."""
        created = self.write(
            p.name,
            "create",
            "POST",
            "/api/2.0/mlflow/runs/create",
            json={"experiment_id": self.experiment_id, "run_name": p.name, "start_time": BASE_TS},
        )
        if created is None:
            return False
        info = created["run"]["info"]
        run_id, root = info["run_id"], str(info["artifact_uri"]).removeprefix("mlflow-artifacts:/").strip("/")
        batch = "/api/2.0/mlflow/runs/log-batch"
        writes: list[tuple[str, str, str, dict[str, Any]]] = []
        if p.params or p.tags:
            params = [{"key": k, "value": v} for k, v in p.params.items()]
            tags = [{"key": k, "value": v} for k, v in p.tags.items()]
            writes.append(
                ("params+tags", "POST", batch, {"json": {"run_id": run_id, "params": params, "tags": tags}})
            )
        if p.metrics:
            metrics = [{"key": k, "value": v, "step": s, "timestamp": t} for k, v, s, t in p.metrics]
            writes.append(("metrics", "POST", batch, {"json": {"run_id": run_id, "metrics": metrics}}))
        for path, content in p.artifacts.items():
            writes.append(
                (
                    f"artifact {path}",
                    "PUT",
                    f"/api/2.0/mlflow-artifacts/artifacts/{root}/{path}",
                    {"data": content},
                )
            )
        writes.append(
            (
                "finish",
                "POST",
                "/api/2.0/mlflow/runs/update",
                {"json": {"run_id": run_id, "status": "FINISHED", "end_time": BASE_TS + 60_000}},
            )
        )
        return all(
            self.write(p.name, what, method, path, **kw) is not None for what, method, path, kw in writes
        )


def run_clients(
    base: str, host: str, experiment_id: str, plans: Sequence[Sequence[RunPlan]], ledger: Ledger
) -> list[threading.Thread]:
    """Start one thread per client, each logging its runs in order; the caller joins them."""
    threads = [
        threading.Thread(
            target=lambda runs=runs: [Client(base, host, ledger, experiment_id).log_run(p) for p in runs],
            name=f"client-{i}",
            daemon=True,
        )
        for i, runs in enumerate(plans)
    ]
    for t in threads:
        t.start()
    return threads


def join_all(threads: Sequence[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"clients still running after {timeout:.0f} s: {alive}"


def health_latency(base: str, host: str, path: str = "/health", limit: float = 30) -> float:
    """Seconds until the probe path answered 200 (what the kubelet times); `limit` if it never did."""
    started = time.monotonic()
    try:
        resp = requests.get(f"{base}{path}", headers={"Host": host}, timeout=limit)
    except requests.RequestException:
        return limit
    return time.monotonic() - started if resp.status_code == 200 else limit


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.05)
