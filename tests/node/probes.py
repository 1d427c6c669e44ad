"""Probe pods for the live NetworkPolicy checks (tests/node/test_chart_network_policy.py): a busybox
pod (the render's busybox image, OpenBSD nc) that tries a list of connections in parallel and
writes one outcome line per connection to its termination message.

kube-router programs a new pod's own firewall chain a moment after the pod starts, so the first
packets of a pod whose egress a policy isolates may leave before its rules exist. A gated pod
therefore first waits until its isolation shows, as a refused connection to the sentinel (the
kubelet's port on the node's address, which no policy of the chart allows and which answers
without enforcement); only then does it probe, and its gate line says how long that took.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client import ApiClient, CoreV1Api

from mlflow_gitops.node import host, render_images
from tests.node import kube

ATTEMPTS = 6  # a refused probe tries this often (3 s timeout, 1 s apart) before it gives up
GATE_ATTEMPTS = 120  # a gated pod tries the sentinel this often (1 s apart) until it is refused
KUBELET_PORT = 10250  # the kubelet's default port, on host.NODE_IP (mlflow_gitops.node.config)
SENTINEL = (host.NODE_IP, KUBELET_PORT)

Check = tuple[str, str, int, str]  # label, host, port, protocol


def script(checks: list[Check], gate: str | None = None) -> str:
    """Each check in parallel; a line per check in the termination message: `<label> reached
    attempts=N` or `<label> refused attempts=N: <last error>`. With `gate` (a label), first the
    wait for the sentinel to be refused: `<gate> refused attempts=N` or `<gate> reached ...`."""
    lines = [
        "check() {",
        "  n=0",
        f'  while [ "$n" -lt {ATTEMPTS} ]; do',
        "    n=$((n+1))",
        '    if [ "$4" = UDP ]; then out=$(timeout 5 nslookup kubernetes.default.svc.cluster.local "$2" 2>&1)',
        '    else out=$(nc -z -w 3 "$2" "$3" 2>&1); fi',
        '    if [ $? = 0 ]; then echo "$1 reached attempts=$n"; return; fi',
        "    sleep 1",
        "  done",
        '  echo "$1 refused attempts=$n: $(echo $out | tail -c 100)"',
        "}",
    ]
    # The image has no /tmp: the checks write their one line each (a single write) to one pipe.
    lines.append("(")
    if gate:
        sentinel_host, sentinel_port = SENTINEL
        lines += [
            "  g=reached; n=0",
            f'  while [ "$n" -lt {GATE_ATTEMPTS} ]; do',
            "    n=$((n+1))",
            f"    if ! nc -z -w 2 {sentinel_host} {sentinel_port} 2>/dev/null; then g=refused; break; fi",
            "    sleep 1",
            "  done",
            f'  echo "{gate} $g attempts=$n"',
        ]
    lines += [f"  check '{label}' {host} {port} {protocol} &" for label, host, port, protocol in checks]
    lines += ["  wait", ") | tee /dev/termination-log"]
    return "\n".join(lines)


def probe_pod(name: str, ns: str, labels: dict[str, str], command: str) -> dict[str, Any]:
    container = {
        "name": "probe", "image": render_images.reference("chart-busybox"),
        "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", command],
    }  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {**labels, "mlflow-probe": "true"}},
        "spec": {"restartPolicy": "Never", "containers": [container], "terminationGracePeriodSeconds": 1},
    }


def run_pods(client: ApiClient, pods: list[dict[str, Any]]) -> dict[str, str]:
    """Create the pods together, wait for all to finish; each one's termination message by name."""
    core = CoreV1Api(client)
    for pod in pods:
        core.create_namespaced_pod(pod["metadata"]["namespace"], pod)
    messages = {}
    for pod in pods:  # created together, they run together: each watched until it ends, in turn
        name, ns = pod["metadata"]["name"], pod["metadata"]["namespace"]
        finished = kube.finished_pod(client, ns, name, 600)
        messages[name] = kube.termination_message(finished)
        assert finished.status.phase == "Succeeded", (
            f"probe pod {name} {finished.status.phase}: {messages[name]}"
        )
        core.delete_namespaced_pod(name, ns)
    return messages
