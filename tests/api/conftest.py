"""A real kube-apiserver for the tests in tests/api (tests/support/apiserver.py), started once per
session, with the project's CRDs installed; the tests get a `kubernetes.client.ApiClient` (`api`) as
its admin, and a dynamic client (`dynamic`) for server-side apply of whole renders.

Without the binaries of `make apiserver` these tests skip saying so, except under CI (CI=true),
where they fail: a CI run that silently skipped them would prove nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kubernetes.client import ApiClient, VersionApi
from kubernetes.dynamic import DynamicClient

from tests.support import kube
from tests.support.apiserver import BUILD_HINT, SUMMARY, ApiServer, missing_binaries
from tests.support.ci import unavailable
from tests.support.crds import cel_rules

MLFLOW_NAMESPACE = "mlflow"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("kube-apiserver")
        for line in SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def apiserver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ApiServer:
    """etcd + kube-apiserver, ready; stopped at the end of the session."""
    if missing := missing_binaries():
        unavailable(f"needs {', '.join(missing)}: {BUILD_HINT}")
    server = ApiServer(tmp_path_factory.mktemp("apiserver"))
    request.addfinalizer(server.stop)  # before start: a half-started server is stopped too
    started = time.monotonic()
    server.start()
    SUMMARY.append(f"etcd and kube-apiserver ready in {time.monotonic() - started:.1f}s")
    return server


@pytest.fixture(scope="session")
def api(apiserver: ApiServer) -> Iterator[ApiClient]:
    """An ApiClient as the admin."""
    with apiserver.client() as client:
        yield client


@pytest.fixture(scope="session")
def crds(api: ApiClient) -> list[kube.Obj]:
    """The project's CRDs, installed, Established and served (as stored)."""
    started = time.monotonic()
    installed = kube.install_crds(api)
    version = VersionApi(api).get_code().git_version
    rules = {crd["metadata"]["name"]: len(cel_rules(crd)) for crd in installed}
    SUMMARY.append(
        f"{version}: {len(installed)} CRDs Established in {time.monotonic() - started:.1f}s, "
        f"{sum(rules.values())} CEL rules (x-kubernetes-validations) installed: "
        + ", ".join(f"{name} {count}" for name, count in rules.items())
    )
    return installed


@pytest.fixture(scope="session")
def dynamic(api: ApiClient, crds: list[kube.Obj], tmp_path_factory: pytest.TempPathFactory) -> DynamicClient:
    """The dynamic client, its discovery made once the CRDs are served (cached in the session's
    temporary directory)."""
    return DynamicClient(api, cache_file=str(tmp_path_factory.mktemp("discovery") / "cache.json"))


@pytest.fixture(scope="session")
def mlflow_namespace(api: ApiClient, crds: list[kube.Obj]) -> str:
    """Namespace `mlflow` with the Pod Security labels of the deployment (restricted)."""
    kube.namespace(api, MLFLOW_NAMESPACE, RESTRICTED)
    return MLFLOW_NAMESPACE
