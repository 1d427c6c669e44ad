"""The tools modules of `make apiserver` (tools/apiserver/*/go.mod) agree with tools/versions.env.

Renovate bumps KUBE_APISERVER_VERSION and ETCD_VERSION in tools/versions.env only; this fails such
a bump until `python -m mlflow_gitops.apiserver_build --sync` has rewritten the go.mod files (and
go.sum) to match. Offline: `go mod edit -json` only parses the files.
"""

from __future__ import annotations

import shutil

import pytest

from mlflow_gitops import apiserver_build, versions

pytestmark = pytest.mark.skipif(
    shutil.which("go") is None, reason="needs the go command (`make tools` needs it too)"
)


@pytest.mark.parametrize("binary", apiserver_build.BINARIES, ids=lambda b: b.name)
def test_tools_module_builds_the_pinned_version(binary: apiserver_build.Binary) -> None:
    problems = apiserver_build.module_problems(binary)
    assert not problems, (
        f"{binary.tools_module}/go.mod: {problems}: run `python -m mlflow_gitops.apiserver_build --sync`"
    )
    assert (binary.tools_module / "go.sum").is_file()


def test_kube_apiserver_is_of_the_target_kubernetes_minor() -> None:
    major, minor, _ = versions.KUBE_VERSION.split(".")
    assert apiserver_build.KUBE_APISERVER.version.startswith(f"v{major}.{minor}."), (
        f"KUBE_APISERVER_VERSION={apiserver_build.KUBE_APISERVER.version} but KUBE_VERSION={versions.KUBE_VERSION}: "
        "the API server of tests/api must be the Kubernetes minor the chart is validated against"
    )


def test_every_staging_module_is_replaced_with_its_release() -> None:
    mod = apiserver_build.mod_json(apiserver_build.KUBE_APISERVER.tools_module)
    staging = apiserver_build.staging_version(apiserver_build.KUBE_APISERVER.version)
    replaced = {r["Old"]["Path"]: r["New"].get("Version") for r in mod["Replace"]}
    assert "k8s.io/api" in replaced and "k8s.io/apiserver" in replaced
    assert set(replaced.values()) == {staging}
