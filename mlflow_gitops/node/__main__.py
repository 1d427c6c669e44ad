"""`make node`: start the one-node cluster in the foreground; Ctrl-C (or SIGTERM) stops it cleanly.

Usage: python -m mlflow_gitops.node [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow_gitops.node import build, config
from mlflow_gitops.node.node import ETCD, KUBE_APISERVER, Node


def versions() -> dict[str, str]:
    """Each component's own report of its version (first line)."""
    commands = {
        "etcd": [str(ETCD), "--version"],
        "kube-apiserver": [str(KUBE_APISERVER), "--version"],
        **{name: [str(build.BIN / name), "--version"] for name in build.KUBE_COMPONENTS},
        "containerd": [str(build.BIN / "containerd"), "--version"],
        "crictl": [str(build.BIN / "crictl"), "--version"],
        "coredns": [str(build.BIN / "coredns"), "-version"],
        "runc": ["runc", "--version"],
        "cni plugins": [str(build.CNI_BIN_DIR / "bridge"), "--version"],
    }
    out = {}
    for name, cmd in commands.items():
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = (done.stdout + done.stderr).strip().splitlines()
        out[name] = lines[0] if lines else f"(exit {done.returncode})"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="state and logs (default: a new temporary directory)")
    args = parser.parse_args(argv)
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="mlflow-node-"))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    for name, version in versions().items():
        print(f"{name}: {version}", flush=True)
    with Node(run_dir) as node:
        print(
            f"node {config.NODE_NAME} Ready; API {node.layout.server} in network namespace {node.netns.name}\n"
            f"  admin kubeconfig: {node.layout.kubeconfig('admin')}\n"
            f"  e.g. nsenter --net={node.netns.path} -- kubectl --kubeconfig {node.layout.kubeconfig('admin')} get pods -A\n"
            f"  logs: {run_dir / 'logs'}; Ctrl-C stops the node",
            flush=True,
        )
        try:
            signal.pause()
        except KeyboardInterrupt:
            print("\nnode: stopping", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
