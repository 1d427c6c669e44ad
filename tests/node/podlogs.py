"""A container's log, read where the node's kubelet writes it (its podLogsDir under the run
directory). The API server's pods/log is refused here: it calls the kubelet without a client
certificate, and the kubelet accepts none without one (anonymous authentication is off)."""

from __future__ import annotations

from mlflow_gitops.node.node import Node


def container_log(node: Node, namespace: str, pod: str, container: str) -> str:
    """The container's output (CRI log lines stripped of time, stream and tag), every attempt."""
    pattern = f"{namespace}_{pod}_*/{container}/*.log"
    files = sorted((node.run_dir / "kubelet" / "pod-logs").glob(pattern))
    if not files:
        raise FileNotFoundError(
            f"no log of {namespace}/{pod} {container} under {node.run_dir}/kubelet/pod-logs"
        )
    lines = []
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(" ", 3)  # <time> <stream> <P|F> <message>
            lines.append(parts[3] if len(parts) == 4 else line)
    return "\n".join(lines)
