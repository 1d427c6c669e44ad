"""NetworkPolicy enforced live on the one-node cluster: kube-router (KUBE_ROUTER_VERSION, firewall only,
mlflow_gitops.node.kube_router) next to the CNI bridge and kube-proxy.

One pair each way, pod to pod over the bridge: a client labelled as the policy admits reaches the
server, a client without the label is refused; the unlabelled client reaches it before the policy
exists (the path itself works) and again after kube-router's cleanup (nothing of it is left).
Run by `make node-test` (marked `node`, outside `make test`).
"""

from __future__ import annotations

import time

import pytest
from kubernetes.client import CoreV1Api, NetworkingV1Api

from mlflow_gitops.node import api
from mlflow_gitops.node.images import image_ref
from mlflow_gitops.node.kube_router import KubeRouter
from mlflow_gitops.node.node import Node
from tests.node import kube
from tests.node.conftest import SUMMARY

pytestmark = pytest.mark.node

NAMESPACE = "netpol"
POLICY = "web-from-allowed"
BODY = "policy-test-web"
PORT = 8080
ATTEMPTS = 10  # a refused client tries this often, 2 s timeout and 1 s apart, before it gives up


def busybox_pod(name: str, labels: dict[str, str], script: str, restart: str, **extra) -> dict:
    container = {
        "name": name, "image": image_ref("busybox"), "imagePullPolicy": "Never",
        "command": ["/bin/busybox", "sh", "-c", script], **extra,
    }  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {"restartPolicy": restart, "containers": [container], "terminationGracePeriodSeconds": 1},
    }


def policy() -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY, "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"access": "allowed"}}}],
                    "ports": [{"protocol": "TCP", "port": PORT}],
                }
            ],
        },
    }


def step(name: str, action):
    started = time.monotonic()
    result = action()
    SUMMARY.append(f"network policy, {name}: {time.monotonic() - started:.1f} s")
    return result


def probe(node: Node, name: str, access: str, web_ip: str) -> str:
    """Run a pod labelled access=<access> that connects to the web pod until it gets its page or
    ATTEMPTS run out; its termination message says which ("reached=1 attempts=N" or "reached=0")."""
    script = f"""
reached=0
for attempt in $(seq {ATTEMPTS}); do
  if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {web_ip} {PORT} 2>&1 | grep -q '{BODY}'; then
    reached=1; break
  fi
  sleep 1
done
echo "reached=$reached attempts=$attempt" | tee /dev/termination-log
"""
    CoreV1Api(node.client).create_namespaced_pod(
        NAMESPACE, busybox_pod(name, {"access": access}, script, "Never")
    )
    pod = step(f"pod {name} ({access})", lambda: kube.finished_pod(node.client, NAMESPACE, name, 300))
    message = kube.termination_message(pod)
    assert pod.status.phase == "Succeeded", f"pod {name} {pod.status.phase}: {message}"
    SUMMARY.append(f"network policy, pod {name} (access={access}): {message}")
    return message


def start_web(node: Node) -> str:
    core = CoreV1Api(node.client)
    kube.namespace(node.client, NAMESPACE)
    script = (
        f"mkdir -p /www && echo '{BODY}' > /www/index.html && exec /bin/busybox httpd -f -p {PORT} -h /www"
    )
    readiness = {"tcpSocket": {"port": PORT}, "periodSeconds": 1}
    core.create_namespaced_pod(
        NAMESPACE, busybox_pod("web", {"app": "web"}, script, "Always", readinessProbe=readiness)
    )

    def ready() -> tuple[bool, str]:
        found = core.read_namespaced_pod_status("web", NAMESPACE)
        return kube.ready(found), kube.state(found)

    step("web pod Ready", lambda: api.wait_for("pod web Ready", ready, 300))
    return core.read_namespaced_pod_status("web", NAMESPACE).status.pod_ip


def test_network_policy_admits_the_labelled_client_and_refuses_the_other_live(node: Node) -> None:
    web_ip = start_web(node)
    router = KubeRouter(node)
    with router:
        SUMMARY.append(f"network policy: kube-router {router.version()} enforcing")
        assert probe(node, "before-policy", "denied", web_ip).startswith("reached=1"), (
            "without a policy the unlabelled client does not reach the web pod: the path itself is broken"
        )
        NetworkingV1Api(node.client).create_namespaced_network_policy(NAMESPACE, policy())
        # The web pod's firewall chain jumps to the policy's chain (kube-router's comment on that rule).
        marker = f"run through nw policy {POLICY}"

        def programmed() -> tuple[bool, str]:
            lines = router.rules()
            return any(marker in line for line in lines), f"{len(lines)} kube-router rules, none for {POLICY}"

        step("policy programmed", lambda: api.wait_for(f"kube-router rules for {POLICY}", programmed, 120))
        allowed = probe(node, "allowed", "allowed", web_ip)
        assert allowed.startswith("reached=1"), f"the client the policy admits was refused: {allowed}"
        denied = probe(node, "denied", "denied", web_ip)
        assert denied == f"reached=0 attempts={ATTEMPTS}", (
            f"the client the policy leaves out got in: {denied}"
        )
    assert router.rules() == [], f"kube-router's cleanup left iptables rules: {router.rules()}"
    assert router.ipsets() == [], f"kube-router's cleanup left ipsets: {router.ipsets()}"
    after = probe(node, "after-cleanup", "denied", web_ip)
    assert after.startswith("reached=1"), f"after kube-router's cleanup the path stays closed: {after}"
