"""The API server of tests/api is the one the chart targets, and secured like a real one."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest

from mlflow_gitops import apiserver_build, versions
from tests.support.apiserver import ApiServer

pytestmark = pytest.mark.apiserver


def test_the_server_reports_its_pin_of_the_target_kubernetes_minor(api: ApiServer) -> None:
    info = api.request("GET", "/version").body
    assert info["gitVersion"] == apiserver_build.KUBE_APISERVER.version
    major, minor, _ = versions.KUBE_VERSION.split(".")
    assert (info["major"], info["minor"]) == (major, minor), f"KUBE_VERSION is {versions.KUBE_VERSION}"


def test_an_anonymous_or_wrong_token_request_is_refused(api: ApiServer) -> None:
    for token in (None, "wrong-token"):
        req = urllib.request.Request(api.url + "/api/v1/namespaces")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        context = ssl.create_default_context(cafile=str(api.ca_file))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, context=context, timeout=10)
        assert refused.value.code in (401, 403), token
