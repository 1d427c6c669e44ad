"""A second opinion on tests/support/netpol.py: np-guard's netpol-analyzer (./bin/netpolicy, pinned
as NETPOL_ANALYZER_VERSION) evaluates the same connection over the same policies.

netpol.allowed() calls confirm() with its own verdict, so every pair any test checks, now or later,
is cross-checked without being listed twice. The analyzer reads manifests from a directory: the
policies (in the namespace helm installs them into) plus a Namespace with the labels of each end and
a Pod per end with its labels; an end outside the cluster is an IP (`--destination-ip`). It answers
`<src> => <dst> over tcp/5000: true|false`. Without the binary the check is skipped with a warning,
and under CI=true it fails instead."""

from __future__ import annotations

import re
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlflow_gitops.versions import ROOT
from tests.support.ci import under_ci

if TYPE_CHECKING:
    from tests.support.netpol import Pod

BINARY = ROOT / "bin" / "netpolicy"
ANSWER = re.compile(r"^.* => .* over (\w+)/(\d+): (true|false)$", re.MULTILINE)
Obj = dict[str, Any]


def manifests(policies: list[Obj], src: Pod, dst: Pod, namespace: str) -> list[Obj]:
    """The objects the analyzer needs: policies, the ends' Namespaces and Pods (named src and dst)."""
    objects: list[Obj] = []
    for policy in policies:
        copy = {
            **policy,
            "metadata": {**policy["metadata"], "namespace": policy["metadata"].get("namespace", namespace)},
        }
        objects.append(copy)
    namespaces: dict[str, dict[str, str]] = {namespace: {"kubernetes.io/metadata.name": namespace}}
    for name, end in (("src", src), ("dst", dst)):
        if end.external:
            continue
        labels = end.ns_labels()
        if namespaces.get(end.namespace, labels) != labels and end.namespace != namespace:
            raise NotImplementedError(
                f"two ends in namespace {end.namespace} with different namespace labels"
            )
        namespaces[end.namespace] = labels
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": end.namespace, "labels": dict(end.labels)},
                "spec": {"containers": [{"name": "c", "image": "probe"}]},
                "status": {"podIP": end.ip, "hostIP": "192.0.2.1"},
            }
        )
    for name, labels in namespaces.items():
        objects.append(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        )
    return objects


def evaluate(policies: list[Obj], src: Pod, dst: Pod, port: int, protocol: str, namespace: str) -> bool:
    """The analyzer's verdict on one connection."""
    if src.external:
        # v1.4.4's eval refuses --source-ip with a destination pod (its flag check is inverted).
        raise NotImplementedError("netpol-analyzer eval cannot start a connection outside the cluster")
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "objects.yaml").write_text(yaml.safe_dump_all(manifests(policies, src, dst, namespace)))
        cmd = [str(BINARY), "eval", "--dirpath", work, "-n", src.namespace, "-s", "src"]
        cmd += (
            ["--destination-ip", dst.ip]
            if dst.external
            else ["--destination-namespace", dst.namespace, "-d", "dst"]
        )
        cmd += ["-p", str(port), "--protocol", protocol.lower()]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    answers = ANSWER.findall(out.stdout)
    # Any warning fails too: the analyzer warns where it skips an object or a field it cannot read.
    if out.returncode != 0 or len(answers) != 1 or out.stderr.strip():
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {out.returncode}):\n{out.stdout}{out.stderr}")
    return answers[0][2] == "true"


def describe(end: Pod) -> str:
    return end.ip if end.external else f"{end.namespace}/{dict(end.labels)}"


def confirm(
    policies: list[Obj], src: Pod, dst: Pod, port: int, protocol: str, namespace: str, verdict: bool
) -> None:
    """Raise AssertionError when the analyzer disagrees with `verdict`."""
    if not BINARY.exists():
        message = "bin/netpolicy (netpol-analyzer) is not installed, NetworkPolicy verdicts are not cross-checked: run `make tools`"
        if under_ci():
            raise AssertionError(f"CI=true and {message}")
        warnings.warn(message, stacklevel=3)
        return
    theirs = evaluate(policies, src, dst, port, protocol, namespace)
    if theirs != verdict:
        words = {True: "allowed", False: "denied"}
        raise AssertionError(
            f"{describe(src)} -> {describe(dst)} {protocol}/{port}: tests/support/netpol.py says {words[verdict]}, "
            f"netpol-analyzer says {words[theirs]}"
        )
