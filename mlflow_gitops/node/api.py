"""A small client of the node's API server, which listens only inside the node's network namespace.

Each connection is opened from inside it: the calling thread joins the namespace (setns), connects,
and returns to its own; the socket stays in the namespace it was made in.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextlib.contextmanager
def network_namespace(path: Path) -> Iterator[None]:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


class _Connection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, netns: Path, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._netns = netns

    def connect(self) -> None:
        with network_namespace(self._netns):
            super().connect()


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status


class Client:
    def __init__(self, host: str, port: int, token: str, ca_file: Path, netns: Path) -> None:
        self.host, self.port, self.token, self.ca_file, self.netns = host, port, token, ca_file, netns

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 30,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        conn = _Connection(self.host, self.port, self.netns, context, timeout)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return response.status, parsed

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise ApiError("GET", path, status, body)
        return body

    def create(self, obj: dict[str, Any]) -> Any:
        """POST an object to its collection; an existing one (409) is left as it is."""
        path = collection(obj)
        status, body = self.request("POST", path, obj)
        if status not in (200, 201, 409):
            raise ApiError("POST", path, status, body)
        return body

    def delete(self, path: str) -> None:
        status, body = self.request("DELETE", path)
        if status not in (200, 202, 404):
            raise ApiError("DELETE", path, status, body)

    def resource_path(self, obj: dict[str, Any]) -> str:
        """The object's own path, its resource name found by discovery (CRDs' kinds too)."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        group_path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        for resource in self.get(group_path)["resources"]:
            if resource["kind"] == kind and "/" not in resource["name"]:
                meta = obj["metadata"]
                scope = f"/namespaces/{meta.get('namespace', 'default')}" if resource["namespaced"] else ""
                return f"{group_path}{scope}/{resource['name']}/{meta['name']}"
        raise ValueError(f"the API server serves no kind {kind!r} in {api_version}")

    def apply(self, obj: dict[str, Any], manager: str = "mlflow-node") -> Any:
        """Server-side apply of one object (created or updated; conflicts forced to `manager`)."""
        path = f"{self.resource_path(obj)}?fieldManager={manager}&force=true"
        status, body = self.request("PATCH", path, obj, content_type="application/apply-patch+yaml")
        if status not in (200, 201):
            raise ApiError("PATCH (apply)", path, status, body)
        return body


PLURALS = {
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "ConfigMap": "configmaps",
    "Service": "services",
    "Pod": "pods",
    "Deployment": "deployments",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def collection(obj: dict[str, Any]) -> str:
    kind, api_version = obj["kind"], obj["apiVersion"]
    if kind not in PLURALS:
        raise ValueError(f"kind {kind!r} is not one this client creates: allowed {sorted(PLURALS)}")
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if kind in CLUSTER_SCOPED:
        return f"{base}/{PLURALS[kind]}"
    return f"{base}/namespaces/{obj['metadata'].get('namespace', 'default')}/{PLURALS[kind]}"


def wait_for(
    what: str, probe: Callable[[], tuple[bool, str]], timeout: float, interval: float = 1.0
) -> float:
    """Poll `probe` (-> done, state) until done; returns the seconds it took. The error names the
    last observed state."""
    started = time.monotonic()
    state = "not observed yet"
    while time.monotonic() - started < timeout:
        try:
            done, state = probe()
        except (OSError, ApiError, ssl.SSLError, http.client.HTTPException) as error:
            done, state = False, f"{type(error).__name__}: {error}"
        if done:
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s; last state: {state}")
