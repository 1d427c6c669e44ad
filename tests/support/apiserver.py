"""A real Kubernetes API server for the tests in tests/api: etcd and kube-apiserver on loopback.

`make apiserver` builds both binaries into ./bin at the pins of tools/versions.env. `ApiServer`
starts them on free loopback ports in a throwaway directory, each in its own process group (so a
stop takes every child with it; they also die with the test process): etcd without fsync,
kube-apiserver with token authentication, RBAC, a service-account signing key generated for the
run and the default admission plugins plus NodeRestriction and PodSecurity, as a kubeadm cluster
has them. No controller runs: nothing gets a status, nothing is garbage-collected, and no
namespace gets its `default` ServiceAccount unless a test creates it.

`install_crds` installs the CRDs mlflow_gitops/schemas.py generates the kubeconform schemas from
(its CRDS table, same files, same pins) and waits until each is Established and served. Requests
are plain HTTPS (`request`), with server-side apply (`apply`) and dry runs as a client would send
them.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlflow_gitops import apiserver_build as build  # binaries and pins
from mlflow_gitops import schemas  # the CRD table

Obj = dict[str, Any]

FIELD_MANAGER = "mlflow-gitops-tests"
BUILD_HINT = "run `make apiserver` (builds the pinned kube-apiserver and etcd into ./bin)"
APPLY_PATCH = "application/apply-patch+yaml"
SUMMARY: list[str] = []  # lines for the end of the test run (tests/api/conftest.py prints them)


def missing_binaries() -> list[str]:
    """Binaries of `make apiserver` absent from ./bin or not reporting their pin."""
    return [f"bin/{b.name} {b.version}" for b in build.BINARIES if not build.matches(b)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the test process dies (Linux), so nothing outlives a crash."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Response:
    status: int
    body: Any
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("message", self.body))
        return str(self.body)


@dataclass(frozen=True)
class Resource:
    path: str  # /api/v1 or /apis/<group>/<version>
    plural: str
    namespaced: bool

    def url(self, namespace: str | None, name: str | None = None) -> str:
        parts = [self.path]
        if self.namespaced:
            parts += ["namespaces", namespace or "default"]
        parts.append(self.plural)
        if name:
            parts.append(name)
        return "/".join(parts)


@dataclass
class ApiServer:
    workdir: Path
    token: str = "test-admin-token"
    etcd_port: int = 0
    port: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    crds: list[Obj] = field(default_factory=list)  # as installed and Established (install_crds)
    _resources: dict[str, dict[str, Resource]] = field(default_factory=dict)

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
            preexec_fn=_die_with_parent,  # noqa: PLW1509
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
                    response = self.request("GET", "/readyz")
                    if response.status == 200:
                        return
                    last = f"/readyz {response.status}: {response.body}"
                except (OSError, ssl.SSLError) as error:
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

    # --- HTTP -----------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Response:
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(req, context=context, timeout=timeout) as resp:
                status, raw, headers = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as error:
            status, raw, headers = error.code, error.read(), error.headers
        try:
            parsed: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            parsed = raw.decode(errors="replace")
        return Response(status, parsed, headers.get_all("Warning") or [])

    # --- discovery and objects ------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> Resource:
        """The REST path of a kind, from the server's discovery (cached per group version)."""
        path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        if kind not in self._resources.get(api_version, {}):
            response = self.request("GET", path)
            if not response.ok:
                raise LookupError(f"{api_version} is not served: {response.message}")
            self._resources[api_version] = {
                r["kind"]: Resource(path, r["name"], r["namespaced"])
                for r in response.body["resources"]
                if "/" not in r["name"]
            }
        try:
            return self._resources[api_version][kind]
        except KeyError:
            raise LookupError(f"{kind} is not served in {api_version}") from None

    def object_url(self, obj: Obj, namespace: str | None = None) -> str:
        resource = self.resource(obj["apiVersion"], obj["kind"])
        ns = obj.get("metadata", {}).get("namespace") or namespace
        return resource.url(ns if resource.namespaced else None, obj["metadata"]["name"])

    def apply(
        self, obj: Obj, namespace: str | None = None, *, dry_run: bool = True, force: bool = True
    ) -> Response:
        """Server-side apply (`kubectl apply --server-side [--dry-run=server]`)."""
        query = {"fieldManager": FIELD_MANAGER}
        if force:
            query["force"] = "true"
        if dry_run:
            query["dryRun"] = "All"
        body = yaml.safe_dump(obj).encode()
        return self.request(
            "PATCH", self.object_url(obj, namespace), body, content_type=APPLY_PATCH, query=query
        )

    def create(self, obj: Obj, namespace: str | None = None, *, dry_run: bool = True) -> Response:
        """POST, as a controller creates an object (e.g. the ReplicaSet controller a Pod)."""
        resource = self.resource(obj["apiVersion"], obj["kind"])
        ns = obj.get("metadata", {}).get("namespace") or namespace
        query = {"dryRun": "All"} if dry_run else None
        return self.request("POST", resource.url(ns if resource.namespaced else None), obj, query=query)

    def get(self, obj: Obj, namespace: str | None = None) -> Response:
        return self.request("GET", self.object_url(obj, namespace))

    def delete(self, obj: Obj, namespace: str | None = None) -> Response:
        return self.request("DELETE", self.object_url(obj, namespace))

    def ensure(self, obj: Obj) -> Obj:
        """Apply an object for real and return it as stored."""
        response = self.apply(obj, dry_run=False)
        if not response.ok:
            raise RuntimeError(
                f"apply {obj['kind']}/{obj['metadata']['name']}: {response.status} {response.message}"
            )
        return response.body

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> Obj:
        """A namespace with its `default` ServiceAccount, as the (absent) controllers would make it."""
        ns = self.ensure(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        )
        self.ensure(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}}
        )
        return ns

    # --- CRDs -----------------------------------------------------------------------------------

    def install_crds(self, timeout: float = 120) -> list[Obj]:
        """Install the CRDs of mlflow_gitops/schemas.py and wait until each is Established and served."""
        crds = list(crds_of_schemas())
        for crd in crds:
            self.ensure(crd)
        deadline = time.monotonic() + timeout
        installed = []
        for crd in crds:
            name = crd["metadata"]["name"]
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            while True:
                stored = self.request("GET", path).body
                # A CRD just created may have no conditions yet (`null`, e.g. Argo Workflows' own YAML).
                found = (stored.get("status") or {}).get("conditions") or []
                conditions = {c["type"]: c["status"] for c in found}
                if conditions.get("Established") == "True" and self._serves(stored):
                    installed.append(stored)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {name} not Established: {stored.get('status')}")
                time.sleep(0.2)
        self.crds = installed
        return installed

    def _serves(self, crd: Obj) -> bool:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in (v["name"] for v in crd["spec"]["versions"] if v.get("served")):
            self._resources.pop(f"{group}/{version}", None)
            try:
                self.resource(f"{group}/{version}", kind)
            except LookupError:
                return False
        return True


def crds_of_schemas() -> Iterator[Obj]:
    """The CRD objects mlflow_gitops/schemas.py reads (every version of each, as the project ships it)."""
    seen = set()
    for source in schemas.CRDS:
        try:
            path = schemas.crd_path(source)  # go mod download (module cache or proxy), controller-gen
        except SystemExit as error:  # the script's way to fail; here it must not end the session
            raise RuntimeError(f"CRD of {source.kinds} unavailable: {error}") from None
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            if crd["spec"]["names"]["kind"] in source.kinds and crd["metadata"]["name"] not in seen:
                seen.add(crd["metadata"]["name"])
                yield crd


def cel_rules(crd: Obj) -> list[Obj]:
    """Every `x-kubernetes-validations` rule in a CRD's schemas ({rule, message, ...}), all versions."""
    found = []
    for version in crd["spec"]["versions"]:
        schema = version.get("schema", {}).get("openAPIV3Schema", {})
        for node in schemas.walk(schema):
            found += node.get("x-kubernetes-validations", [])
    return found
