"""Before an upgrade: an on-demand CloudNativePG Backup of the database, waited for until it completes.

Run by the pre-upgrade hook Job (templates/backup-hook.yaml) with the MLflow image's Python and
nothing else: the Kubernetes API over HTTPS with the pod's ServiceAccount token (stdlib only). The
Job's activeDeadlineSeconds bounds the wait; helm, Flux and Argo CD wait for the Job, so the
upgrade (and the migration the new server's pod runs) goes ahead only once the backup completed.

Nothing to back up, exit 0: no Cluster yet (a first install; Argo CD runs this hook before every
sync, the first one included), or the Deployment already runs the target image (no new MLflow, so
no migration: Flux upgrades the release on every commit). Otherwise a Backup (method
volumeSnapshot) of the Cluster; exit 0 when its phase is `completed`, 1 when it fails.

Environment: CLUSTER (the CloudNativePG Cluster), DEPLOYMENT (the MLflow server's), IMAGE (the
server's image after the upgrade), ONLINE ("true": snapshot the running instance), POLL_SECONDS;
the standard KUBERNETES_SERVICE_HOST/PORT; SERVICEACCOUNT_DIR (default: the mounted token's).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from typing import Any

SA_DIR = os.environ.get("SERVICEACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
FAILED = {"failed", "invalid backup definition"}
TRANSIENT = {429, 500, 502, 503, 504}


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}", flush=True)


class Api:
    def __init__(self) -> None:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        self.base = (
            f"https://{'[' + host + ']' if ':' in host else host}:{os.environ['KUBERNETES_SERVICE_PORT']}"
        )
        with open(os.path.join(SA_DIR, "token")) as f:
            self.token = f.read().strip()
        with open(os.path.join(SA_DIR, "namespace")) as f:
            self.namespace = f.read().strip()
        self.context = ssl.create_default_context(cafile=os.path.join(SA_DIR, "ca.crt"))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, parsed body); connection errors and 429/5xx are retried until the deadline."""
        data = json.dumps(body).encode() if body is not None else None
        delay = 1.0
        while True:
            request = urllib.request.Request(self.base + path, data=data, method=method)
            request.add_header("Authorization", f"Bearer {self.token}")
            request.add_header("Accept", "application/json")
            if data is not None:
                request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                    return response.status, json.loads(response.read() or b"null")
            except urllib.error.HTTPError as error:
                if error.code not in TRANSIENT:
                    return error.code, json.loads(error.read() or b"null")
                reason = f"HTTP {error.code}"
            except (OSError, ssl.SSLError) as error:
                reason = str(error)
            log(f"{method} {path}: {reason}; retrying in {delay:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, 30.0)

    def get(self, path: str) -> dict[str, Any] | None:
        status, body = self.call("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise SystemExit(f"GET {path}: HTTP {status}: {message(body)}")
        return dict(body)


def message(body: Any) -> str:
    return str(body.get("message", body)) if isinstance(body, dict) else str(body)


def images(deployment: dict[str, Any]) -> set[str]:
    """The images of the Deployment's containers (the server's, and any sidecar's)."""
    return {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}


def main() -> int:
    api = Api()
    ns, cluster, deployment = api.namespace, os.environ["CLUSTER"], os.environ["DEPLOYMENT"]
    target, online = os.environ["IMAGE"], os.environ.get("ONLINE", "true") == "true"
    poll = float(os.environ.get("POLL_SECONDS", "5"))
    cnpg = f"/apis/postgresql.cnpg.io/v1/namespaces/{ns}"
    if api.get(f"{cnpg}/clusters/{cluster}") is None:
        log(f"no Cluster {cluster} in {ns}: nothing to back up (a first install)")
        return 0
    running = api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{deployment}")
    if running is not None and target in images(running):
        log(f"Deployment {deployment} already runs {target}: no new MLflow, no migration, no backup")
        return 0
    was = ", ".join(sorted(images(running))) if running else f"no Deployment {deployment}"
    backup = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Backup",
        "metadata": {
            "generateName": f"{cluster}-pre-upgrade-",
            "labels": {
                "app.kubernetes.io/part-of": "mlflow",
                "app.kubernetes.io/component": "pre-upgrade-backup",
            },
            "annotations": {"mlflow.daviestechlabs.io/upgrade": f"{was} -> {target}"},
        },
        "spec": {"cluster": {"name": cluster}, "method": "volumeSnapshot", "online": online},
    }
    status, created = api.call("POST", f"{cnpg}/backups", backup)
    if status != 201:
        raise SystemExit(f"creating the Backup of Cluster {cluster}: HTTP {status}: {message(created)}")
    name = created["metadata"]["name"]
    log(f"Backup {name} of Cluster {cluster} created ({was} -> {target}); waiting for it to complete")
    phase = None
    while True:
        current = api.get(f"{cnpg}/backups/{name}")
        if current is None:
            raise SystemExit(f"Backup {name} disappeared")
        status_of = current.get("status") or {}
        if status_of.get("phase") != phase:
            phase = status_of.get("phase")
            log(f"Backup {name}: phase {phase or '(none yet)'}")
        if phase == "completed":
            log(f"Backup {name} completed: the upgrade may migrate the database")
            return 0
        if phase in FAILED:
            log(f"Backup {name} {phase}: {status_of.get('error', 'no error given')}; the upgrade stops here")
            return 1
        time.sleep(poll)


if __name__ == "__main__":
    sys.exit(main())
