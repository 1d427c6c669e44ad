"""Volumes: emptyDir, configMap, secret and claims as the kubelet presents them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow_gitops.podrunner.base import Obj, PodRunnerError
from mlflow_gitops.podrunner.processes import run_command
from mlflow_gitops.podrunner.render import Render
from mlflow_gitops.podrunner.store import Store


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
                run_command(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)])
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
