"""The one-node cluster of mlflow_gitops.node for tests/node, started once per session (root only).

Without the binaries of `make node-build` (or without root) these tests skip saying so, except
under CI (CI=true), where they fail. Each step's duration and the components' versions are printed
at the end of the run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlflow_gitops.node import build
from mlflow_gitops.node.__main__ import versions
from mlflow_gitops.node.node import Node
from tests.support.ci import unavailable

SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("one-node cluster")
        for line in SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    if os.geteuid() != 0:
        unavailable("the node needs root (network namespaces, mounts, cgroups)")
    if missing := build.missing():
        unavailable(f"needs {', '.join(missing)}: run `make node-build`")
    SUMMARY.extend(f"{name}: {version}" for name, version in versions().items())
    # A short path: containerd's socket lives under it (unix socket paths are limited to 108 bytes).
    node = Node(Path(tempfile.mkdtemp(prefix="mlflow-node-")), log=False)
    request.addfinalizer(lambda: SUMMARY.extend(f"{k}: {v:.1f} s" for k, v in node.timings.items()))
    with node:
        SUMMARY.extend(f"a killed run had left: {line}" for line in node.cleaned)
        yield node
