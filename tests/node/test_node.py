"""The one-node cluster runs pods: node Ready, CoreDNS resolves a Service's name and kube-proxy's
iptables rules carry a pod's connection to the Service's cluster IP.

Run by `make node-test` (marked `node`, outside `make test`).
"""

from __future__ import annotations

import time

import pytest

from mlflow_gitops.node import api, build, config
from mlflow_gitops.node.images import image_ref
from mlflow_gitops.node.node import Node
from tests.node.conftest import SUMMARY

pytestmark = pytest.mark.node

NAMESPACE = "smoke"
BODY = "hello from the web pod"
BUSYBOX = image_ref("busybox")


def pod(name: str, labels: dict[str, str], script: str, restart: str = "Always", **extra) -> dict:
    container = {
        "name": name,
        "image": BUSYBOX,
        "imagePullPolicy": "Never",
        "command": ["/bin/busybox", "sh", "-c", script],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **extra,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {"restartPolicy": restart, "containers": [container], "terminationGracePeriodSeconds": 1},
    }


def service(name: str, port: int, target: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": {"app": name},
            "ports": [{"port": port, "targetPort": target, "protocol": "TCP"}],
        },
    }


def timed(step: str, action):
    started = time.monotonic()
    result = action()
    SUMMARY.append(f"{step}: {time.monotonic() - started:.1f} s")
    return result


def test_node_registers_ready_with_the_pinned_kubelet(node: Node) -> None:
    body = node.client.get(f"/api/v1/nodes/{config.NODE_NAME}")
    ready = {c["type"]: c["status"] for c in body["status"]["conditions"]}["Ready"]
    assert ready == "True", body["status"]["conditions"]
    info = body["status"]["nodeInfo"]
    assert info["kubeletVersion"] == build.kube_version()
    assert info["containerRuntimeVersion"].startswith("containerd://"), info
    addresses = {a["type"]: a["address"] for a in body["status"]["addresses"]}
    assert addresses["InternalIP"] == "10.200.0.1", addresses


def test_pod_resolves_a_service_name_with_coredns_and_reaches_it_through_its_cluster_ip(node: Node) -> None:
    client = node.client
    client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})

    def service_account() -> tuple[bool, str]:  # pods are refused until the controller made it
        status, _ = client.request("GET", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default")
        return status == 200, f"GET serviceaccount default: {status}"

    timed(
        "namespace's default ServiceAccount",
        lambda: api.wait_for("ServiceAccount default", service_account, 120),
    )
    web_script = (
        f"mkdir -p /www && echo '{BODY}' > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"
    )
    client.create(
        pod(
            "web",
            {"app": "web"},
            web_script,
            readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        )
    )
    client.create(service("web", 80, 8080))
    web_ip = client.get(f"/api/v1/namespaces/{NAMESPACE}/services/web")["spec"]["clusterIP"]

    def web_ready() -> tuple[bool, str]:
        status = client.get(f"/api/v1/namespaces/{NAMESPACE}/pods/web").get("status", {})
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        return conditions.get("Ready") == "True", f"phase {status.get('phase')} {conditions}"

    timed("web pod Ready", lambda: api.wait_for("pod web Ready", web_ready, 300))

    # The client pod sits behind a Service of its own, in the same namespace, and names the web
    # Service by its full DNS name: CoreDNS answers with the cluster IP, kube-proxy DNATs to the pod.
    name = f"web.{NAMESPACE}.svc.{config.CLUSTER_DOMAIN}"
    script = f"""
for attempt in $(seq 60); do
  address=$(nslookup {name} 2>&1 | awk '/^Name:/ {{found=1}} found && /^Address/ {{print $2; exit}}')
  # busybox's wget segfaults in this image; nc speaks the HTTP request itself
  body=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {name} 80 2>&1 | tail -n 1)
  [ "$body" = '{BODY}' ] && break
  sleep 1
done
echo "address=$address attempts=$attempt body=$body" | tee /dev/termination-log
[ "$body" = '{BODY}' ]
"""
    client.create(pod("client", {"app": "client"}, script, restart="Never"))
    client.create(service("client", 80, 8080))

    def finished() -> tuple[bool, str]:
        status = client.get(f"/api/v1/namespaces/{NAMESPACE}/pods/client").get("status", {})
        return status.get("phase") in ("Succeeded", "Failed"), f"phase {status.get('phase')}"

    timed("client pod resolved and fetched", lambda: api.wait_for("pod client finished", finished, 300))
    status = client.get(f"/api/v1/namespaces/{NAMESPACE}/pods/client")["status"]
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    message = terminated.get("message", "")
    SUMMARY.append(f"client pod: {message.strip()}")
    assert status["phase"] == "Succeeded", f"client pod {status['phase']}: {message}"
    fields = dict(part.split("=", 1) for part in message.split(" body=")[0].split())
    assert fields["address"] == web_ip, (
        f"{name} resolved to {fields['address']}, the Service's IP is {web_ip}"
    )
    assert message.strip().endswith(f"body={BODY}"), message
