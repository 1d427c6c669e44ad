"""Only the gateway reaches MLflow and only MLflow reaches its database: the rendered
NetworkPolicies walked for the pairs that must connect and the pairs that must not."""

from __future__ import annotations

import pytest

from tests.support import netpol_analyzer
from tests.support.ci import unavailable
from tests.support.manifests import Obj, find, one
from tests.support.netpol import Pod, allowed

NS = "mlflow"


@pytest.fixture(scope="module")
def policies(homelab: list[Obj]) -> list[Obj]:
    found = find(homelab, "NetworkPolicy")
    assert found, "no NetworkPolicy rendered"
    return found


def endpoints(homelab: list[Obj]) -> dict[str, Pod]:
    """The ends the pairs below name, labelled as the render (or the homelab) labels them; shared
    with the live check on the node (tests/node/test_chart_network_policy.py)."""
    mlflow_labels = one(homelab, "Deployment", "mlflow")["spec"]["template"]["metadata"]["labels"]
    cluster = one(homelab, "Cluster")["metadata"]["name"]
    return {
        "mlflow": Pod(NS, mlflow_labels, ip="10.1.0.10"),
        "postgres": Pod(NS, {"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance"}, ip="10.1.0.11"),
        "gateway": Pod(
            "network", {"gateway.envoyproxy.io/owning-gateway-name": "envoy-internal"}, ip="10.1.0.12"
        ),
        "other-gateway": Pod("network", {"gateway.envoyproxy.io/owning-gateway-name": "envoy-external"}),
        "operator": Pod("cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"}),
        "smoke-test": Pod(NS, one(homelab, "Pod")["metadata"]["labels"]),
        "dns": Pod("kube-system", {"k8s-app": "kube-dns"}),
        "neighbour": Pod(NS, {"app": "debug"}),
        "stranger": Pod("default", {"app": "curl"}),
        "internet": Pod("world", {}, ip="93.184.216.34", external=True),
    }


@pytest.fixture(scope="module")
def pods(homelab: list[Obj]) -> dict[str, Pod]:
    return endpoints(homelab)


ALLOWED = [
    ("gateway", "mlflow", 5000, "TCP"),
    ("mlflow", "postgres", 5432, "TCP"),
    ("operator", "postgres", 8000, "TCP"),
    ("operator", "postgres", 5432, "TCP"),
    ("mlflow", "dns", 53, "UDP"),
    ("mlflow", "dns", 53, "TCP"),
    ("postgres", "dns", 53, "UDP"),
    ("smoke-test", "mlflow", 5000, "TCP"),
    ("smoke-test", "dns", 53, "UDP"),
]

DENIED = [
    ("stranger", "mlflow", 5000, "TCP"),
    ("neighbour", "mlflow", 5000, "TCP"),
    ("other-gateway", "mlflow", 5000, "TCP"),
    ("gateway", "mlflow", 8080, "TCP"),
    ("gateway", "postgres", 5432, "TCP"),
    ("stranger", "postgres", 5432, "TCP"),
    ("neighbour", "postgres", 5432, "TCP"),
    ("operator", "mlflow", 5000, "TCP"),
    ("postgres", "mlflow", 5000, "TCP"),
    ("mlflow", "internet", 443, "TCP"),
    ("mlflow", "stranger", 80, "TCP"),
    ("mlflow", "postgres", 8000, "TCP"),
    ("postgres", "internet", 5432, "TCP"),
    ("neighbour", "internet", 443, "TCP"),
    ("smoke-test", "postgres", 5432, "TCP"),
    ("smoke-test", "internet", 443, "TCP"),
]


@pytest.mark.parametrize(("src", "dst", "port", "protocol"), ALLOWED)
def test_required_connection_is_allowed(
    policies: list[Obj], pods: dict[str, Pod], src: str, dst: str, port: int, protocol: str
) -> None:
    assert allowed(policies, pods[src], pods[dst], port, protocol, namespace=NS)


@pytest.mark.parametrize(("src", "dst", "port", "protocol"), DENIED)
def test_other_connection_is_denied(
    policies: list[Obj], pods: dict[str, Pod], src: str, dst: str, port: int, protocol: str
) -> None:
    assert not allowed(policies, pods[src], pods[dst], port, protocol, namespace=NS)


def test_postgres_reaches_only_the_api_server_ports_outside(
    policies: list[Obj], pods: dict[str, Pod]
) -> None:
    api = Pod("world", {}, ip="192.0.2.10", external=True)
    assert allowed(policies, pods["postgres"], api, 6443, namespace=NS)
    assert not allowed(policies, pods["postgres"], api, 22, namespace=NS)


def test_every_verdict_has_the_analyzers_second_opinion(policies: list[Obj], pods: dict[str, Pod]) -> None:
    """allowed() has each verdict confirmed by np-guard's netpol-analyzer (tests/support/netpol_analyzer.py),
    here and in every other test that calls it; a wrong verdict handed to it is caught."""
    if not netpol_analyzer.BINARY.exists():
        unavailable("bin/netpolicy (netpol-analyzer) is not installed: run `make tools`")
    gateway, server = pods["gateway"], pods["mlflow"]
    assert netpol_analyzer.evaluate(policies, gateway, server, 5000, "TCP", NS)
    assert not netpol_analyzer.evaluate(policies, server, pods["internet"], 443, "TCP", NS)
    with pytest.raises(AssertionError, match="netpol.py says denied, netpol-analyzer says allowed"):
        netpol_analyzer.confirm(policies, gateway, server, 5000, "TCP", NS, verdict=False)


def test_namespace_denies_by_default(policies: list[Obj]) -> None:
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1
    assert sorted(deny[0]["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"]


def test_mlflow_policy_selects_the_server_pods(homelab: list[Obj], policies: list[Obj]) -> None:
    """A selector typo would leave the server unprotected by its own rules (default deny only)."""
    labels = one(homelab, "Deployment", "mlflow")["spec"]["template"]["metadata"]["labels"]
    selectors = [p["spec"]["podSelector"].get("matchLabels", {}) for p in policies]
    assert any(s and all(labels.get(k) == v for k, v in s.items()) for s in selectors)


def test_without_a_gateway_only_the_client_namespaces_reach_mlflow() -> None:
    """lab-minimal: no route, so no gateway rule; its listed client namespace calls the Service."""
    from mlflow_gitops import chart

    objs = chart.template_own([chart.VALUES / "lab-minimal.yaml"]).documents
    policies = find(objs, "NetworkPolicy")
    labels = {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow"}
    server = Pod(NS, labels)
    assert allowed(policies, Pod("default", {"app": "notebook"}), server, 5000, namespace=NS)
    assert not allowed(policies, Pod("network", {}), server, 5000, namespace=NS)
