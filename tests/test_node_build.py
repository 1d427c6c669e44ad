"""The one-node cluster's build (mlflow_gitops/node/build.py) follows the pins: its Kubernetes module
is the kube-apiserver module's copy at KUBE_APISERVER_VERSION, and every `go install` pin exists."""

from __future__ import annotations

import re

from mlflow_gitops.node import build
from mlflow_gitops.versions import PINS, ROOT

APISERVER_MODULE = ROOT / "tools" / "apiserver" / "kube-apiserver" / "go.mod"


def replace_block(text: str) -> str:
    match = re.search(r"^replace \((.*?)^\)", text, re.MULTILINE | re.DOTALL)
    assert match, "no replace block"
    return match.group(1)


def test_node_kubernetes_module_requires_the_kube_apiserver_pin() -> None:
    gomod = (build.KUBE_MODULE / "go.mod").read_text()
    required = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", gomod, re.MULTILINE)
    assert required and required.group(1) == PINS["KUBE_APISERVER_VERSION"], required


def test_node_kubernetes_module_replaces_staging_as_the_kube_apiserver_module_does() -> None:
    node, apiserver = (build.KUBE_MODULE / "go.mod").read_text(), APISERVER_MODULE.read_text()
    assert replace_block(node) == replace_block(apiserver)


def test_node_module_builds_each_component_as_a_tool() -> None:
    tools = set(
        re.findall(
            r"^tool k8s\.io/kubernetes/cmd/(\S+)$", (build.KUBE_MODULE / "go.mod").read_text(), re.MULTILINE
        )
    )
    assert tools == set(build.KUBE_COMPONENTS)


def test_every_go_install_of_the_node_has_a_pin_with_a_renovate_comment() -> None:
    lines = (ROOT / "tools" / "versions.env").read_text().splitlines()
    for binary in build.GO_INSTALLS:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{binary.pin_key}="))
        assert lines[index - 1] == f"# renovate: datasource=go depName={binary.module}", binary.pin_key
        assert re.fullmatch(r"v\d+\.\d+\.\d+", binary.version), binary.version
