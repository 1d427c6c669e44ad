"""The one-node cluster runs pods: node Ready, its imported images pinned, CoreDNS resolves a
Service's name and kube-proxy's iptables rules carry a pod's connection to the Service's cluster IP.

Run by `make node-test` (marked `node`, outside `make test`).
"""

from __future__ import annotations

import json
import time

import pytest
from kubernetes.client import CoreV1Api

from mlflow_gitops.node import api, build, config, images, render_images
from mlflow_gitops.node.images import image_ref
from mlflow_gitops.node.node import Node
from tests.node import kube
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
    status = CoreV1Api(node.client).read_node(config.NODE_NAME).status
    ready = {c.type: c.status for c in status.conditions}["Ready"]
    assert ready == "True", status.conditions
    info = status.node_info
    assert info.kubelet_version == build.kube_version()
    assert info.container_runtime_version.startswith("containerd://"), info
    addresses = {a.type: a.address for a in status.addresses}
    assert addresses["InternalIP"] == "10.200.0.1", addresses


def test_every_image_on_the_node_is_pinned_so_the_kubelet_never_deletes_it(node: Node) -> None:
    # Imported, never pulled: a deleted image cannot come back, and under disk pressure the kubelet
    # deletes every image no container uses unless the runtime reports it pinned.
    crictl = [str(build.BIN / "crictl"), f"--runtime-endpoint=unix://{node.layout.containerd_socket}"]
    listed = json.loads(images.run(*node.netns.enter(), *crictl, "images", "-o", "json"))["images"]
    pinned = {tag: image.get("pinned", False) for image in listed for tag in image.get("repoTags") or []}
    imported = {image_ref(name) for name in images.IMAGES}
    imported |= {render_images.reference(name) for name in render_images.IMAGES}
    assert imported <= pinned.keys(), f"missing: {sorted(imported - pinned.keys())}"
    assert sorted(tag for tag, is_pinned in pinned.items() if not is_pinned) == []


def test_pod_resolves_a_service_name_with_coredns_and_reaches_it_through_its_cluster_ip(node: Node) -> None:
    core = CoreV1Api(node.client)
    timed("namespace's default ServiceAccount", lambda: kube.namespace(node.client, NAMESPACE))
    web_script = (
        f"mkdir -p /www && echo '{BODY}' > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"
    )
    core.create_namespaced_pod(
        NAMESPACE,
        pod(
            "web",
            {"app": "web"},
            web_script,
            readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        ),
    )
    web_ip = core.create_namespaced_service(NAMESPACE, service("web", 80, 8080)).spec.cluster_ip

    def web_ready() -> tuple[bool, str]:
        found = core.read_namespaced_pod_status("web", NAMESPACE)
        return kube.ready(found), kube.state(found)

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
    core.create_namespaced_pod(NAMESPACE, pod("client", {"app": "client"}, script, restart="Never"))
    core.create_namespaced_service(NAMESPACE, service("client", 80, 8080))
    finished = timed(
        "client pod resolved and fetched", lambda: kube.finished_pod(node.client, NAMESPACE, "client", 300)
    )
    message = kube.termination_message(finished)
    SUMMARY.append(f"client pod: {message}")
    assert finished.status.phase == "Succeeded", f"client pod {finished.status.phase}: {message}"
    fields = dict(part.split("=", 1) for part in message.split(" body=")[0].split())
    assert fields["address"] == web_ip, (
        f"{name} resolved to {fields['address']}, the Service's IP is {web_ip}"
    )
    assert message.endswith(f"body={BODY}"), message
