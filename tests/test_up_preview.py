"""`make up`'s address and its preview-only allowed hosts (mlflow_gitops/podrunner/preview.py).

The browser test (tests/e2e/test_ui.py) opens what `up` prints; these check, offline, that the
default UP_PORT needs nothing the homelab render lacks, and what another port or render gets.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mlflow_gitops.podrunner import preview
from tests.support.versions import app_version

ROOT = Path(__file__).resolve().parents[1]


def rendered_env(env: str) -> dict[str, str]:
    """The security settings of rendered/<env>.yaml's ConfigMaps."""
    found: dict[str, str] = {}
    for doc in yaml.safe_load_all((ROOT / "rendered" / f"{env}.yaml").read_text()):
        if doc and doc.get("kind") == "ConfigMap":
            found |= {
                k: v for k, v in (doc.get("data") or {}).items() if k in (preview.HOSTS, preview.ORIGINS)
            }
    return found


def make_up_default_port() -> int:
    (port,) = re.findall(r"^UP_PORT \?= (\d+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    return int(port)


def test_make_up_default_address_is_allowed_by_the_homelab_render_as_is() -> None:
    env = rendered_env("homelab")
    assert preview.HOSTS in env, "rendered/homelab.yaml: no MLFLOW_SERVER_ALLOWED_HOSTS"
    access = preview.browser_access(env, make_up_default_port())
    assert access.url == "http://localhost:5000"
    assert access.as_rendered and access.env_overrides == {}, access.added
    assert preview.preview_notice(access, env, "rendered/homelab.yaml", 5000) is None
    message = preview.ready_message(access, app_version(), "rendered/homelab.yaml", 5000)
    assert "Open http://localhost:5000 in a browser: the UI reads and writes" in message
    assert "kubectl port-forward svc/mlflow 5000:80" in message


def test_another_up_port_gets_preview_only_entries_and_says_so() -> None:
    env = rendered_env("homelab")
    access = preview.browser_access(env, 5001)
    assert access.url == "http://localhost:5001"
    assert access.added == {
        preview.HOSTS: ["localhost:5001", "127.0.0.1:5001"],
        preview.ORIGINS: ["http://localhost:5001", "http://127.0.0.1:5001"],
    }
    for key in (preview.HOSTS, preview.ORIGINS):
        assert access.env_overrides[key].startswith(env[key] + ","), "the render's entries are kept"
    notice = preview.preview_notice(access, env, "rendered/homelab.yaml", 5001)
    assert notice is not None
    assert "UP_PORT=5001" in notice and "only at localhost:5000, 127.0.0.1:5000" in notice
    assert "For this preview only" in notice and "rendered/homelab.yaml is unchanged" in notice
    assert "with the preview-only entries above" in preview.ready_message(access, app_version(), "r", 5001)


def test_render_without_localhost_entries_gets_them_for_its_preview() -> None:
    env = rendered_env("lab-minimal")
    access = preview.browser_access(env, 5000)
    assert access.added.get(preview.HOSTS) == ["localhost:5000", "127.0.0.1:5000"]
    notice = preview.preview_notice(access, env, "rendered/lab-minimal.yaml", 5000)
    assert notice is not None and "at no localhost address" in notice


@pytest.mark.parametrize(
    "env",
    [
        {},  # MLflow's defaults admit localhost on any port
        {
            preview.HOSTS: "mlflow,localhost:*,127.0.0.1:*",
            preview.ORIGINS: "http://localhost:*,http://127.0.0.1:*",
        },
        {preview.HOSTS: "*"},
    ],
)
def test_settings_that_admit_the_port_already_are_left_alone(env: dict[str, str]) -> None:
    access = preview.browser_access(env, 5123)
    assert access.as_rendered and access.env_overrides == {}


@pytest.mark.parametrize("port", [0, 70000])
def test_out_of_range_port_is_refused_naming_it(port: int) -> None:
    with pytest.raises(ValueError, match=rf"port {port}: expected 1-65535"):
        preview.browser_access({}, port)
