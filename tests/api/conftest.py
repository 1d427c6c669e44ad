"""A real kube-apiserver for the tests in tests/api (tests/support/apiserver.py), started once per
session.

Without the binaries of `make apiserver` these tests skip saying so, except under CI (CI=true),
where they fail: a CI run that silently skipped them would prove nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

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
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """etcd + kube-apiserver with the project's CRDs installed and Established; stopped at the end."""
    if missing := missing_binaries():
        unavailable(f"needs {', '.join(missing)}: {BUILD_HINT}")
    server = ApiServer(tmp_path_factory.mktemp("apiserver"))
    request.addfinalizer(server.stop)  # before start: a half-started server is stopped too
    started = time.monotonic()
    server.start()
    ready = time.monotonic() - started
    crds = server.install_crds()
    version = server.request("GET", "/version").body["gitVersion"]
    rules = {crd["metadata"]["name"]: len(cel_rules(crd)) for crd in crds}
    SUMMARY.append(
        f"{version} ready in {ready:.1f}s, {len(crds)} CRDs Established in "
        f"{time.monotonic() - started - ready:.1f}s more, {sum(rules.values())} CEL rules "
        f"(x-kubernetes-validations) installed: "
        + ", ".join(f"{name} {count}" for name, count in rules.items())
    )
    yield server


@pytest.fixture(scope="session")
def mlflow_namespace(api: ApiServer) -> str:
    """Namespace `mlflow` with the Pod Security labels of the deployment (restricted)."""
    api.namespace(MLFLOW_NAMESPACE, RESTRICTED)
    return MLFLOW_NAMESPACE
