"""With backups on, an upgrade takes a CloudNativePG Backup and waits for it before anything of the
release changes: a pre-upgrade hook Job (not pre-install: nothing to back up yet) first among the
hooks, allowed to create and read Backups and to read the chart's Cluster and the MLflow Deployment
in its namespace only, reaching the API server only, restricted like every pod of the chart."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlflow_gitops import chart
from mlflow_gitops.validate import kubeconform
from tests.support.manifests import Obj, find, one
from tests.support.pss import violations
from tests.test_scanners import checkov, kube_score

SWITCH = ["backup.enabled=true", "backup.volumeSnapshotClass=longhorn-snapshot"]
NAME = "mlflow-pre-upgrade-backup"
HOOK = "helm.sh/hook"
WEIGHT = "helm.sh/hook-weight"


def rendered(extra: list[str] | None = None) -> list[Obj]:
    return chart.template_own([chart.VALUES / "homelab.yaml"], set_values=[*SWITCH, *(extra or [])]).documents


def hooks(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if HOOK in (o["metadata"].get("annotations") or {})]


def annotation(obj: Obj, key: str) -> str:
    return str(obj["metadata"]["annotations"][key])


@pytest.fixture(scope="module")
def objs() -> list[Obj]:
    return rendered()


def test_the_hook_exists_only_with_backups_on() -> None:
    plain = chart.template_own([chart.VALUES / "homelab.yaml"]).documents
    assert [o for o in plain if o["metadata"]["name"].endswith("pre-upgrade-backup")] == []
    off = rendered(["backup.beforeUpgrade.enabled=false"])
    assert [o for o in off if o["metadata"]["name"].endswith("pre-upgrade-backup")] == []


def test_every_hook_object_runs_before_an_upgrade_only_and_before_the_job(objs: list[Obj]) -> None:
    mine = [o for o in hooks(objs) if o["metadata"]["name"].endswith("pre-upgrade-backup")]
    assert sorted(o["kind"] for o in mine) == [
        "Job",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    for obj in mine:
        assert annotation(obj, HOOK) == "pre-upgrade", f"{obj['kind']}: an install has nothing to back up"
        assert "before-hook-creation" in annotation(obj, "helm.sh/hook-delete-policy")
    job = one(objs, "Job", NAME)
    for obj in mine:
        if obj is not job:
            assert int(annotation(obj, WEIGHT)) < int(annotation(job, WEIGHT)), obj["kind"]


def test_the_backup_job_is_the_first_pre_upgrade_job(objs: list[Obj]) -> None:
    """Any other pre-upgrade hook (e.g. a migration Job) is created only after the backup completed."""
    job = one(objs, "Job", NAME)
    later = [
        o for o in hooks(objs) if "pre-upgrade" in annotation(o, HOOK).split(",") and not o["metadata"]["name"].endswith("pre-upgrade-backup")
    ]  # fmt: skip
    for obj in later:
        assert int(annotation(obj, WEIGHT) if WEIGHT in obj["metadata"]["annotations"] else 0) > int(
            annotation(job, WEIGHT)
        ), f"{obj['kind']} {obj['metadata']['name']} may run before the backup"
    assert int(annotation(job, WEIGHT)) < 0, "the upstream chart's pre-upgrade Secret has weight 0"


def test_the_role_allows_backups_and_reading_the_cluster_and_deployment_only(objs: list[Obj]) -> None:
    role = one(objs, "Role", NAME)
    rules = {
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r.get("resourceNames", []))): sorted(r["verbs"])
        for r in role["rules"]
    }
    assert rules == {
        (("postgresql.cnpg.io",), ("backups",), ()): ["create", "get"],
        (("postgresql.cnpg.io",), ("clusters",), (one(objs, "Cluster")["metadata"]["name"],)): ["get"],
        (("apps",), ("deployments",), ("mlflow",)): ["get"],
    }  # fmt: skip
    assert find(objs, "ClusterRole") == [] and find(objs, "ClusterRoleBinding") == []
    binding = one(objs, "RoleBinding", NAME)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": chart.NAMESPACE}]


def test_the_job_waits_once_bounded_with_its_own_token(objs: list[Obj]) -> None:
    job = one(objs, "Job", NAME)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["backoffLimit"] == 0, "a retried pod would take a second backup"
    assert spec["activeDeadlineSeconds"] == 600
    assert pod["serviceAccountName"] == NAME and pod["automountServiceAccountToken"] is True
    assert one(objs, "ServiceAccount", NAME)["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CLUSTER"] == one(objs, "Cluster")["metadata"]["name"]
    assert env["IMAGE"] == container["image"], "the script compares with the image the upgrade installs"
    assert container["command"][:2] == ["python", "-c"]
    assert container["command"][2] == (chart.CHART / "files" / "pre_upgrade_backup.py").read_text()
    assert violations(pod) == []


def test_the_job_reaches_the_api_server_only(objs: list[Obj]) -> None:
    policy = one(objs, "NetworkPolicy", "mlflow-pre-upgrade-backup")
    labels = one(objs, "Job", NAME)["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in policy["spec"]
    (egress,) = policy["spec"]["egress"]
    assert sorted(p["port"] for p in egress["ports"]) == [443, 6443]
    narrowed = rendered(["networkPolicy.apiServer.cidrs={192.168.1.10/32}"])
    (egress,) = one(narrowed, "NetworkPolicy", "mlflow-pre-upgrade-backup")["spec"]["egress"]
    assert egress["to"] == [{"ipBlock": {"cidr": "192.168.1.10/32"}}]


def test_the_hook_objects_validate(objs: list[Obj], tmp_path: Path) -> None:
    out = tmp_path / "backup-hook.yaml"
    out.write_text(yaml.safe_dump_all(objs))
    assert kubeconform([out]) == ""


@pytest.mark.upstream
def test_the_job_runs_the_image_the_upgraded_server_runs() -> None:
    full = chart.template([chart.VALUES / "homelab.yaml"], set_values=SWITCH).documents
    (server,) = one(full, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    (container,) = one(full, "Job", NAME)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == server["image"]
    pinned = chart.template(
        [chart.VALUES / "homelab.yaml"], set_values=[*SWITCH, "mlflow.image.tag=3.15.2"]
    ).documents
    (server,) = one(pinned, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    (container,) = one(pinned, "Job", NAME)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == server["image"] == "burakince/mlflow:3.15.2"


def test_the_hook_objects_pass_the_scanners(objs: list[Obj], tmp_path: Path) -> None:
    """The hook is in no environment's render: checkov and kube-score see it here."""
    out = tmp_path / "backup-hook.yaml"
    out.write_text(
        yaml.safe_dump_all([o for o in objs if o["metadata"]["name"].endswith("pre-upgrade-backup")])
    )
    assert [f"{c['check_id']} {c['resource']}" for c in checkov(out)["results"]["failed_checks"]] == []
    scored = kube_score(out)
    assert [line for line in scored.stdout.splitlines() if line.startswith(("[CRITICAL]", "[WARNING]"))] == []
