"""A container of the pod: its effective securityContext, the pod's network files, and the spec and
launcher the `_enter` helper turns into the running container."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow_gitops.podrunner.base import CLUSTER_DOMAIN, HELPER, VENV, Obj, PodRunnerError
from mlflow_gitops.podrunner.images import Image
from mlflow_gitops.podrunner.kubelet_env import Service
from mlflow_gitops.podrunner.volumes import container_mounts


def security_context(container: Obj, pod: Obj) -> dict[str, Any]:
    """The container's effective securityContext: the pod's user fields under its own."""
    pod_sc = pod.get("securityContext") or {}
    sc = {
        **{k: v for k, v in pod_sc.items() if k in ("runAsUser", "runAsGroup", "runAsNonRoot")},
        **(container.get("securityContext") or {}),
    }
    sc.setdefault("runAsUser", 0)
    sc.setdefault("runAsGroup", sc["runAsUser"])
    if sc.get("runAsNonRoot") and sc["runAsUser"] == 0:
        raise PodRunnerError(
            f"container {container['name']}: runAsNonRoot with uid 0 (the kubelet would refuse it)"
        )
    return sc


def write_network_files(pod_dir: Path, hostname: str, services: Sequence[Service], namespace: str) -> None:
    """The pod's /etc/hosts (its Services by their four DNS names) and resolv.conf."""
    lines = [
        "# Kubernetes-managed hosts file (mlflow-podrunner).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"127.0.0.1\t{hostname}",
    ]
    for svc in services:
        names = [
            svc.name,
            f"{svc.name}.{svc.namespace}",
            f"{svc.name}.{svc.namespace}.svc",
            f"{svc.name}.{svc.namespace}.svc.{CLUSTER_DOMAIN}",
        ]
        lines.append(f"{svc.address}\t{' '.join(names)}")
    (pod_dir / "hosts").write_text("\n".join(lines) + "\n")
    ns = namespace
    (pod_dir / "resolv.conf").write_text(
        f"search {ns}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
        "nameserver 127.0.0.1\noptions ndots:5\n"
    )
    for name in ("hosts", "resolv.conf"):
        (pod_dir / name).chmod(0o644)


def enter_spec(
    c: Obj,
    where: str,
    volumes: Mapping[str, tuple[Path, bool]],
    pod: Obj,
    image: Image,
    env: Mapping[str, str],
    argv: Sequence[str],
    pod_dir: Path,
    scratch: Path,
) -> dict[str, Any]:
    """What `_enter` needs to become container `c` (its mounts, files, user, argv and env), after
    checking that its command exists in its image or on a volume."""
    sc = security_context(c, pod)
    mounts = container_mounts(c, volumes, where)
    cmd = argv[0]
    if cmd.startswith("/"):
        if not any(cmd == m.target or cmd.startswith(m.target.rstrip("/") + "/") for m in mounts):
            raise PodRunnerError(
                f"{where}.command {cmd!r}: not a file of the image known here nor of a volume"
            )
    elif cmd not in image.commands:
        raise PodRunnerError(f"{where}.command {cmd!r}: not a command known of image {image.repository}")
    host_paths = sorted({str((image.venv or VENV).resolve()), str(Path(sys.base_prefix).resolve())})
    pod_sc = pod.get("securityContext") or {}
    groups = sorted(
        {*([pod_sc["fsGroup"]] if "fsGroup" in pod_sc else []), *pod_sc.get("supplementalGroups", [])}
    )
    drops = [d.upper() for d in (sc.get("capabilities") or {}).get("drop", [])]
    spec = {
        "scratch": str(scratch),
        "mounts": [m.__dict__ for m in mounts],
        "files": {
            "/etc/hosts": str(pod_dir / "hosts"),
            "/etc/resolv.conf": str(pod_dir / "resolv.conf"),
        },
        "host_paths": host_paths,
        "dirs": [list(d) for d in image.dirs],
        "busybox": image.busybox,
        "applet_overrides": dict(image.applet_overrides),
        "read_only_root": bool(sc.get("readOnlyRootFilesystem")),
        "workdir": c.get("workingDir") or image.workdir,
        "uid": int(sc["runAsUser"]),
        "gid": int(sc["runAsGroup"]),
        "groups": groups,
        "no_new_privs": sc.get("allowPrivilegeEscalation") is False,
        "drop_all_caps": "ALL" in drops,
        "argv": list(argv),
        "env": dict(env),
    }
    scratch.mkdir(parents=True)
    return spec


def enter_argv(spec_file: Path, pod_netns: str, pause_pid: int) -> list[str]:
    """The launcher of one container: into the pod's network and UTS namespaces, a mount namespace
    of its own, then the `_enter` helper."""
    return [
        "nsenter",
        f"--net={pod_netns}",
        f"--uts=/proc/{pause_pid}/ns/uts",
        "--",
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        *HELPER,
        "_enter",
        str(spec_file),
    ]


def target_port(port: Obj, container: Obj) -> int:
    """A Service port's targetPort as a number (a name is looked up in the container's ports)."""
    target = port.get("targetPort", port["port"])
    if isinstance(target, int):
        return target
    for p in container.get("ports") or []:
        if p.get("name") == target:
            return int(p["containerPort"])
    raise PodRunnerError(f"Service port {port.get('name')}: targetPort {target!r} names no container port")
