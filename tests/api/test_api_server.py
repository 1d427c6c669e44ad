"""The API server of tests/api is the one the chart targets, and secured like a real one."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api, VersionApi

from mlflow_gitops import apiserver_build, versions
from tests.support import kube
from tests.support.apiserver import ApiServer

pytestmark = pytest.mark.apiserver


def test_the_server_reports_its_pin_of_the_target_kubernetes_minor(api: ApiClient) -> None:
    info = VersionApi(api).get_code()
    assert info.git_version == apiserver_build.KUBE_APISERVER.version
    major, minor, _ = versions.KUBE_VERSION.split(".")
    assert (info.major, info.minor) == (major, minor), f"KUBE_VERSION is {versions.KUBE_VERSION}"


@pytest.mark.parametrize(
    ("token", "status", "says"),
    [
        (None, 403, 'User "system:anonymous" cannot list resource "namespaces"'),
        ("wrong-token", 401, "Unauthorized"),
    ],
    ids=["anonymous", "wrong-token"],
)
def test_an_anonymous_or_wrong_token_request_is_refused(
    apiserver: ApiServer, token: str | None, status: int, says: str
) -> None:
    with apiserver.client(token) as client, pytest.raises(ApiException) as refused:
        CoreV1Api(client).list_namespace()
    assert refused.value.status == status, kube.message(refused.value)
    assert says in kube.message(refused.value), kube.message(refused.value)
