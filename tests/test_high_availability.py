"""The zero-downtime mode (highAvailability), off by default: when on, the schema migration is a
pre-upgrade hook Job that runs once after the pre-upgrade backup and before the pods roll, never an
init container; two servers replaced one at a time, spread across nodes, kept through drains by a
PodDisruptionBudget; the partial-upload cleanup bounded by age. values/homelab-ha.yaml is the
homelab with the mode on and nothing else changed."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mlflow_gitops import chart
from tests.support.manifests import Obj, container, find, one
from tests.support.netpol import Pod, allowed
from tests.support.pss import violations

HA = chart.VALUES / "homelab-ha.yaml"
HOMELAB = chart.VALUES / "homelab.yaml"
BACKUP = ["backup.enabled=true", "backup.volumeSnapshotClass=longhorn-snapshot"]
# What the mode changes in the homelab's values, and nothing else may differ.
MODE_KEYS = {
    ("highAvailability",),
    ("postgres", "parameters", "max_connections"),
    ("mlflow", "replicaCount"),
    ("mlflow", "strategy"),
    ("mlflow", "backendStore"),
    ("mlflow", "affinity"),
    ("mlflow", "initContainers"),
}


def weight(obj: Obj) -> int:
    return int(obj["metadata"].get("annotations", {}).get("helm.sh/hook-weight", 0))


def flatten(values: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(values, dict) and values and path not in MODE_KEYS:
        return {k: v for key, value in values.items() for k, v in flatten(value, (*path, str(key))).items()}
    return {path: values}


@pytest.fixture(scope="module")
def own() -> list[Obj]:
    return chart.template_own([HA]).documents


def test_the_mode_is_off_by_default_one_server_recreated() -> None:
    objs = chart.template_own([HOMELAB]).documents
    assert find(objs, "PodDisruptionBudget") == [] and find(objs, "Job") == []
    defaults = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    assert defaults["highAvailability"]["enabled"] is False
    assert defaults["mlflow"]["strategy"] == {"type": "Recreate"}
    assert "replicaCount" not in defaults["mlflow"], "the upstream default, 1"


def test_homelab_ha_is_the_homelab_with_the_mode_and_nothing_else() -> None:
    homelab, ha = (flatten(yaml.safe_load(p.read_text())) for p in (HOMELAB, HA))
    differ = {k for k in homelab.keys() | ha.keys() if homelab.get(k) != ha.get(k)}
    unexplained = {k for k in differ if not any(k[: len(m)] == m for m in MODE_KEYS)}
    assert unexplained == set(), (
        f"values/homelab-ha.yaml differs from values/homelab.yaml in {sorted(unexplained)}: "
        "copy the homelab's change into it (it is the homelab with the zero-downtime mode on)"
    )
    assert ha[("highAvailability",)] == {"enabled": True}


def test_the_partial_upload_cleanup_is_the_charts_bounded_by_age() -> None:
    """The mode restates the chart's init container (a list is replaced whole) and only adds the
    age bound: its image and everything else follow the chart's (Renovate bumps both files)."""
    default = yaml.safe_load((chart.CHART / "values.yaml").read_text())["mlflow"]["initContainers"]
    (ha,) = yaml.safe_load(HA.read_text())["mlflow"]["initContainers"]
    (chart_default,) = [c for c in default if c["name"] == "remove-partial-uploads"]
    at = ha["command"].index("-mmin")
    assert ha["command"][at : at + 2] == ["-mmin", "+60"]
    assert {**ha, "command": ha["command"][:at] + ha["command"][at + 2 :]} == chart_default


def test_the_migration_is_a_pre_upgrade_job_after_the_backup(own: list[Obj]) -> None:
    objs = chart.template_own([HA], set_values=BACKUP).documents
    migrate, backup = one(objs, "Job", "mlflow-migrate"), one(objs, "Job", "mlflow-pre-upgrade-backup")
    assert migrate["metadata"]["annotations"]["helm.sh/hook"] == "pre-upgrade", (
        "no database before an install"
    )
    assert weight(backup) < weight(migrate) < 0, "after the backup, before the upstream chart's hook Secret"
    for obj in find(objs, "NetworkPolicy"):
        if obj["metadata"]["name"].endswith("migrate"):
            assert weight(obj) < weight(migrate), "its policies must exist before it runs"
    pod = migrate["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["python", "-c", (chart.CHART / "files" / "migrate.py").read_text()]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    pg = yaml.safe_load(HA.read_text())
    assert env["PGHOST"] == "mlflow-postgres-rw" and env["PGDATABASE"] == "mlflow"
    assert env["PGPASSWORD"] == {"secretKeyRef": {"name": "mlflow-postgres-credentials", "key": "password"}}
    assert pg["highAvailability"]["enabled"] is True
    assert migrate["spec"]["backoffLimit"] >= 1, "a migration is safe to repeat"
    assert violations(pod) == []
    labels = migrate["spec"]["template"]["metadata"]["labels"]
    selector = {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow"}  # the Service's
    assert not all(labels.get(k) == v for k, v in selector.items()), "the Service would send it requests"


def test_the_migration_reaches_postgres_and_nothing_else(own: list[Obj]) -> None:
    policies = find(own, "NetworkPolicy")
    labels = one(own, "Job", "mlflow-migrate")["spec"]["template"]["metadata"]["labels"]
    migrate = Pod("mlflow", labels)
    postgres = Pod("mlflow", {"cnpg.io/cluster": "mlflow-postgres", "cnpg.io/podRole": "instance"})
    server = Pod("mlflow", {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow"})
    assert allowed(policies, migrate, postgres, 5432, namespace="mlflow")
    assert not allowed(policies, migrate, server, 5000, namespace="mlflow")
    assert not allowed(policies, server, migrate, 5000, namespace="mlflow")
    assert allowed(policies, server, postgres, 5432, namespace="mlflow"), "the servers still reach it"


def test_a_disruption_budget_keeps_one_server(own: list[Obj]) -> None:
    pdb = one(own, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "minAvailable": 1,
        "selector": {
            "matchLabels": {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow"}
        },
    }


@pytest.mark.upstream
def test_two_servers_rolled_one_at_a_time_with_no_migration_in_the_pods() -> None:
    objs = chart.template([HA]).documents
    deployment = one(objs, "Deployment", "mlflow")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["remove-partial-uploads"]
    assert "-mmin" in container(deployment, "remove-partial-uploads", init=True)["command"]
    assert find(objs, "ConfigMap", "mlflow-migrations") == []
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in term["podAffinityTerm"]["labelSelector"]["matchLabels"].items())
    assert all(
        labels.get(k) == v
        for k, v in one(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items()
    )
    (server,) = pod["containers"]
    (job,) = one(objs, "Job", "mlflow-migrate")["spec"]["template"]["spec"]["containers"]
    assert job["image"] == server["image"], "the migration is the new version's"
