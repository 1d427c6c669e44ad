"""Only the gateway reaches MLflow and only MLflow reaches its database: the rendered
NetworkPolicies walked for the pairs that must connect and the pairs that must not.

CloudNativePG's Job pods for the Cluster (initdb, join, ...; labelled with the Cluster and
`cnpg.io/jobRole` by pkg/specs/jobs.go, not as instances) reach the API server and DNS, and the
primary only when a replica can join."""

from __future__ import annotations

import pytest

from tests.support import netpol_analyzer
from tests.support.ci import unavailable
from tests.support.manifests import Obj, find, one
from tests.support.netpol import Pod, allowed

NS = "mlflow"
# Every Job role of CloudNativePG (CNPG_VERSION): pkg/specs/jobs.go (jobRole) and
# pkg/reconciler/majorupgrade/job.go (jobMajorUpgrade).
CNPG_JOB_ROLES = (
    "import",
    "initdb",
    "pgbasebackup",
    "full-recovery",
    "join",
    "snapshot-recovery",
    "major-upgrade",
)


@pytest.fixture(scope="module")
def policies(homelab: list[Obj]) -> list[Obj]:
    found = find(homelab, "NetworkPolicy")
    assert found, "no NetworkPolicy rendered"
    return found


def cnpg_job_labels(cluster: str, role: str) -> dict[str, str]:
    """The labels CloudNativePG (CNPG_VERSION in tools/versions.env) puts on the pod of a Job it runs
    for the Cluster, from its pkg/specs/jobs.go (and app.kubernetes.io/version, the PostgreSQL
    major, which no policy reads): no `cnpg.io/podRole`, so the instances' policy does not select
    it."""
    return {
        "cnpg.io/instanceName": f"{cluster}-1",
        "cnpg.io/cluster": cluster,
        "cnpg.io/jobRole": role,
        "app.kubernetes.io/name": "postgresql",
        "app.kubernetes.io/instance": cluster,
        "app.kubernetes.io/component": "database",
        "app.kubernetes.io/managed-by": "cloudnative-pg",
    }


def endpoints(homelab: list[Obj]) -> dict[str, Pod]:
    """The ends the pairs below name, labelled as the render (or the homelab) labels them; shared
    with the live check on the node (tests/node/test_chart_network_policy.py)."""
    mlflow_labels = one(homelab, "Deployment", "mlflow")["spec"]["template"]["metadata"]["labels"]
    cluster = one(homelab, "Cluster")["metadata"]["name"]
    return {
        "mlflow": Pod(NS, mlflow_labels, ip="10.1.0.10"),
        "postgres": Pod(NS, {"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance"}, ip="10.1.0.11"),
        "cnpg-job": Pod(NS, cnpg_job_labels(cluster, "initdb"), ip="10.1.0.13"),
        "api-server": Pod("world", {}, ip="192.0.2.10", external=True),
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
    ("postgres", "api-server", 6443, "TCP"),
    ("cnpg-job", "api-server", 443, "TCP"),
    ("cnpg-job", "api-server", 6443, "TCP"),
    ("cnpg-job", "dns", 53, "UDP"),
    ("cnpg-job", "dns", 53, "TCP"),
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
    ("postgres", "api-server", 22, "TCP"),
    ("mlflow", "api-server", 443, "TCP"),
    ("neighbour", "api-server", 443, "TCP"),
    ("cnpg-job", "api-server", 22, "TCP"),
    ("cnpg-job", "postgres", 5432, "TCP"),  # one instance: no replica joins, nothing to copy
    ("cnpg-job", "mlflow", 5000, "TCP"),
    ("cnpg-job", "internet", 5432, "TCP"),  # empty apiServer.cidrs: 443 and 6443 go anywhere
    ("operator", "cnpg-job", 8000, "TCP"),
    ("postgres", "cnpg-job", 5432, "TCP"),
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


def test_every_job_role_of_cloudnativepg_gets_the_job_pods_policy(policies: list[Obj]) -> None:
    """Whatever Job CloudNativePG runs for the Cluster, its pod reaches the API server (whose
    answers it waits for) and DNS; no other Cluster's Job pod does."""
    cluster = next(p for p in policies if p["metadata"]["name"].endswith("postgres-jobs"))
    name = cluster["spec"]["podSelector"]["matchLabels"]["cnpg.io/cluster"]
    api, dns = Pod("world", {}, ip="192.0.2.10", external=True), Pod("kube-system", {"k8s-app": "kube-dns"})
    for role in CNPG_JOB_ROLES:
        job = Pod(NS, cnpg_job_labels(name, role))
        assert allowed(policies, job, api, 443, namespace=NS), role
        assert allowed(policies, job, dns, 53, "UDP", namespace=NS), role
    other = Pod(NS, cnpg_job_labels("another-cluster", "initdb"))
    assert not allowed(policies, other, api, 443, namespace=NS)


def test_with_two_instances_a_joining_replicas_job_copies_the_primary_on_5432_only() -> None:
    """CloudNativePG's join Job runs pg_basebackup against the -rw Service: the job pod's egress and
    the instances' ingress admit it on 5432, not the status port; the instances reach each other."""
    from mlflow_gitops import chart

    objs = chart.template_own([chart.VALUES / "homelab.yaml"], set_values=["postgres.instances=2"]).documents
    policies = find(objs, "NetworkPolicy")
    cluster = one(objs, "Cluster")["metadata"]["name"]
    join = Pod(NS, cnpg_job_labels(cluster, "join"), ip="10.1.0.13")
    primary = Pod(NS, {"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance"}, ip="10.1.0.11")
    replica = Pod(NS, {"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance"}, ip="10.1.0.14")
    assert allowed(policies, join, primary, 5432, namespace=NS)
    assert not allowed(policies, join, primary, 8000, namespace=NS)
    assert not allowed(policies, primary, join, 5432, namespace=NS)
    assert allowed(policies, replica, primary, 5432, namespace=NS)
    assert allowed(policies, primary, replica, 8000, namespace=NS)


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
