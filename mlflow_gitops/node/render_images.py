"""The render's own images, built here under the exact references rendered/homelab.yaml uses.

Nothing is pulled: each is an OCI layout made with umoci and imported into containerd as
`localhost/<name>:latest`, then tagged with the render's reference (normalised as containerd names
it: `burakince/mlflow:<appVersion>` is `docker.io/burakince/mlflow:<appVersion>`), so pods keep the
rendered `image` and `imagePullPolicy: IfNotPresent` and the kubelet finds them present.

* mlflow (burakince/mlflow): Debian's python3 (its packages' files, as dpkg lists them) and a venv
  /opt/venv of requirements-e2e.txt (the image lock's pins), as the image's Dockerfile-debian lays
  it out: user mlflow 1001:1001 (home /home/mlflow), WORKDIR /mlflow owned by it, PATH with
  /opt/venv/bin first (so the rendered `mlflow` and `python` commands resolve), PYTHONUNBUFFERED=1,
  port 5000, the image's CMD. The shared libraries every ELF file links (ldd) are copied in.
* busybox: Debian's busybox, a link per applet, with GNU find and OpenBSD nc in place of the
  `find` and `nc` applets: Debian builds busybox without `find -delete` (the chart's
  remove-partial-uploads init containers use it) and without `nc -z` (the upstream chart's
  dbchecker); the busybox image's defconfig has both.

Each layout tar is cached in gobuild.IMAGE_CACHE (~/.cache/mlflow-gitops/node-images), keyed by
its inputs (requirements file, Debian package versions, this recipe); the build's duration and sizes are recorded next to it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from mlflow_gitops.install_postgres import main as apt_install
from mlflow_gitops.node.gobuild import IMAGE_CACHE
from mlflow_gitops.versions import ROOT

RENDER = ROOT / "rendered" / "homelab.yaml"
REQUIREMENTS = ROOT / "requirements-e2e.txt"
CACHE = IMAGE_CACHE
VENV = "/opt/venv"
UID = GID = 1001
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Debian package: a path it installs (install_postgres.main's format).
PACKAGES = {
    "python3-minimal": "/usr/bin/python3",
    "python3-venv": "/usr/share/doc/python3-venv",
    "busybox": "/usr/bin/busybox",
    "findutils": "/usr/bin/find",
    "netcat-openbsd": "/usr/bin/nc.openbsd",
}
# The packages whose files make up the image's Python (python3 -> python3.11 on bookworm).
PYTHON_PACKAGES = ("python3-minimal", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib")
SKIPPED = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/lintian/", "/usr/share/binfmts/")
# The node's name of each image (localhost/<name>:latest) -> the last part of the render's repository.
IMAGES = {"mlflow": "mlflow", "chart-busybox": "busybox"}
TAG = "latest"


def run(*cmd: str) -> str:
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def reference(name: str) -> str:
    """The render's image of the node's image `name`, as containerd names it."""
    if name not in IMAGES:
        raise ValueError(f"unknown image {name!r}: allowed {', '.join(IMAGES)}")
    found = sorted({ref for ref in rendered_images() if repository(ref).rsplit("/", 1)[-1] == IMAGES[name]})
    if len(found) != 1:
        raise RuntimeError(
            f"{RENDER.name}: expected one image named {IMAGES[name]!r}, found {found or 'none'}"
        )
    return normalise(found[0])


def rendered_images(path: Path = RENDER) -> set[str]:
    """Every container and init container image of the render."""
    refs: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key in ("containers", "initContainers"):
                refs.update(str(c["image"]) for c in node.get(key) or [] if isinstance(c, dict))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for doc in yaml.safe_load_all(path.read_text()):
        walk(doc)
    return refs


def repository(ref: str) -> str:
    return ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref


def normalise(ref: str) -> str:
    """`busybox:1` -> `docker.io/library/busybox:1`, `a/b:1` -> `docker.io/a/b:1` (as the CRI does)."""
    if ":" not in ref.rsplit("/", 1)[-1]:
        raise ValueError(f"image {ref!r} has no tag: the render pins every image by tag")
    first = ref.split("/", 1)[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    if "." in first or ":" in first or first == "localhost":
        return ref
    return f"docker.io/{ref}"


def aliases(name: str) -> list[str]:
    """The references the image imported as localhost/<name> is tagged with."""
    return [reference(name)] if name in IMAGES else []


# --- inputs and cache -------------------------------------------------------------------------------


def deb_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Each package's installed version ("absent" when it is not: the build installs it first)."""
    fmt = "${Package}=${Version}\\n"
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", fmt, *packages], capture_output=True, text=True, check=False
    )
    found = dict(line.split("=", 1) for line in done.stdout.split())
    return {package: found.get(package) or "absent" for package in packages}


def inputs(name: str) -> dict[str, str]:
    # This recipe as code (its layout and comments aside), so a change of it rebuilds.
    recipe = hashlib.sha256(ast.dump(ast.parse(Path(__file__).read_text())).encode()).hexdigest()
    found = {"recipe": recipe, **deb_versions(("libc6", "busybox", "findutils", "netcat-openbsd"))}
    if IMAGES[name] == "mlflow":
        found |= deb_versions(PYTHON_PACKAGES)
        found["requirements-e2e.txt"] = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    return found


def cached(name: str) -> tuple[Path, dict]:
    """The cached layout tar of `name` for the current inputs (built when missing) and its record."""
    if apt_install(PACKAGES) != 0:  # first: the installed versions are part of the key
        raise RuntimeError(f"the {name} image needs Debian {', '.join(PACKAGES)}")
    key = hashlib.sha256(json.dumps(inputs(name), sort_keys=True).encode()).hexdigest()[:16]
    tar, record = CACHE / f"{name}-{key}.tar", CACHE / f"{name}-{key}.json"
    if tar.exists() and record.exists():
        return tar, {**json.loads(record.read_text()), "cache": "hit"}
    CACHE.mkdir(parents=True, exist_ok=True)
    for stale in [*CACHE.glob(f"{name}-*.tar"), *CACHE.glob(f"{name}-*.json")]:
        stale.unlink()
    work = CACHE / f"{name}-build"
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    info = pack(name, work, tar.with_suffix(".partial"))
    info |= {
        "built_seconds": round(time.monotonic() - started, 1),
        "tar_bytes": tar.with_suffix(".partial").stat().st_size,
    }
    info |= {"inputs": inputs(name), "reference": reference(name)}
    tar.with_suffix(".partial").rename(tar)
    record.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return tar, {**info, "cache": "miss"}


def build(name: str) -> Path:
    """images.build's hook: the cached layout tar of `name`, built first when its inputs changed."""
    tar, info = cached(name)
    print(
        f"node: image {name} ({info['reference']}): cache {info['cache']}, {info['tar_bytes'] >> 20} MiB",
        flush=True,
    )
    return tar


# --- rootfs ---------------------------------------------------------------------------------------


def pack(name: str, work: Path, tar: Path) -> dict:
    layout, bundle = work / "layout", work / "bundle"
    image = f"{layout}:{TAG}"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", image)
    run("umoci", "unpack", "--image", image, str(bundle))
    rootfs = bundle / "rootfs"
    info = populate_mlflow(rootfs) if IMAGES[name] == "mlflow" else populate_busybox(rootfs)
    info["rootfs_bytes"] = int(run("du", "-sb", str(rootfs)).split()[0])
    run("umoci", "repack", "--image", image, str(bundle))
    run("umoci", "config", "--image", image, *config_args(name))
    run("umoci", "gc", "--layout", str(layout))
    run("tar", "-C", str(layout), "-cf", str(tar), ".")
    return info


def config_args(name: str) -> list[str]:
    if IMAGES[name] == "busybox":  # as the busybox image: no entrypoint, `sh`
        return ["--config.cmd", "sh"]
    args = ["--config.user", "mlflow", "--config.workingdir", "/mlflow", "--config.exposedports", "5000/tcp"]
    for env in (f"PATH={VENV}/bin:{SYSTEM_PATH}", "PYTHONUNBUFFERED=1", "LANG=C.UTF-8"):
        args += ["--config.env", env]
    command = "mlflow server --backend-store-uri sqlite:///mlflow.sqlite --default-artifact-root ./mlruns"
    for part in [*command.split(), "--host=0.0.0.0", "--port=5000"]:
        args += ["--config.cmd", part]
    return args


def usr_merged(rootfs: Path) -> None:
    """Debian's layout: /bin, /sbin, /lib, /lib64 are links into /usr."""
    for top in ("bin", "sbin", "lib", "lib64"):
        (rootfs / "usr" / top).mkdir(parents=True, exist_ok=True)
        (rootfs / top).symlink_to(f"usr/{top}")
    (rootfs / "tmp").mkdir(mode=0o1777)
    (rootfs / "tmp").chmod(0o1777)


def in_usr(path: str) -> str:
    for top in ("/bin/", "/sbin/", "/lib/", "/lib64/"):
        if path.startswith(top):
            return "/usr" + path
    return path


def copy_in(rootfs: Path, path: str, source: Path | None = None) -> None:
    """The file `path` of this machine (or `source`) at the same place in the rootfs; a link stays
    a link."""
    source = source or Path(path)
    dest = rootfs / in_usr(path).lstrip("/")
    if dest.exists() or dest.is_symlink():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        dest.symlink_to(os.readlink(source))
    else:
        shutil.copy2(source, dest)


def debian_files(rootfs: Path, packages: tuple[str, ...]) -> int:
    count = 0
    for path in run("dpkg", "-L", *packages).splitlines():
        source = Path(path)
        if path.startswith(SKIPPED) or not (source.is_symlink() or source.is_file()):
            continue
        copy_in(rootfs, path)
        count += 1
    return count


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def libraries(rootfs: Path) -> tuple[int, list[str]]:
    """Copy in what every ELF file of the rootfs links from this machine; (copied, not found).

    A wheel's bundled libraries (auditwheel's `name-<hash>.so`) link each other by a name ldd alone
    does not find; the extension that loads them has already loaded it: they count as found."""
    copied, unresolved = 0, set()
    while True:
        elves = [p for p in rootfs.rglob("*") if p.is_file() and not p.is_symlink() and is_elf(p)]
        wanted: set[str] = set()
        for start in range(0, len(elves), 200):
            done = subprocess.run(
                ["ldd", *map(str, elves[start : start + 200])], capture_output=True, text=True, check=False
            )
            wanted.update(re.findall(r"(?:=> )?(/\S+) \(0x", done.stdout))
            unresolved.update(re.findall(r"^\s*(\S+) => not found", done.stdout, re.MULTILINE))
        new = [
            p
            for p in wanted
            if not p.startswith(str(rootfs)) and not (rootfs / in_usr(p).lstrip("/")).exists()
        ]
        if not new:
            names = {p.name for p in elves}
            return copied, sorted(unresolved - names)
        for path in new:
            copy_in(rootfs, path, Path(path).resolve())
        copied += len(new)


def accounts(rootfs: Path, users: dict[str, tuple[int, str]]) -> None:
    etc = rootfs / "etc"
    etc.mkdir(exist_ok=True)
    passwd = [f"{user}:x:{uid}:{uid}:{user}:{home}:/usr/sbin/nologin" for user, (uid, home) in users.items()]
    (etc / "passwd").write_text(
        "\n".join(passwd).replace("0:root:/root:/usr/sbin/nologin", "0:root:/root:/bin/sh") + "\n"
    )
    (etc / "group").write_text("".join(f"{user}:x:{uid}:\n" for user, (uid, _) in users.items()))
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")


def populate_mlflow(rootfs: Path) -> dict:
    usr_merged(rootfs)
    files = debian_files(rootfs, PYTHON_PACKAGES)
    venv = rootfs / VENV.lstrip("/")
    run("/usr/bin/python3", "-m", "venv", str(venv))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile"]
    run(*pip, "--disable-pip-version-check", "-r", str(REQUIREMENTS))
    relocate(venv)
    for tree in (rootfs / "usr" / "lib" / "python3.11", venv / "lib"):
        compile_cmd = [
            str(venv / "bin" / "python"),
            "-m",
            "compileall",
            "-q",
            "-j",
            "2",
            "-s",
            str(rootfs),
            "-p",
            "/",
        ]
        subprocess.run([*compile_cmd, str(tree)], capture_output=True, check=False)  # a few test files fail
    copied, unresolved = libraries(rootfs)
    accounts(rootfs, {"root": (0, "/root"), "mlflow": (UID, "/home/mlflow")})
    for path, mode in (("mlflow", 0o755), ("home/mlflow", 0o700)):
        (rootfs / path).mkdir(parents=True, mode=mode)
    for path in ("mlflow", "home/mlflow", VENV.lstrip("/")):
        run("chown", "-R", f"{UID}:{GID}", str(rootfs / path))
    freeze = run(str(venv / "bin" / "python"), "-m", "pip", "freeze", "--disable-pip-version-check").split()
    return {"debian_files": files, "libraries": copied, "unresolved": unresolved, "python_packages": freeze}


def relocate(venv: Path) -> None:
    """The venv was made at its build path: its scripts' shebangs and pyvenv.cfg name /opt/venv."""
    built, target = str(venv).encode(), VENV.encode()
    for path in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink() and not is_elf(path):
            path.write_bytes(path.read_bytes().replace(built, target))
    left = subprocess.run(
        ["grep", "-rlIF", str(venv), str(venv)], capture_output=True, text=True, check=False
    )
    if left.stdout.strip():
        raise RuntimeError(f"the venv still names its build path in {left.stdout.split()}")


def populate_busybox(rootfs: Path) -> dict:
    usr_merged(rootfs)
    copy_in(rootfs, "/bin/busybox", Path("/usr/bin/busybox"))
    copy_in(rootfs, "/bin/find", Path("/usr/bin/find"))
    copy_in(rootfs, "/bin/nc", Path("/usr/bin/nc.openbsd"))
    applets = [a for a in run("/usr/bin/busybox", "--list").split() if a not in ("busybox", "find", "nc")]
    for applet in applets:
        (rootfs / "usr" / "bin" / applet).symlink_to("busybox")
    copied, unresolved = libraries(rootfs)
    accounts(rootfs, {"root": (0, "/root")})
    return {"applets": len(applets), "libraries": copied, "unresolved": unresolved}
