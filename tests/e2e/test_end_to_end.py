"""End to end: the rendered pod (command, args, env, volumes, user) against a real PostgreSQL.

Behaviour is observed only through the server's HTTP API, with the Host headers real clients send:
the HTTPRoute hostname (through the gateway) and the Service name (from other pods). A few tests
read /proc of the server to prove the harness ran exactly what the render says.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from mlflow_gitops import podrunner
from mlflow_gitops.podrunner import PodRunner, PodRunnerError

pytestmark = pytest.mark.e2e

BIG = 200 * 2**20  # bytes; generated and streamed, never written on the client side
CHUNK = 2**20


class Api:
    """The MLflow REST API through the port-forward, with a given Host header."""

    def __init__(self, base: str, host: str) -> None:
        self.base, self.host = base, host
        self.http = requests.Session()
        self.http.headers["Host"] = host

    def call(self, method: str, path: str, *, expect: int = 200, **kwargs: Any) -> requests.Response:
        resp = self.http.request(method, f"{self.base}{path}", timeout=120, **kwargs)
        assert resp.status_code == expect, (
            f"{method} {path} (Host {self.host}): {resp.status_code} {resp.text[:300]}"
        )
        return resp

    def post(self, endpoint: str, body: dict[str, Any]) -> Any:
        return self.call("POST", f"/api/2.0/mlflow/{endpoint}", json=body).json()

    def get(self, endpoint: str, **params: Any) -> Any:
        return self.call("GET", f"/api/2.0/mlflow/{endpoint}", params=params).json()

    def new_run(self, prefix: str) -> dict[str, Any]:
        exp = self.post("experiments/create", {"name": f"{prefix}-{uuid.uuid4().hex[:8]}"})["experiment_id"]
        run = self.post("runs/create", {"experiment_id": exp, "start_time": _now_ms()})["run"]["info"]
        return dict(run)

    def artifact_url(self, run: dict[str, Any], name: str) -> str:
        uri = str(run["artifact_uri"])
        assert uri.startswith("mlflow-artifacts:/"), f"artifacts are not proxied: {uri}"
        return (
            f"/api/2.0/mlflow-artifacts/artifacts/{uri.removeprefix('mlflow-artifacts:/').strip('/')}/{name}"
        )


class Generated:
    """`size` pseudo-random bytes produced while they are sent, hashed on the way."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.rng, self.sha = size, random.Random(seed), hashlib.sha256()

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        left = self.size
        while left:
            chunk = self.rng.randbytes(min(CHUNK, left))
            self.sha.update(chunk)
            left -= len(chunk)
            yield chunk


def _now_ms() -> int:
    return int(time.time() * 1000)


def _download_sha256(api: Api, path: str) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with api.http.get(f"{api.base}{path}", stream=True, timeout=600) as resp:
        assert resp.status_code == 200, f"GET {path}: {resp.status_code} {resp.text[:300]}"
        for chunk in resp.iter_content(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


@pytest.fixture(scope="session", params=["route", "service"])
def api(request: pytest.FixtureRequest, stack: PodRunner) -> Api:
    """Both ways in: the HTTPRoute hostname, and the Service's in-cluster name with its port."""
    return Api(stack.url, stack.route_host if request.param == "route" else stack.service_host)


@pytest.fixture(scope="session")
def route(stack: PodRunner) -> Api:
    return Api(stack.url, stack.route_host)


def _proc_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _proc_argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


# ------------------------------------------------------------------------------------------------


def test_server_imports_its_auth_module_as_the_image_does() -> None:
    """runs/search imports mlflow.server.auth on every call. The image installs mlflow[auth], so the
    import succeeds once; without Flask-WTF it fails every time, and concurrent searches then see
    the module half-initialised and answer 500 (requirements-e2e.txt)."""
    python = podrunner.VENV / "bin" / "python"  # the image's server, as the pod runner runs it
    done = subprocess.run(
        [str(python), "-c", "import mlflow.server.auth"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-500:]


def test_probe_endpoints_answer_any_host(stack: PodRunner) -> None:
    """/health and /version are exempt from the Host check: the kubelet probes the pod IP."""
    image_tag = stack.main_container["image"].rsplit(":", 1)[1]
    for host in ("10.42.0.17:5000", stack.route_host):
        api = Api(stack.url, host)
        assert api.call("GET", "/health").text == "OK"
        assert api.call("GET", "/version").text == image_tag


def test_tracking_round_trip(api: Api) -> None:
    run = api.new_run("tracking")
    run_id = run["run_id"]
    api.post("runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.01"})
    api.post(
        "runs/log-metric", {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": _now_ms(), "step": 0}
    )
    api.post(
        "runs/log-batch",
        {
            "run_id": run_id,
            "params": [{"key": "epochs", "value": "3"}],
            "metrics": [
                {"key": "loss", "value": 0.1 * s, "timestamp": _now_ms(), "step": s} for s in (1, 2, 3)
            ],
            "tags": [{"key": "team", "value": "homelab"}],
        },
    )
    api.post("runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": _now_ms()})
    data = api.get("runs/get", run_id=run_id)["run"]
    assert data["info"]["status"] == "FINISHED"
    assert {p["key"]: p["value"] for p in data["data"]["params"]} == {"lr": "0.01", "epochs": "3"}
    assert {t["key"]: t["value"] for t in data["data"]["tags"]}["team"] == "homelab"
    history = api.get("metrics/get-history", run_id=run_id, metric_key="loss")["metrics"]
    assert sorted(m["step"] for m in history) == [0, 1, 2, 3]


def test_runs_are_searchable_by_param_and_metric(route: Api) -> None:
    runs = [route.new_run("search") for _ in range(1)]
    exp = runs[0]["experiment_id"]
    for lr, loss in (("0.1", 0.9), ("0.01", 0.2), ("0.001", 0.4)):
        run_id = route.post("runs/create", {"experiment_id": exp, "start_time": _now_ms()})["run"]["info"][
            "run_id"
        ]
        route.post(
            "runs/log-batch",
            {
                "run_id": run_id,
                "params": [{"key": "lr", "value": lr}],
                "metrics": [{"key": "loss", "value": loss, "timestamp": _now_ms(), "step": 0}],
            },
        )
    found = route.post(
        "runs/search",
        {
            "experiment_ids": [exp],
            "filter": "metrics.loss < 0.5 and params.lr != '0.1'",
            "order_by": ["metrics.loss ASC"],
        },
    )["runs"]
    assert [r["data"]["params"][0]["value"] for r in found] == ["0.01", "0.001"]


def test_small_artifact_round_trip(api: Api) -> None:
    run = api.new_run("artifact")
    body = f"hello from {api.host}\n".encode() * 100
    api.call("PUT", api.artifact_url(run, "notes/hello.txt"), data=body)
    listed = api.get("artifacts/list", run_id=run["run_id"], path="notes")["files"]
    assert listed == [{"path": "notes/hello.txt", "is_dir": False, "file_size": len(body)}]
    assert _download_sha256(api, api.artifact_url(run, "notes/hello.txt")) == (
        hashlib.sha256(body).hexdigest(),
        len(body),
    )


def test_200_mib_artifact_streams_through_the_proxy(route: Api) -> None:
    run = route.new_run("big-artifact")
    payload = Generated(BIG, seed=20)
    started = time.monotonic()
    route.call("PUT", route.artifact_url(run, "data/big.bin"), data=payload)
    up = time.monotonic() - started
    listed = route.get("artifacts/list", run_id=run["run_id"], path="data")["files"]
    assert listed == [{"path": "data/big.bin", "is_dir": False, "file_size": BIG}]
    started = time.monotonic()
    assert _download_sha256(route, route.artifact_url(run, "data/big.bin")) == (payload.sha.hexdigest(), BIG)
    print(f"200 MiB artifact: up {up:.1f} s, down {time.monotonic() - started:.1f} s")


def test_model_registry_versions_and_aliases(route: Api) -> None:
    run = route.new_run("registry")
    route.call("PUT", route.artifact_url(run, "model/MLmodel"), data=b"artifact_path: model\nflavors: {}\n")
    name = f"model-{uuid.uuid4().hex[:8]}"
    route.post("registered-models/create", {"name": name})
    source = f"{run['artifact_uri']}/model"
    version = route.post("model-versions/create", {"name": name, "source": source, "run_id": run["run_id"]})[
        "model_version"
    ]
    assert version["version"] == "1"
    route.post("registered-models/alias", {"name": name, "alias": "champion", "version": "1"})
    by_alias = route.get("registered-models/alias", name=name, alias="champion")["model_version"]
    assert (by_alias["version"], by_alias["run_id"], by_alias["source"]) == ("1", run["run_id"], source)
    found = route.get("model-versions/search", filter=f"name='{name}'")["model_versions"]
    assert [v["version"] for v in found] == ["1"]
    assert route.get("registered-models/get", name=name)["registered_model"]["aliases"] == [
        {"alias": "champion", "version": "1"}
    ]


def test_ui_origin_may_write(stack: PodRunner) -> None:
    api = Api(stack.url, stack.route_host)
    api.http.headers["Origin"] = f"https://{stack.route_host}"
    api.post("experiments/create", {"name": f"from-ui-{uuid.uuid4().hex[:8]}"})


def test_other_origins_may_not_write(stack: PodRunner) -> None:
    api = Api(stack.url, stack.route_host)
    api.http.headers["Origin"] = "https://evil.example"
    resp = api.call("POST", "/api/2.0/mlflow/experiments/create", json={"name": "x"}, expect=403)
    assert resp.text == "Cross-origin request blocked"


@pytest.mark.parametrize(
    "host", ["evil.example", "localhost:8080", "127.0.0.1:8080", "mlflow.lab.daviestechlabs.io:443"]
)
def test_hosts_outside_the_allowed_list_are_refused(stack: PodRunner, host: str) -> None:
    """DNS-rebinding protection: a port-forward to another local port than the allowed one is
    refused too."""
    resp = Api(stack.url, host).call(
        "GET", "/api/2.0/mlflow/experiments/search", params={"max_results": 1}, expect=403
    )
    assert "Invalid Host header" in resp.text


def test_flask_secret_key_is_the_vault_backed_one(stack: PodRunner) -> None:
    """envFrom order: the ExternalSecret's Secret comes after the chart's placeholder and wins."""
    key = "MLFLOW_FLASK_SERVER_SECRET_KEY"
    vault = [values[key] for values in stack.test_secrets.values() if key in values]
    placeholders = [
        base64.b64decode(s["data"][key]).decode()
        for s in stack.render.find("Secret")
        if key in (s.get("data") or {})
    ]
    assert len(vault) == 1 and placeholders, "expected one Vault-backed and one rendered Flask secret key"
    got = _proc_env(stack.server.pid)[key]
    assert got == vault[0]
    assert got not in placeholders


def test_server_runs_the_rendered_command_as_the_pod_user(stack: PodRunner) -> None:
    """argv is command + args; the kernel shows the `mlflow` script behind its interpreter."""
    container = stack.main_container
    argv: list[str] = [*container["command"], *container["args"]]
    command, args = argv[0], argv[1:]
    interpreter, script, *rest = _proc_argv(stack.server.pid)
    assert script == shutil.which(command, path=stack.server_env["PATH"])
    assert Path(script).read_text().startswith(f"#!{interpreter}")
    assert rest == args
    status = dict(
        line.split(":\t", 1)
        for line in Path(f"/proc/{stack.server.pid}/status").read_text().splitlines()
        if ":\t" in line
    )
    pod_sc = stack.pod["securityContext"]
    assert status["Uid"].split()[0] == str(container["securityContext"]["runAsUser"]) == "1001"
    assert status["Gid"].split()[0] == str(container["securityContext"]["runAsGroup"])
    assert set(status["Groups"].split()) == {
        str(g) for g in [pod_sc["fsGroup"], *pod_sc.get("supplementalGroups", [])]
    }
    assert status["NoNewPrivs"].strip() == "1" and int(status["CapEff"], 16) == 0


def test_uvicorn_receives_the_rendered_uvicorn_opts(stack: PodRunner) -> None:
    """`--uvicorn-opts='--log-level=info'` keeps its quotes in argv; MLflow shlex-splits them away."""
    opts = [a.split("=", 1)[1] for a in stack.main_container["args"] if a.startswith("--uvicorn-opts=")]
    assert opts, "the render passes no --uvicorn-opts"
    uvicorn = [_proc_argv(p) for p in stack.server.tree() if _proc_argv(p)[1:3] == ["-m", "uvicorn"]]
    assert len(uvicorn) == 1, "expected one uvicorn parent"
    for token in shlex.split(opts[0]):
        assert token in uvicorn[0]
    assert not any("'" in arg for arg in uvicorn[0])


def test_database_has_the_clusters_parameters(stack: PodRunner) -> None:
    params = stack.render.one("Cluster")["spec"]["postgresql"]["parameters"]
    assert stack.postgres.max_connections() == int(params["max_connections"])


# ------------------------------------------------------------------------------------------------
# The harness's own promises (no server needed): kubelet semantics, and loud refusals.


def test_dollar_references_expand_as_the_kubelet_does() -> None:
    env = {"A": "a", "B": "$(A)"}
    cases = {
        "$(A)-x": "a-x",
        "$$(A)": "$(A)",
        "$(MISSING)": "$(MISSING)",
        "$(A": "$(A",
        "a$b$": "a$b$",
        "$(B)": "$(A)",  # values are not expanded twice
    }
    for text, want in cases.items():
        assert podrunner.expand(text, env.get) == want


def test_later_env_from_sources_win_and_env_entries_override_them() -> None:
    store = podrunner.Store(
        configmaps={"cm": {"K": b"from-cm", "ONLY_CM": b"1"}},
        secrets={"s1": {"K": b"from-s1"}, "s2": {"K": b"from-s2", "USER": b"u"}},
    )
    container = {
        "envFrom": [
            {"configMapRef": {"name": "cm"}},
            {"secretRef": {"name": "s1"}},
            {"secretRef": {"name": "s2"}},
        ],
        "env": [
            {"name": "ONLY_CM", "value": "env-$(USER)"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "USER"}}},
        ],
    }
    env = podrunner.kubelet_env(container, store, {"SVC_SERVICE_HOST": "127.1.0.1", "K": "svc"}, "c")
    assert (env["K"], env["ONLY_CM"], env["PW"], env["SVC_SERVICE_HOST"]) == (
        "from-s2",
        "env-u",
        "u",
        "127.1.0.1",
    )


def test_harness_names_what_the_render_asks_and_it_cannot_provide(tmp_path: Path) -> None:
    store = podrunner.Store(configmaps={}, secrets={})
    render = podrunner.Render(tmp_path / "render.yaml", [])
    cases: list[tuple[Any, str]] = [
        (
            lambda: podrunner.kubelet_env({"envFrom": [{"secretRef": {"name": "nope"}}]}, store, {}, "c"),
            "nope",
        ),
        (
            lambda: podrunner.image_of({"image": "nginx:1.27"}, "spec.containers[0]"),
            "spec.containers[0].image",
        ),
        (
            lambda: podrunner.materialize_volumes(
                {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, render, store, tmp_path, None
            ),
            "volumes[0] (h): volume type ['hostPath']",
        ),
        (
            lambda: podrunner.kubelet_env(
                {"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]},
                store,
                {},
                "c",
            ),
            "c.env[0] (X)",
        ),
    ]
    for call, named in cases:
        with pytest.raises(PodRunnerError, match=re.escape(named)):
            call()
