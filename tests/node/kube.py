"""What the tests in tests/node do alike on the one-node cluster, through its `kubernetes` ApiClient
(node.client): a namespace ready for pods, a pod watched until it finishes, its termination message.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kubernetes.client import ApiClient, ApiException, CoreV1Api, V1Pod
from kubernetes.watch import Watch

from mlflow_gitops.node import api

FINISHED = ("Succeeded", "Failed")


def namespace(client: ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    """The namespace (an existing one is kept), once its `default` ServiceAccount exists: pods are
    refused until the controller made it."""
    core = CoreV1Api(client)
    api.create_or_keep(lambda: core.create_namespace({"metadata": {"name": name, "labels": labels or {}}}))

    def service_account() -> tuple[bool, str]:
        core.read_namespaced_service_account("default", name)
        return True, "found"

    api.wait_for(f"ServiceAccount default in {name}", service_account, 120)


def finished_pod(client: ApiClient, namespace: str, name: str, timeout: float) -> V1Pod:
    """Watch the pod until its phase is Succeeded or Failed and return it; TimeoutError naming the
    last phase seen otherwise."""
    deadline, last = time.monotonic() + timeout, "no event"
    core = CoreV1Api(client)
    while (left := deadline - time.monotonic()) > 0:
        watch = Watch()
        try:
            for event in watch.stream(
                core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}",
                timeout_seconds=max(1, int(left)),
            ):  # fmt: skip
                pod: V1Pod = event["object"]
                phase = pod.status.phase if pod.status else None
                last = f"{event['type']}, {state(pod)}"
                if phase in FINISHED:
                    return pod
        except ApiException as error:  # the watch expired (410 Gone) or broke: watch again
            last = api.message(error)
        finally:
            watch.stop()
    raise TimeoutError(f"pod {namespace}/{name} not finished within {timeout:.0f} s; last: {last}")


def termination_message(pod: V1Pod) -> str:
    """The first container's termination message (its /dev/termination-log, else its log's end)."""
    terminated = pod.status.container_statuses[0].state.terminated
    return (terminated.message or "").strip()


def state(pod: V1Pod) -> str:
    """The pod's phase, its conditions that are not True and why each container is not running
    (ErrImageNeverPull, CrashLoopBackOff...): what a wait that timed out reports."""
    status = pod.status
    if status is None:
        return "no status yet"
    parts = [f"phase {status.phase}"]
    parts += [
        f"{c.type}={c.status} ({c.reason or ''})" for c in status.conditions or [] if c.status != "True"
    ]
    for container in (status.init_container_statuses or []) + (status.container_statuses or []):
        for name, detail in (
            ("waiting", container.state.waiting),
            ("terminated", container.state.terminated),
        ):
            if detail is not None:
                parts.append(
                    f"{container.name} {name}: {detail.reason} {(detail.message or '').strip()[:300]}"
                )
    return "; ".join(parts)


def ready(pod: V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status and pod.status.conditions) or [])


def absent(call: Callable[[], object]) -> bool:
    """Run a typed read or delete; True when the object is not there (404 Not Found)."""
    try:
        call()
    except ApiException as error:
        if error.status != 404:
            raise
        return True
    return False


def wait_deleted(what: str, read: Callable[[], object], timeout: float, interval: float = 1.0) -> float:
    """Until reading the object answers 404 (its finalizers done); the seconds it took."""
    return api.wait_for(f"{what} deleted", lambda: (absent(read), f"{what} still there"), timeout, interval)
