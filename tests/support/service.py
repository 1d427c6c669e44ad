"""A stand-in for a Service in front of several pods of the pod runner: one address whose new
connections go to the pods that are Ready, as kube-proxy does with a Service's EndpointSlices.

What is kept of the cluster, and nothing more:

* Endpoints: a pod becomes one when its readiness probe, the render's own (`httpGet` path,
  initialDelaySeconds, periodSeconds, timeoutSeconds, failureThreshold; successThreshold 1), has
  succeeded, probed on the pod's port as the kubelet probes the pod IP; it stops being one after
  failureThreshold failures in a row, and at once when the pod is deleted (a terminating pod gets
  no new connections; `remove` before the pod's SIGTERM).
* Balancing: each new TCP connection goes to the next Ready endpoint in turn (kube-proxy's
  iptables mode picks at random; both spread connections, neither looks at requests). A
  connection stays with its pod until either end closes it, as conntrack keeps it: keep-alive
  requests on it follow it, and when that pod goes away its client sees the connection close.
* No Ready endpoint: the connection is refused (closed at once), as kube-proxy rejects it.

Not kept: propagation delay (the cluster drops a deleted pod from the endpoints a moment after
the deletion, so a pod may still get a few new connections while it shuts down: a preStop delay
covers that there; here removal is immediate); session affinity (none is set).
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mlflow_gitops.podrunner import PodRunner
from mlflow_gitops.podrunner.relay import relay


@dataclass
class Endpoint:
    name: str
    pod: PodRunner
    ready: bool = False
    terminating: bool = False
    stop: threading.Event = field(default_factory=threading.Event)


class ServiceStandIn:
    def __init__(self, probe: dict[str, Any]) -> None:
        self.path = str(probe.get("httpGet", {}).get("path", "/"))
        self.initial, self.period = (
            float(probe.get("initialDelaySeconds", 0)),
            float(probe.get("periodSeconds", 10)),
        )
        self.timeout, self.failures = (
            float(probe.get("timeoutSeconds", 1)),
            int(probe.get("failureThreshold", 3)),
        )
        self.endpoints: dict[str, Endpoint] = {}
        self.events: list[
            tuple[float, str, str]
        ] = []  # (monotonic time, pod, "ready" | "not ready" | "removed")
        self.refused = 0  # connections that found no Ready endpoint
        self.connections: Counter[str] = Counter()  # new connections sent to each pod
        self._lock, self._turn = threading.Lock(), 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> list[str]:
        with self._lock:
            return [e.name for e in self.endpoints.values() if e.ready and not e.terminating]

    def add(self, name: str, pod: PodRunner) -> None:
        """A new pod of the Service's selector: probed from now on."""
        endpoint = Endpoint(name, pod)
        with self._lock:
            self.endpoints[name] = endpoint
        threading.Thread(target=self._probe, args=(endpoint,), daemon=True).start()

    def remove(self, name: str) -> None:
        """The pod is being deleted: no new connection goes to it from now on."""
        with self._lock:
            endpoint = self.endpoints.pop(name)
            endpoint.terminating = True
            self.events.append((time.monotonic(), name, "removed"))
        endpoint.stop.set()

    def wait_ready(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while name not in self.ready():
            assert time.monotonic() < deadline, (
                f"{name} not Ready within {timeout:.0f} s: events {self.events}"
            )
            time.sleep(0.1)

    def close(self) -> None:
        for endpoint in list(self.endpoints.values()):
            endpoint.stop.set()
        self._server.close()

    def _probe(self, endpoint: Endpoint) -> None:
        failed = 0
        if endpoint.stop.wait(self.initial):
            return
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint.pod.url}{self.path}", timeout=self.timeout) as r:
                    ok = 200 <= r.status < 400
            except OSError:
                ok = False
            failed = 0 if ok else failed + 1
            with self._lock:
                was = endpoint.ready
                endpoint.ready = ok or (endpoint.ready and failed < self.failures)
                if endpoint.ready != was and not endpoint.terminating:
                    self.events.append(
                        (time.monotonic(), endpoint.name, "ready" if endpoint.ready else "not ready")
                    )
            if endpoint.stop.wait(self.period):
                return

    def _pick(self) -> Endpoint | None:
        with self._lock:
            ready = [e for e in self.endpoints.values() if e.ready and not e.terminating]
            if not ready:
                self.refused += 1
                return None
            self._turn += 1
            endpoint = ready[self._turn % len(ready)]
            self.connections[endpoint.name] += 1
            return endpoint

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            endpoint = self._pick()
            if endpoint is None:
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client, endpoint), daemon=True).start()

    def _serve(self, client: socket.socket, endpoint: Endpoint) -> None:
        relay(client, ("127.0.0.1", int(endpoint.pod.local_port or 0)))
