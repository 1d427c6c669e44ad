"""The artifacts phase of the load generator: one upload and one download through the server's
artifact proxy, timed (`_load` with kind `artifacts`)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from typing import Any

from mlflow_gitops.bench.load import MIB, Client, now_ms


def run_artifacts(spec: Mapping[str, Any]) -> dict[str, Any]:
    client = Client(spec, "a", 600)
    code, exp, _ = client.post("experiments/create", {"name": f"bench-artifacts-{time.time_ns()}"})
    assert code == 200, exp
    code, run, _ = client.post("runs/create", {"experiment_id": exp["experiment_id"], "start_time": now_ms()})
    assert code == 200, run
    uri = str(run["run"]["info"]["artifact_uri"])
    path = uri.removeprefix("mlflow-artifacts:/").strip("/")
    url = f"{client.base}/api/2.0/mlflow-artifacts/artifacts/{path}/blob.bin"
    size = int(spec["artifact_mib"]) * MIB
    block = random.randbytes(MIB)

    class Body:
        def __len__(self) -> int:
            return size

        def __iter__(self) -> Iterator[bytes]:
            for _ in range(size // MIB):
                yield block

    started = time.monotonic()
    up = client.http.put(url, data=Body(), timeout=600)
    up_s = time.monotonic() - started
    started = time.monotonic()
    got = 0
    with client.http.get(url, stream=True, timeout=600) as down:
        for chunk in down.iter_content(MIB):
            got += len(chunk)
        down_code = down.status_code
    down_s = time.monotonic() - started
    return {
        "bytes": size,
        "upload_s": up_s,
        "upload_status": up.status_code,
        "download_s": down_s,
        "download_status": down_code,
        "downloaded_bytes": got,
    }
