"""Images: what the render's images are on this machine."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from mlflow_gitops.podrunner.base import BUSYBOX, VENV, Obj, PodRunnerError
from mlflow_gitops.podrunner.processes import run_command


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
    venv: Path | None = None  # the host venv that stands in for the image's /opt/venv


def mlflow_version(venv: Path | None = None) -> str | None:
    """The mlflow installed in `venv` (default: VENV)."""
    try:
        dist = next(iter(metadata.distributions(name="mlflow", path=_site_packages(venv or VENV))), None)
    except OSError:
        return None
    return dist.version if dist else None


def _site_packages(venv: Path) -> list[str]:
    return [str(p) for p in (venv / "lib").glob("python3*/site-packages")]


def images(venv: Path | None = None) -> dict[str, Image]:
    """The images known here; burakince/mlflow is `venv` (default: VENV, the one this runs in)."""
    venv = venv or VENV
    debian_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return {
        # github.com/burakince/mlflow Dockerfile-debian: python:3.13-slim, venv /opt/venv, user
        # mlflow 1001:1001 with home /home/mlflow, WORKDIR /mlflow owned by it.
        "burakince/mlflow": Image(
            repository="burakince/mlflow",
            env={
                "PATH": f"{venv}/bin:/usr/local/bin:{debian_path}",
                "LANG": "C.UTF-8",
                "PYTHONUNBUFFERED": "1",
            },
            workdir="/mlflow",
            homes={0: "/root", 1001: "/home/mlflow"},
            dirs=(("/mlflow", 1001, 1001, 0o755), ("/home/mlflow", 1001, 1001, 0o700)),
            commands=frozenset({"mlflow", "python", "python3", "uvicorn", "alembic"}),
            venv=venv,
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
    return frozenset(run_command([BUSYBOX, "--list"]).stdout.split())


def image_of(container: Obj, where: str, venv: Path | None = None) -> Image:
    """The stand-in of the container's image; burakince/mlflow is `venv` (default: VENV), whose
    mlflow must be the image's tag."""
    ref = str(container.get("image", ""))
    repository, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    repository = repository.removeprefix("docker.io/").removeprefix("library/")
    known = images(venv)
    if repository not in known:
        raise PodRunnerError(f"{where}.image {ref!r}: no local stand-in (known: {', '.join(sorted(known))})")
    image = known[repository]
    if repository == "burakince/mlflow":
        installed = mlflow_version(venv)
        if installed is None:
            raise PodRunnerError(
                f"{where}.image {ref!r}: mlflow is not installed in {venv or VENV} (run `make e2e`)"
            )
        if tag.split("-")[0] != installed:
            raise PodRunnerError(
                f"{where}.image {ref!r}: the venv {venv or VENV} has mlflow {installed}, not {tag}"
            )
    if image.busybox and not Path(BUSYBOX).exists():
        raise PodRunnerError(f"{where}.image {ref!r}: needs {BUSYBOX} (`make e2e-deps` installs it)")
    return image
