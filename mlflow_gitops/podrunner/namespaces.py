"""Helpers that run inside the pod's namespaces (the internal subcommands)."""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import socket
import struct
import threading
from pathlib import Path

from mlflow_gitops.podrunner.base import BUSYBOX, SHM_SIZE
from mlflow_gitops.podrunner.processes import run_command
from mlflow_gitops.podrunner.relay import relay

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


def cmd_pause(hostname: str) -> None:
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


def cmd_forward(listen: str, connect: str, listen_ns: str | None, connect_ns: str | None) -> None:
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
        threading.Thread(target=relay, args=(client, (chost, int(cport))), daemon=True).start()


def cmd_enter(spec_file: str) -> None:
    """Inside a fresh mount namespace: build the container's root, chroot, drop privileges, exec."""
    spec = json.loads(Path(spec_file).read_text())
    scratch = Path(spec["scratch"])

    def mount(*args: str) -> None:
        run_command(["mount", *args])

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
        for name in run_command([BUSYBOX, "--list"]).stdout.split():
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
    for path in spec[
        "host_paths"
    ]:  # a volume over the stand-in Python (a checkout under /tmp): show it again
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
