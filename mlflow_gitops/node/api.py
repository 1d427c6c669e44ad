"""The node's API server through the `kubernetes` client. It listens only inside the node's network
namespace, on nothing of the machine's own interfaces, so `NodeClient` (a kubernetes.client.ApiClient
for the node's admin kubeconfig) opens each connection from inside it: the connecting thread joins
the namespace (setns) for the socket's creation only and returns to its own; the socket stays in the
namespace it was made in, so TLS, the requests and the pool's reuse of it need nothing more.

    client = NodeClient(layout.kubeconfig("admin"), netns.path, run_dir / "discovery.json")
    CoreV1Api(client).read_node("node")
    apply(client, obj)  # server-side apply of any kind (the dynamic client)

`wait_for` polls a probe with a bound and names the last state it saw.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import config
from kubernetes.client import ApiClient, ApiException, ApiextensionsV1Api, Configuration
from kubernetes.dynamic import DynamicClient

CLONE_NEWNET = 0x40000000
FIELD_MANAGER = "mlflow-node"
APPLY_PATCH = "application/apply-patch+yaml"
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextlib.contextmanager
def network_namespace(path: Path) -> Iterator[None]:
    """The calling thread inside the network namespace at `path`, back in its own afterwards."""
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


def _pool_class(netns: Path) -> type[urllib3.HTTPSConnectionPool]:
    """An HTTPS connection pool whose connections make their sockets inside `netns`."""

    class Connection(urllib3.connection.HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            with network_namespace(netns):
                return super()._new_conn()

    class Pool(urllib3.HTTPSConnectionPool):
        ConnectionCls = Connection

    return Pool


class NodeClient(ApiClient):
    """An ApiClient for a kubeconfig whose connections are made inside the network namespace `netns`;
    `dynamic` is its dynamic client, discovery cached in `discovery_cache`."""

    def __init__(self, kubeconfig: Path, netns: Path, discovery_cache: Path) -> None:
        configuration = Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        super().__init__(configuration)
        self.rest_client.pool_manager.pool_classes_by_scheme = {"https": _pool_class(netns)}
        self.discovery_cache = discovery_cache

    @functools.cached_property
    def dynamic(self) -> DynamicClient:
        return DynamicClient(self, cache_file=str(self.discovery_cache))

    def get_text(self, path: str, timeout: float = 30) -> tuple[int, str]:
        """A plain GET of a path no typed call covers (/readyz); its status and body."""
        serialized = self.param_serialize("GET", path, auth_settings=["BearerToken"])
        response = self.call_api(*serialized, _request_timeout=timeout)
        return response.status, response.read().decode(errors="replace")


def resource_of(client: NodeClient, obj: dict[str, Any]) -> Any:
    """The dynamic client's resource of an object's kind (discovery: CRDs' kinds too)."""
    return client.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])


def apply(client: NodeClient, obj: dict[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any]:
    """Server-side apply of one object of any kind (created or updated; conflicts forced to
    `manager`); returns it as stored."""
    resource = resource_of(client, obj)
    namespace = obj["metadata"].get("namespace", "default") if resource.namespaced else None
    applied = client.dynamic.server_side_apply(
        resource, body=obj, namespace=namespace, field_manager=manager, force_conflicts=True
    )
    return applied.to_dict()


def create_or_keep(create: Callable[[], object]) -> bool:
    """Run a typed create; an object that exists already (409 Conflict) is left as it is. True when
    it was made."""
    try:
        create()
    except ApiException as error:
        if error.status != 409:
            raise
        return False
    return True


def message(error: ApiException) -> str:
    """`<status> <reason>: <message>` of a refusal, the message from the Status the server sent."""
    try:
        said = json.loads(error.body or "")["message"]
    except (ValueError, KeyError, TypeError):
        said = error.body
    return f"{error.status} {error.reason}: {said}"


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
        except ApiException as error:
            done, state = False, f"{type(error).__name__}: {message(error)}"
        except (OSError, urllib3.exceptions.HTTPError) as error:
            done, state = False, f"{type(error).__name__}: {error}"
        if done:
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s; last state: {state}")


def wait_established(client: ApiClient, name: str) -> None:
    def established() -> tuple[bool, str]:
        status = ApiextensionsV1Api(client).read_custom_resource_definition_status(name).status
        conditions = {c.type: c.status for c in (status and status.conditions) or []}
        return conditions.get("Established") == "True", f"conditions {conditions}"

    wait_for(f"CRD {name} Established", established, 120, 0.5)


def install_crds(client: NodeClient, files: list[Path]) -> list[str]:
    """Apply every CustomResourceDefinition of the YAML files (server-side) and wait until each is
    Established; returns their names."""
    names = []
    for path in files:
        for crd in yaml.safe_load_all(path.read_text()):
            if crd and crd.get("kind") == "CustomResourceDefinition":
                apply(client, crd)
                names.append(crd["metadata"]["name"])
    for name in names:
        wait_established(client, name)
    return names
