"""The node's images, built here and imported into containerd: nothing is pulled.

Each is an OCI layout made with umoci from scratch (`umoci init`, `new`, `unpack`, files copied
into the rootfs, `repack`, `config`), packed as a tar and imported with
`ctr -n k8s.io images import --base-name localhost/<name>`, so the CRI sees `localhost/<name>:latest`:

* pause: the static bin/pause, containerd's sandbox image;
* coredns: the static bin/coredns;
* busybox: Debian's busybox, a link per applet and the shared libraries it links (ldd), for test
  pods;
* the render's own images (mlflow, chart-busybox: mlflow_gitops.node.render_images), cached between
  runs and also tagged with the exact references the render uses.

Every imported image is pinned (`import_tar`), so the kubelet's image collection leaves it alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from mlflow_gitops.node import render_images
from mlflow_gitops.node.gobuild import BIN

TAG = "latest"
PINNED = "io.cri-containerd.pinned=pinned"  # the CRI reports the image pinned


def image_ref(name: str) -> str:
    return f"localhost/{name}:{TAG}"


def run(*cmd: str) -> str:
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def shared_libraries(binary: Path) -> list[Path]:
    """The loader and libraries `ldd` resolves for a dynamically linked binary."""
    out = run("ldd", str(binary))
    return [Path(p) for p in re.findall(r"(/\S+) \(0x", out)]


def rootfs_files(name: str) -> tuple[dict[str, Path], dict[str, str], list[str]]:
    """(files: path in image -> source, symlinks: path -> target, entrypoint) of each image."""
    if name == "pause":
        return {"/pause": BIN / "pause"}, {}, ["/pause"]
    if name == "coredns":
        return {"/coredns": BIN / "coredns"}, {}, ["/coredns"]
    if name == "busybox":
        busybox = Path("/usr/bin/busybox")
        files = {"/bin/busybox": busybox}
        files.update({str(lib): lib.resolve() for lib in shared_libraries(busybox)})
        # Debian's busybox runs applets only through links named after them.
        applets = run(str(busybox), "--list").split()
        return files, {f"/bin/{applet}": "busybox" for applet in applets if applet != "busybox"}, ["/bin/sh"]
    raise ValueError(f"unknown image {name!r}: allowed pause, coredns, busybox")


IMAGES = ("pause", "coredns", "busybox", *render_images.IMAGES)


def build(name: str, work: Path) -> Path:
    """An OCI layout tar of image `name` under `work` (the render's images: from their cache)."""
    if name in render_images.IMAGES:
        return render_images.build(name)
    layout, bundle = work / f"{name}-layout", work / f"{name}-bundle"
    for path in (layout, bundle):
        shutil.rmtree(path, ignore_errors=True)
    image = f"{layout}:{TAG}"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", image)
    run("umoci", "unpack", "--image", image, str(bundle))
    files, links, entrypoint = rootfs_files(name)
    rootfs = bundle / "rootfs"
    for target, source in files.items():
        dest = rootfs / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
    for target, points_to in links.items():
        (rootfs / target.lstrip("/")).symlink_to(points_to)
    run("umoci", "repack", "--image", image, str(bundle))
    config = ["umoci", "config", "--image", image, "--config.cmd", ""]
    for part in entrypoint:
        config += ["--config.entrypoint", part]
    run(*config)
    run("umoci", "gc", "--layout", str(layout))
    tar = work / f"{name}.tar"
    run("tar", "-C", str(layout), "-cf", str(tar), ".")
    shutil.rmtree(bundle, ignore_errors=True)
    return tar


def import_tar(tar: Path, repository: str, references: list[str], socket: Path) -> None:
    """`ctr images import` of `tar` under `repository` (the layout's tag), which must list as
    references[0]; the other references are tags of it. Each is pinned: the kubelet never deletes a
    pinned image, not even to reclaim disk under pressure, and these cannot be pulled back."""
    ctr = [str(BIN / "ctr"), "--address", str(socket), "-n", "k8s.io"]
    run(*ctr, "images", "import", "--base-name", repository, str(tar))
    listed = run(*ctr, "images", "list", "-q").split()
    if references[0] not in listed:
        raise RuntimeError(f"ctr imported {tar.name} but lists no {references[0]}: {listed}")
    for alias in references[1:]:
        run(*ctr, "images", "tag", "--force", references[0], alias)
    for reference in references:
        run(*ctr, "images", "label", reference, PINNED)


def import_image(name: str, tar: Path, socket: Path) -> None:
    import_tar(tar, f"localhost/{name}", [image_ref(name), *render_images.aliases(name)], socket)
