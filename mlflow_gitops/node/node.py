"""`Node`: a one-node Kubernetes cluster from its own components, in a network namespace of its own.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet and kube-proxy
run as this process's children, each in its own process group, inside the network namespace
(mlflow_gitops.node.host); every state directory is under one run directory. `start()` returns once
the node is Ready and CoreDNS answers (ready replicas of its Deployment); `stop()` undoes everything
and raises if a process, mount, network namespace, iptables rule or changed sysctl is left.

    with Node(run_dir) as node:
        CoreV1Api(node.client).list_node()  # node.client: a kubernetes ApiClient (node/api.py)
"""

from __future__ import annotations

import functools
import http.client
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes.client import AppsV1Api, CoreV1Api

from mlflow_gitops.node import api, build, config, dns, host, images, leftovers, processes

ETCD = build.BIN / "etcd"
KUBE_APISERVER = build.BIN / "kube-apiserver"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass
class Node(processes.Started):
    run_dir: Path
    timeout: float = 600  # generous: the machine may be busy
    log: bool = True
    netns: host.NetworkNamespace = field(init=False)
    layout: config.Layout = field(init=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    cleaned: list[str] = field(default_factory=list)  # what a killed run had left (leftovers.clean)
    _sysctls: host.Sysctls = field(default_factory=host.Sysctls)
    _iptables_before: str | None = None
    _netns_before: set[str] = field(default_factory=set)
    _outside_before: set[Path] = field(default_factory=set)  # of host.OUTSIDE_PATHS and cgroups
    _lock: host.MachineLock = field(default_factory=host.MachineLock)
    lock_timeout: float = 5400  # another node's whole test run may come first

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir.resolve()
        self.netns = host.NetworkNamespace(f"mlflow-node-{os.getpid()}")
        self.layout = config.Layout(self.run_dir)

    @functools.cached_property
    def client(self) -> api.NodeClient:
        """The node's admin through the `kubernetes` client, connected inside the node's namespace."""
        return api.NodeClient(
            self.layout.kubeconfig("admin"), self.netns.path, self.run_dir / "discovery.json"
        )

    def say(self, message: str) -> None:
        if self.log:
            print(f"node: {message}", flush=True)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if missing := build.missing():
            raise RuntimeError(f"the node needs {', '.join(missing)}: run `make node-build`")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if (waited := self._lock.acquire(self.lock_timeout, self.say)) > 1:
            self.timings["waited for another node"] = waited
        while self._lock.abandoned:  # a record stays until its run is cleaned
            self.cleaned += leftovers.clean(self._lock.abandoned[0], self.say)
            self._lock.cleaned()
        host.require_free_space(self.run_dir)  # after the cleaning: a killed run's state is large
        self._sysctls.record()
        self._iptables_before = host.iptables_rules()
        self._netns_before = host.netns_names()
        self._outside_before = {p for p in host.OUTSIDE_PATHS if p.exists()} | set(host.kubepods_cgroups())
        self._lock.record(
            **leftovers.facts(self.run_dir, self.netns.name, self._sysctls.saved, self._outside_before)
        )
        started = time.monotonic()
        self._step("network namespace", self.netns.create)
        config.write_identities(self.layout)
        self._step("etcd and kube-apiserver", self._start_control_plane)
        self._step("containerd and images", self._start_containerd)
        self._step("controller manager, scheduler, kubelet, kube-proxy", self._start_node_agents)
        self._step("node Ready", self._wait_node_ready)
        self._step("kube-proxy healthy", self._wait_kube_proxy)
        self._step("CoreDNS ready", self._start_coredns)
        self.timings["start"] = time.monotonic() - started
        self.say(f"started in {self.timings['start']:.0f} s ({self.run_dir})")

    def _step(self, name: str, action) -> None:
        started = time.monotonic()
        action()
        self.timings[name] = time.monotonic() - started
        self.say(f"{name}: {self.timings[name]:.1f} s")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        env = {
            **os.environ,
            "PATH": f"{build.BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
        self.processes[name] = processes.spawn(
            self.netns.enter(), cmd, self.layout.log(name), env, self.run_dir
        )

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 25) -> str:
        return processes.tail(self.layout.log(name), lines)

    def _wait(self, what: str, probe, timeout: float | None = None) -> float:
        def checked() -> tuple[bool, str]:
            self._check_alive()
            return probe()

        return api.wait_for(what, checked, timeout or self.timeout)

    def _start_control_plane(self) -> None:
        run, client_url, peer_url = self.run_dir, "http://127.0.0.1:2379", "http://127.0.0.1:2380"
        self._spawn("etcd", [
            str(ETCD), "--name", "node", "--data-dir", str(run / "etcd"),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"node={peer_url}", "--unsafe-no-fsync", "--log-level", "warn",
        ])  # fmt: skip
        key, pub = run / "apiserver" / "sa.key", run / "apiserver" / "sa.pub"
        for cmd in (
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],
            ["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
        kubelet_cert, kubelet_key = config.kubelet_client_identity(self.layout)
        self._spawn("kube-apiserver", [
            str(KUBE_APISERVER), f"--etcd-servers={client_url}",
            f"--bind-address={host.NODE_IP}", f"--advertise-address={host.NODE_IP}",
            f"--secure-port={config.API_PORT}", f"--cert-dir={run / 'apiserver' / 'certs'}",
            f"--token-auth-file={run / 'apiserver' / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pub}", f"--service-account-signing-key-file={key}",
            f"--service-cluster-ip-range={host.SERVICE_CIDR}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={kubelet_cert}", f"--kubelet-client-key={kubelet_key}",
            "--allow-privileged=true", "--profiling=false", "--v=1",
        ])  # fmt: skip

        def ready() -> tuple[bool, str]:
            if not self.layout.ca_file.exists():
                return False, "no serving certificate yet"
            status, body = self.client.get_text("/readyz")
            return status == 200, f"/readyz {status}: {body[:200]}"

        self._wait("kube-apiserver /readyz", ready)

    def _start_containerd(self) -> None:
        self._spawn(
            "containerd",
            [str(build.BIN / "containerd"), "--config", str(config.containerd_config(self.layout))],
        )
        ctr = [str(build.BIN / "ctr"), "--address", str(self.layout.containerd_socket), "version"]

        def serving() -> tuple[bool, str]:
            done = subprocess.run(ctr, capture_output=True, text=True, check=False)
            return done.returncode == 0, (done.stdout + done.stderr).strip()[-200:]

        self._wait("containerd", serving)
        work = self.run_dir / "images"
        work.mkdir(exist_ok=True)
        for name in images.IMAGES:
            images.import_image(name, images.build(name, work), self.layout.containerd_socket)

    def _start_node_agents(self) -> None:
        kubeconfig = self.layout.kubeconfig
        for name in ("kube-controller-manager", "kube-scheduler"):
            extra = [
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.run_dir / 'apiserver' / 'sa.key'}",
                f"--root-ca-file={self.layout.ca_file}",
                "--allocate-node-cidrs=false",
            ] if name == "kube-controller-manager" else []  # fmt: skip
            self._spawn(name, [
                str(build.BIN / name), f"--kubeconfig={kubeconfig(name)}",
                f"--authentication-kubeconfig={kubeconfig(name)}",
                f"--authorization-kubeconfig={kubeconfig(name)}",
                "--bind-address=127.0.0.1", "--leader-elect=false", *extra,
            ])  # fmt: skip
        config.cni_config(self.layout)
        self._spawn("kubelet", [
            str(build.BIN / "kubelet"), f"--config={config.kubelet_config(self.layout)}",
            f"--kubeconfig={kubeconfig('kubelet')}", f"--root-dir={self.run_dir / 'kubelet' / 'root'}",
            f"--node-ip={host.NODE_IP}", f"--hostname-override={config.NODE_NAME}", "--v=1",
        ])  # fmt: skip
        self._spawn(
            "kube-proxy", [str(build.BIN / "kube-proxy"), f"--config={config.kube_proxy_config(self.layout)}"]
        )

    def _wait_node_ready(self) -> None:
        def ready() -> tuple[bool, str]:  # the node is not found until the kubelet registers it
            found = CoreV1Api(self.client).read_node(config.NODE_NAME).status
            ready = next((c for c in found.conditions or [] if c.type == "Ready"), None)
            return bool(ready and ready.status == "True"), f"Ready: {ready}"

        self._wait(f"node {config.NODE_NAME} Ready", ready)

    def _wait_kube_proxy(self) -> None:
        def healthy() -> tuple[bool, str]:
            with api.network_namespace(self.netns.path):
                conn = http.client.HTTPConnection("127.0.0.1", 10256, timeout=5)
                conn.connect()
            try:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                return response.status == 200, f"/healthz {response.status}: {response.read()[:200]!r}"
            finally:
                conn.close()

        self._wait("kube-proxy /healthz", healthy)

    def _start_coredns(self) -> None:
        for obj in dns.manifests():
            api.apply(self.client, obj)

        def ready() -> tuple[bool, str]:
            status = AppsV1Api(self.client).read_namespaced_deployment_status(dns.NAME, dns.NAMESPACE).status
            return (status.ready_replicas or 0) >= 1, f"status {status}"

        self._wait("CoreDNS Deployment ready", ready)

    # --- stop -----------------------------------------------------------------------------------

    def _terminate(self, name: str, grace: float = 20) -> None:
        processes.terminate(self.processes.pop(name, None), grace)

    def _remove_pods(self) -> None:
        """Every pod sandbox through the CRI (CNI teardown, pod network namespaces, shims)."""
        if "containerd" not in self.processes or self.processes["containerd"].poll() is not None:
            return
        # crictl's own 2 s timeout cancels a busy machine's StopPodSandbox halfway ("context
        # canceled"), leaving the sandbox's pause process running after its shim is gone.
        crictl = [
            str(build.BIN / "crictl"),
            f"--runtime-endpoint=unix://{self.layout.containerd_socket}",
            "--timeout=120s",
        ]
        done = subprocess.run(
            [*self.netns.enter(), *crictl, "rmp", "--all", "--force"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            self.say(f"crictl rmp: {done.stderr.strip()}")

    def stop(self) -> None:
        stopped = False
        try:
            if (client := self.__dict__.pop("client", None)) is not None:
                client.close()  # its pooled connections, made in the namespace about to go
            self._stop()
            stopped = True
        finally:
            self._lock.release(keep_record=not stopped)  # what a failed stop left: the next start's

    def _stop(self) -> None:
        if self._iptables_before is None:  # start() never touched the machine
            return
        started = time.monotonic()
        self._terminate("kubelet")
        self._remove_pods()
        for name in (
            "kube-proxy",
            "kube-scheduler",
            "kube-controller-manager",
            "containerd",
            "kube-apiserver",
            "etcd",
        ):
            self._terminate(name)
        for line in leftovers.undo(self.run_dir, self.netns.name, self._sysctls.saved, self._outside_before):
            self.say(line)
        self.timings["stop"] = time.monotonic() - started
        if problems := self.leftovers():
            raise RuntimeError("the node's stop left: " + "; ".join(problems))
        self.say(f"stopped in {self.timings['stop']:.1f} s, nothing left behind")

    def leftovers(self) -> list[str]:
        problems = leftovers.processes(self.run_dir)
        problems += [f"mount {m}" for m in host.mounts_under(str(self.run_dir))]
        problems += [f"network namespace {n}" for n in host.netns_names() - self._netns_before]
        problems += [f"sysctl {s}" for s in self._sysctls.differing()]
        made = {
            p for p in [*host.OUTSIDE_PATHS, *host.kubepods_cgroups()] if p.exists()
        } - self._outside_before
        problems += [f"{p} (made by the node)" for p in sorted(made)]
        if host.iptables_rules() != self._iptables_before:
            problems.append("the machine's iptables rules changed")
        return problems
