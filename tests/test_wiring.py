"""Names that must agree across objects: a mismatch deploys but never works."""

from __future__ import annotations

from tests.support.manifests import Obj, container, env_value, one


def mlflow_container(objs: list[Obj]) -> Obj:
    return container(one(objs, "Deployment", "mlflow"), "mlflow")


def env_config(objs: list[Obj]) -> dict[str, str]:
    return one(objs, "ConfigMap", "mlflow-env-configmap")["data"]


def test_database_secret_is_the_one_external_secrets_writes_and_cnpg_bootstraps(homelab: list[Obj]) -> None:
    es_target = one(homelab, "ExternalSecret", "mlflow-postgres-credentials")["spec"]["target"]["name"]
    initdb_secret = one(homelab, "Cluster")["spec"]["bootstrap"]["initdb"]["secret"]["name"]
    server = mlflow_container(homelab)
    read = {env_value(server, n)["valueFrom"]["secretKeyRef"]["name"] for n in ("PGUSER", "PGPASSWORD")}
    assert read == {es_target} == {initdb_secret}


def test_database_username_is_the_cluster_owner(homelab: list[Obj]) -> None:
    owner = one(homelab, "Cluster")["spec"]["bootstrap"]["initdb"]["owner"]
    template = one(homelab, "ExternalSecret", "mlflow-postgres-credentials")["spec"]["target"]["template"]
    assert template["data"]["username"] == owner


def test_database_host_is_the_cluster_read_write_service(homelab: list[Obj]) -> None:
    cluster = one(homelab, "Cluster")
    config = env_config(homelab)
    assert config["PGHOST"] == f"{cluster['metadata']['name']}-rw"
    assert config["PGDATABASE"] == cluster["spec"]["bootstrap"]["initdb"]["database"]
    assert config["PGPORT"] == "5432"


def test_artifact_volume_claims_the_rendered_pvc(homelab: list[Obj]) -> None:
    pvc = one(homelab, "PersistentVolumeClaim")["metadata"]["name"]
    volumes = one(homelab, "Deployment", "mlflow")["spec"]["template"]["spec"]["volumes"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v]
    assert claims == [pvc]


def test_route_backend_is_the_mlflow_service_port(homelab: list[Obj]) -> None:
    (rule,) = one(homelab, "HTTPRoute")["spec"]["rules"]
    (backend,) = rule["backendRefs"]
    service = one(homelab, "Service", backend["name"])
    assert backend["port"] in [p["port"] for p in service["spec"]["ports"]]


def test_allowed_hosts_contain_the_route_hostname_and_service_names(homelab: list[Obj]) -> None:
    allowed = env_config(homelab)["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    service = one(homelab, "Service", "mlflow")["metadata"]["name"]
    for host in one(homelab, "HTTPRoute")["spec"]["hostnames"]:
        assert host in allowed
    for name in (service, f"{service}.mlflow", f"{service}.mlflow.svc.cluster.local"):
        assert name in allowed and f"{name}:*" in allowed


def test_cors_allows_the_route_https_origin(homelab: list[Obj]) -> None:
    origins = env_config(homelab)["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"].split(",")
    for host in one(homelab, "HTTPRoute")["spec"]["hostnames"]:
        assert f"https://{host}" in origins
