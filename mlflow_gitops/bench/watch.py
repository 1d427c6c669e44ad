"""What watches the server while a phase's clients run (in the load generator): sequential /health
checks, the latency series, and the kubelet's probes as its prober workers run them (probes.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from mlflow_gitops.bench.probes import next_probe_at

SERIES_LOCK = threading.Lock()  # the health checkers share one series


def health_loop(
    spec: Mapping[str, Any], started: float, delay: float, stop: threading.Event, out: dict[str, Any]
) -> None:
    """Sequential /health requests, a long timeout: the latency series (start, seconds, ok)."""
    import requests

    http = requests.Session()
    http.headers["Host"] = spec["host"]
    stop.wait(delay)
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            ok = http.get(f"http://127.0.0.1:{spec['port']}/health", timeout=spec["health_timeout"]).ok
        except requests.RequestException:
            ok = False
        latency = time.monotonic() - t0
        with SERIES_LOCK:
            out["latencies"].append(latency)
            out["series"].append([t0 - started, latency, ok])
            out["failed"] += 0 if ok else 1
        stop.wait(spec["health_interval"])


def kubelet_probe(
    spec: Mapping[str, Any],
    probe: Mapping[str, Any],
    started: float,
    stop: threading.Event,
    out: dict[str, Any],
) -> None:
    """One probe as the kubelet's prober worker runs it: GET /health on a new connection (the
    kubelet turns keep-alives off), `timeoutSeconds`, success on 2xx/3xx, ticks every
    `periodSeconds` from `offset`; `out["results"]` = [start, seconds, failed, status or error]."""
    import requests

    url = f"http://127.0.0.1:{spec['port']}/health"
    headers = {"User-Agent": "kube-probe", "Connection": "close"}
    offset, period, timeout = float(out["offset"]), float(probe["period_s"]), float(probe["timeout_s"])
    at = offset
    while not stop.wait(max(0.0, started + at - time.monotonic())):
        t0 = time.monotonic() - started
        try:
            with requests.get(url, headers=headers, timeout=timeout) as resp:
                code: int | str = resp.status_code
                failed = not 200 <= resp.status_code < 400
        except requests.RequestException as err:
            code, failed = type(err).__name__, True
        took = time.monotonic() - started - t0
        out["results"].append([t0, took, failed, code])
        at = next_probe_at(t0, t0 + took, offset, period)
