"""`make up` and the command line of the pod runner."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mlflow_gitops.podrunner.base import DEFAULT_RENDER, PodRunnerError
from mlflow_gitops.podrunner.images import image_of, mlflow_version
from mlflow_gitops.podrunner.kubelet_env import expand_argv
from mlflow_gitops.podrunner.namespaces import cmd_enter, cmd_forward, cmd_pause
from mlflow_gitops.podrunner.pod import PodRunner
from mlflow_gitops.podrunner.store import external_secret_targets


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _cmd_up(render: Path, port: int, cpus: Sequence[int] | None) -> int:
    from mlflow_gitops.podrunner import preview

    if not 1 <= port <= 65535:
        raise PodRunnerError(f"--port {port} (make up UP_PORT={port}): expected 1-65535 (default 5000)")
    stack = PodRunner(render, local_port=port, cpus=cpus, stream_logs=True)
    # The address to open is http://localhost:<port>; what the render does not allow for it is
    # added for this preview only, and said (preview.py).
    where = "spec.template.spec.containers[0]"
    env = stack.resolved_env(stack.main_container, where, image_of(stack.main_container, where), "<pod>")
    access = preview.browser_access(env, port)
    stack.env_overrides = {**stack.env_overrides, **access.env_overrides}
    if notice := preview.preview_notice(access, env, str(render), port):
        print(notice, file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"podrunner: starting PostgreSQL and the pod of {render} ...", file=sys.stderr, flush=True)
    try:
        stack.start()
        print(preview.ready_message(access, mlflow_version(), str(render), port), file=sys.stderr, flush=True)
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
        cmd_pause(args.hostname)
    elif args.cmd == "_forward":
        cmd_forward(args.listen, args.connect, args.listen_ns, args.connect_ns)
    elif args.cmd == "_enter":
        cmd_enter(args.spec)
    return 0
