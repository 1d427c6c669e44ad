"""What `make up` tells a person to open, and what the preview must allow for it to work.

`make up` serves the rendered pod on 127.0.0.1:<UP_PORT>, as `kubectl port-forward svc/mlflow
<port>:80` does, and the address to open is http://localhost:<port> (http://127.0.0.1:<port> too).
MLflow answers 403 to a Host header outside MLFLOW_SERVER_ALLOWED_HOSTS (unset: MLflow's defaults,
which admit localhost and 127.0.0.1 on any port) and to an API write whose Origin is outside
MLFLOW_SERVER_CORS_ALLOWED_ORIGINS (the UI's reads are POSTs too). The homelab render allows
localhost:5000 and 127.0.0.1:5000 with their origins, so with the default UP_PORT=5000 nothing is
changed. With another port, or a render without those entries (lab-minimal), the preview adds that
port's two hosts and origins to the server's environment, for this preview only: the render and
the committed files are unchanged, and `preview_notice` says so when it starts, because a
port-forward to the cluster on that port would be refused.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

HOSTS = "MLFLOW_SERVER_ALLOWED_HOSTS"
ORIGINS = "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"
LOOPBACK = ("localhost", "127.0.0.1")


def listed(env: Mapping[str, str], key: str) -> list[str]:
    return [item.strip() for item in env.get(key, "").split(",") if item.strip()]


def matches(value: str, patterns: list[str]) -> bool:
    """MLflow's rule: a pattern with `*` is an fnmatch pattern, anything else must be equal."""
    return any(fnmatch.fnmatch(value, p) if "*" in p else value == p for p in patterns)


@dataclass(frozen=True)
class Preview:
    url: str  # what a person opens
    added: dict[str, list[str]] = field(default_factory=dict)  # per variable, the preview-only entries
    env_overrides: dict[str, str] = field(default_factory=dict)  # the server's env for this preview

    @property
    def as_rendered(self) -> bool:
        return not self.added


def browser_access(env: Mapping[str, str], port: int) -> Preview:
    """The address for `port` and the entries the server's `env` lacks for it (none: as rendered)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port}: expected 1-65535")
    wanted = {
        HOSTS: [f"{host}:{port}" for host in LOOPBACK],
        ORIGINS: [f"http://{host}:{port}" for host in LOOPBACK],
    }
    added: dict[str, list[str]] = {}
    overrides: dict[str, str] = {}
    for key, entries in wanted.items():
        current = listed(env, key)
        if not current or "*" in current:
            continue  # MLflow's defaults (or a wildcard) admit localhost already
        lacking = [entry for entry in entries if not matches(entry, current)]
        if lacking:
            added[key] = lacking
            overrides[key] = ",".join([*current, *lacking])
    return Preview(f"http://localhost:{port}", added, overrides)


def preview_notice(preview: Preview, env: Mapping[str, str], render: str, port: int) -> str | None:
    """Said when the preview starts with entries the render does not have; None when it has them."""
    if preview.as_rendered:
        return None
    own = [h for h in listed(env, HOSTS) if h.split(":")[0] in LOOPBACK]
    allowed = f"only at {', '.join(own)}" if own else "at no localhost address"
    added = "; ".join(f"{key} += {','.join(entries)}" for key, entries in preview.added.items())
    return (
        f"podrunner: --port {port} (make up UP_PORT={port}): {render} allows a browser {allowed} "
        f"({HOSTS}).\n"
        f"  For this preview only, the server also allows {added}.\n"
        f"  {render} is unchanged: in the cluster, `kubectl port-forward svc/mlflow {port}:80` "
        "would be refused (403)."
    )


def ready_message(preview: Preview, version: str | None, render: str, port: int) -> str:
    """What `make up` prints once the server is ready."""
    how = (
        f"allowed by the render, as through `kubectl port-forward svc/mlflow {port}:80` in the cluster"
        if preview.as_rendered
        else "with the preview-only entries above"
    )
    return (
        f"\nMLflow {version} is up: the pod of {render} (Ctrl-C stops MLflow and PostgreSQL).\n"
        f"  Open {preview.url} in a browser: the UI reads and writes ({how}).\n"
        f"  Python client: MLFLOW_TRACKING_URI={preview.url}\n"
    )
