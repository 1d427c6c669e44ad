"""Flux on the node: its source-, kustomize- and helm-controller as processes in the node's network
namespace (as the node's admin, like kube_router), their CRDs from the same Go modules, and a Git
server there that serves this repository to source-controller (the node has no network).

* The controllers are ./bin's, from `make node-flux` (mlflow_gitops.node.addons: the pins
  FLUX_SOURCE_CONTROLLER_VERSION, FLUX_KUSTOMIZE_CONTROLLER_VERSION, FLUX_HELM_CONTROLLER_VERSION),
  each on its own metrics and health port of the node's address, leader election off, watching all
  namespaces. source-controller serves its artifacts on STORAGE_PORT, the address the other two
  fetch them from.
* The CRDs are every file of `config/crd/bases` of each controller's module at its pin.
* GitServer is `git http-backend` (Debian's git, smart HTTP as go-git speaks it) behind a small
  HTTP server whose socket is bound inside the namespace; it serves the bare repositories of a
  directory.

    with GitServer(node, repos), Controllers(node):
        ...  # GitRepository, Kustomization and HelmRelease objects are reconciled
"""

from __future__ import annotations

import http.client
import http.server
import os
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from mlflow_gitops import go_modules
from mlflow_gitops.node import addons, api, host, processes

if TYPE_CHECKING:
    from mlflow_gitops.node.node import Node

NAMESPACE = "flux-system"  # RUNTIME_NAMESPACE: where the controllers would run in a cluster
GIT_PORT = 19418
STORAGE_PORT = 19090
# name -> (metrics port, health port); the defaults (:8080, :9440) would collide between the three.
PORTS = {"source-controller": (18080, 19440), "kustomize-controller": (18081, 19441), "helm-controller": (18082, 19442)}  # fmt: skip
CONTROLLERS = tuple(PORTS)


def crd_files() -> list[Path]:
    """The CRD files of the three controllers' modules, at the versions ./bin's binaries are built from."""
    files = []
    for name in CONTROLLERS:
        tool = addons.by_name(name)
        bases = go_modules.module_dir(tool.module, tool.version) / "config" / "crd" / "bases"
        found = sorted(bases.glob("*.yaml"))
        if not found:
            raise RuntimeError(f"{tool.module}@{tool.version}: no CRD in config/crd/bases")
        files.extend(found)
    return files


def install_crds(client: api.NodeClient) -> list[str]:
    """Apply every Flux CRD (server-side) and wait until each is Established; returns their names."""
    return api.install_crds(client, crd_files())


class _GitHandler(http.server.BaseHTTPRequestHandler):
    """One request through `git http-backend` as CGI (GIT_PROJECT_ROOT: the server's directory)."""

    server: _GitHTTPServer

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers, up to the empty line
            pass
        return b"".join(chunks)

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._body()
        length = len(body)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(length),
            "REMOTE_ADDR": self.client_address[0],
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=300, check=False
        )
        out = done.stdout
        ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := out.find(sep)) >= 0]
        if done.returncode != 0 or not ends:
            self.send_error(500, f"git http-backend exited {done.returncode}: {done.stderr[-300:]!r}")
            return
        end, size = min(ends)
        head, payload = out[:end], out[end + size :]
        headers = [line.split(b":", 1) for line in head.splitlines() if b":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.strip().lower() == b"status"), 200)
        self.send_response(status)
        for key, value in headers:
            if key.strip().lower() != b"status":
                self.send_header(key.strip().decode(), value.strip().decode())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.server.requests.append(f"{self.command} {self.path} {status}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _GitHTTPServer(http.server.ThreadingHTTPServer):
    root: Path
    requests: list[str]


class GitServer:
    """Smart HTTP for the bare repositories under `root`, on NODE_IP:GIT_PORT inside the namespace."""

    def __init__(self, node: Node, root: Path) -> None:
        self.node, self.root = node, root
        self.server: _GitHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def url(self, repository: str) -> str:
        return f"http://{host.NODE_IP}:{GIT_PORT}/{repository}"

    def __enter__(self) -> Self:
        with api.network_namespace(self.node.netns.path):
            self.server = _GitHTTPServer((host.NODE_IP, GIT_PORT), _GitHandler)
        self.server.root, self.server.requests = self.root, []
        self.thread = threading.Thread(target=self.server.serve_forever, name="git-http", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=30)

    @property
    def requests(self) -> list[str]:
        return list(self.server.requests) if self.server else []


def git(*args: str, cwd: Path | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "node test", "GIT_AUTHOR_EMAIL": "node-test@localhost",
        "GIT_COMMITTER_NAME": "node test", "GIT_COMMITTER_EMAIL": "node-test@localhost",
        "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
    }  # fmt: skip
    done = subprocess.run(
        ["git", "-c", "safe.directory=*", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout.strip()


def bare_clone(source: Path, bare: Path, branch: str) -> str:
    """A bare repository with the commit checked out in `source` as `branch`; returns its hash."""
    commit = git("rev-parse", "HEAD", cwd=source)
    git("init", "--quiet", "--bare", str(bare))
    git("--git-dir", str(bare), "fetch", "--quiet", str(source), f"+{commit}:refs/heads/{branch}")
    git("--git-dir", str(bare), "symbolic-ref", "HEAD", f"refs/heads/{branch}")
    return commit


def bare_repository_of(directory: Path, bare: Path, branch: str) -> str:
    """A bare repository of one commit holding the files of `directory`; returns its hash."""
    work = bare.with_suffix(".work")
    git("init", "--quiet", f"--initial-branch={branch}", str(work))
    directory = directory.resolve()
    git("--work-tree", str(directory), "--git-dir", str(work / ".git"), "add", "--all", ".", cwd=directory)
    git("commit", "--quiet", "-m", f"{directory.name}", cwd=work)
    return bare_clone(work, bare, branch)


class Controllers(processes.Started):
    """The three Flux controllers, each a process in the node's namespace; stop() ends them."""

    def __init__(self, node: Node, timeout: float = 300) -> None:
        self.node, self.timeout = node, timeout
        self.state = node.run_dir / "flux"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, name: str) -> list[str]:
        metrics, health = PORTS[name]
        cmd = [
            str(addons.by_name(name).path), f"--metrics-addr={host.NODE_IP}:{metrics}",
            f"--health-addr={host.NODE_IP}:{health}", "--enable-leader-election=false",
            "--watch-all-namespaces=true", "--log-level=info", "--log-encoding=console",
        ]  # fmt: skip
        if name == "source-controller":
            address = f"{host.NODE_IP}:{STORAGE_PORT}"
            cmd += [f"--storage-path={self.state / 'artifacts'}", f"--storage-addr={address}", f"--storage-adv-addr={address}"]  # fmt: skip
        return cmd

    def start(self) -> None:
        (self.state / "artifacts").mkdir(parents=True, exist_ok=True)  # source-controller wants it made
        for name in CONTROLLERS:
            home = self.state / name
            home.mkdir(parents=True, exist_ok=True)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(home),
                "KUBECONFIG": str(self.node.layout.kubeconfig("admin")), "RUNTIME_NAMESPACE": NAMESPACE,
            }  # fmt: skip
            log = self.node.layout.log(name)
            self.processes[name] = processes.spawn(self.node.netns.enter(), self.command(name), log, env)
        for name in CONTROLLERS:
            api.wait_for(f"{name} /readyz", lambda name=name: self._ready(name), self.timeout)

    def _ready(self, name: str) -> tuple[bool, str]:
        process = self.processes[name]
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited {process.returncode}:\n{self.tail(name)}")
        return processes.healthy(self.node.netns.path, PORTS[name][1], "/readyz")

    def alive(self) -> dict[str, int | None]:
        """Each controller's exit code, None while it runs."""
        return {name: process.poll() for name, process in self.processes.items()}

    def tail(self, name: str, lines: int = 25) -> str:
        return processes.tail(self.node.layout.log(name), lines)

    def stop(self) -> None:
        for name, process in list(self.processes.items()):
            processes.terminate(process, grace=60)
            del self.processes[name]
