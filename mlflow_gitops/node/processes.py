"""What the node's own processes share (the components, kube-router, Flux's controllers): each runs
in the node's network namespace in a process group of its own, logs to a file, dies with this
process, is stopped by group, and answers a health endpoint on the node's address."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
from pathlib import Path
from typing import Self

from mlflow_gitops.child_process import die_with_parent
from mlflow_gitops.node import api, host


class Started:
    """A context manager over start()/stop(): a start that fails is stopped before it raises."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn(enter: list[str], cmd: list[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:  # fmt: skip
    """`cmd` inside the namespace (`enter`: its nsenter argv), output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            [*enter, *cmd], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with_parent, cwd=cwd, env=env,  # noqa: PLW1509
        )  # fmt: skip


def terminate(process: subprocess.Popen | None, grace: float = 20) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def tail(log: Path, lines: int = 25) -> str:
    text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
    return f"--- {log}\n" + "\n".join(text)


def healthy(netns: Path, port: int, path: str) -> tuple[bool, str]:
    """GET `path` on the node's address and `port`, from inside the node's namespace."""
    try:
        with api.network_namespace(netns):
            conn = http.client.HTTPConnection(host.NODE_IP, port, timeout=5)
            conn.connect()
    except OSError as error:
        return False, f"health port: {error}"
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status == 200, f"{path} {response.status}: {response.read()[:200]!r}"
    finally:
        conn.close()
