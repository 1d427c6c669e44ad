"""The clean-up CronJob of the homelab render: `mlflow gc` against the server's database with the
server's credentials, partial uploads removed before it, one run at a time and bounded in time,
and network access to PostgreSQL, the server (artifact deletion) and DNS only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mlflow_gitops import chart
from tests.support.manifests import Obj, find, one
from tests.support.netpol import Pod, allowed

NS = "mlflow"


def gc_pod(objs: list[Obj]) -> Obj:
    return one(objs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]


def gc_container(objs: list[Obj]) -> Obj:
    (c,) = gc_pod(objs)["spec"]["containers"]
    return c


def values() -> dict:
    return yaml.safe_load((chart.VALUES / "homelab.yaml").read_text())


def test_one_gc_runs_at_a_time_and_is_bounded(own_homelab: list[Obj]) -> None:
    cronjob = one(own_homelab, "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] <= 86400
    assert gc_pod(own_homelab)["spec"]["restartPolicy"] == "Never"


def test_gc_deletes_what_was_deleted_longer_ago_than_the_homelab_keeps(own_homelab: list[Obj]) -> None:
    command = gc_container(own_homelab)["command"]
    assert command[:2] == ["mlflow", "gc"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    assert options["--older-than"] == values()["gc"]["olderThan"]
    assert options["--backend-store-uri"] == "postgresql+psycopg2://", "libpq takes the rest from PG*"
    assert options["--artifacts-destination"] == "/mlflow/artifacts"
    assert re.fullmatch(r"(\d+d)?(\d+h)?(\d+m)?(\d+s)?", options["--older-than"])


@pytest.mark.upstream
def test_gc_reaches_the_database_as_the_server_does(homelab: list[Obj]) -> None:
    server = next(c for c in one(homelab, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"])
    gc = gc_container(homelab)
    server_secrets = {
        e["name"]: e["valueFrom"] for e in server["env"] if e["name"] in ("PGUSER", "PGPASSWORD")
    }
    gc_secrets = {e["name"]: e["valueFrom"] for e in gc["env"] if e["name"] in ("PGUSER", "PGPASSWORD")}
    assert gc_secrets == server_secrets and len(gc_secrets) == 2
    server_maps = [e["configMapRef"]["name"] for e in server["envFrom"] if "configMapRef" in e]
    gc_maps = [e["configMapRef"]["name"] for e in gc["envFrom"] if "configMapRef" in e]
    assert gc_maps and set(gc_maps) <= set(server_maps)
    config = one(homelab, "ConfigMap", gc_maps[0])["data"]
    assert {"PGHOST", "PGPORT", "PGDATABASE"} <= config.keys()


@pytest.mark.upstream
def test_gc_deletes_artifacts_through_the_service(homelab: list[Obj]) -> None:
    """mlflow-artifacts: URIs resolve only through a tracking server: gc calls the Service."""
    env = {e["name"]: e.get("value") for e in gc_container(homelab)["env"]}
    service = one(homelab, "Service", "mlflow")
    port = service["spec"]["ports"][0]["port"]
    assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow.{NS}.svc.cluster.local:{port}"


def test_gc_mounts_the_artifact_volume_as_the_server(own_homelab: list[Obj]) -> None:
    pod = gc_pod(own_homelab)["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    for c in [*pod["initContainers"], *pod["containers"]]:
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert claims[mounts["/mlflow/artifacts"]] == "mlflow-artifacts", c["name"]


def test_partial_uploads_older_than_the_bound_are_removed_first(own_homelab: list[Obj]) -> None:
    (cleanup,) = gc_pod(own_homelab)["spec"]["initContainers"]
    command = cleanup["command"]
    assert command[:2] == ["find", "/mlflow/artifacts"]
    assert ".artifact.uploading.*" in command and "-delete" in command
    minutes = int(command[command.index("-mmin") + 1].removeprefix("+"))
    assert minutes >= 60, "an upload in progress (up to the route's 30 min) must not be removed"


def test_gc_runs_as_the_server_does(own_homelab: list[Obj]) -> None:
    pod = gc_pod(own_homelab)["spec"]
    server_pod = values()["mlflow"]["podSecurityContext"]
    assert set(server_pod["supplementalGroups"]) <= set(pod["securityContext"]["supplementalGroups"])
    assert pod["automountServiceAccountToken"] is False
    for c in [*pod["initContainers"], *pod["containers"]]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, c["name"]


@pytest.fixture(scope="module")
def gc_policies(own_homelab: list[Obj]) -> tuple[list[Obj], dict[str, Pod]]:
    cluster = one(own_homelab, "Cluster")["metadata"]["name"]
    labels = gc_pod(own_homelab)["metadata"]["labels"]
    pods = {
        "gc": Pod(NS, labels),
        "mlflow": Pod(NS, {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow"}),
        "postgres": Pod(NS, {"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance"}),
        "dns": Pod("kube-system", {"k8s-app": "kube-dns"}),
        "internet": Pod("world", {}, ip="93.184.216.34"),
        "api": Pod("world", {}, ip="192.0.2.10"),
    }
    return find(own_homelab, "NetworkPolicy"), pods


@pytest.mark.parametrize(
    ("dst", "port", "protocol"),
    [("postgres", 5432, "TCP"), ("mlflow", 5000, "TCP"), ("dns", 53, "UDP"), ("dns", 53, "TCP")],
)
def test_gc_reaches_the_database_the_server_and_dns(gc_policies, dst: str, port: int, protocol: str) -> None:
    policies, pods = gc_policies
    assert allowed(policies, pods["gc"], pods[dst], port, protocol, namespace=NS)


@pytest.mark.parametrize(
    ("src", "dst", "port"),
    [
        ("gc", "internet", 443),
        ("gc", "api", 6443),
        ("gc", "postgres", 8000),
        ("mlflow", "gc", 8080),
        ("postgres", "gc", 5432),
    ],
)
def test_gc_reaches_nothing_else(gc_policies, src: str, dst: str, port: int) -> None:
    policies, pods = gc_policies
    assert not allowed(policies, pods[src], pods[dst], port, namespace=NS)


def test_gc_is_switched_by_its_value(tmp_path: Path, own_homelab: list[Obj]) -> None:
    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({"gc": {"enabled": False}}))
    objs = chart.template_own([chart.VALUES / "homelab.yaml", off]).documents
    assert find(own_homelab, "CronJob") and not find(objs, "CronJob")
    assert not [p for p in find(objs, "NetworkPolicy") if p["metadata"]["name"].endswith("-gc")]
