"""Nothing secret is in git: every credential comes from Vault through an ExternalSecret."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from mlflow_gitops import chart
from tests.support.manifests import Obj, find

ROOT = chart.ROOT
# The one value that looks like a key but is a documented, non-secret placeholder (values.yaml).
PLACEHOLDERS = {
    yaml.safe_load((chart.CHART / "values.yaml").read_text())["mlflow"]["flaskServerSecretKey"],
}
PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "Vault token": re.compile(r"\bhvs\.[A-Za-z0-9_-]{20,}\b"),
    "URL with a password": re.compile(r"[a-z+]+://[^/\s:@]+:[^/\s@]{3,}@"),
    "password literal": re.compile(
        r"^\s*(password|passwd|secret|token|apiKey|secretKey|accessKey)\s*:\s*[\"']?[^\s\"'{}$][^\s\"']{5,}",
        re.IGNORECASE | re.MULTILINE,
    ),
}
# Files that talk about secrets without holding any: this test, and the scanner fixtures.
EXEMPT = {"tests/test_no_secrets.py"}


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    names = [n for n in out.stdout.decode().split("\0") if n and n not in EXEMPT]
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def findings(text: str) -> list[str]:
    found = []
    for label, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            if not any(p in match.group(0) for p in PLACEHOLDERS):
                found.append(f"{label}: {match.group(0).strip()[:60]}")
    return found


def test_no_tracked_file_holds_a_credential() -> None:
    problems = {}
    for path in tracked_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if hits := findings(text):
            problems[str(path.relative_to(ROOT))] = hits
    assert problems == {}


@pytest.mark.parametrize(
    "text",
    [
        "password: hunter2hunter2",
        "uri: postgresql://mlflow:s3cretpw@db/mlflow",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "key: AKIAABCDEFGHIJKLMNOP",
    ],
)
def test_scanner_catches_a_planted_credential(text: str) -> None:
    assert findings(text)


def secret_values(secret: Obj) -> list[str]:
    data = [base64.b64decode(v).decode() for v in (secret.get("data") or {}).values()]
    return data + [str(v) for v in (secret.get("stringData") or {}).values()]


@pytest.mark.parametrize("path", sorted(chart.RENDERED.glob("*.yaml")), ids=lambda p: p.name)
def test_rendered_secrets_hold_nothing_secret(path: Path) -> None:
    objs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for secret in find(objs, "Secret"):
        leaked = [v for v in secret_values(secret) if v and v not in PLACEHOLDERS]
        assert leaked == [], f"Secret {secret['metadata']['name']} carries data"


def referenced_secrets(objs: list[Obj]) -> set[str]:
    names: set[str] = set()
    for deploy in find(objs, "Deployment"):
        pod = deploy["spec"]["template"]["spec"]
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            names |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
            names |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
        names |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    return names


def test_every_secret_with_content_comes_from_an_external_secret(homelab: list[Obj]) -> None:
    rendered_empty = {
        s["metadata"]["name"]
        for s in find(homelab, "Secret")
        if all(not v or v in PLACEHOLDERS for v in secret_values(s))
    }
    from_vault = {es["spec"]["target"]["name"] for es in find(homelab, "ExternalSecret")}
    assert referenced_secrets(homelab) - rendered_empty - from_vault == set()
