"""The pod: PodRunner, the rendered Deployment's pod, its Services and its database."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from mlflow_gitops.podrunner.base import DEFAULT_RENDER, NAMESPACE, Obj, PodRunnerError
from mlflow_gitops.podrunner.container_launch import run_container
from mlflow_gitops.podrunner.containers import security_context
from mlflow_gitops.podrunner.images import Image
from mlflow_gitops.podrunner.kubelet_env import Service, kubelet_env, service_link_env, services_of
from mlflow_gitops.podrunner.pod_network import start_pod_network
from mlflow_gitops.podrunner.postgres import Postgres, cluster_of
from mlflow_gitops.podrunner.preflight import preflight
from mlflow_gitops.podrunner.processes import Proc, free_port, port_busy, wait_http_ok
from mlflow_gitops.podrunner.render import Render
from mlflow_gitops.podrunner.runonce import run_pod_spec
from mlflow_gitops.podrunner.store import Store, generate_test_secrets
from mlflow_gitops.podrunner.volumes import materialize_volumes


@dataclass
class PodRunner:
    """The rendered Deployment's pod, its Services and its database, on this machine (the package
    docstring says how each part is mapped, and what the benchmark and the fault tests call).

    `args`/`env_overrides` replace the main container's args / add env after the kubelet's
    resolution (the benchmark); `cpus` pins the pod (and PostgreSQL unless `postgres_cpus`);
    `replica_of` makes this a second pod of another runner's Deployment (its PostgreSQL, test
    secrets and claims shared); `init_containers` names the init containers to run (None: all);
    `claim_ownership` = (uid, gid, mode) presents a new claim as an NFS export would; `venv` is the
    image's venv for this pod alone (default VENV), e.g. the previous MLflow minor's.
    """

    render_path: Path = DEFAULT_RENDER
    deployment_name: str = "mlflow"
    local_port: int | None = None  # None: any free port
    cpus: Sequence[int] | None = None
    postgres_cpus: Sequence[int] | None = None
    args: Sequence[str] | None = None
    env_overrides: Mapping[str, str] = field(default_factory=dict)
    stream_logs: bool = False  # the main container's output to this terminal (make up)
    keep: bool = bool(os.environ.get("PODRUNNER_KEEP"))
    namespace: str = NAMESPACE
    replica_of: PodRunner | None = None
    init_containers: Sequence[str] | None = None
    claim_ownership: tuple[int, int, int] | None = None
    venv: Path | None = None  # the image's venv for this pod (None: VENV), e.g. a previous MLflow's

    render: Render = field(init=False)
    deployment: Obj = field(init=False)
    test_secrets: dict[str, dict[str, str]] = field(init=False)
    store: Store = field(init=False)
    services: list[Service] = field(init=False)
    base: Path = field(init=False)
    postgres: Postgres = field(init=False)
    server: Proc = field(init=False)
    server_env: dict[str, str] = field(init=False)
    server_argv: list[str] = field(init=False)
    init_logs: dict[str, str] = field(init=False, default_factory=dict)
    init_exited_at: dict[str, float] = field(init=False, default_factory=dict)  # time.monotonic()
    init_started: dict[str, Proc] = field(init=False, default_factory=dict)  # the current pod's
    volumes: dict[str, tuple[Path, bool]] = field(init=False, default_factory=dict)  # the current pod's
    pods_started: int = field(init=False, default=0)
    _pod_dir: Path | None = field(init=False, default=None)
    _hostname: str = field(init=False, default="")
    _pause: Proc | None = field(init=False, default=None)
    _forwarders: list[Proc] = field(init=False, default_factory=list)
    _containers: list[Proc] = field(init=False, default_factory=list)  # every container run in the pod
    _started: bool = field(init=False, default=False)

    # -- facts -------------------------------------------------------------------------------

    def __post_init__(self) -> None:
        self.render = Render.load(Path(self.render_path), self.namespace)
        self.deployment = self.render.one("Deployment", self.deployment_name)
        if self.replica_of is not None:
            self.test_secrets = self.replica_of.test_secrets  # the same Vault
        else:
            self.test_secrets = generate_test_secrets(self.render)
        self.store = Store.build(self.render, self.test_secrets)
        self.services = services_of(self.render)

    @property
    def pod(self) -> Obj:
        return dict(self.deployment["spec"]["template"]["spec"])

    @property
    def main_container(self) -> Obj:
        return dict(self.pod["containers"][0])

    @property
    def container_port(self) -> int:
        ports = self.main_container.get("ports") or []
        if not ports:
            raise PodRunnerError("spec.template.spec.containers[0].ports: the server declares no port")
        return int(ports[0]["containerPort"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    @property
    def route_host(self) -> str:
        hosts = self.render.route_hostnames()
        if not hosts:
            raise PodRunnerError(f"{self.render.path}: no HTTPRoute hostname")
        return hosts[0]

    @property
    def service_host(self) -> str:
        return self.render.service_host(self.deployment)

    @property
    def pod_netns(self) -> str:
        assert self._pause is not None, "no pod is running"
        return f"/proc/{self._pause.pid}/ns/net"

    @property
    def claims_dir(self) -> Path:
        """Where the claims live on this machine (shared with `replica_of`); they outlive pods."""
        return self.replica_of.claims_dir if self.replica_of is not None else self.base / "claims"

    def volume_path(self, name: str) -> Path:
        """The host directory behind the current pod's volume `name` (for a claim, the claim's)."""
        return self.volumes[name][0]

    def in_pod(self, argv: Sequence[str]) -> list[str]:
        """argv run inside the pod's network namespace (e.g. a load generator without the port-forward)."""
        return ["nsenter", f"--net={self.pod_netns}", "--", *argv]

    def resolved_env(
        self, container: Obj, where: str, image: Image, hostname: str, pod: Obj | None = None
    ) -> dict[str, str]:
        pod = self.pod if pod is None else pod
        uid = security_context(container, pod)["runAsUser"]
        env = dict(image.env)
        env |= kubelet_env(
            container,
            self.store,
            service_link_env(self.services, self.namespace) if pod.get("enableServiceLinks", True) else {},
            where,
        )
        env.setdefault("HOSTNAME", hostname)
        env.setdefault("HOME", image.homes.get(uid, "/"))
        return env

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self, pod: bool = True) -> None:
        """PostgreSQL (unless shared through `replica_of`), then the pod unless `pod` is False."""
        preflight()
        if self.local_port is None:
            self.local_port = free_port()
        elif port_busy(self.local_port):
            raise PodRunnerError(f"127.0.0.1:{self.local_port} is busy: choose another local port")
        self.base = Path(tempfile.mkdtemp(prefix="mlflow-podrunner-"))
        self.base.chmod(0o711)
        (self.base / "logs").mkdir()
        self._started = True
        try:
            self._start_database()
            if pod:
                self.start_pod()
        except BaseException:
            self.stop()
            raise

    def _start_database(self) -> None:
        if self.replica_of is not None:
            self.postgres = self.replica_of.postgres
            return
        self.postgres = Postgres.for_cluster(self._cluster(), self.store, self.base / "postgres")
        self.postgres.start(self.postgres_cpus if self.postgres_cpus is not None else self.cpus)

    def _cluster(self) -> Obj:
        return cluster_of(self.render, self.main_container, self.store)

    def start_pod(self, ready_timeout: float = 300, *, server: bool = True) -> None:
        """Create the pod: namespaces, volumes, Service forwarders and the port-forward, the init
        containers in order (each must exit 0), then the server; returns once it is ready. With
        `server=False` the pod stops short of its server: its network, where the Services resolve,
        hosts Job pods (`run_pod_spec`) before any server runs, as a hook Job runs before a rollout."""
        if self._pause is not None:
            raise PodRunnerError("a pod is running already: stop_pod() first")
        self.pods_started += 1
        self._pod_dir = self.base / f"pod-{self.pods_started}"
        (self._pod_dir / "logs").mkdir(parents=True)
        pod = self.pod
        fs_group = (pod.get("securityContext") or {}).get("fsGroup")
        self.volumes = materialize_volumes(
            pod,
            self.render,
            self.store,
            self._pod_dir,
            fs_group,
            claims=self.claims_dir,
            claim_ownership=self.claim_ownership,
        )
        self.init_logs, self.init_exited_at, self.init_started = {}, {}, {}
        self._hostname = f"{self.deployment_name}-podrunner-{secrets.token_hex(3)}"
        start_pod_network(self)

        for i, c in enumerate(pod.get("initContainers", [])):
            if self.init_containers is not None and c["name"] not in self.init_containers:
                continue
            where = f"spec.template.spec.initContainers[{i}] ({c['name']})"
            proc = run_container(self, c, where, self.volumes)
            self.init_started[c["name"]] = proc
            try:
                code = proc.popen.wait(600)
            except subprocess.TimeoutExpired:
                proc.stop(signal.SIGKILL, 1)
                raise PodRunnerError(f"{where}: still running after 600 s:\n{proc.log_tail()}") from None
            self.init_exited_at[c["name"]] = time.monotonic()
            self.init_logs[c["name"]] = proc.log.read_text(errors="replace") if proc.log else ""
            if code != 0:
                raise PodRunnerError(f"{where}: exited {code}:\n{proc.log_tail()}")
        if not server:
            return
        if len(pod["containers"]) != 1:
            raise PodRunnerError("spec.template.spec.containers: only a single-container pod is supported")
        self.server = run_container(
            self, pod["containers"][0], "spec.template.spec.containers[0] (mlflow)", self.volumes, main=True
        )
        self._wait_ready(ready_timeout)

    def init_log(self, name: str) -> str:
        """What the current pod's init container `name` has logged so far, while it runs or after
        ("" before it starts): for tests that act on a line it prints."""
        proc = self.init_started.get(name)
        return proc.log.read_text(errors="replace") if proc is not None and proc.log else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of the server at once (an OOM kill, `kill -9` of the container).
        The rest of the pod stays until stop_pod() or restart_pod()."""
        self.server.kill_tree(sig)

    def stop_pod(self) -> None:
        """Delete the pod: SIGTERM to the server and SIGKILL after terminationGracePeriodSeconds,
        then every other container, the forwarders and the namespaces. Claims and database stay."""
        grace = float(self.pod.get("terminationGracePeriodSeconds", 30))
        self.init_started = {}
        if getattr(self, "server", None) is not None:
            self.server.stop(signal.SIGTERM, grace)
        for proc in [*self._containers, *self._forwarders]:
            proc.stop(signal.SIGTERM, 5)
        self._containers, self._forwarders = [], []
        if self._pause is not None:
            self._pause.stop(signal.SIGTERM, 5)
            self._pause = None
        if self._pod_dir is not None:
            for vol in [*self._pod_dir.glob("volumes/*"), *self._pod_dir.glob("test-pods/*/volumes/*")]:
                if os.path.ismount(vol):
                    subprocess.run(["umount", "-l", str(vol)], check=False)

    def restart_pod(self, ready_timeout: float = 300) -> None:
        """What `strategy: Recreate` does: the old pod is gone before the new one starts (from its
        init containers, on the same claims and database)."""
        self.stop_pod()
        self.start_pod(ready_timeout)

    def run_init_container(self, name: str) -> Proc:
        """Start the init container `name` once more in the running pod and return without waiting
        (the kubelet retrying it, or the same container of another pod)."""
        for i, c in enumerate(self.pod.get("initContainers", [])):
            if c["name"] == name:
                return run_container(
                    self, c, f"spec.template.spec.initContainers[{i}] ({name})", self.volumes
                )
        raise PodRunnerError(f"Deployment {self.deployment_name} has no init container {name!r}")

    def run_test_pod(self, name: str, timeout: float = 300) -> tuple[int, str]:
        """Run the render's Pod `name` (a `helm test` hook) to completion beside the server: its own
        volumes, env and securityContext, in this pod's network namespace, where the Services resolve
        and forward as in the cluster. Returns (exit code, output)."""
        return self.run_pod_spec(f"Pod {name}", self.render.one("Pod", name)["spec"], timeout)

    def run_cronjob(self, name: str, timeout: float = 300) -> tuple[int, str]:
        """Run one Job of the render's CronJob `name` as the kubelet runs that Job's pod (the
        jobTemplate's pod spec), to completion beside the server. Returns (exit code, output)."""
        template = self.render.one("CronJob", name)["spec"]["jobTemplate"]["spec"]["template"]
        return self.run_pod_spec(f"CronJob {name} spec.jobTemplate.spec.template", template["spec"], timeout)

    def run_pod_spec(self, where: str, spec: Obj, timeout: float = 300) -> tuple[int, str]:
        """Run a pod spec with `restartPolicy: Never` to completion beside the server
        (runonce.run_pod_spec). Returns (exit code of the last container run, their output)."""
        return run_pod_spec(self, where, spec, timeout)

    def _wait_ready(self, timeout: float = 300) -> None:
        probe = self.main_container.get("readinessProbe", {}).get("httpGet", {})
        wait_http_ok(self.server, f"{self.url}{probe.get('path', '/health')}", timeout)

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self.stop_pod()
        if self.replica_of is None and getattr(self, "postgres", None) is not None:
            self.postgres.stop()
        if self.keep:
            print(f"podrunner: kept {self.base}", file=sys.stderr)
            return
        shutil.rmtree(self.base, ignore_errors=True)
