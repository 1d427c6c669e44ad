"""The pod's network: the pause process holding its namespaces, the Services' forwarders in it
and the port-forward from this machine, as PodRunner.start_pod sets them up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlflow_gitops.podrunner.base import HELPER, ROOT
from mlflow_gitops.podrunner.containers import target_port, write_network_files
from mlflow_gitops.podrunner.processes import spawn, wait_line

if TYPE_CHECKING:
    from mlflow_gitops.podrunner.pod import PodRunner


def start_pod_network(runner: PodRunner) -> None:
    """The pause process (network and UTS namespaces, hostname), the pod's /etc/hosts and
    resolv.conf, a forwarder per Service the pod reaches (the database's to PostgreSQL, its own to
    this pod) and the port-forward from 127.0.0.1:local_port to the server's container port."""
    assert runner._pod_dir is not None
    runner._pause = spawn(
        "pause",
        ["unshare", "--net", "--uts", "--", *HELPER, "_pause", runner._hostname],
        runner._pod_dir / "logs" / "pause.log",
        cwd=ROOT,
    )
    wait_line(runner._pause, "ready", 20)
    write_network_files(runner._pod_dir, runner._hostname, runner.services, runner.namespace)
    cluster_name = runner._cluster()["metadata"]["name"]
    own = runner.render.service_for(runner.deployment)
    for svc in runner.services:
        if svc.name in (f"{cluster_name}-rw", f"{cluster_name}-r"):
            forward(
                runner,
                f"{svc.address}:5432",
                f"127.0.0.1:{runner.postgres.port}",
                listen_ns=runner.pod_netns,
                name=f"service-{svc.name}",
            )
        elif svc.name == own["metadata"]["name"] and svc.namespace == runner.namespace:
            for port in own["spec"]["ports"]:  # its endpoint: this pod
                forward(
                    runner,
                    f"{svc.address}:{port['port']}",
                    f"127.0.0.1:{target_port(port, runner.main_container)}",
                    listen_ns=runner.pod_netns,
                    connect_ns=runner.pod_netns,
                    name=f"service-{svc.name}-{port['port']}",
                )
    forward(
        runner,
        f"127.0.0.1:{runner.local_port}",
        f"127.0.0.1:{runner.container_port}",
        connect_ns=runner.pod_netns,
        name="port-forward",
    )


def forward(
    runner: PodRunner,
    listen: str,
    connect: str,
    *,
    name: str,
    listen_ns: str | None = None,
    connect_ns: str | None = None,
) -> None:
    """One forwarder (`_forward`, namespaces.cmd_forward) from `listen` to `connect`, each in the
    network namespace given (default: the host's), pinned to the runner's CPUs; returns once it
    listens. It is stopped with the pod."""
    assert runner._pod_dir is not None
    argv = [*HELPER, "_forward", listen, connect]
    if listen_ns:
        argv += ["--listen-ns", listen_ns]
    if connect_ns:
        argv += ["--connect-ns", connect_ns]
    if runner.cpus:
        argv = ["taskset", "-c", ",".join(map(str, runner.cpus)), *argv]
    proc = spawn(name, argv, runner._pod_dir / "logs" / f"{name}.log", cwd=ROOT)
    runner._forwarders.append(proc)
    wait_line(proc, "ready", 20)
