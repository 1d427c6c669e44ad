"""A real Kubernetes API server for the tests in tests/api: etcd and kube-apiserver on loopback.

`make apiserver` builds both binaries into ./bin at the pins of tools/versions.env. `ApiServer`
starts them on free loopback ports in a throwaway directory, each in its own process group (so a
stop takes every child with it; they also die with the test process): etcd without fsync,
kube-apiserver with token authentication, RBAC, a service-account signing key generated for the
run and the default admission plugins plus NodeRestriction and PodSecurity, as a kubeadm cluster
has them. No controller runs: nothing gets a status, nothing is garbage-collected, and no
namespace gets its `default` ServiceAccount unless a test creates it.

Tests talk to it through the `kubernetes` client: `client()` is an ApiClient as the admin (or
another bearer token), trusting the server's own CA; tests/support/kube.py adds server-side apply of
any kind and the project's CRDs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
import yaml
from kubernetes.client import ApiClient, ApiException, Configuration

from mlflow_gitops import apiserver_build as build  # binaries and pins
from mlflow_gitops.child_process import die_with_parent

BUILD_HINT = "run `make apiserver` (builds the pinned kube-apiserver and etcd into ./bin)"
SUMMARY: list[str] = []  # lines for the end of the test run (tests/api/conftest.py prints them)


def missing_binaries() -> list[str]:
    """Binaries of `make apiserver` absent from ./bin or not reporting their pin."""
    return [f"bin/{b.name} {b.version}" for b in build.BINARIES if not build.matches(b)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ApiServer:
    workdir: Path
    token: str = "test-admin-token"
    etcd_port: int = 0
    port: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        # kube-apiserver writes its self-signed serving certificate followed by the CA that signed it.
        return self.workdir / "certs" / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    def client(self, token: str | None = "") -> ApiClient:
        """An ApiClient with a bearer token (the admin's by default; None: anonymous)."""
        configuration = Configuration(host=self.url, ssl_ca_cert=str(self.ca_file))
        if token is not None:
            configuration.api_key = {"BearerToken": token or self.token}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return ApiClient(configuration)

    def start(self, timeout: float = 120) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self._start_etcd()
        self._start_kube_apiserver()
        self._wait_ready(started + timeout)
        self._write_kubeconfig()

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # Safe with threads: the hook makes one prctl call, taking no lock the fork may have copied.
            preexec_fn=die_with_parent,  # noqa: PLW1509
            cwd=self.workdir,
        )
        log.close()
        self.processes.append(process)
        return process

    def _start_etcd(self) -> None:
        self.etcd_port, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{peer}"
        self._spawn("etcd", [
            str(build.ETCD.path), "--name", "test", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"test={peer_url}", "--unsafe-no-fsync", "--log-level", "warn",
        ])  # fmt: skip

    def _start_kube_apiserver(self) -> None:
        key, pub = self.workdir / "sa.key", self.workdir / "sa.pub"
        for cmd in (
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],
            ["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.token},test-admin,test-admin,"system:masters"\n')
        tokens.chmod(0o600)
        self.port = free_port()
        self._spawn("kube-apiserver", [
            str(build.KUBE_APISERVER.path),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'certs'}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction,PodSecurity",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pub}", f"--service-account-signing-key-file={key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true", "--profiling=false", "--v=1",
        ])  # fmt: skip

    def _wait_ready(self, deadline: float) -> None:
        last = "not started"
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{self.logs()}")
            if self.ca_file.exists():
                try:
                    with self.client() as api:  # /readyz has no typed call: a plain GET through it
                        response = api.call_api(
                            *api.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
                        )
                        body = response.read().decode(errors="replace")
                    if response.status == 200:
                        return
                    last = f"/readyz {response.status}: {body}"
                except (ApiException, urllib3.exceptions.HTTPError) as error:
                    last = str(error)
            time.sleep(0.5)
        raise RuntimeError(f"kube-apiserver not ready in time ({last}):\n{self.logs()}")

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": "test-admin", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test-admin"}}],
            "current-context": "test",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def logs(self, lines: int = 30) -> str:
        out = []
        for name in ("etcd", "kube-apiserver"):
            path = self.workdir / f"{name}.log"
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM each process group (kube-apiserver first), SIGKILL what is left after 15 s; then
        drop etcd's data (its preallocated WAL is 64 MB), keeping the logs."""
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
