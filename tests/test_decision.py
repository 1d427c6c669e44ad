"""One test per fact of the architecture decision, read from the rendered homelab objects."""

from __future__ import annotations

from tests.support.manifests import Obj, args_map, container, find, one

ROUTE_HOST = "mlflow.lab.daviestechlabs.io"


def deployment(objs: list[Obj]) -> Obj:
    return one(objs, "Deployment", "mlflow")


def server_args(objs: list[Obj]) -> dict[str, str]:
    return args_map(container(deployment(objs), "mlflow")["args"])


def test_server_uses_recreate_strategy(homelab: list[Obj]) -> None:
    assert deployment(homelab)["spec"]["strategy"] == {"type": "Recreate"}


def test_server_requests_200m_cpu_and_512mi(homelab: list[Obj]) -> None:
    requests = container(deployment(homelab), "mlflow")["resources"]["requests"]
    assert (requests["cpu"], requests["memory"]) == ("200m", "512Mi")


def test_server_is_limited_to_one_cpu_and_2gi(homelab: list[Obj]) -> None:
    limits = container(deployment(homelab), "mlflow")["resources"]["limits"]
    assert (limits["cpu"], limits["memory"]) == ("1", "2Gi")


def test_server_runs_uvicorn_with_explicit_workers(homelab: list[Obj]) -> None:
    args = server_args(homelab)
    assert "gunicorn-opts" not in args and "waitress-opts" not in args
    assert int(args["workers"]) >= 1


def test_artifacts_are_proxied_through_the_server(homelab: list[Obj]) -> None:
    args = server_args(homelab)
    assert "serve-artifacts" in args
    assert args["artifacts-destination"] == "/mlflow/artifacts"
    assert "default-artifact-root" not in args


def test_backend_is_postgresql_through_psycopg2(homelab: list[Obj]) -> None:
    assert server_args(homelab)["backend-store-uri"] == "postgresql+psycopg2://"


def init_names(objs: list[Obj]) -> list[str]:
    return [c["name"] for c in deployment(objs)["spec"]["template"]["spec"]["initContainers"]]


def test_migration_runs_before_the_server(homelab: list[Obj]) -> None:
    assert init_names(homelab)[0] == "mlflow-db-migration"


def test_unbounded_connection_checker_is_not_used(homelab: list[Obj]) -> None:
    """The subchart's dbchecker can wait for hours after an outage (community-charts#604); the
    migration container's bounded retry is the connection check."""
    assert "dbchecker" not in init_names(homelab)


def test_partial_uploads_are_removed_before_the_server_starts(homelab: list[Obj]) -> None:
    cleanup = container(deployment(homelab), "remove-partial-uploads", init=True)
    assert cleanup["command"][:2] == ["find", "/mlflow/artifacts"]
    assert ".artifact.uploading.*" in cleanup["command"] and "-delete" in cleanup["command"]
    mounts = {m["mountPath"]: m["name"] for m in cleanup["volumeMounts"]}
    server_mounts = {
        m["mountPath"]: m["name"] for m in container(deployment(homelab), "mlflow")["volumeMounts"]
    }
    assert mounts["/mlflow/artifacts"] == server_mounts["/mlflow/artifacts"]


def test_server_joins_the_nfs_export_group(homelab: list[Obj]) -> None:
    """kubelet does not apply fsGroup to NFS volumes: the export's group must be supplemental."""
    pod_sc = deployment(homelab)["spec"]["template"]["spec"]["securityContext"]
    assert 568 in pod_sc["supplementalGroups"]


def test_artifact_claim_is_50gi_rwx_on_nfs_slow(homelab: list[Obj]) -> None:
    spec = one(homelab, "PersistentVolumeClaim", "mlflow-artifacts")["spec"]
    assert spec["resources"]["requests"]["storage"] == "50Gi"
    assert spec["storageClassName"] == "nfs-slow"
    assert spec["accessModes"] == ["ReadWriteMany"]


def test_artifact_claim_is_mounted_at_mlflow_artifacts(homelab: list[Obj]) -> None:
    pod = deployment(homelab)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [
        m
        for m in container(deployment(homelab), "mlflow")["volumeMounts"]
        if m["mountPath"] == "/mlflow/artifacts"
    ]
    assert len(mounts) == 1
    assert volumes[mounts[0]["name"]]["persistentVolumeClaim"]["claimName"] == "mlflow-artifacts"


def test_database_is_one_cnpg_instance(homelab: list[Obj]) -> None:
    cluster = one(homelab, "Cluster", "mlflow-postgres")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["instances"] == 1


def test_database_has_no_pdb_for_a_single_instance(homelab: list[Obj]) -> None:
    assert one(homelab, "Cluster")["spec"]["enablePDB"] is False


def test_database_smart_shutdown_is_short_and_below_the_stop_delay(homelab: list[Obj]) -> None:
    """The server's pooled sessions never end, so a smart shutdown only refuses new connections
    until its timeout; the operator skips it unless it is below stopDelay (default 1800)."""
    spec = one(homelab, "Cluster")["spec"]
    assert spec["smartShutdownTimeout"] == 15
    assert spec["smartShutdownTimeout"] < spec.get("stopDelay", 1800)


def test_database_runs_on_amd64_nodes(homelab: list[Obj]) -> None:
    affinity = one(homelab, "Cluster")["spec"]["affinity"]
    assert affinity["nodeSelector"] == {"kubernetes.io/arch": "amd64"}


def test_database_has_10gi_on_longhorn(homelab: list[Obj]) -> None:
    assert one(homelab, "Cluster")["spec"]["storage"] == {"size": "10Gi", "storageClass": "longhorn"}


def test_database_allows_200_connections(homelab: list[Obj]) -> None:
    parameters = one(homelab, "Cluster")["spec"]["postgresql"]["parameters"]
    assert parameters["max_connections"] == "200"


def test_database_and_owner_are_mlflow(homelab: list[Obj]) -> None:
    initdb = one(homelab, "Cluster")["spec"]["bootstrap"]["initdb"]
    assert (initdb["database"], initdb["owner"]) == ("mlflow", "mlflow")


def test_database_credentials_come_from_vault_as_basic_auth(homelab: list[Obj]) -> None:
    es = one(homelab, "ExternalSecret", "mlflow-postgres-credentials")
    assert es["apiVersion"] == "external-secrets.io/v1"
    assert es["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "vault"}
    template = es["spec"]["target"]["template"]
    assert template["type"] == "kubernetes.io/basic-auth"
    assert set(template["data"]) == {"username", "password"}
    assert [d["remoteRef"]["key"] for d in es["spec"]["data"]] == ["kv/mlflow/postgres"]


def test_route_is_on_envoy_internal_for_the_lab_hostname(homelab: list[Obj]) -> None:
    route = one(homelab, "HTTPRoute", "mlflow")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["hostnames"] == [ROUTE_HOST]
    (parent,) = route["spec"]["parentRefs"]
    assert (parent["kind"], parent["name"], parent["namespace"], parent["sectionName"]) == (
        "Gateway",
        "envoy-internal",
        "network",
        "https",
    )


def seconds(duration: str) -> float:
    """A Gateway API duration (e.g. 1h30m, 500ms) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    total, number = 0.0, ""
    i = 0
    while i < len(duration):
        ch = duration[i]
        if ch.isdigit():
            number += ch
            i += 1
            continue
        unit = "ms" if duration[i : i + 2] == "ms" else ch
        total += int(number) * units[unit]
        number, i = "", i + len(unit)
    return total


def test_route_timeout_outlasts_large_uploads(homelab: list[Obj]) -> None:
    (rule,) = one(homelab, "HTTPRoute")["spec"]["rules"]
    timeout = rule["timeouts"]["request"]
    assert timeout == "0s" or seconds(timeout) >= 600, f"request timeout {timeout} cuts large uploads"


def test_uninstall_keeps_the_database_and_the_artifacts(homelab: list[Obj]) -> None:
    for kind in ("Cluster", "PersistentVolumeClaim"):
        for obj in find(homelab, kind):
            annotations = obj["metadata"].get("annotations", {})
            assert annotations.get("helm.sh/resource-policy") == "keep", f"{kind} {obj['metadata']['name']}"


def test_flask_secret_key_comes_from_vault_and_wins(homelab: list[Obj]) -> None:
    es = one(homelab, "ExternalSecret", "mlflow-flask-secret-key")
    assert [d["secretKey"] for d in es["spec"]["data"]] == ["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    env_from = container(deployment(homelab), "mlflow")["envFrom"]
    secret_refs = [e["secretRef"]["name"] for e in env_from if "secretRef" in e]
    assert secret_refs[-1] == "mlflow-flask-secret-key", "a later envFrom source wins: Vault's must be last"


def test_helm_test_pod_talks_to_the_service_only(homelab: list[Obj]) -> None:
    pod = one(homelab, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (test_container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in test_container["env"]}
    service = one(homelab, "Service", "mlflow")
    port = service["spec"]["ports"][0]["port"]
    assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow.mlflow.svc.cluster.local:{port}"


def pool_per_worker(objs: list[Obj]) -> tuple[int, int]:
    server = container(deployment(objs), "mlflow")
    env = {e["name"]: e.get("value") for e in server.get("env", [])}
    size = int(env.get("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE") or 5)  # MLflow's defaults when unset
    overflow = int(env.get("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW") or 10)
    return size + overflow, int(args_map(server["args"])["workers"])


def test_every_environment_has_a_pool_that_cannot_deadlock(committed_renders: dict[str, list[Obj]]) -> None:
    """log-batch holds two connections on each of a worker's 40 threads: fewer than 41 pooled
    connections per worker deadlock under load into HTTP 400 (tests/e2e/test_load.py)."""
    for env, objs in committed_renders.items():
        pool, workers = pool_per_worker(objs)
        assert pool >= 41, f"{env}: pool {pool} per store, {workers} worker(s)"
