"""checkov and kube-score over every rendered environment: zero failures, every skip justified
in tools/scanners.yaml."""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_gitops import chart

CONFIG = chart.ROOT / "tools" / "scanners.yaml"
RENDERS = sorted(chart.RENDERED.glob("*.yaml"))
CHECKOV = chart.ROOT / ".venv-scan" / "bin" / "checkov"


@cache
def config() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def test_every_skip_is_justified() -> None:
    reasons = {**config()["checkov"]["skip"], **config()["kube-score"]["ignore"]}
    short = {check: reason for check, reason in reasons.items() if len(str(reason).split()) < 8}
    assert short == {}


def checkov(path: Path) -> dict[str, Any]:
    skip = ",".join(config()["checkov"]["skip"])
    cmd = [str(CHECKOV), "--framework", "kubernetes", "--skip-download", "--output", "json", "--quiet"]
    out = subprocess.run(
        [*cmd, "--skip-check", skip, "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert out.stdout.strip(), out.stderr
    report = json.loads(out.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.mark.parametrize("path", RENDERS, ids=lambda p: p.name)
def test_checkov_finds_nothing(path: Path) -> None:
    report = checkov(path)
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 0


def kube_score(path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [str(chart.BIN / "kube-score"), "score", "--output-format", "ci"]
    for test in config()["kube-score"]["ignore"]:
        cmd += ["--ignore-test", test]
    return subprocess.run([*cmd, str(path)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("path", RENDERS, ids=lambda p: p.name)
def test_kube_score_finds_nothing(path: Path) -> None:
    out = kube_score(path)
    problems = [line for line in out.stdout.splitlines() if line.startswith(("[CRITICAL]", "[WARNING]"))]
    assert problems == []
    assert out.returncode == 0, out.stderr
    assert "[OK]" in out.stdout


def test_scanners_catch_a_privileged_container(tmp_path: Path) -> None:
    """Not blind: a privileged pod in an otherwise clean render is reported by both."""
    docs = [d for d in yaml.safe_load_all(RENDERS[0].read_text()) if d]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    deploy["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(docs))
    assert checkov(bad)["results"]["failed_checks"]
    assert "[CRITICAL]" in kube_score(bad).stdout


def test_service_account_mounts_no_token(homelab: list[dict[str, Any]]) -> None:
    """What the CKV_K8S_38 skip relies on."""
    deploy = next(d for d in homelab if d["kind"] == "Deployment")
    name = deploy["spec"]["template"]["spec"]["serviceAccountName"]
    account = next(d for d in homelab if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == name)
    assert account["automountServiceAccountToken"] is False
    assert deploy["spec"]["template"]["spec"].get("automountServiceAccountToken") is not True
