"""A tracking workload for the e2e fault tests: clients that log runs through the MLflow REST API
(Host header of the HTTPRoute, as through the gateway), a ledger of every write and of the server's
answers, and a check of what the server holds against what was planned.

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

import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

KIB = 2**10
MIB = 2**20
CHUNK = MIB
BASE_TS = 1_767_225_600_000  # metric timestamps are planned, not taken from the clock


@dataclass(frozen=True)
class RunPlan:
    """Everything one run will hold; every value is derived from the seed."""

    name: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: tuple[tuple[str, float, int, int], ...]  # (key, value, step, timestamp)
    artifacts: dict[str, bytes | Generated]  # path in the run's artifact root -> content

    def facts_of(self, what: str) -> list[tuple[str, ...]]:
        """The facts one acknowledged write (a Ledger entry's `what`) put on the server."""
        kinds = {"create": ("run",), "params+tags": ("param", "tag"), "metrics": ("metric",)}
        if what.startswith("artifact "):
            return [f for f in self.items() if f[0] == "artifact" and f[2] == what.removeprefix("artifact ")]
        return [f for f in self.items() if f[0] in kinds.get(what, ())]

    def items(self) -> Iterator[tuple[str, ...]]:
        """One canonical line per stored fact (what the check compares and counts)."""
        yield ("run", self.name)
        for key, value in self.params.items():
            yield ("param", self.name, key, value)
        for key, value in self.tags.items():
            yield ("tag", self.name, key, value)
        for key, metric, step, ts in self.metrics:
            yield ("metric", self.name, key, repr(metric), str(step), str(ts))
        for path, content in self.artifacts.items():
            sha = hashlib.sha256(content).hexdigest() if isinstance(content, bytes) else content.digest()
            yield ("artifact", self.name, path, str(len(content)), sha)


def plan(
    clients: int, runs_per_client: int, *, prefix: str, seed: int = 0, big_artifact: int = MIB
) -> list[list[RunPlan]]:
    """Per client, its runs: 5 params, 3 tags, 2 metrics x 10 steps, artifacts of 4 KiB and
    128 KiB, and on each client's first run one of `big_artifact` bytes."""
    out: list[list[RunPlan]] = []
    for c in range(clients):
        runs = []
        for r in range(runs_per_client):
            rng = random.Random(f"{seed}-{c}-{r}")
            artifacts: dict[str, bytes | Generated] = {
                "notes/small.txt": rng.randbytes(4 * KIB),
                "data/medium.bin": rng.randbytes(128 * KIB),
            }
            if r == 0 and big_artifact:
                artifacts["data/big.bin"] = rng.randbytes(big_artifact)
            runs.append(
                RunPlan(
                    name=f"{prefix}-c{c:02d}-r{r}",
                    params={f"p{i}": f"{rng.random():.12f}" for i in range(5)},
                    tags={f"t{i}": rng.choice(["a", "b", "c"]) * (i + 1) for i in range(3)},
                    metrics=tuple(
                        (key, round(rng.uniform(-1e3, 1e3), 6), step, BASE_TS + 1000 * step + c)
                        for key in ("loss", "accuracy")
                        for step in range(10)
                    ),
                    artifacts=artifacts,
                )
            )
        out.append(runs)
    return out


def facts(plans: Sequence[RunPlan]) -> Counter[tuple[str, ...]]:
    return Counter(item for p in plans for item in p.items())


def digest(items: Counter[tuple[str, ...]]) -> str:
    sha = hashlib.sha256()
    for item in sorted(items.elements()):
        sha.update("\x1f".join(item).encode() + b"\n")
    return sha.hexdigest()[:16]


class Generated:
    """`size` pseudo-random bytes from `seed`, produced while they are sent (never held whole), the
    same on every attempt. With `hold_at`, the first attempt stalls after that many bytes until
    `resume` is set: an upload caught mid-way by a fault, deterministically."""

    def __init__(
        self, size: int, seed: int, hold_at: int | None = None, resume: threading.Event | None = None
    ) -> None:
        self.size, self.seed, self.hold_at = size, seed, hold_at
        self.resume = resume or threading.Event()
        self.sent = 0
        self._digest: str | None = None

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        rng, self.sent = random.Random(self.seed), 0
        while self.sent < self.size:
            if self.hold_at is not None and self.sent >= self.hold_at:
                self.hold_at = None
                self.resume.wait(300)
            chunk = rng.randbytes(min(CHUNK, self.size - self.sent))
            self.sent += len(chunk)
            yield chunk

    def digest(self) -> str:
        if self._digest is None:
            rng, sha, left = random.Random(self.seed), hashlib.sha256(), self.size
            while left:
                chunk = rng.randbytes(min(CHUNK, left))
                sha.update(chunk)
                left -= len(chunk)
            self._digest = sha.hexdigest()
        return self._digest


# ------------------------------------------------------------------------------------------------
# The ledger and the clients


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


# ------------------------------------------------------------------------------------------------
# What the server holds


class Reader:
    """Reads back through the server (REST API and proxied artifacts) what an experiment holds."""

    def __init__(self, base: str, host: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.headers["Host"] = host

    def get(self, endpoint: str, **params: Any) -> Any:
        resp = self.http.get(f"{self.base}{endpoint}", params=params, timeout=120)
        assert resp.status_code == 200, f"GET {endpoint} {params}: {resp.status_code} {resp.text[:300]}"
        return resp.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        resp = self.http.post(f"{self.base}{path}", json=body, timeout=120)
        assert resp.status_code == 200, f"POST {path}: {resp.status_code} {resp.text[:300]}"
        return resp.json()

    def create_experiment(self, name: str) -> str:
        return str(self.post("/api/2.0/mlflow/experiments/create", {"name": name})["experiment_id"])

    def runs(self, experiment_id: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            body: dict[str, Any] = {"experiment_ids": [experiment_id], "max_results": 1000}
            if token:
                body["page_token"] = token
            page = self.post("/api/2.0/mlflow/runs/search", body)
            runs += page.get("runs", [])
            token = page.get("next_page_token")
            if not token:
                return runs

    def artifacts(self, run_id: str, path: str = "") -> list[tuple[str, int]]:
        """Every file under the run's artifact root, recursively: (path, size)."""
        params = {"run_id": run_id, **({"path": path} if path else {})}
        found: list[tuple[str, int]] = []
        for f in self.get("/api/2.0/mlflow/artifacts/list", **params).get("files", []):
            if f["is_dir"]:
                found += self.artifacts(run_id, f["path"])
            else:
                found.append((f["path"], int(f["file_size"])))
        return found

    def download_sha256(self, artifact_root: str, path: str) -> tuple[int, str]:
        root = artifact_root.removeprefix("mlflow-artifacts:/").strip("/")
        sha, size = hashlib.sha256(), 0
        with self.http.get(
            f"{self.base}/api/2.0/mlflow-artifacts/artifacts/{root}/{path}", stream=True, timeout=600
        ) as r:
            assert r.status_code == 200, f"GET artifact {root}/{path}: {r.status_code} {r.text[:300]}"
            for chunk in r.iter_content(CHUNK):
                sha.update(chunk)
                size += len(chunk)
        return size, sha.hexdigest()

    def run_facts(self, run: dict[str, Any]) -> tuple[Counter[tuple[str, ...]], str]:
        """The canonical facts of one stored run (as RunPlan.items()) and its status."""
        info, data = run["info"], run.get("data", {})
        name = info["run_name"]
        out: Counter[tuple[str, ...]] = Counter([("run", name)])
        out.update(("param", name, p["key"], p["value"]) for p in data.get("params", []))
        out.update(
            ("tag", name, t["key"], t["value"])
            for t in data.get("tags", [])
            if not t["key"].startswith("mlflow.")
        )
        for key in sorted({m["key"] for m in data.get("metrics", [])}):
            history = self.get("/api/2.0/mlflow/metrics/get-history", run_id=info["run_id"], metric_key=key)
            out.update(
                ("metric", name, key, repr(m["value"]), str(m.get("step", 0)), str(m["timestamp"]))
                for m in history.get("metrics", [])
            )
        for path, size in self.artifacts(info["run_id"]):
            got_size, sha = self.download_sha256(info["artifact_uri"], path)
            assert got_size == size, f"{name}/{path}: listed {size} bytes, downloaded {got_size}"
            out[("artifact", name, path, str(size), sha)] += 1
        return out, info["status"]

    def experiment_facts(
        self, experiment_id: str, workers: int = 8
    ) -> tuple[Counter[tuple[str, ...]], Counter[str]]:
        """All facts of all runs of the experiment, and the runs' statuses."""
        runs = self.runs(experiment_id)
        total: Counter[tuple[str, ...]] = Counter()
        statuses: Counter[str] = Counter()
        with ThreadPoolExecutor(workers) as pool:
            for got, status in pool.map(self.run_facts, runs):
                total.update(got)
                statuses[status] += 1
        return total, statuses


def compare(expected: Counter[tuple[str, ...]], observed: Counter[tuple[str, ...]]) -> list[str]:
    """Every fact missing, duplicated or unexpected (an empty list: each planned fact exactly once)."""
    problems = []
    for item in sorted(set(expected) | set(observed)):
        if expected[item] != observed[item]:
            problems.append(f"{' '.join(item[:4])}...: expected {expected[item]}, found {observed[item]}")
    return problems


def tally(items: Counter[tuple[str, ...]]) -> dict[str, int]:
    kinds = Counter(item[0] for item in items.elements())
    kinds["artifact bytes"] = sum(int(item[3]) for item in items.elements() if item[0] == "artifact")
    return dict(kinds)


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
