"""Reading back through the server (REST API and proxied artifacts) what an experiment holds, as
the canonical facts of run_plans.RunPlan.items()."""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from tests.support.run_plans import CHUNK


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
