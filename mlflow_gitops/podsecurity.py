"""Pod Security Standards checks with the API server's own library, k8s.io/pod-security-admission.

tools/podsecurity/ is a small Go module (committed with its go.sum) whose command reads pods as JSON
on stdin and prints each one's violations, evaluated by `policy.EvaluatePod`: the checks the
PodSecurity admission plugin runs, at a level and policy version. Its library is the staging release
of KUBE_APISERVER_VERSION (tools/versions.env; v1.36.5 -> v0.36.5), so it judges as the API server of
tests/api does. `make tools` builds it into ./bin/podsecurity; the binary carries a digest of the
module's files and is rebuilt only when they change.

Usage: python -m mlflow_gitops.podsecurity   (build it if needed)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

from mlflow_gitops.apiserver_build import staging_version
from mlflow_gitops.versions import PINS, ROOT

MODULE = ROOT / "tools" / "podsecurity"
BINARY = ROOT / "bin" / "podsecurity"
LIBRARY = "k8s.io/pod-security-admission"
SOURCES = ("go.mod", "go.sum", "main.go")

Pod = dict[str, Any]  # {"metadata": {...}, "spec": {...}}


def library_version() -> str:
    """The pod-security-admission release the pins call for."""
    return staging_version(PINS["KUBE_APISERVER_VERSION"])


def source_digest() -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (MODULE / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def required_version() -> str | None:
    match = re.search(
        rf"^\s*(?:require\s+)?{re.escape(LIBRARY)} (\S+)", (MODULE / "go.mod").read_text(), re.MULTILINE
    )
    return match.group(1) if match else None


def reported() -> str | None:
    """What ./bin/podsecurity says it is (`podsecurity <library> <version> source <digest>`)."""
    try:
        out = subprocess.run(
            [str(BINARY), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def expected() -> str:
    return f"podsecurity {LIBRARY} {library_version()} source {source_digest()}"


def install() -> str:
    """Build ./bin/podsecurity unless it is the build of the current module; say what was done."""
    want = library_version()
    if required_version() != want:
        raise SystemExit(
            f"tools/podsecurity/go.mod requires {LIBRARY} {required_version()}, but KUBE_APISERVER_VERSION="
            f"{PINS['KUBE_APISERVER_VERSION']} calls for {want}: run `go get {LIBRARY}@{want} && go mod tidy` there"
        )
    if reported() == expected():
        return f"podsecurity ({LIBRARY} {want}): ./bin (up to date)"
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    started = time.monotonic()
    cmd = [
        "go",
        "build",
        "-trimpath",
        "-ldflags",
        f"-s -w -X main.source={source_digest()}",
        "-o",
        str(BINARY),
        ".",
    ]
    result = subprocess.run(cmd, cwd=MODULE, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` in tools/podsecurity failed (exit {result.returncode})")
    if reported() != expected():
        raise SystemExit(f"podsecurity: built {BINARY} but it reports {reported()!r}, not {expected()!r}")
    return f"podsecurity ({LIBRARY} {want}): built in {time.monotonic() - started:.0f} s"


def check(
    pods: dict[str, Pod], *, level: str = "restricted", version: str = "latest"
) -> dict[str, list[str]]:
    """Each pod's violations of the level ([] when allowed), as the admission plugin words them."""
    if not BINARY.exists():
        raise SystemExit("podsecurity is not installed: run `make tools`")
    cmd = [str(BINARY), "-level", level, "-policy-version", version]
    out = subprocess.run(cmd, input=json.dumps(pods), capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise ValueError(out.stderr.strip())
    result: dict[str, list[str]] = json.loads(out.stdout)
    return result


def main() -> int:
    print(install(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
