"""Run the rendered MLflow pod on this machine, as the kubelet would run it, against a real PostgreSQL.

Used by `make e2e` (tests/e2e), `make up` (a local preview) and, later, the benchmark. Everything
is read from a render (default rendered/homelab.yaml): nothing about MLflow is restated here.

How the pod is mapped onto the machine (needs root; fails loudly otherwise):

* The pod: a "pause" process holds a new network + UTS namespace (own loopback, hostname =
  a pod-like name). Every container of the pod joins it, so the server binds exactly
  `--host=0.0.0.0 --port=5000` of its args without ever clashing with the host's port 5000.
* Services: every Service the pod can see (the render's own and the ones CloudNativePG generates
  for each `Cluster`: `<name>-rw`, `-ro`, `-r`) gets an address in 127.1.0.0/24 inside the pod,
  its four DNS names (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`) in the pod's
  /etc/hosts, and the service-link variables the kubelet injects (`MLFLOW_PORT=tcp://...` etc.;
  `enableServiceLinks` defaults to true). `-rw` and `-r` forward to the throwaway PostgreSQL (a
  kube-proxy stand-in: a small forwarder listening inside the pod's namespace); `-ro` has no
  endpoint with one instance, as in the cluster. So PGHOST=mlflow-postgres-rw PGPORT=5432 from the
  rendered ConfigMap are used unchanged. The Service selecting the pod forwards its ports to the
  pod's targetPorts, so a client in the pod's network (the `helm test` Pod, `run_test_pod`) reaches
  `http://mlflow.mlflow.svc.cluster.local:80`. The pod resolves nothing else (no cluster DNS).
* PostgreSQL: Debian's server (any /usr/lib/postgresql/N), initdb in a temp dir as the `postgres`
  user, 127.0.0.1 on a free port, scram for TCP as CNPG does, every `spec.postgresql.parameters`
  of the rendered Cluster passed as `-c`, database/owner (and encoding/locale if set) from
  `spec.bootstrap.initdb`, the owner's password from the test secret below.
* Reaching the server: a port-forward (what `kubectl port-forward` does: connect to
  127.0.0.1:<containerPort> inside the pod) from 127.0.0.1:<local port> on the host.
* Containers: each runs in its own mount namespace, chrooted into a read-only overlay of the host's
  root (readOnlyRootFilesystem; writable when the render says false; the writes land in a tmpfs
  that vanishes), with the volumes bind-mounted at their container paths, a private 64 MiB
  /dev/shm (a container's default), the pod's /etc/hosts and a resolv.conf with the cluster's
  search path, cwd = the image's WORKDIR, HOME from the image, then `setpriv` to
  runAsUser/runAsGroup with fsGroup and supplementalGroups as groups, no_new_privs when
  allowPrivilegeEscalation is false and no capabilities when they drop ALL. Command and args are
  exec'ed exactly as rendered after `$(VAR)` expansion (argv[0] resolved through the container's
  PATH, as runc does): the harness checks /proc/<pid>/cmdline in the tests.
* Environment: the image's ENV, then the kubelet's resolution (envFrom in order, later sources win;
  then `env` with `$(VAR)` expansion; configMapKeyRef/secretKeyRef; service links), HOSTNAME,
  and HOME from the image's passwd. ConfigMaps and Secrets come from the render (Secret `data` is
  base64). Targets of ExternalSecrets get a local test secret generated at run time (random; never
  written to the repository): keys from `spec.target.template.data` (a literal value such as
  `username: mlflow` is kept) else `spec.data[].secretKey`.
* Volumes: emptyDir -> a temp dir (0777 + fsGroup, as the kubelet makes it; medium Memory ->
  tmpfs), configMap/secret -> files with their modes (subPath mounts bind one file), a
  persistentVolumeClaim that the render contains -> a temp dir owned by root:fsGroup 2775 (fsGroup
  applied; NB on NFS the kubelet does not apply fsGroup, the export must let uid 1001 write:
  `claim_ownership=(0, 568, 0o2775)` presents the claim as such an export). A claim outlives its
  pod: a recreated pod (`restart_pod`) and a second replica (`replica_of`) find what was left.
* Images: `burakince/mlflow:<tag>` -> the venv this module runs in (.venv with `make e2e`; the tag
  must equal its mlflow version; the image's PATH with the venv's bin first, so `mlflow` and
  `python` are the venv's; directories above the venv's interpreter that the pod's uid cannot
  traverse, such as a pyenv under /root, get o+x in the container's view only; a venv under a
  volume's path, e.g. a checkout under /tmp, is bind-mounted again, read-only, over that volume);
  `busybox:<tag>` -> Debian's busybox, with /bin/sh replaced by busybox ash inside the overlay
  (the dbchecker script uses `[[` and `function`) and busybox's applets first on PATH; `find`
  and `nc` are GNU find and OpenBSD netcat, because Debian builds busybox without `find -delete`
  and `nc -z` (a dbchecker would wait forever).

Not faithful, on purpose or by necessity: the host's Python (3.11 here, 3.13 in the image) and only
the server's pinned dependencies, not the image's cloud SDKs; PostgreSQL from Debian instead of the
CNPG operand image; CPU, memory and ephemeral-storage limits are not enforced (pin with `cpus=`,
measure PSS with PeakSampler); NetworkPolicies are not enforced; /proc, /sys and /dev are the
host's and there is no PID namespace, so when the server exits its leftover children (MLflow's
huey consumers sometimes outlive it) are SIGKILLed by `stop()` as the runtime would on PID 1's
exit, and a SIGKILLed harness leaves its processes behind; seccomp is not applied; a readiness
wait on the rendered readinessProbe path replaces the kubelet's probes; Debian's busybox 1.35
stands in for the image's tag. Anything else the render asks for and this module cannot provide
(another volume type or image, a missing ConfigMap or Secret, an absolute command outside the
volumes, fieldRef env) raises PodRunnerError naming the field.

For a benchmark: `PodRunner(render, cpus=[0], args=[...], env_overrides={...})` replaces the main
container's args / adds env after the kubelet's resolution and pins the pod (and PostgreSQL unless
`postgres_cpus`) with taskset; `.server` is the exec'ed `mlflow` process (`.pid`, `.tree()`,
`.pss_bytes()`), `.url` the port-forward, `.in_pod(argv)` runs a client inside the pod's network
namespace (no forwarder in the path), `PeakSampler` records peak PSS of process trees.

For fault tests (tests/e2e): `.kill()` SIGKILLs the server's process tree, `.restart_pod()` deletes
and recreates the pod as `strategy: Recreate` does (init containers again, same claims and
database), `.postgres.stop()` / `.postgres.resume()` / `.postgres.reset_database()`,
`.run_init_container(name)`, `.run_test_pod(name)`, `PodRunner(replica_of=other)` for a second pod
of the same Deployment, `start(pod=False)` for the database alone.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RENDER = ROOT / "rendered" / "homelab.yaml"
VENV = Path(os.environ.get("PODRUNNER_VENV", sys.prefix))  # stands in for the image's /opt/venv
NAMESPACE = "mlflow"
CLUSTER_DOMAIN = "cluster.local"
SERVICE_NET = "127.1.0."  # Service "ClusterIPs" inside the pod's network namespace
SHM_SIZE = "64m"  # a container's default /dev/shm
BUSYBOX = "/usr/bin/busybox"
TOOLS = ("unshare", "nsenter", "setpriv", "mount", "taskset")
# This module's own helpers (`_pause`, `_forward`, `_enter`): run as root on the host's filesystem,
# they import the package before any namespace or chroot could hide it. Spawned with cwd=ROOT, so
# `-m` finds the checkout's package whether or not it is installed.
HELPER = (sys.executable, "-m", "mlflow_gitops.podrunner")

Obj = dict[str, Any]


class PodRunnerError(Exception):
    """The render asks for something this machine cannot provide, or a step failed."""


# ---------------------------------------------------------------------------------------------
# The render


@dataclass(frozen=True)
class Render:
    path: Path
    objects: list[Obj]
    namespace: str = NAMESPACE

    @classmethod
    def load(cls, path: Path = DEFAULT_RENDER, namespace: str = NAMESPACE) -> Render:
        if not path.exists():
            raise PodRunnerError(f"{path}: no such render (run `make render`)")
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        return cls(path=path, objects=docs, namespace=namespace)

    def find(self, kind: str, name: str | None = None) -> list[Obj]:
        return [
            o
            for o in self.objects
            if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)
        ]

    def get(self, kind: str, name: str) -> Obj | None:
        found = self.find(kind, name)
        return found[0] if found else None

    def one(self, kind: str, name: str | None = None) -> Obj:
        found = self.find(kind, name)
        if len(found) != 1:
            raise PodRunnerError(f"{self.path}: expected one {kind} {name or ''}, found {len(found)}")
        return found[0]

    def route_hostnames(self) -> list[str]:
        return [h for r in self.find("HTTPRoute") for h in r["spec"].get("hostnames", [])]

    def service_for(self, deployment: Obj) -> Obj:
        labels = deployment["spec"]["template"]["metadata"].get("labels", {})
        for svc in self.find("Service"):
            selector = svc["spec"].get("selector") or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                return svc
        raise PodRunnerError(
            f"no Service in {self.path} selects Deployment {deployment['metadata']['name']}"
        )

    def service_host(self, deployment: Obj) -> str:
        """The in-cluster Host header of the pod's Service: `name.ns.svc.cluster.local:port`."""
        svc = self.service_for(deployment)
        port = svc["spec"]["ports"][0]["port"]
        return f"{svc['metadata']['name']}.{self.namespace}.svc.{CLUSTER_DOMAIN}:{port}"


# ---------------------------------------------------------------------------------------------
# ConfigMaps and Secrets: rendered ones as rendered, ExternalSecret targets from a test secret


def external_secret_targets(render: Render) -> dict[str, dict[str, str | None]]:
    """Secret name -> key -> literal value from the template (None when Vault provides it)."""
    targets: dict[str, dict[str, str | None]] = {}
    for es in render.find("ExternalSecret"):
        spec = es["spec"]
        name = spec.get("target", {}).get("name") or es["metadata"]["name"]
        template_data = spec.get("target", {}).get("template", {}).get("data")
        keys: dict[str, str | None] = {}
        if template_data:
            for key, value in template_data.items():
                text = str(value)
                keys[key] = None if "{{" in text else text
        else:
            for item in spec.get("data", []):
                keys[item["secretKey"]] = None
        if not keys:
            raise PodRunnerError(
                f"ExternalSecret {es['metadata']['name']}: no keys in spec.data or target.template.data"
            )
        targets[name] = keys
    return targets


def generate_test_secrets(render: Render) -> dict[str, dict[str, str]]:
    """Random values for every Secret an ExternalSecret would write (kept literals stay)."""
    return {
        name: {k: v if v is not None else secrets.token_urlsafe(32) for k, v in keys.items()}
        for name, keys in external_secret_targets(render).items()
    }


@dataclass(frozen=True)
class Store:
    """What the API server would hold for the pod's namespace."""

    configmaps: dict[str, dict[str, bytes]]
    secrets: dict[str, dict[str, bytes]]

    @classmethod
    def build(cls, render: Render, test_secrets: Mapping[str, Mapping[str, str]]) -> Store:
        cms: dict[str, dict[str, bytes]] = {}
        for cm in render.find("ConfigMap"):
            data = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
            data |= {k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()}
            cms[cm["metadata"]["name"]] = data
        sec: dict[str, dict[str, bytes]] = {}
        for s in render.find("Secret"):
            name = s["metadata"]["name"]
            if name in test_secrets:
                raise PodRunnerError(f"Secret {name} is both rendered and the target of an ExternalSecret")
            data = {k: base64.b64decode(v) for k, v in (s.get("data") or {}).items()}
            data |= {k: str(v).encode() for k, v in (s.get("stringData") or {}).items()}
            sec[name] = data
        for name, values in test_secrets.items():
            sec[name] = {k: v.encode() for k, v in values.items()}
        return cls(configmaps=cms, secrets=sec)

    def source(self, kind: str, name: str, optional: bool, where: str) -> dict[str, bytes] | None:
        table = self.configmaps if kind == "ConfigMap" else self.secrets
        if name in table:
            return table[name]
        if optional:
            return None
        raise PodRunnerError(
            f"{where}: {kind} {name!r} is neither in the render nor written by an ExternalSecret"
        )


# ---------------------------------------------------------------------------------------------
# The kubelet's environment


def expand(text: str, mapping: Callable[[str], str | None]) -> str:
    """Kubernetes `$(VAR)` expansion: `$$` escapes, unknown references stay as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                close = text.find(")", i + 2)
                if close != -1:
                    name = text[i + 2 : close]
                    value = mapping(name)
                    out.append(value if value is not None else f"$({name})")
                    i = close + 1
                    continue
                out.append("$(")
                i += 2
                continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    address: str
    ports: tuple[tuple[str | None, int, str], ...]  # (name, port, protocol)


def services_of(render: Render) -> list[Service]:
    """The Services the pod sees: the render's, CNPG's generated ones, and `kubernetes`."""
    found: list[tuple[str, str, tuple[tuple[str | None, int, str], ...]]] = []
    for svc in render.find("Service"):
        if svc["spec"].get("clusterIP") == "None":
            continue
        ports = tuple((p.get("name"), int(p["port"]), p.get("protocol", "TCP")) for p in svc["spec"]["ports"])
        found.append((svc["metadata"]["name"], render.namespace, ports))
    for cluster in render.find("Cluster"):
        for suffix in ("rw", "ro", "r"):
            found.append(
                (f"{cluster['metadata']['name']}-{suffix}", render.namespace, (("postgres", 5432, "TCP"),))
            )
    found.append(("kubernetes", "default", (("https", 443, "TCP"),)))
    return [Service(n, ns, f"{SERVICE_NET}{i}", p) for i, (n, ns, p) in enumerate(found, start=1)]


def service_link_env(services: Sequence[Service], namespace: str) -> dict[str, str]:
    """The `{SVC}_SERVICE_HOST`, `{SVC}_PORT...` variables of enableServiceLinks."""
    env: dict[str, str] = {}
    for svc in services:
        if svc.namespace != namespace and svc.name != "kubernetes":
            continue
        prefix = svc.name.upper().replace("-", "_")
        first_name, first_port, first_proto = svc.ports[0]
        env[f"{prefix}_SERVICE_HOST"] = svc.address
        env[f"{prefix}_SERVICE_PORT"] = str(first_port)
        for pname, port, _proto in svc.ports:
            if pname:
                env[f"{prefix}_SERVICE_PORT_{pname.upper().replace('-', '_')}"] = str(port)
        env[f"{prefix}_PORT"] = f"{first_proto.lower()}://{svc.address}:{first_port}"
        for _pname, port, proto in svc.ports:
            base = f"{prefix}_PORT_{port}_{proto.upper()}"
            env[base] = f"{proto.lower()}://{svc.address}:{port}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(port)
            env[f"{base}_ADDR"] = svc.address
    return env


def kubelet_env(container: Obj, store: Store, service_env: Mapping[str, str], where: str) -> dict[str, str]:
    """The variables the kubelet hands the runtime for one container (image ENV not included)."""
    tmp: dict[str, str] = {}
    for i, src in enumerate(container.get("envFrom", [])):
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            kind, ref = "ConfigMap", src["configMapRef"]
        elif "secretRef" in src:
            kind, ref = "Secret", src["secretRef"]
        else:
            raise PodRunnerError(f"{where}.envFrom[{i}]: unknown source {sorted(src)}")
        data = store.source(kind, ref["name"], bool(ref.get("optional")), f"{where}.envFrom[{i}]")
        for key, value in (data or {}).items():
            name = prefix + key
            if not name or "=" in name:
                raise PodRunnerError(f"{where}.envFrom[{i}]: key {key!r} is not a valid variable name")
            tmp[name] = value.decode()

    def mapping(name: str) -> str | None:
        return tmp.get(name, service_env.get(name))

    for i, item in enumerate(container.get("env", [])):
        name = item["name"]
        value = item.get("value", "")
        if not isinstance(value, str):
            raise PodRunnerError(f"{where}.env[{i}] ({name}): value {value!r} is not a string")
        if value != "":
            tmp[name] = expand(value, mapping)
            continue
        source = item.get("valueFrom")
        if source is None:
            tmp[name] = ""
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "Secret" if "secretKeyRef" in source else "ConfigMap"
            ref = source["secretKeyRef" if kind == "Secret" else "configMapKeyRef"]
            optional = bool(ref.get("optional"))
            data = store.source(kind, ref["name"], optional, f"{where}.env[{i}] ({name})")
            if data is None:
                continue
            if ref["key"] not in data:
                if optional:
                    continue
                raise PodRunnerError(
                    f"{where}.env[{i}] ({name}): {kind} {ref['name']} has no key {ref['key']!r}"
                )
            tmp[name] = data[ref["key"]].decode()
        else:
            raise PodRunnerError(f"{where}.env[{i}] ({name}): valueFrom {sorted(source)} is not supported")
    return tmp | {k: v for k, v in service_env.items() if k not in tmp}


def expand_argv(container: Obj, env: Mapping[str, str]) -> list[str]:
    def mapping(name: str) -> str | None:
        return env.get(name)

    return [expand(a, mapping) for a in [*container.get("command", []), *container.get("args", [])]]


# ---------------------------------------------------------------------------------------------
# Images: what the render's images are on this machine


@dataclass(frozen=True)
class Image:
    repository: str
    env: dict[str, str]
    workdir: str
    homes: dict[int, str]  # the image's /etc/passwd; other uids get HOME=/
    dirs: tuple[tuple[str, int, int, int], ...]  # (path, uid, gid, mode) the image has
    commands: frozenset[str]  # bare command names the image provides
    busybox: bool = False
    # applets whose Debian build lacks what the image's has: name -> host program that behaves the
    # same for the options the charts use. Debian's busybox 1.35 has neither `find -delete` nor
    # `nc -z`; busybox's defconfig, which the busybox image is built from, has both.
    applet_overrides: tuple[tuple[str, str], ...] = ()


def mlflow_version() -> str | None:
    try:
        dist = next(iter(metadata.distributions(name="mlflow", path=_site_packages())), None)
    except OSError:
        return None
    return dist.version if dist else None


def _site_packages() -> list[str]:
    return [str(p) for p in (VENV / "lib").glob("python3*/site-packages")]


def images() -> dict[str, Image]:
    debian_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return {
        # github.com/burakince/mlflow Dockerfile-debian: python:3.13-slim, venv /opt/venv, user
        # mlflow 1001:1001 with home /home/mlflow, WORKDIR /mlflow owned by it.
        "burakince/mlflow": Image(
            repository="burakince/mlflow",
            env={
                "PATH": f"{VENV}/bin:/usr/local/bin:{debian_path}",
                "LANG": "C.UTF-8",
                "PYTHONUNBUFFERED": "1",
            },
            workdir="/mlflow",
            homes={0: "/root", 1001: "/home/mlflow"},
            dirs=(("/mlflow", 1001, 1001, 0o755), ("/home/mlflow", 1001, 1001, 0o700)),
            commands=frozenset({"mlflow", "python", "python3", "uvicorn", "alembic"}),
        ),
        "busybox": Image(
            repository="busybox",
            env={"PATH": f"/.busybox:{debian_path}"},
            workdir="/",
            homes={0: "/root"},
            dirs=(),
            commands=busybox_applets(),
            busybox=True,
            applet_overrides=(("find", "/usr/bin/find"), ("nc", "/usr/bin/nc.openbsd")),
        ),
    }


def busybox_applets() -> frozenset[str]:
    if not Path(BUSYBOX).exists():
        return frozenset()
    return frozenset(_run([BUSYBOX, "--list"]).stdout.split())


def image_of(container: Obj, where: str) -> Image:
    ref = str(container.get("image", ""))
    repository, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    repository = repository.removeprefix("docker.io/").removeprefix("library/")
    known = images()
    if repository not in known:
        raise PodRunnerError(f"{where}.image {ref!r}: no local stand-in (known: {', '.join(sorted(known))})")
    image = known[repository]
    if repository == "burakince/mlflow":
        installed = mlflow_version()
        if installed is None:
            raise PodRunnerError(
                f"{where}.image {ref!r}: mlflow is not installed in {VENV} (run `make e2e`)"
            )
        if tag.split("-")[0] != installed:
            raise PodRunnerError(f"{where}.image {ref!r}: the venv has mlflow {installed}, not {tag}")
    if image.busybox and not Path(BUSYBOX).exists():
        raise PodRunnerError(
            f"{where}.image {ref!r}: needs {BUSYBOX} (`make e2e-deps` installs it)"
        )
    return image


# ---------------------------------------------------------------------------------------------
# Volumes


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    readonly: bool


def materialize_volumes(
    pod: Obj,
    render: Render,
    store: Store,
    base: Path,
    fs_group: int | None,
    *,
    claims: Path | None = None,
    claim_ownership: tuple[int, int, int] | None = None,
) -> dict[str, tuple[Path, bool]]:
    """Volume name -> (host directory, always read-only) as the kubelet would prepare them.

    Pod-scoped volumes go under `base/volumes`. A claim is `claims/<claimName>` (default
    `base/claims`) and outlives the pod: bound once, created on first use owned root:fsGroup 2775
    (the kubelet applies fsGroup) or, when the storage ignores fsGroup as NFS does, with
    `claim_ownership` = (uid, gid, mode) as the export presents it; later pods find it as left.
    """
    out: dict[str, tuple[Path, bool]] = {}
    gid = fs_group if fs_group is not None else 0
    for i, vol in enumerate(pod.get("volumes", [])):
        where = f"spec.template.spec.volumes[{i}] ({vol['name']})"
        if "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"]["claimName"]
            if render.get("PersistentVolumeClaim", claim) is None:
                raise PodRunnerError(f"{where}: PersistentVolumeClaim {claim!r} is not in the render")
            path = (claims or base / "claims") / claim
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.mkdir()
            except FileExistsError:  # bound before (another pod of it started first)
                pass
            else:
                if claim_ownership is not None:
                    uid, owner_gid, mode = claim_ownership
                    os.chown(path, uid, owner_gid)
                    path.chmod(mode)
                else:
                    os.chown(path, 0, gid)
                    path.chmod(0o2775 if fs_group is not None else 0o755)
            out[vol["name"]] = (path, bool(vol["persistentVolumeClaim"].get("readOnly")))
            continue
        path = base / "volumes" / vol["name"]
        path.mkdir(parents=True)
        if "emptyDir" in vol:
            if (vol["emptyDir"] or {}).get("medium") == "Memory":
                size = (vol["emptyDir"] or {}).get("sizeLimit", "64Mi").replace("i", "").lower()
                _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)])
            os.chown(path, 0, gid)
            path.chmod(0o777 | (0o2000 if fs_group is not None else 0))
            out[vol["name"]] = (path, False)
        elif "configMap" in vol or "secret" in vol:
            kind = "ConfigMap" if "configMap" in vol else "Secret"
            spec = vol["configMap"] if kind == "ConfigMap" else vol["secret"]
            name = spec["name"] if kind == "ConfigMap" else spec["secretName"]
            data = store.source(kind, name, bool(spec.get("optional")), where) or {}
            mode = int(spec.get("defaultMode", 0o644))
            items = spec.get("items") or [{"key": k, "path": k} for k in sorted(data)]
            for item in items:
                if item["key"] not in data:
                    raise PodRunnerError(f"{where}: {kind} {name} has no key {item['key']!r}")
                target = path / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data[item["key"]])
                os.chown(target, 0, gid)
                target.chmod(int(item.get("mode", mode)))
            path.chmod(0o755)
            out[vol["name"]] = (path, True)
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise PodRunnerError(f"{where}: volume type {kinds} is not supported")
    return out


def container_mounts(container: Obj, volumes: Mapping[str, tuple[Path, bool]], where: str) -> list[Mount]:
    mounts: list[Mount] = []
    for i, vm in enumerate(container.get("volumeMounts", [])):
        if vm["name"] not in volumes:
            raise PodRunnerError(f"{where}.volumeMounts[{i}]: no volume {vm['name']!r}")
        if vm.get("subPathExpr"):
            raise PodRunnerError(f"{where}.volumeMounts[{i}]: subPathExpr is not supported")
        src, always_ro = volumes[vm["name"]]
        if vm.get("subPath"):
            src = src / vm["subPath"]
            if not src.exists():
                raise PodRunnerError(f"{where}.volumeMounts[{i}]: subPath {vm['subPath']!r} does not exist")
        mounts.append(Mount(str(src), vm["mountPath"], always_ro or bool(vm.get("readOnly"))))
    return mounts


# ---------------------------------------------------------------------------------------------
# Processes


def _run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise PodRunnerError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
        )
    return done


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        return " ".join(
            Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        ).strip()
    except OSError:
        return ""


def pss_bytes(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None
    leftovers: list[str] = field(default_factory=list)  # cmdlines of descendants alive after it exited

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[int]:
        return process_tree(self.pid) if self.alive() else []

    def pss_bytes(self) -> int:
        return pss_bytes(self.tree())

    def log_tail(self, lines: int = 40) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, grace: float = 30.0) -> int | None:
        """Signal the process, wait up to `grace`, then SIGKILL whatever is left of its tree."""
        if self.alive():
            tree = self.tree()
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            self.leftovers = [cmdline(p) for p in tree[1:] if _alive(p)]
            _signal_all([*self.tree(), *tree], signal.SIGKILL)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
        return self.popen.returncode

    def kill_tree(self, sig: int = signal.SIGKILL) -> int | None:
        """Signal the process and every descendant at once, parent first (as the runtime kills all
        of a container's cgroup: nothing gets to clean up, nobody is left to respawn a worker)."""
        tree = self.tree()
        _signal_all(tree, sig)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.leftovers = [cmdline(p) for p in tree[1:] if _alive(p)]
        return self.popen.returncode


def _spawn(name: str, argv: Sequence[str], log: Path | None, *, stream: bool = False, **kwargs: Any) -> Proc:
    out: Any = None if stream else (open(log, "ab") if log else subprocess.DEVNULL)  # noqa: SIM115
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
            **kwargs,
        )
    finally:
        if out not in (None, subprocess.DEVNULL):
            out.close()
    return Proc(name, popen, None if stream else log)


def _wait_line(proc: Proc, expect: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.log and proc.log.exists() and expect in proc.log.read_text(errors="replace"):
            return
        if not proc.alive():
            raise PodRunnerError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.log_tail()}")
        time.sleep(0.05)
    raise PodRunnerError(f"{proc.name}: no {expect!r} within {timeout:.0f}s:\n{proc.log_tail()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# PostgreSQL: the CNPG Cluster's stand-in


def postgres_bin() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    return found[-1].parent if found else None


@dataclass
class Postgres:
    cluster: Obj
    owner: str
    password: str
    base: Path
    port: int = 0
    proc: Proc | None = None
    _cpus: Sequence[int] | None = None

    @property
    def database(self) -> str:
        return str(self.cluster["spec"]["bootstrap"]["initdb"]["database"])

    def start(self, cpus: Sequence[int] | None = None) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise PodRunnerError(
                "no PostgreSQL server in /usr/lib/postgresql (run `make e2e-deps`)"
            )
        self.base.mkdir(parents=True)
        shutil.chown(self.base, "postgres", "postgres")
        data, sock = self.base / "data", self.base / "sock"
        sock.mkdir()
        shutil.chown(sock, "postgres", "postgres")
        initdb = self.cluster["spec"]["bootstrap"]["initdb"]
        pwfile = self.base / "pw"
        pwfile.write_text(secrets.token_urlsafe(24))  # the superuser's: nobody uses it
        shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                f"--encoding={initdb.get('encoding', 'UTF8')}",
                f"--lc-collate={initdb.get('localeCollate', 'C')}",
                f"--lc-ctype={initdb.get('localeCType', 'C')}",
            ],
            env={"PATH": "/usr/bin:/bin", "LANG": "C"},
            **self._as_postgres(),
        )
        pwfile.unlink()
        self.port = free_port()
        self._cpus = cpus
        self.resume()
        self.psql(
            'CREATE ROLE :"owner" LOGIN PASSWORD :\'pw\';\nCREATE DATABASE :"db" OWNER :"owner";\n',
            variables={"owner": self.owner, "pw": self.password, "db": self.database},
        )

    def resume(self) -> None:
        """Start the server on its data directory and port (first start, or again after stop())."""
        bindir = postgres_bin()
        assert bindir is not None
        params = {
            str(k): str(v)
            for k, v in (self.cluster["spec"].get("postgresql", {}).get("parameters") or {}).items()
        }
        params |= {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.base / "sock"),
        }
        argv = [str(bindir / "postgres"), "-D", str(self.base / "data")]
        for key, value in params.items():
            argv += ["-c", f"{key}={value}"]
        if self._cpus:
            argv = ["taskset", "-c", ",".join(map(str, self._cpus)), *argv]
        log = self.base.parent / "logs" / "postgres.log"
        offset = log.stat().st_size if log.exists() else 0
        self.proc = _spawn("postgres", argv, log, env={"LANG": "C"}, **self._as_postgres())
        deadline = time.monotonic() + 60
        while "database system is ready to accept connections" not in _read_from(log, offset):
            if not self.proc.alive() or time.monotonic() > deadline:
                raise PodRunnerError(f"postgres did not become ready:\n{self.proc.log_tail()}")
            time.sleep(0.05)

    def psql(
        self, sql: str, *, database: str = "postgres", variables: Mapping[str, str] | None = None
    ) -> str:
        """Run SQL as the superuser over the Unix socket; returns psql's unaligned output."""
        bindir = postgres_bin()
        assert bindir is not None
        argv = [str(bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", str(self.base / "sock"), "-p", str(self.port), "-U", "postgres", "-d", database]
        for key, value in (variables or {}).items():
            argv += ["-v", f"{key}={value}"]
        return _run(argv, input=sql, env={"PATH": "/usr/bin:/bin"}, **self._as_postgres()).stdout

    def max_connections(self) -> int:
        return int(self.psql("SHOW max_connections").strip())

    def connections(self) -> int:
        """Client connections open to the application database now (pg_stat_activity)."""
        return int(
            self.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :'db'", variables={"db": self.database}
            ).strip()
        )

    def reset_database(self) -> None:
        """Drop the application database and create it empty again, as CNPG's initdb leaves it."""
        self.psql(
            'DROP DATABASE IF EXISTS :"db" WITH (FORCE);\nCREATE DATABASE :"db" OWNER :"owner";\n',
            variables={"owner": self.owner, "db": self.database},
        )

    def _as_postgres(self) -> dict[str, Any]:
        return {"user": "postgres", "group": "postgres", "extra_groups": [], "cwd": str(self.base)}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(signal.SIGINT, grace=30)  # fast shutdown


def _unused(directory: Path, name: str) -> str:
    """`name`, or `name.2`, `name.3`... whichever does not exist in `directory` yet."""
    found, k = name, 1
    while (directory / found).exists():
        k += 1
        found = f"{name}.{k}"
    return found


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# The pod


@dataclass
class PodRunner:
    """The rendered Deployment's pod, its Services and its database, on this machine.

    `args` replaces the main container's args and `env_overrides` is applied after the kubelet's
    resolution (both for the benchmark; the tests use the render untouched); `cpus` pins every
    process of the pod (and PostgreSQL unless `postgres_cpus` says otherwise) with taskset.

    For fault tests: `kill()` signals the server's whole process tree at once; `stop_pod()`,
    `start_pod()` and `restart_pod()` delete and create the pod as `strategy: Recreate` does (a new
    network namespace, fresh emptyDirs, the init containers again; claims and database stay);
    `postgres.stop()` / `postgres.resume()` take the database away and back;
    `run_init_container(name)` runs one init container once more in the running pod;
    `run_test_pod(name)` runs a `helm test` Pod of the render beside the server. `replica_of` makes
    this a second pod of another stack's Deployment (its PostgreSQL, test secrets and claims are
    shared, as two replicas share them), `init_containers` names the init containers to run (None:
    all), `claim_ownership` = (uid, gid, mode) presents a new claim as a storage that ignores
    fsGroup (NFS) would.
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
        uid = self._security(container, pod)["runAsUser"]
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

    def _security(self, container: Obj, pod: Obj | None = None) -> dict[str, Any]:
        pod_sc = (self.pod if pod is None else pod).get("securityContext") or {}
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

    def _target_port(self, port: Obj) -> int:
        """A Service port's targetPort as a number (a name is looked up in the server's ports)."""
        target = port.get("targetPort", port["port"])
        if isinstance(target, int):
            return target
        for p in self.main_container.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
        raise PodRunnerError(
            f"Service port {port.get('name')}: targetPort {target!r} names no container port"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> PodRunner:
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
        cluster = self._cluster()
        initdb = cluster["spec"]["bootstrap"]["initdb"]
        cname = cluster["metadata"]["name"]
        secret_name = (initdb.get("secret") or {}).get("name", f"{cname}-app")
        creds = (
            self.store.source("Secret", secret_name, False, f"Cluster {cname} spec.bootstrap.initdb.secret")
            or {}
        )
        if creds.get("username", b"").decode() != initdb["owner"]:
            raise PodRunnerError(
                f"Cluster {cname}: initdb secret's username is not the owner {initdb['owner']!r}"
            )
        self.postgres = Postgres(cluster, initdb["owner"], creds["password"].decode(), self.base / "postgres")
        self.postgres.start(self.postgres_cpus if self.postgres_cpus is not None else self.cpus)

    def start_pod(self, ready_timeout: float = 300) -> None:
        """Create the pod: namespaces, volumes, Service forwarders and the port-forward, the init
        containers in order (each must exit 0), then the server; returns once it is ready."""
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
        self._pause = _spawn(
            "pause",
            ["unshare", "--net", "--uts", "--", *HELPER, "_pause", self._hostname],
            self._pod_dir / "logs" / "pause.log",
            cwd=ROOT,
        )
        _wait_line(self._pause, "ready", 20)
        self._write_network_files()
        cluster_name = self._cluster()["metadata"]["name"]
        own = self.render.service_for(self.deployment)
        for svc in self.services:
            if svc.name in (f"{cluster_name}-rw", f"{cluster_name}-r"):
                self._forward(
                    f"{svc.address}:5432",
                    f"127.0.0.1:{self.postgres.port}",
                    listen_ns=self.pod_netns,
                    name=f"service-{svc.name}",
                )
            elif svc.name == own["metadata"]["name"] and svc.namespace == self.namespace:
                for port in own["spec"]["ports"]:  # its endpoint: this pod
                    self._forward(
                        f"{svc.address}:{port['port']}",
                        f"127.0.0.1:{self._target_port(port)}",
                        listen_ns=self.pod_netns,
                        connect_ns=self.pod_netns,
                        name=f"service-{svc.name}-{port['port']}",
                    )
        self._forward(
            f"127.0.0.1:{self.local_port}",
            f"127.0.0.1:{self.container_port}",
            connect_ns=self.pod_netns,
            name="port-forward",
        )

        for i, c in enumerate(pod.get("initContainers", [])):
            if self.init_containers is not None and c["name"] not in self.init_containers:
                continue
            where = f"spec.template.spec.initContainers[{i}] ({c['name']})"
            proc = self._run_container(c, where, self.volumes)
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
        if len(pod["containers"]) != 1:
            raise PodRunnerError("spec.template.spec.containers: only a single-container pod is supported")
        self.server = self._run_container(
            pod["containers"][0], "spec.template.spec.containers[0] (mlflow)", self.volumes, main=True
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
                return self._run_container(
                    c, f"spec.template.spec.initContainers[{i}] ({name})", self.volumes
                )
        raise PodRunnerError(f"Deployment {self.deployment_name} has no init container {name!r}")

    def run_test_pod(self, name: str, timeout: float = 300) -> tuple[int, str]:
        """Run the render's Pod `name` (a `helm test` hook) to completion beside the server: its own
        volumes, env and securityContext, in this pod's network namespace, where the Services resolve
        and forward as in the cluster. Returns (exit code, output)."""
        spec = dict(self.render.one("Pod", name)["spec"])
        if len(spec.get("containers", [])) != 1 or spec.get("initContainers"):
            raise PodRunnerError(f"Pod {name}: only a single container and no init containers are supported")
        assert self._pod_dir is not None, "no pod is running"
        base = self._pod_dir / "test-pods" / _unused(self._pod_dir / "test-pods", name)
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        volumes = materialize_volumes(spec, self.render, self.store, base, fs_group, claims=self.claims_dir)
        proc = self._run_container(spec["containers"][0], f"Pod {name} spec.containers[0]", volumes, pod=spec)
        try:
            code = proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.stop(signal.SIGKILL, 1)
            raise PodRunnerError(
                f"Pod {name}: still running after {timeout:.0f} s:\n{proc.log_tail()}"
            ) from None
        return code, proc.log.read_text(errors="replace") if proc.log else ""

    def _cluster(self) -> Obj:
        where = "spec.template.spec.containers[0]"
        c = self.main_container
        pghost = kubelet_env(c, self.store, {}, where).get("PGHOST", "")
        clusters = self.render.find("Cluster")
        for c in clusters:
            if pghost.startswith(c["metadata"]["name"] + "-"):
                return c
        if len(clusters) == 1:
            return clusters[0]
        raise PodRunnerError(f"{self.render.path}: cannot tell which CNPG Cluster backs PGHOST={pghost!r}")

    def _write_network_files(self) -> None:
        assert self._pod_dir is not None
        lines = [
            "# Kubernetes-managed hosts file (mlflow-podrunner).",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            f"127.0.0.1\t{self._hostname}",
        ]
        for svc in self.services:
            names = [
                svc.name,
                f"{svc.name}.{svc.namespace}",
                f"{svc.name}.{svc.namespace}.svc",
                f"{svc.name}.{svc.namespace}.svc.{CLUSTER_DOMAIN}",
            ]
            lines.append(f"{svc.address}\t{' '.join(names)}")
        (self._pod_dir / "hosts").write_text("\n".join(lines) + "\n")
        ns = self.namespace
        (self._pod_dir / "resolv.conf").write_text(
            f"search {ns}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
            "nameserver 127.0.0.1\noptions ndots:5\n"
        )
        for name in ("hosts", "resolv.conf"):
            (self._pod_dir / name).chmod(0o644)

    def _forward(
        self,
        listen: str,
        connect: str,
        *,
        name: str,
        listen_ns: str | None = None,
        connect_ns: str | None = None,
    ) -> None:
        assert self._pod_dir is not None
        argv = [*HELPER, "_forward", listen, connect]
        if listen_ns:
            argv += ["--listen-ns", listen_ns]
        if connect_ns:
            argv += ["--connect-ns", connect_ns]
        if self.cpus:
            argv = ["taskset", "-c", ",".join(map(str, self.cpus)), *argv]
        proc = _spawn(name, argv, self._pod_dir / "logs" / f"{name}.log", cwd=ROOT)
        self._forwarders.append(proc)
        _wait_line(proc, "ready", 20)

    def _run_container(
        self,
        c: Obj,
        where: str,
        volumes: Mapping[str, tuple[Path, bool]],
        *,
        main: bool = False,
        pod: Obj | None = None,
    ) -> Proc:
        """Start one container in the pod's namespaces; `pod` is the spec it belongs to (default:
        the Deployment's), whose securityContext applies."""
        assert self._pod_dir is not None, "no pod is running"
        pod = self.pod if pod is None else pod
        image = image_of(c, where)
        sc = self._security(c, pod)
        env = self.resolved_env(c, where, image, self._hostname, pod)
        argv_src = dict(c)
        if main and self.args is not None:
            argv_src["args"] = list(self.args)
        if main:
            env |= dict(self.env_overrides)
        argv = expand_argv(argv_src, env)
        if not argv:
            raise PodRunnerError(f"{where}.command: empty; the image's entrypoint is not known here")
        mounts = container_mounts(c, volumes, where)
        cmd = argv[0]
        if cmd.startswith("/"):
            if not any(cmd == m.target or cmd.startswith(m.target.rstrip("/") + "/") for m in mounts):
                raise PodRunnerError(
                    f"{where}.command {cmd!r}: not a file of the image known here nor of a volume"
                )
        elif cmd not in image.commands:
            raise PodRunnerError(f"{where}.command {cmd!r}: not a command known of image {image.repository}")
        host_paths = sorted({str(VENV.resolve()), str(Path(sys.base_prefix).resolve())})
        pod_sc = pod.get("securityContext") or {}
        groups = sorted(
            {*([pod_sc["fsGroup"]] if "fsGroup" in pod_sc else []), *pod_sc.get("supplementalGroups", [])}
        )
        drops = [d.upper() for d in (sc.get("capabilities") or {}).get("drop", [])]
        run = _unused(self._pod_dir / "ns", c["name"])  # a rerun gets its own scratch and log
        spec = {
            "scratch": str(self._pod_dir / "ns" / run),
            "mounts": [m.__dict__ for m in mounts],
            "files": {
                "/etc/hosts": str(self._pod_dir / "hosts"),
                "/etc/resolv.conf": str(self._pod_dir / "resolv.conf"),
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
            "argv": argv,
            "env": env,
        }
        (self._pod_dir / "ns" / run).mkdir(parents=True)
        spec_file = self._pod_dir / "ns" / f"{run}.json"
        spec_file.write_text(json.dumps(spec))
        spec_file.chmod(0o600)
        launcher = [
            "nsenter",
            f"--net={self.pod_netns}",
            f"--uts=/proc/{self._pause.pid if self._pause else 0}/ns/uts",
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
        if self.cpus:
            launcher = ["taskset", "-c", ",".join(map(str, self.cpus)), *launcher]
        proc = _spawn(
            run, launcher, self._pod_dir / "logs" / f"{run}.log", stream=main and self.stream_logs, cwd=ROOT
        )
        if main:
            self.server_env, self.server_argv = env, argv
        else:
            self._containers.append(proc)
        return proc

    def _wait_ready(self, timeout: float = 300) -> None:
        probe = self.main_container.get("readinessProbe", {}).get("httpGet", {})
        path = probe.get("path", "/health")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.server.alive():
                raise PodRunnerError(
                    f"the server exited {self.server.popen.returncode}:\n{self.server.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise PodRunnerError(
            f"the server is not ready on {path} after {timeout:.0f}s:\n{self.server.log_tail()}"
        )

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


def preflight() -> None:
    """What the harness needs of the machine; raises PodRunnerError naming what is missing."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (namespaces, chroot and setpriv need it)")
    missing += [t for t in TOOLS if shutil.which(t) is None]
    if postgres_bin() is None:
        missing.append("PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    stand_ins = [BUSYBOX, *(path for image in images().values() for _name, path in image.applet_overrides)]
    missing += [path for path in stand_ins if not Path(path).exists()]
    if mlflow_version() is None:
        missing.append(f"mlflow in {VENV}")
    if missing:
        raise PodRunnerError("missing: " + "; ".join(missing) + " (`make e2e` installs them)")


class Poll:
    """Calls `sample()` every `interval` s in a thread while in the `with` block; keeps the values."""

    def __init__(self, sample: Callable[[], float], interval: float) -> None:
        self._sample, self._interval = sample, interval
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Poll:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.values.append(self._sample())


class PeakSampler(Poll):
    """Samples the PSS of named process trees every `interval` s; `peaks[name]` in bytes."""

    def __init__(self, trees: Mapping[str, Callable[[], list[int]]], interval: float = 0.5) -> None:
        self.peaks = {name: 0 for name in trees}

        def sample() -> float:
            for name, tree in trees.items():
                self.peaks[name] = max(self.peaks[name], pss_bytes(tree()))
            return float(sum(self.peaks.values()))

        super().__init__(sample, interval)


# ---------------------------------------------------------------------------------------------
# Helpers that run in the namespaces (internal subcommands)

CLONE_NEWNET = 0x40000000


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _cmd_pause(hostname: str) -> None:
    """Hold the pod's network and UTS namespaces: loopback up, hostname set, sleep."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, 0x8913, ifreq))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags | 0x1, b""))  # SIOCSIFFLAGS IFF_UP
    socket.sethostname(hostname)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.wait(3600):
        pass


def _pump(src: socket.socket, dst: socket.socket) -> None:
    buf = bytearray(1 << 18)
    view = memoryview(buf)
    try:
        while n := src.recv_into(buf):
            dst.sendall(view[:n])
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _serve_pair(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    t = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    t.start()
    _pump(client, upstream)
    t.join()
    client.close()
    upstream.close()


def _cmd_forward(listen: str, connect: str, listen_ns: str | None, connect_ns: str | None) -> None:
    """A TCP forwarder whose listening socket may live in another network namespace."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    if listen_ns:
        _setns(listen_ns)
    host, port = listen.rsplit(":", 1)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(128)
    if listen_ns:
        _setns(f"/proc/self/fd/{home}")
    if connect_ns:
        _setns(connect_ns)
    chost, cport = connect.rsplit(":", 1)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("ready", flush=True)
    while True:
        client, _ = srv.accept()
        threading.Thread(target=_serve_pair, args=(client, (chost, int(cport))), daemon=True).start()


def _cmd_enter(spec_file: str) -> None:
    """Inside a fresh mount namespace: build the container's root, chroot, drop privileges, exec."""
    spec = json.loads(Path(spec_file).read_text())
    scratch = Path(spec["scratch"])

    def mount(*args: str) -> None:
        _run(["mount", *args])

    mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(scratch))
    for d in ("upper", "work", "root"):
        (scratch / d).mkdir()
    root = scratch / "root"
    mount(
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir=/,upperdir={scratch / 'upper'},workdir={scratch / 'work'}",
        str(root),
    )
    host_dev = os.stat("/").st_dev
    for path in spec["host_paths"]:  # the venv and its interpreter stand in for the image's /opt/venv
        if os.stat(path).st_dev != host_dev:
            (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
            mount("--rbind", path, str(root / path.lstrip("/")))
        for parent in Path(path).parents:  # e.g. a pyenv python under /root (0700): let the pod's uid through
            view = root / str(parent).lstrip("/")
            if str(parent) != "/" and not view.stat().st_mode & 0o001:
                view.chmod(view.stat().st_mode | 0o001)
    for sub in ("dev", "proc", "sys"):
        mount("--rbind", f"/{sub}", str(root / sub))
    (root / "dev/shm").mkdir(exist_ok=True)
    mount("-t", "tmpfs", "-o", f"size={SHM_SIZE},mode=1777,nosuid,nodev", "tmpfs", str(root / "dev/shm"))
    for path, uid, gid, mode in spec["dirs"]:
        target = root / path.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        os.chown(target, uid, gid)
        target.chmod(mode)
    if spec["busybox"]:
        applets = root / ".busybox"
        applets.mkdir()
        for name in _run([BUSYBOX, "--list"]).stdout.split():
            (applets / name).symlink_to(spec["applet_overrides"].get(name, BUSYBOX))
        sh = root / "usr/bin/sh"
        sh.unlink()
        sh.symlink_to(BUSYBOX)
    for target, source in spec["files"].items():
        path = root / target.lstrip("/")
        if path.is_symlink() or not path.exists():  # e.g. a resolv.conf that links into /run
            path.unlink(missing_ok=True)
            path.touch()
        mount("--bind", source, str(path))
        mount("-o", "remount,bind,ro", str(path))
    for m in sorted(spec["mounts"], key=lambda m: len(Path(m["target"]).parts)):  # parents first, as CRI does
        target = root / m["target"].lstrip("/")
        if os.path.isdir(m["source"]):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        mount("--bind", m["source"], str(target))
        if m["readonly"]:
            mount("-o", "remount,bind,ro", str(target))
    for path in spec["host_paths"]:  # a volume over the stand-in Python (a checkout under /tmp): show it again
        if any(path == m["target"] or path.startswith(m["target"].rstrip("/") + "/") for m in spec["mounts"]):
            view = root / path.lstrip("/")
            view.mkdir(parents=True, exist_ok=True)
            mount("--rbind", path, str(view))
            mount("-o", "remount,bind,ro", str(view))
    if spec["read_only_root"]:
        mount("-o", "remount,bind,ro", str(root))
    os.chroot(root)
    os.chdir(spec["workdir"])
    setpriv = [
        "/usr/bin/setpriv",
        f"--reuid={spec['uid']}",
        f"--regid={spec['gid']}",
        f"--groups={','.join(map(str, spec['groups']))}" if spec["groups"] else "--clear-groups",
    ]
    if spec["no_new_privs"]:
        setpriv.append("--no-new-privs")
    if spec["drop_all_caps"]:
        setpriv += ["--inh-caps=-all", "--bounding-set=-all"]
    os.execve(setpriv[0], [*setpriv, "--", *spec["argv"]], spec["env"])


# ---------------------------------------------------------------------------------------------
# `make up` and friends


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _cmd_up(render: Path, port: int, cpus: Sequence[int] | None) -> int:
    stack = PodRunner(render, local_port=port, cpus=cpus, stream_logs=True)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"podrunner: starting PostgreSQL and the pod of {render} ...", file=sys.stderr, flush=True)
    try:
        stack.start()
        svc = stack.render.service_for(stack.deployment)["metadata"]["name"]
        print(
            f"\nMLflow {mlflow_version()} is up (the rendered pod; Ctrl-C stops MLflow and PostgreSQL).\n"
            f"  The server only answers the Host names of the render, so either send one:\n"
            f"    curl -H 'Host: {stack.route_host}' {stack.url}/api/2.0/mlflow/experiments/search\n"
            f"    curl -H 'Host: {stack.service_host}' {stack.url}/version\n"
            f"  or, for a browser or the Python client, map '{svc}' to 127.0.0.1 in /etc/hosts and use\n"
            f"    http://{svc}:{port}/   (allowed as '{svc}:*'; like `kubectl port-forward`,\n"
            f"    the UI can read but its writes are refused: its Origin is not https://{stack.route_host})\n",
            file=sys.stderr,
            flush=True,
        )
        while stack.server.alive():
            time.sleep(0.5)
        print(f"podrunner: the server exited {stack.server.popen.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\npodrunner: stopping MLflow and PostgreSQL ...", file=sys.stderr, flush=True)
        return 0
    except PodRunnerError as err:
        print(f"podrunner: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        print("podrunner: stopped.", file=sys.stderr)


def _cmd_env(render: Path) -> None:
    stack = PodRunner(render)
    c = stack.main_container
    image = image_of(c, "spec.template.spec.containers[0]")
    env = stack.resolved_env(c, "spec.template.spec.containers[0]", image, "<pod>")
    generated = external_secret_targets(stack.render)
    hidden = {
        v
        for name, values in stack.test_secrets.items()
        for k, v in values.items()
        if generated[name][k] is None
    }
    for key in sorted(env):
        print(f"{key}={'<test secret>' if env[key] in hidden else env[key]}")
    print("argv:", json.dumps(expand_argv(c, env)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlflow_gitops.podrunner", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="run the rendered pod in the foreground")
    up.add_argument("--render", type=Path, default=DEFAULT_RENDER)
    up.add_argument("--port", type=int, default=5000, help="local port of the port-forward")
    up.add_argument("--cpus", help="pin to these CPUs (taskset list, e.g. 0 or 0,1)")
    env = sub.add_parser("env", help="print the main container's resolved environment and argv")
    env.add_argument("--render", type=Path, default=DEFAULT_RENDER)
    pause = sub.add_parser("_pause")
    pause.add_argument("hostname")
    fwd = sub.add_parser("_forward")
    fwd.add_argument("listen")
    fwd.add_argument("connect")
    fwd.add_argument("--listen-ns")
    fwd.add_argument("--connect-ns")
    enter = sub.add_parser("_enter")
    enter.add_argument("spec")
    args = parser.parse_args(argv)
    if args.cmd == "up":
        cpus = [int(c) for c in args.cpus.split(",")] if args.cpus else None
        return _cmd_up(args.render, args.port, cpus)
    if args.cmd == "env":
        _cmd_env(args.render)
    elif args.cmd == "_pause":
        _cmd_pause(args.hostname)
    elif args.cmd == "_forward":
        _cmd_forward(args.listen, args.connect, args.listen_ns, args.connect_ns)
    elif args.cmd == "_enter":
        _cmd_enter(args.spec)
    return 0

