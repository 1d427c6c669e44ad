"""Metrics, alerts and the dashboard of the homelab render: what Prometheus scrapes exists and is
reachable, the alerts and panels ask for metrics the server and CloudNativePG really export
(tests/monitoring/mlflow-metrics.txt, recorded from the running server by the end-to-end tests),
and every piece is switched by its own value."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from mlflow_gitops import chart
from mlflow_gitops.versions import KUBE_VERSION
from tests.support.manifests import Obj, args_map, container, find, one
from tests.support.netpol import Pod, allowed

NS = "mlflow"
MONITORING = Path(__file__).parent / "monitoring"
SEEN = MONITORING / "mlflow-metrics.txt"
PROMETHEUS = Pod("observability", {"app.kubernetes.io/name": "prometheus"})
MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
# Metrics of other exporters the rules and panels use: CloudNativePG's instance manager (its
# default queries) and the kubelet / kube-state-metrics of kube-prometheus-stack.
OTHER_EXPORTERS = {
    "up",
    "cnpg_collector_up",
    "cnpg_backends_total",
    "cnpg_pg_settings_setting",
    "kubelet_volume_stats_used_bytes",
    "kubelet_volume_stats_capacity_bytes",
    "kube_deployment_status_replicas_available",
}


def seen_metrics() -> set[str]:
    """Metric names the running server exposed (families expanded to their samples' names)."""
    return {
        line.strip() for line in SEEN.read_text().splitlines() if line.strip() and not line.startswith("#")
    }


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (every selector here has a label matcher)."""
    return set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))


def rule_exprs(objs: list[Obj]) -> dict[str, str]:
    rule = one(objs, "PrometheusRule")
    return {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}


def dashboard(objs: list[Obj]) -> dict:
    config = one(objs, "ConfigMap", "mlflow-dashboard")
    (text,) = config["data"].values()
    return json.loads(text)


def dashboard_exprs(objs: list[Obj]) -> list[str]:
    return [t["expr"] for p in dashboard(objs)["panels"] for t in p.get("targets", [])]


@pytest.mark.upstream
def test_the_server_exports_metrics_to_a_writable_directory(homelab: list[Obj]) -> None:
    deployment = one(homelab, "Deployment", "mlflow")
    server = container(deployment, "mlflow")
    assert args_map(server["args"])["expose-prometheus"] == "/mlflow/metrics"
    mount = next(m for m in server["volumeMounts"] if m["mountPath"] == "/mlflow/metrics")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mount["name"]], "the exporter's files must start empty with every pod"
    assert server["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.upstream
def test_the_service_monitor_scrapes_the_service_port(homelab: list[Obj]) -> None:
    monitor = one(homelab, "ServiceMonitor")
    service = one(homelab, "Service", "mlflow")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}, "no Service port of that name"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NS]
    assert "namespace" not in monitor["metadata"], "next to its Service, in the release's namespace"


def test_the_pod_monitor_scrapes_the_postgres_exporter(own_homelab: list[Obj]) -> None:
    monitor = one(own_homelab, "PodMonitor")
    cluster = one(own_homelab, "Cluster")["metadata"]["name"]
    assert monitor["spec"]["selector"]["matchLabels"]["cnpg.io/cluster"] == cluster
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert "monitoring" not in one(own_homelab, "Cluster")["spec"], "enablePodMonitor is deprecated"


def test_the_alerts_cover_server_database_and_volume(own_homelab: list[Obj]) -> None:
    assert set(rule_exprs(own_homelab)) == {
        "MLflowServerDown",
        "MLflowServerNotReady",
        "MLflowServerErrors",
        "MLflowServerSlow",
        "MLflowPostgresDown",
        "MLflowPostgresConnectionsNearLimit",
        "MLflowArtifactVolumeFull",
    }


def test_the_alerts_and_panels_use_metrics_that_exist(own_homelab: list[Obj]) -> None:
    """A misspelt metric makes an alert that never fires: every name is one the server was seen to
    expose, or one of the other exporters'."""
    known = seen_metrics() | OTHER_EXPORTERS
    exprs = [*rule_exprs(own_homelab).values(), *dashboard_exprs(own_homelab)]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used - known == set()
    assert {n for n in used if n.startswith("mlflow_")}, "no alert or panel reads the server's own metrics"


def test_the_metric_name_check_catches_a_misspelling() -> None:
    assert metric_names('sum(rate(flask_http_request_total{status=~"5.."}[5m]))') == {
        "flask_http_request_total"
    }
    assert "flask_http_request_total" not in seen_metrics()


def test_the_dashboard_is_loaded_by_the_grafana_sidecar(own_homelab: list[Obj]) -> None:
    config = one(own_homelab, "ConfigMap", "mlflow-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = dashboard(own_homelab)
    assert board["uid"] and board["panels"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["namespace"]["query"] == NS
    assert variables["cluster"]["query"] == one(own_homelab, "Cluster")["metadata"]["name"]
    assert not re.search(r"__[A-Z]+__", json.dumps(board)), "a placeholder was left unreplaced"


def test_prometheus_reaches_only_the_metrics_ports(own_homelab: list[Obj]) -> None:
    policies = find(own_homelab, "NetworkPolicy")
    server = Pod(NS, {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow"})
    cluster = one(own_homelab, "Cluster")["metadata"]["name"]
    postgres = Pod(NS, {"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance"})
    assert allowed(policies, PROMETHEUS, server, 5000, namespace=NS)
    assert allowed(policies, PROMETHEUS, postgres, 9187, namespace=NS)
    assert not allowed(policies, PROMETHEUS, postgres, 5432, namespace=NS)
    assert not allowed(policies, PROMETHEUS, postgres, 8000, namespace=NS)
    assert not allowed(policies, PROMETHEUS, server, 8080, namespace=NS)
    grafana = Pod("observability", {"app.kubernetes.io/name": "grafana"})
    assert not allowed(policies, grafana, server, 5000, namespace=NS)
    assert not allowed(policies, grafana, postgres, 9187, namespace=NS)


def render_with(tmp_path: Path, values: dict) -> list[Obj]:
    extra = tmp_path / "values.yaml"
    extra.write_text(yaml.safe_dump(values))
    return chart.template_own([chart.VALUES / "homelab.yaml", extra]).documents


@pytest.mark.parametrize(
    ("switch", "kind", "name"),
    [
        ({"monitoring": {"podMonitor": {"enabled": False}}}, "PodMonitor", None),
        ({"monitoring": {"prometheusRule": {"enabled": False}}}, "PrometheusRule", None),
        ({"monitoring": {"dashboard": {"enabled": False}}}, "ConfigMap", "mlflow-dashboard"),
    ],
    ids=["pod-monitor", "prometheus-rule", "dashboard"],
)
def test_each_piece_is_switched_by_its_own_value(
    tmp_path: Path, own_homelab: list[Obj], switch: dict, kind: str, name: str | None
) -> None:
    without = render_with(tmp_path, switch)
    assert find(own_homelab, kind, name) and not find(without, kind, name)
    assert len(without) == len(own_homelab) - 1, "only that piece went away"


def test_without_the_prometheus_operator_api_nothing_of_it_renders(tmp_path: Path) -> None:
    copy = chart.own_chart_copy(tmp_path)
    cmd = [
        chart.helm(),
        "template",
        chart.RELEASE,
        str(copy),
        "--namespace",
        NS,
        "--kube-version",
        KUBE_VERSION,
    ]
    out = subprocess.run(
        [*cmd, "--values", str(chart.VALUES / "homelab.yaml")], capture_output=True, text=True, check=True
    )
    kinds = {d["kind"] for d in yaml.safe_load_all(out.stdout) if d}
    assert kinds.isdisjoint(MONITORING_KINDS)
    assert "ConfigMap" in kinds, "the dashboard does not need the operator"


def test_the_render_pipeline_declares_the_prometheus_operator_api() -> None:
    assert "monitoring.coreos.com/v1" in chart.API_VERSIONS
