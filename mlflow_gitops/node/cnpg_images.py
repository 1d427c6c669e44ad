"""CloudNativePG's two images for the node, packed with umoci under the references the operator uses.

* The operator image, under the reference of the release manifest's Deployment
  (mlflow_gitops.node.operator.operator_image): bin/cnpg/manager as /operator/manager_amd64 and
  /manager linking to it, the working directory `/`, user 65532, as the project's Dockerfile lays it
  out. The instance pods' `bootstrap-controller` init container runs `/manager bootstrap
  /controller/manager` from this image, which copies `manager` (relative to `/`) into the pod.
* The PostgreSQL operand image: Debian's postgresql-15 and postgresql-client-15 as installed on this
  machine with every package they depend on (dpkg's own file lists, documentation left out), dash as
  /bin/sh, coreutils, libc-bin (the C.UTF-8 locale, getent), /usr/lib/postgresql/15/bin first on PATH, user
  `postgres` at uid/gid 26 (CloudNativePG's default postgresUID/GID). It is tagged as
  CloudNativePG's own "system" images are (`<repository>:<minor>-system-<codename>`, the repository
  of the operator's default image), the minor read from the installed package, so the operator
  derives major 15 from the tag.

Each image tar is cached in gobuild.IMAGE_CACHE (~/.cache/mlflow-gitops/node-images), keyed by a
digest of its inputs (the manager binary, the packages' versions, this file).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from mlflow_gitops.node import images
from mlflow_gitops.node.gobuild import BIN, IMAGE_CACHE
from mlflow_gitops.node.images import run

CACHE = IMAGE_CACHE
MANAGER = BIN / "cnpg" / "manager"
PG_MAJOR = 15
OPERAND_PACKAGES = {  # Debian package: a path it installs (install_postgres.main's format)
    f"postgresql-{PG_MAJOR}": f"/usr/lib/postgresql/{PG_MAJOR}/bin/postgres",
    f"postgresql-client-{PG_MAJOR}": f"/usr/lib/postgresql/{PG_MAJOR}/bin/psql",
}
EXTRA_PACKAGES = ("dash", "coreutils", "libc-bin")  # /bin/sh; sleep, seq...; C.utf8, getent
POSTGRES_UID = 26  # CloudNativePG's default postgresUID and postgresGID
OPERATOR_UID = 65532  # the Dockerfile's USER (the Deployment runs it as 10001)
SKIPPED = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/lintian/")
MERGED_USR = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}


def installed() -> dict[str, dict[str, str]]:
    """Every installed Debian package: name -> Version, Depends (Pre-Depends too), Provides."""
    fmt = "${Package}\t${Version}\t${db:Status-Status}\t${Pre-Depends}, ${Depends}\t${Provides}\n"
    out = {}
    for line in run("dpkg-query", "-W", "-f", fmt).splitlines():
        name, version, status, depends, provides = line.split("\t")
        if status == "installed":
            out[name] = {"Version": version, "Depends": depends, "Provides": provides}
    return out


def closure(roots: tuple[str, ...], packages: dict[str, dict[str, str]]) -> dict[str, str]:
    """The packages `roots` need, transitively (name -> version); of alternatives the first installed."""
    provided: dict[str, str] = {}
    for name, fields in packages.items():
        for virtual in fields["Provides"].split(","):
            if virtual.strip():
                provided.setdefault(virtual.split()[0], name)

    def resolve(alternatives: str) -> str | None:
        for alternative in alternatives.split("|"):
            name = alternative.split()[0].split(":")[0] if alternative.strip() else ""
            if name in packages:
                return name
            if name in provided:
                return provided[name]
        return None

    missing = [r for r in roots if r not in packages]
    if missing:
        raise RuntimeError(f"Debian packages {missing} are not installed: run `make node-build`")
    found, todo = {}, list(roots)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found[name] = packages[name]["Version"]
        for dependency in filter(str.strip, packages[name]["Depends"].split(",")):
            if (resolved := resolve(dependency)) is None:
                raise RuntimeError(
                    f"{name} depends on {dependency.strip()}, which nothing installed provides"
                )
            todo.append(resolved)
    return dict(sorted(found.items()))


def operand_packages() -> dict[str, str]:
    return closure((*OPERAND_PACKAGES, *EXTRA_PACKAGES), installed())


def postgres_minor(packages: dict[str, str]) -> str:
    """`15.18` of Debian's `15.18-0+deb12u1`."""
    server = f"postgresql-{PG_MAJOR}"
    if not (match := re.match(rf"({PG_MAJOR}\.\d+)-", packages[server])):
        raise RuntimeError(f"{server} {packages[server]}: expected {PG_MAJOR}.<minor>-<debian revision>")
    return match.group(1)


def codename() -> str:
    fields = dict(
        line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
    )
    return fields["VERSION_CODENAME"].strip('"')


def operand_image(repository: str, packages: dict[str, str]) -> str:
    return f"{repository}:{postgres_minor(packages)}-system-{codename()}"


def copy_package_files(package: str, rootfs: Path) -> None:
    for path in run("dpkg-query", "-L", package).splitlines():
        if not path.startswith("/") or path == "/." or path.startswith(SKIPPED):
            continue
        source, dest = Path(path), rootfs / path.lstrip("/")
        if source.is_symlink() and not source.is_dir():
            if not dest.is_symlink() and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(os.readlink(source))
        elif source.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        elif source.is_file():  # a conffile removed on this machine is simply left out
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)


def operand_rootfs(packages: dict[str, str]) -> Callable[[Path], None]:
    def populate(rootfs: Path) -> None:
        for name, target in MERGED_USR.items():
            (rootfs / target).mkdir(parents=True, exist_ok=True)
            (rootfs / name).symlink_to(target)
        for package in packages:
            copy_package_files(package, rootfs)
        if not (rootfs / "bin" / "sh").exists():
            (rootfs / "bin" / "sh").symlink_to("dash")
        etc, uid = rootfs / "etc", POSTGRES_UID
        etc.mkdir(exist_ok=True)
        home = rootfs / "var" / "lib" / "postgresql"
        (etc / "passwd").write_text(
            f"root:x:0:0:root:/root:/bin/sh\npostgres:x:{uid}:{uid}:PostgreSQL:/var/lib/postgresql:/bin/sh\n"
        )
        (etc / "group").write_text(f"root:x:0:\npostgres:x:{uid}:\n")
        for path, mode in ((home, 0o755), (rootfs / "tmp", 0o1777), (rootfs / "run" / "postgresql", 0o2775)):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)
        for path in (home, rootfs / "run" / "postgresql"):
            os.chown(path, uid, uid)

    return populate


def operator_rootfs(rootfs: Path) -> None:
    (rootfs / "operator").mkdir()
    shutil.copy2(MANAGER, rootfs / "operator" / "manager_amd64")
    (rootfs / "operator" / "manager_amd64").chmod(0o755)
    (rootfs / "manager").symlink_to("operator/manager_amd64")
    (rootfs / "tmp").mkdir(mode=0o1777)


def digest(*parts: bytes | str) -> str:
    sha = hashlib.sha256(Path(__file__).read_bytes())
    for part in parts:
        sha.update(part if isinstance(part, bytes) else part.encode())
    return sha.hexdigest()[:16]


def pack(name: str, tag: str, populate: Callable[[Path], None], config: list[str], key: str) -> Path:
    """An OCI layout tar of one image (tag `tag`), from the cache when its key matches."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tar = CACHE / f"{name}-{key}.tar"
    if tar.exists():
        return tar
    for stale in CACHE.glob(f"{name}-*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    layout, bundle = CACHE / f"{name}-layout", CACHE / f"{name}-bundle"
    image = f"{layout}:{tag}"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", image)
    run("umoci", "unpack", "--image", image, str(bundle))
    populate(bundle / "rootfs")
    run("umoci", "repack", "--image", image, str(bundle))
    run("umoci", "config", "--image", image, "--config.workingdir", "/", *config)
    run("umoci", "gc", "--layout", str(layout))
    partial = tar.with_suffix(".partial")
    run("tar", "-C", str(layout), "-cf", str(partial), ".")
    partial.rename(tar)
    shutil.rmtree(bundle)
    shutil.rmtree(layout)
    return tar


def operator_tar(reference: str) -> Path:
    tag = reference.rsplit(":", 1)[1]
    config = ["--config.entrypoint", "/manager", "--config.user", f"{OPERATOR_UID}:{OPERATOR_UID}"]
    return pack("cnpg-operator", tag, operator_rootfs, config, digest(MANAGER.read_bytes(), reference))


def operand_tar(reference: str, packages: dict[str, str]) -> Path:
    tag = reference.rsplit(":", 1)[1]
    path = f"/usr/lib/postgresql/{PG_MAJOR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    config = ["--config.user", f"{POSTGRES_UID}:{POSTGRES_UID}", "--config.env", f"PATH={path}"]
    key = digest(reference, *(f"{name}={version}\n" for name, version in packages.items()))
    return pack("cnpg-postgresql", tag, operand_rootfs(packages), config, key)


def import_image(reference: str, tar: Path, socket: Path) -> None:
    """`ctr images import` of `tar` as `reference` (repository as base name, the layout's tag), pinned."""
    images.import_tar(tar, reference.rsplit(":", 1)[0], [reference], socket)


def size(tar: Path) -> str:
    return f"{tar.stat().st_size / 2**20:.0f} MiB"


def check_umoci() -> None:
    if shutil.which("umoci") is None:
        raise RuntimeError("umoci is missing: run `make node-build` (Debian's umoci)")
    subprocess.run(["umoci", "--version"], capture_output=True, check=True)
