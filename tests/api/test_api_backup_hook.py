"""The pre-upgrade backup hook against a real API server: its objects are accepted, and its script,
run with the token of the hook's ServiceAccount (so its Role is what RBAC enforces), creates a
CloudNativePG Backup and waits for it. No operator runs here: the test plays CloudNativePG and
writes the Backup's status, `completed` or `failed`, and the script must follow it."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlflow_gitops import chart
from tests.support.apiserver import ApiServer
from tests.support.manifests import Obj, one

pytestmark = pytest.mark.apiserver

SWITCH = ["backup.enabled=true", "backup.volumeSnapshotClass=longhorn-snapshot"]
NAME = "mlflow-pre-upgrade-backup"
SCRIPT = chart.CHART / "files" / "pre_upgrade_backup.py"
BACKUPS = "/apis/postgresql.cnpg.io/v1/namespaces/{ns}/backups"


@pytest.fixture(scope="module")
def objs() -> list[Obj]:
    return chart.template_own([chart.VALUES / "homelab.yaml"], set_values=SWITCH).documents


@pytest.fixture(scope="module")
def token_dir(
    api: ApiServer, mlflow_namespace: str, objs: list[Obj], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The hook's ServiceAccount, Role and RoleBinding created for real, and a token of that
    ServiceAccount laid out as the kubelet mounts it; once Backups can be listed (a CRD just
    installed answers 429 "storage is (re)initializing" for a while)."""
    deadline = time.monotonic() + 120
    while (status := api.request("GET", BACKUPS.format(ns=mlflow_namespace)).status) != 200:
        assert time.monotonic() < deadline, f"Backups still not served after 120 s: {status}"
        time.sleep(0.5)
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        api.ensure(
            {
                **one(objs, kind, NAME),
                "metadata": {**one(objs, kind, NAME)["metadata"], "namespace": mlflow_namespace},
            }
        )
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    response = api.request(
        "POST", f"/api/v1/namespaces/{mlflow_namespace}/serviceaccounts/{NAME}/token", request
    )
    assert response.ok, response.message
    directory = tmp_path_factory.mktemp("serviceaccount")
    (directory / "token").write_text(response.body["status"]["token"])
    (directory / "namespace").write_text(mlflow_namespace)
    (directory / "ca.crt").write_bytes(api.ca_file.read_bytes())
    return directory


def job_env(objs: list[Obj]) -> dict[str, str]:
    (container,) = one(objs, "Job", NAME)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def start(api: ApiServer, token_dir: Path, objs: list[Obj]) -> subprocess.Popen[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(api.port),
        "SERVICEACCOUNT_DIR": str(token_dir),
        "POLL_SECONDS": "0.2",
        **job_env(objs),
    }
    return subprocess.Popen(
        [sys.executable, str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def backups(api: ApiServer, namespace: str) -> list[Obj]:
    response = api.request("GET", BACKUPS.format(ns=namespace))
    assert response.ok, f"listing Backups: {response.status} {response.message}"
    return list(response.body["items"])


@pytest.fixture
def cluster_and_deployment(
    api: ApiServer, mlflow_namespace: str, objs: list[Obj]
) -> Iterator[tuple[Obj, Obj]]:
    """The chart's Cluster and an MLflow Deployment of the version before the upgrade, as stored."""
    cluster = {
        **one(objs, "Cluster"),
        "metadata": {"name": one(objs, "Cluster")["metadata"]["name"], "namespace": mlflow_namespace},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mlflow", "namespace": mlflow_namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "mlflow"}},
            "template": {
                "metadata": {"labels": {"app": "mlflow"}},
                "spec": {"containers": [{"name": "mlflow", "image": "burakince/mlflow:0.0.1"}]},
            },
        },
    }
    for obj in (cluster, deployment):
        api.ensure(obj)
    yield cluster, deployment
    for obj in (deployment, cluster, *backups(api, mlflow_namespace)):
        api.delete(
            {
                "apiVersion": obj.get("apiVersion", "postgresql.cnpg.io/v1"),
                "kind": obj.get("kind", "Backup"),
                "metadata": obj["metadata"],
            },
            mlflow_namespace,
        )


def wait_for_backup(api: ApiServer, namespace: str, process: subprocess.Popen[str]) -> Obj:
    deadline = time.monotonic() + 60
    while not (found := backups(api, namespace)):
        assert process.poll() is None, f"the script exited {process.returncode}: {process.communicate()[0]}"
        assert time.monotonic() < deadline, "no Backup created within 60 s"
        time.sleep(0.1)
    (backup,) = found
    return backup


def set_phase(api: ApiServer, backup: Obj, phase: str, error: str = "") -> None:
    status = copy.deepcopy(backup)
    status["status"] = {"phase": phase, **({"error": error} if error else {})}
    path = BACKUPS.format(ns=backup["metadata"]["namespace"]) + f"/{backup['metadata']['name']}/status"
    response = api.request("PUT", path, status)
    assert response.ok, response.message


@pytest.mark.parametrize(
    ("phase", "code", "says"),
    [
        ("completed", 0, "completed: the upgrade may migrate"),
        ("failed", 1, "failed: disk full; the upgrade stops here"),
    ],
)
def test_the_script_creates_a_backup_and_follows_its_phase(
    api: ApiServer, mlflow_namespace: str, objs: list[Obj], token_dir: Path, cluster_and_deployment: tuple[Obj, Obj],
    phase: str, code: int, says: str,
) -> None:  # fmt: skip
    process = start(api, token_dir, objs)
    backup = wait_for_backup(api, mlflow_namespace, process)
    assert backup["spec"] == {
        "cluster": {"name": cluster_and_deployment[0]["metadata"]["name"]},
        "method": "volumeSnapshot",
        "online": True,
    }
    assert backup["metadata"]["name"].startswith(
        f"{cluster_and_deployment[0]['metadata']['name']}-pre-upgrade-"
    )
    set_phase(api, backup, "running")
    time.sleep(0.5)  # the script is polling; it must not have finished on `running`
    assert process.poll() is None, "the script stopped before the backup finished"
    set_phase(
        api,
        api.request("GET", BACKUPS.format(ns=mlflow_namespace) + f"/{backup['metadata']['name']}").body,
        phase,
        "disk full" if phase == "failed" else "",
    )
    returncode, out = finish(process)
    assert returncode == code, out
    assert says in out, out
    assert "phase running" in out


def test_no_backup_when_the_server_already_runs_the_target_image(
    api: ApiServer,
    mlflow_namespace: str,
    objs: list[Obj],
    token_dir: Path,
    cluster_and_deployment: tuple[Obj, Obj],
) -> None:
    deployment = copy.deepcopy(cluster_and_deployment[1])
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = job_env(objs)["IMAGE"]
    api.ensure(deployment)
    returncode, out = finish(start(api, token_dir, objs))
    assert (returncode, backups(api, mlflow_namespace)) == (0, []), out
    assert "no new MLflow, no migration, no backup" in out


def test_no_backup_before_the_cluster_exists(
    api: ApiServer, mlflow_namespace: str, objs: list[Obj], token_dir: Path
) -> None:
    """Argo CD runs the hook before its first sync too, when nothing exists yet."""
    returncode, out = finish(start(api, token_dir, objs))
    assert (returncode, backups(api, mlflow_namespace)) == (0, []), out
    assert "nothing to back up (a first install)" in out


def test_the_hook_token_can_do_nothing_else(api: ApiServer, mlflow_namespace: str, token_dir: Path) -> None:
    token = (token_dir / "token").read_text()
    forbidden = [
        ("GET", f"/api/v1/namespaces/{mlflow_namespace}/secrets"),
        ("GET", BACKUPS.format(ns=mlflow_namespace)),  # list: names are its own to know
        ("DELETE", BACKUPS.format(ns=mlflow_namespace) + "/any"),
        ("GET", "/apis/postgresql.cnpg.io/v1/namespaces/other/backups/any"),
        ("GET", f"/apis/postgresql.cnpg.io/v1/namespaces/{mlflow_namespace}/clusters/another"),
        ("GET", f"/apis/apps/v1/namespaces/{mlflow_namespace}/deployments/another"),
    ]
    for method, path in forbidden:
        assert as_token(api, token, method, path) == 403, f"{method} {path} is allowed"


def as_token(api: ApiServer, token: str, method: str, path: str) -> int:
    saved = api.token
    api.token = token
    try:
        return api.request(method, path).status
    finally:
        api.token = saved
