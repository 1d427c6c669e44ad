"""Pipelines in other namespaces reach MLflow through its Service, and nobody else does: the
homelab's client namespaces (named, or opted in by label) against the rendered NetworkPolicies;
the Host they send is allowed; the documented examples (docs/examples/) are valid and use it."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from mlflow_gitops import chart
from mlflow_gitops.validate import kubeconform
from mlflow_gitops.versions import ROOT
from tests.support.manifests import Obj, find, one
from tests.support.netpol import Pod, allowed

NS = "mlflow"
CLIENT_LABEL = {"mlflow.daviestechlabs.io/client": "true"}
EXAMPLES = ROOT / "docs" / "examples"
WORKFLOW_TEMPLATE = EXAMPLES / "argo-workflowtemplate.yaml"
KFP_COMPONENT = EXAMPLES / "kfp_component.py"
PIPELINES_DOC = ROOT / "docs" / "pipelines.md"


@pytest.fixture(scope="module")
def policies(own_homelab: list[Obj]) -> list[Obj]:
    return find(own_homelab, "NetworkPolicy")


@pytest.fixture(scope="module")
def server() -> Pod:
    return Pod(NS, {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow"})


def homelab_values() -> dict:
    return yaml.safe_load((chart.VALUES / "homelab.yaml").read_text())


def tracking_uri(objs: list[Obj]) -> str:
    """The in-cluster URI of the rendered Service, as a client writes it (port 80 implied)."""
    service = one(objs, "Service", "mlflow")
    port = service["spec"]["ports"][0]["port"]
    suffix = "" if port == 80 else f":{port}"
    return f"http://{service['metadata']['name']}.{NS}.svc.cluster.local{suffix}"


def test_a_labelled_namespace_reaches_the_server(policies: list[Obj], server: Pod) -> None:
    pipeline = Pod("team-a-pipelines", {"app": "step"}, namespace_labels=CLIENT_LABEL)
    assert allowed(policies, pipeline, server, 5000, namespace=NS)


def test_an_unlabelled_namespace_does_not_reach_the_server(policies: list[Obj], server: Pod) -> None:
    assert not allowed(policies, Pod("team-a-pipelines", {"app": "step"}), server, 5000, namespace=NS)


def test_a_wrong_label_value_does_not_reach_the_server(policies: list[Obj], server: Pod) -> None:
    pipeline = Pod("team-a", {}, namespace_labels={"mlflow.daviestechlabs.io/client": "false"})
    assert not allowed(policies, pipeline, server, 5000, namespace=NS)


@pytest.mark.parametrize("namespace", ["kubeflow", "argo", "ai-inference"])
def test_a_named_pipeline_namespace_reaches_the_server(
    policies: list[Obj], server: Pod, namespace: str
) -> None:
    assert namespace in homelab_values()["networkPolicy"]["clients"]["namespaces"]
    assert allowed(
        policies, Pod(namespace, {"workflows.argoproj.io/workflow": "x"}), server, 5000, namespace=NS
    )


def test_clients_reach_only_the_server_port(policies: list[Obj], server: Pod) -> None:
    labelled = Pod("team-a", {}, namespace_labels=CLIENT_LABEL)
    for client in (labelled, Pod("kubeflow", {})):
        assert not allowed(policies, client, server, 8080, namespace=NS)


def test_clients_do_not_reach_the_database(policies: list[Obj], own_homelab: list[Obj]) -> None:
    cluster = one(own_homelab, "Cluster")["metadata"]["name"]
    postgres = Pod(NS, {"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance"})
    for client in (Pod("team-a", {}, namespace_labels=CLIENT_LABEL), Pod("argo", {})):
        assert not allowed(policies, client, postgres, 5432, namespace=NS)


def test_without_clients_only_the_gateway_reaches_the_server(server: Pod, tmp_path: Path) -> None:
    # Maps merge in helm: a label is removed by setting it to null; lists are replaced.
    labels = {key: None for key in CLIENT_LABEL}
    none = tmp_path / "no-clients.yaml"
    none.write_text(
        yaml.safe_dump(
            {"networkPolicy": {"clients": {"namespaceSelector": {"matchLabels": labels}, "namespaces": []}}}
        )
    )
    objs = chart.template_own([chart.VALUES / "homelab.yaml", none]).documents
    policies = find(objs, "NetworkPolicy")
    assert not allowed(policies, Pod("argo", {}), server, 5000, namespace=NS)
    assert not allowed(policies, Pod("x", {}, namespace_labels=CLIENT_LABEL), server, 5000, namespace=NS)
    gateway = Pod("network", {"gateway.envoyproxy.io/owning-gateway-name": "envoy-internal"})
    assert allowed(policies, gateway, server, 5000, namespace=NS)


@pytest.mark.upstream
def test_the_service_host_is_allowed(homelab: list[Obj]) -> None:
    """MLflow answers 403 to a Host it does not allow, whatever the NetworkPolicy admits."""
    host = urlsplit(tracking_uri(homelab)).netloc
    config = one(homelab, "ConfigMap", "mlflow-env-configmap")["data"]
    hosts = config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert host in hosts or f"{host}:*" in hosts


@pytest.mark.upstream
def test_a_port_forward_may_read_and_write(homelab: list[Obj]) -> None:
    """The UI reads with POST: a port-forward needs its Host allowed and its Origin a CORS origin."""
    config = one(homelab, "ConfigMap", "mlflow-env-configmap")["data"]
    hosts = config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    origins = config["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"].split(",")
    for authority in ("localhost:5000", "127.0.0.1:5000"):
        assert authority in hosts
        assert f"http://{authority}" in origins


def test_the_workflow_template_is_a_valid_argo_workflow_template() -> None:
    assert kubeconform([WORKFLOW_TEMPLATE]) == ""


def test_the_workflow_template_schema_refuses_a_wrong_template(tmp_path: Path) -> None:
    """The schema is strict: a misspelt field fails, so the check above can fail."""
    bad = yaml.safe_load(WORKFLOW_TEMPLATE.read_text())
    bad["spec"]["templates"][0]["container"]["envv"] = bad["spec"]["templates"][0]["container"].pop("env")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert "envv" in kubeconform([path])


def workflow_container() -> Obj:
    (template,) = yaml.safe_load(WORKFLOW_TEMPLATE.read_text())["spec"]["templates"]
    return template["container"]


@pytest.mark.upstream
def test_the_workflow_template_logs_to_the_service_from_an_admitted_namespace(
    homelab: list[Obj], policies: list[Obj], server: Pod
) -> None:
    document = yaml.safe_load(WORKFLOW_TEMPLATE.read_text())
    env = {e["name"]: e["value"] for e in workflow_container()["env"]}
    assert env["MLFLOW_TRACKING_URI"] == tracking_uri(homelab)
    workflow_pod = Pod(
        document["metadata"]["namespace"], {"workflows.argoproj.io/workflow": "train-and-log-x"}
    )
    assert allowed(policies, workflow_pod, server, 5000, namespace=NS)


@pytest.mark.upstream
def test_the_kfp_component_logs_to_the_service(homelab: list[Obj]) -> None:
    tree = ast.parse(KFP_COMPONENT.read_text())
    constants = {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.targets[0], ast.Name)
    }
    assert constants["MLFLOW_TRACKING_URI"] == tracking_uri(homelab)
    assert 'set_env_variable("MLFLOW_TRACKING_URI", MLFLOW_TRACKING_URI)' in KFP_COMPONENT.read_text()


def test_the_examples_run_the_server_image() -> None:
    """The examples' MLflow client is the server's version (Chart.yaml appVersion, the one pin)."""
    app_version = str(yaml.safe_load((chart.CHART / "Chart.yaml").read_text())["appVersion"])
    assert workflow_container()["image"] == f"burakince/mlflow:{app_version}"
    assert f'base_image="burakince/mlflow:{app_version}"' in KFP_COMPONENT.read_text()


@pytest.mark.parametrize("example", [WORKFLOW_TEMPLATE, KFP_COMPONENT], ids=lambda p: p.name)
def test_the_pipelines_doc_shows_the_examples_as_they_are(example: Path) -> None:
    blocks = re.findall(r"```(?:yaml|python)\n(.*?)```", PIPELINES_DOC.read_text(), flags=re.DOTALL)
    assert example.read_text() in blocks
