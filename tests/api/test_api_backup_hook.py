"""The pre-upgrade backup hook against a real API server: its objects are accepted, and its script,
run with the token of the hook's ServiceAccount (so its Role is what RBAC enforces), creates a
CloudNativePG Backup and waits for it. No operator runs here: the test plays CloudNativePG and
writes the Backup's status, `completed` or `failed`, and the script must follow it."""

from __future__ import annotations

import copy
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes.client import (
    ApiClient,
    ApiException,
    AppsV1Api,
    AuthenticationV1TokenRequest,
    CoreV1Api,
    CustomObjectsApi,
    V1TokenRequestSpec,
)
from kubernetes.dynamic import DynamicClient

from mlflow_gitops import chart
from tests.support import kube
from tests.support.apiserver import ApiServer
from tests.support.manifests import Obj, one

pytestmark = pytest.mark.apiserver

SWITCH = ["backup.enabled=true", "backup.volumeSnapshotClass=longhorn-snapshot"]
NAME = "mlflow-pre-upgrade-backup"
SCRIPT = chart.CHART / "files" / "pre_upgrade_backup.py"
CNPG = ("postgresql.cnpg.io", "v1")


@pytest.fixture(scope="module")
def objs() -> list[Obj]:
    return chart.template_own([chart.VALUES / "homelab.yaml"], set_values=SWITCH).documents


@pytest.fixture(scope="module")
def token_dir(
    apiserver: ApiServer, api: ApiClient, dynamic: DynamicClient, mlflow_namespace: str, objs: list[Obj],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:  # fmt: skip
    """The hook's ServiceAccount, Role and RoleBinding created for real, and a token of that
    ServiceAccount laid out as the kubelet mounts it; once Backups can be listed (a CRD just
    installed answers 429 "storage is (re)initializing" for a while)."""
    deadline, state = time.monotonic() + 120, "not listed yet"
    while (listed := backups_or_status(api, mlflow_namespace)) is None or isinstance(listed, str):
        state = listed or state
        assert time.monotonic() < deadline, f"Backups still not served after 120 s: {state}"
        time.sleep(0.5)
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        obj = one(objs, kind, NAME)
        kube.apply(
            dynamic, {**obj, "metadata": {**obj["metadata"], "namespace": mlflow_namespace}}, dry_run=False
        )
    request = AuthenticationV1TokenRequest(spec=V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = CoreV1Api(api).create_namespaced_service_account_token(NAME, mlflow_namespace, request)
    directory = tmp_path_factory.mktemp("serviceaccount")
    (directory / "token").write_text(token.status.token)
    (directory / "namespace").write_text(mlflow_namespace)
    (directory / "ca.crt").write_bytes(apiserver.ca_file.read_bytes())
    return directory


def backups_or_status(api: ApiClient, namespace: str) -> list[Obj] | str:
    """The Backups of the namespace, or why they cannot be listed yet."""
    try:
        return backups(api, namespace)
    except ApiException as error:
        return f"{error.status} {kube.message(error)}"


def job_env(objs: list[Obj]) -> dict[str, str]:
    (container,) = one(objs, "Job", NAME)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


class Script:
    """The hook's script as the Job runs it, its output read line by line as it comes."""

    def __init__(self, apiserver: ApiServer, token_dir: Path, objs: list[Obj]) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(apiserver.port),
            "SERVICEACCOUNT_DIR": str(token_dir),
            "POLL_SECONDS": "0.2",
            **job_env(objs),
        }
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._new.put(line)
        self._new.put(None)

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        """Until the script prints a line containing `text` (it logs each phase it sees)."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            remaining = deadline - time.monotonic()
            try:
                line = self._new.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"the script printed no {text!r} within {timeout:.0f} s: {self.output}"
                ) from None
            assert line is not None, f"the script exited {self.process.wait()} before {text!r}: {self.output}"
            self.lines.append(line)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        while (line := self._new.get_nowait() if not self._new.empty() else None) is not None:
            self.lines.append(line)
        return self.process.returncode, self.output

    @property
    def output(self) -> str:
        return "".join(self.lines)


def backups(api: ApiClient, namespace: str) -> list[Obj]:
    return list(CustomObjectsApi(api).list_namespaced_custom_object(*CNPG, namespace, "backups")["items"])


@pytest.fixture
def cluster_and_deployment(
    api: ApiClient, dynamic: DynamicClient, mlflow_namespace: str, objs: list[Obj]
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
        kube.apply(dynamic, obj, dry_run=False)
    yield cluster, deployment
    custom = CustomObjectsApi(api)
    AppsV1Api(api).delete_namespaced_deployment("mlflow", mlflow_namespace)
    custom.delete_namespaced_custom_object(*CNPG, mlflow_namespace, "clusters", cluster["metadata"]["name"])
    for backup in backups(api, mlflow_namespace):
        custom.delete_namespaced_custom_object(*CNPG, mlflow_namespace, "backups", backup["metadata"]["name"])


def wait_for_backup(api: ApiClient, namespace: str, script: Script) -> Obj:
    deadline = time.monotonic() + 60
    while not (found := backups(api, namespace)):
        assert script.process.poll() is None, (
            f"the script exited {script.process.returncode}: {script.finish()[1]}"
        )
        assert time.monotonic() < deadline, "no Backup created within 60 s"
        time.sleep(0.1)
    (backup,) = found
    return backup


def set_phase(api: ApiClient, namespace: str, name: str, phase: str, error: str = "") -> None:
    """Write the Backup's status as CloudNativePG would (its /status subresource)."""
    custom = CustomObjectsApi(api)
    backup = custom.get_namespaced_custom_object(*CNPG, namespace, "backups", name)
    backup["status"] = {"phase": phase, **({"error": error} if error else {})}
    custom.replace_namespaced_custom_object_status(*CNPG, namespace, "backups", name, backup)


@pytest.mark.parametrize(
    ("phase", "code", "says"),
    [
        ("completed", 0, "completed: the upgrade may migrate"),
        ("failed", 1, "failed: disk full; the upgrade stops here"),
    ],
)
def test_the_script_creates_a_backup_and_follows_its_phase(
    apiserver: ApiServer, api: ApiClient, mlflow_namespace: str, objs: list[Obj], token_dir: Path,
    cluster_and_deployment: tuple[Obj, Obj], phase: str, code: int, says: str,
) -> None:  # fmt: skip
    script = Script(apiserver, token_dir, objs)
    backup = wait_for_backup(api, mlflow_namespace, script)
    assert backup["spec"] == {
        "cluster": {"name": cluster_and_deployment[0]["metadata"]["name"]},
        "method": "volumeSnapshot",
        "online": True,
    }
    name = backup["metadata"]["name"]
    assert name.startswith(f"{cluster_and_deployment[0]['metadata']['name']}-pre-upgrade-")
    set_phase(api, mlflow_namespace, name, "running")
    script.wait_for_line(f"Backup {name}: phase running")
    assert script.process.poll() is None, f"the script stopped on `running`: {script.output}"
    set_phase(api, mlflow_namespace, name, phase, "disk full" if phase == "failed" else "")
    returncode, out = script.finish()
    assert returncode == code, out
    assert says in out, out


def test_no_backup_when_the_server_already_runs_the_target_image(
    apiserver: ApiServer, api: ApiClient, dynamic: DynamicClient, mlflow_namespace: str, objs: list[Obj],
    token_dir: Path, cluster_and_deployment: tuple[Obj, Obj],
) -> None:  # fmt: skip
    deployment = copy.deepcopy(cluster_and_deployment[1])
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = job_env(objs)["IMAGE"]
    kube.apply(dynamic, deployment, dry_run=False)
    returncode, out = Script(apiserver, token_dir, objs).finish()
    assert (returncode, backups(api, mlflow_namespace)) == (0, []), out
    assert "no new MLflow, no migration, no backup" in out


def test_no_backup_before_the_cluster_exists(
    apiserver: ApiServer, api: ApiClient, mlflow_namespace: str, objs: list[Obj], token_dir: Path
) -> None:
    """Argo CD runs the hook before its first sync too, when nothing exists yet."""
    returncode, out = Script(apiserver, token_dir, objs).finish()
    assert (returncode, backups(api, mlflow_namespace)) == (0, []), out
    assert "nothing to back up (a first install)" in out


def hook_requests(namespace: str) -> dict[str, Callable[[ApiClient], object]]:
    custom = CustomObjectsApi
    return {
        f"list secrets in {namespace}": lambda c: CoreV1Api(c).list_namespaced_secret(namespace),
        # list: the names of the Backups are its own to know
        f"list backups in {namespace}": lambda c: custom(c).list_namespaced_custom_object(*CNPG, namespace, "backups"),
        f"delete backup {namespace}/any": lambda c: custom(c).delete_namespaced_custom_object(*CNPG, namespace, "backups", "any"),
        "get backup other/any": lambda c: custom(c).get_namespaced_custom_object(*CNPG, "other", "backups", "any"),
        f"get cluster {namespace}/another": lambda c: custom(c).get_namespaced_custom_object(*CNPG, namespace, "clusters", "another"),
        f"get deployment {namespace}/another": lambda c: AppsV1Api(c).read_namespaced_deployment("another", namespace),
    }  # fmt: skip


def test_the_hook_token_can_do_nothing_else(
    apiserver: ApiServer, mlflow_namespace: str, token_dir: Path
) -> None:
    account = f"system:serviceaccount:{mlflow_namespace}:{NAME}"
    with apiserver.client((token_dir / "token").read_text()) as hook:
        for what, call in hook_requests(mlflow_namespace).items():
            with pytest.raises(ApiException) as refused:
                call(hook)
            said = kube.message(refused.value)
            assert (refused.value.status, refused.value.reason) == (403, "Forbidden"), f"{what}: {said}"
            assert f'User "{account}" cannot' in said, f"{what}: {said}"
