"""The pinned toolchain: one target Kubernetes version, tools that report their pins."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from mlflow_gitops import chart, podsecurity, tools, versions
from mlflow_gitops.versions import PINS


@pytest.mark.parametrize("tool", tools.TOOLS, ids=lambda t: t.name)
def test_installed_tool_reports_its_pin(tool: tools.Tool) -> None:
    assert tools.matches(str(chart.BIN / tool.name), tool)


def test_helm_targets_the_pinned_kubernetes_version_by_default(tmp_path: Path) -> None:
    """Helm 4 assumes the Kubernetes minor of the client-go it links (no ldflags for it): a helm bump
    that moves client-go, or a KUBE_VERSION bump without one, fails here. The renders pass
    --kube-version anyway (mlflow_gitops/chart.py)."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.0.1\n")
    (tmp_path / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:\n"
        "  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    out = subprocess.run(
        [chart.helm(), "template", str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert f'kube: "v{versions.KUBE_VERSION}"' in out.stdout


def module_file(module: str, version: str, name: str) -> str:
    """A file of a Go module version, from the module cache (downloaded by `make schemas`) or the proxy."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True, check=False
    )
    info = json.loads(out.stdout or "{}")
    assert "Dir" in info, f"go mod download {module}@{version}: {info.get('Error', out.stderr)}"
    return (Path(info["Dir"]) / name).read_text()


def test_helm_is_the_one_flux_links() -> None:
    """Flux renders with the Helm its controllers link: the pin is source-controller's helm.sh/helm/v4."""
    gomod = module_file(
        "github.com/fluxcd/source-controller", PINS["FLUX_SOURCE_CONTROLLER_VERSION"], "go.mod"
    )
    (linked,) = re.findall(r"^\s*helm\.sh/helm/v4 (v\S+)", gomod, re.MULTILINE)
    assert PINS["HELM_VERSION"] == linked, (
        f"source-controller {PINS['FLUX_SOURCE_CONTROLLER_VERSION']} links helm {linked}, "
        f"HELM_VERSION is {PINS['HELM_VERSION']}: set HELM_VERSION={linked}"
    )


def test_helm_is_the_minor_argocd_bundles() -> None:
    """Argo CD runs the helm binary of its image (hack/tool-versions.sh): same major and minor as the pin."""
    tool_versions = module_file(
        "github.com/argoproj/argo-cd/v3", PINS["ARGOCD_VERSION"], "hack/tool-versions.sh"
    )
    (bundled,) = re.findall(r"^helm4_version=(\S+)$", tool_versions, re.MULTILINE)
    minor = ".".join(PINS["HELM_VERSION"].removeprefix("v").split(".")[:2])
    assert bundled.startswith(f"{minor}."), (
        f"Argo CD {PINS['ARGOCD_VERSION']} bundles helm {bundled}, the pin is {minor}"
    )


def test_pod_security_checker_is_the_build_of_this_module() -> None:
    """./bin/podsecurity links the pod-security-admission release of KUBE_APISERVER_VERSION and was
    built from the module as it is (`make tools` rebuilds it otherwise)."""
    assert podsecurity.reported() == podsecurity.expected()


def test_schemas_are_for_the_pinned_kubernetes_version() -> None:
    assert (chart.ROOT / "schemas" / f"v{versions.KUBE_VERSION}-standalone-strict").is_dir()


def test_versions_file_rejects_a_malformed_line(tmp_path: Path) -> None:
    bad = tmp_path / "versions.env"
    bad.write_text("HELM_VERSION v3\n")
    with pytest.raises(ValueError, match="expected KEY=value"):
        versions.load(bad)
