"""The load generator: runs inside the pod's network namespace (`python -m mlflow_gitops.bench _load
<spec>`, loopback only), one bounded phase per call, and prints its raw observations as JSON.

A phase is closed-loop clients (each sends its next request when the last one is answered) of one
kind: `runs` (create run), `metrics` (log-batch), `mix` (create run, log-batch, search: what a
training client and a UI do); `artifacts` is artifacts.py. Every
API request carries a tag (`?bench=<tag>`) so that its access-log line can be found; each answer
>= 400 and each connection error is kept as an event (serverlog.py explains them from the log).

With `retries`, a client behaves as MLflow's Python client does: it retries connection errors and
the answers in serverlog.RETRIED with MLflow's backoff (factor 2, jitter 1 s, 7 retries), and a
write (create run, log-batch) that is not acknowledged in the end is counted lost, with why.

`health` checks /health sequentially every `health_interval` s with a long timeout, from
`health_checkers` staggered threads (the latency series); `probes` runs the kubelet's readiness and
liveness probes with the rendered settings (probes.py: a new connection each, `timeoutSeconds`, a
`periodSeconds` ticker from a random phase).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow_gitops.bench.serverlog import RETRIED, TAG_PARAM
from mlflow_gitops.bench.watch import SERIES_LOCK, health_loop, kubelet_probe

MIB = 2**20
WRITES = frozenset({"create_run", "log_batch"})
MAX_RETRIES, BACKOFF_FACTOR, BACKOFF_JITTER, BACKOFF_MAX = 7, 2.0, 1.0, 120.0  # MLflow's client
MAX_EVENTS = 300  # error events kept per phase (all are counted)
VERIFY_TIMEOUT = 900.0  # the store check after a phase waits behind requests given up on


def now_ms() -> int:
    return int(time.time() * 1000)


def backoff(failures: int, rng: random.Random) -> float:
    """Seconds before the next attempt after `failures` failed ones (urllib3's Retry, as MLflow's
    client configures it): none after the first, then factor * 2^(n-1) plus jitter, capped."""
    if failures <= 1:
        return 0.0
    return min(BACKOFF_MAX, BACKOFF_FACTOR * 2 ** (failures - 1) + rng.random() * BACKOFF_JITTER)


class Client:
    def __init__(self, spec: Mapping[str, Any], prefix: str, timeout: float | None = None) -> None:
        import requests

        self.base = f"http://127.0.0.1:{spec['port']}"
        self.timeout = float(timeout or spec["request_timeout"])
        self.http = requests.Session()
        self.http.headers["Host"] = spec["host"]
        self.prefix, self.sent, self.tag = prefix, 0, ""

    def post(
        self, endpoint: str, body: Mapping[str, Any], timeout: float | None = None
    ) -> tuple[int, Any, float]:
        self.sent += 1
        self.tag = f"{self.prefix}-{self.sent}"
        url = f"{self.base}/api/2.0/mlflow/{endpoint}?{TAG_PARAM}={self.tag}"
        started = time.monotonic()
        resp = self.http.post(url, json=body, timeout=timeout or self.timeout)
        elapsed = time.monotonic() - started
        return resp.status_code, resp.json() if resp.status_code == 200 else resp.text, elapsed


@dataclass
class Tally:
    """Latencies, answers and error events of one phase, shared by its client threads."""

    max_requests: int
    deadline: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    ok: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    event_count: int = 0
    exceptions: int = 0
    issued: int = 0
    retries: int = 0
    writes: dict[str, Any] = field(default_factory=lambda: {"acked": 0, "lost": 0, "lost_by": {}})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        """Reserve one request of the budget; False once the time or the budget is spent."""
        with self.lock:
            if self.issued >= self.max_requests or time.monotonic() >= self.deadline:
                return False
            self.issued += 1
            return True

    def _event(self, event: dict[str, Any]) -> None:
        self.event_count += 1
        if len(self.events) < MAX_EVENTS:
            self.events.append(event)

    def record(self, op: str, code: int, elapsed: float, body: Any, tag: str, t0: float) -> None:
        with self.lock:
            self.latencies.setdefault(op, []).append(elapsed)
            self.status[str(code)] = self.status.get(str(code), 0) + 1
            if code == 200:
                self.ok[op] = self.ok.get(op, 0) + 1
            if code >= 400:
                text = str(body)[:300]
                if len(self.samples) < 5:
                    self.samples.append(f"{op} {code}: {text[:200]}")
                self._event({"op": op, "code": code, "body": text, "tag": tag, "t0": t0, "t1": time.time()})

    def failed(self, op: str, err: Exception, tag: str, t0: float) -> None:
        with self.lock:
            self.exceptions += 1
            text = f"{type(err).__name__}: {str(err)[:200]}"
            if len(self.samples) < 5:
                self.samples.append(f"{op}: {text}")
            why = re.sub(r"HTTPConnectionPool\([^)]*\): ", "", str(err))[:200]
            self._event(
                {"op": op, "error": type(err).__name__, "body": why, "tag": tag, "t0": t0, "t1": time.time()}
            )

    def wrote(self, acked: bool, why: str = "") -> None:
        with self.lock:
            if acked:
                self.writes["acked"] += 1
            else:
                self.writes["lost"] += 1
                self.writes["lost_by"][why] = self.writes["lost_by"].get(why, 0) + 1


def _batch(keys: int, steps: int, step0: int) -> list[dict[str, Any]]:
    ts = now_ms()
    return [
        {"key": f"m{k}", "value": random.random(), "timestamp": ts, "step": step0 + s}
        for s in range(steps)
        for k in range(keys)
    ]


def _client_loop(
    spec: Mapping[str, Any], tally: Tally, exp_id: str, index: int, hard_deadline: float
) -> None:
    client = Client(spec, f"{spec['kind'][0]}{spec.get('clients', 0)}c{index}")
    rng = random.Random(index)
    retrying = bool(spec.get("retries"))

    def call(op: str, endpoint: str, body: Mapping[str, Any]) -> Any:
        failures = 0
        while True:
            timeout = client.timeout
            if retrying:
                timeout = max(0.1, min(timeout, hard_deadline - time.monotonic()))
            t0 = time.time()
            code: int | None = None
            try:
                code, data, elapsed = client.post(endpoint, body, timeout)
            except Exception as err:  # noqa: BLE001 - a timeout or reset is a result here
                tally.failed(op, err, client.tag, t0)
            else:
                tally.record(op, code, elapsed, data, client.tag, t0)
                if code == 200:
                    if op in WRITES:
                        tally.wrote(True)
                    return data
            failures += 1
            final = code is not None and code not in RETRIED
            pause = backoff(failures, rng)
            why = ""
            if not retrying or final:
                why = f"answered {code}" if code is not None else "connection error"
            elif failures > MAX_RETRIES:
                why = "retries exhausted"
            elif time.monotonic() + pause >= hard_deadline:
                why = "still failing at the bench's limit (drain_seconds)"
            if why:
                if op in WRITES:
                    tally.wrote(False, why)
                return None
            with tally.lock:
                tally.retries += 1
            time.sleep(pause)

    kind = spec["kind"]
    run_id = ""
    step = 0
    if kind == "metrics":
        made = call("create_run", "runs/create", {"experiment_id": exp_id, "start_time": now_ms()})
        if made is None:
            return
        run_id = made["run"]["info"]["run_id"]
    while tally.take():
        if kind == "runs":
            call("create_run", "runs/create", {"experiment_id": exp_id, "start_time": now_ms()})
        elif kind == "metrics":
            per = spec["metrics_per_batch"]
            call("log_batch", "runs/log-batch", {"run_id": run_id, "metrics": _batch(10, per // 10, step)})
            step += per // 10
        else:  # mix: what a training client and a UI do
            made = call("create_run", "runs/create", {"experiment_id": exp_id, "start_time": now_ms()})
            if made is not None and tally.take():
                body = {
                    "run_id": made["run"]["info"]["run_id"],
                    "metrics": _batch(10, 5, 0),
                    "params": [{"key": f"p{i}", "value": str(i)} for i in range(5)],
                    "tags": [{"key": "client", "value": str(index)}, {"key": "bench", "value": "mix"}],
                }
                call("log_batch", "runs/log-batch", body)
            if tally.take():
                call("search", "runs/search", {"experiment_ids": [exp_id], "max_results": 100})


def _stored(client: Client, exp_id: str) -> dict[str, Any]:
    """Runs of the phase's experiment now in the store, and those carrying a log-batch's params.
    The server may still be working through requests their clients gave up on: a long timeout."""
    counts: dict[str, Any] = {}
    for name, query in (("runs", ""), ("runs_with_batch", "params.p0 = '0'")):
        n, token = 0, None
        while True:
            body = {"experiment_ids": [exp_id], "max_results": 1000, "filter": query}
            try:
                code, page, _ = client.post(
                    "runs/search", body | ({"page_token": token} if token else {}), VERIFY_TIMEOUT
                )
            except Exception as err:  # noqa: BLE001 - reported, the phase's figures stand
                return {"error": f"runs/search after the phase: {type(err).__name__}: {err}"[:300]}
            if code != 200:
                return {"error": f"runs/search after the phase: {code} {str(page)[:200]}"}
            n += len(page.get("runs", []))
            token = page.get("next_page_token")
            if not token:
                break
        counts[name] = n
    return counts


def run_load(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One bounded phase of closed-loop clients (and /health probes); the raw observations."""
    setup = Client(spec, "setup")
    code, exp, _ = setup.post("experiments/create", {"name": f"bench-{spec['kind']}-{time.time_ns()}"})
    if code != 200:
        raise SystemExit(f"experiments/create: {code} {exp}")
    started = time.monotonic()
    deadline = started + float(spec["seconds"])
    tally = Tally(max_requests=int(spec["max_requests"]), deadline=deadline)
    stop = threading.Event()
    health: dict[str, Any] = {"latencies": [], "failed": 0, "series": []}
    watchers = []
    checkers = int(spec.get("health_checkers", 1)) if spec.get("health") else 0
    for k in range(checkers):  # staggered, for a denser series
        delay = k * float(spec["health_interval"]) / checkers
        watchers.append(
            threading.Thread(target=health_loop, args=(spec, started, delay, stop, health), daemon=True)
        )
    rng = random.Random(spec.get("seed", 0))
    probes: dict[str, Any] = {}
    for name, probe in (spec.get("probes") or {}).items():
        probes[name] = {"settings": probe, "offset": rng.uniform(0, float(probe["period_s"])), "results": []}
        watchers.append(
            threading.Thread(
                target=kubelet_probe, args=(spec, probe, started, stop, probes[name]), daemon=True
            )
        )
    for t in watchers:
        t.start()
    hard = deadline + float(spec.get("drain_seconds", 0))
    clients = [
        threading.Thread(target=_client_loop, args=(spec, tally, exp["experiment_id"], i, hard), daemon=True)
        for i in range(int(spec["clients"]))
    ]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    elapsed = time.monotonic() - started
    stop.set()
    # A /health still queued behind requests given up on is not waited for beyond the probes' timeout.
    until = time.monotonic() + max(
        [5.0, *(float(p["timeout_s"]) + 5 for p in (spec.get("probes") or {}).values())]
    )
    for t in watchers:
        t.join(max(0.0, until - time.monotonic()))
    with SERIES_LOCK:
        health = {k: list(v) if isinstance(v, list) else v for k, v in health.items()}
        probes = {k: {**v, "results": list(v["results"])} for k, v in probes.items()}
    out = {
        "elapsed_s": elapsed,
        "latencies": tally.latencies,
        "status": tally.status,
        "ok": tally.ok,
        "exceptions": tally.exceptions,
        "samples": tally.samples,
        "events": tally.events,
        "event_count": tally.event_count,
        "retries": tally.retries,
        "writes": tally.writes,
        "health": health,
        "probes": probes,
        "client_cpu": time.process_time() / elapsed,
    }
    if spec.get("verify"):
        out["stored"] = _stored(setup, exp["experiment_id"])
    return out
