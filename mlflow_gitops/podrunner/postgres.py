"""PostgreSQL: the CloudNativePG Cluster's stand-in."""

from __future__ import annotations

import secrets
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_gitops.podrunner.base import Obj, PodRunnerError
from mlflow_gitops.podrunner.kubelet_env import kubelet_env
from mlflow_gitops.podrunner.processes import Proc, free_port, read_from, run_command, spawn
from mlflow_gitops.podrunner.render import Render
from mlflow_gitops.podrunner.store import Store


def postgres_bin() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    return found[-1].parent if found else None


@dataclass
class Postgres:
    cluster: Obj
    owner: str
    password: str
    base: Path
    port: int = 0
    proc: Proc | None = None
    _cpus: Sequence[int] | None = None

    @classmethod
    def for_cluster(cls, cluster: Obj, store: Store, base: Path) -> Postgres:
        """The stand-in of a CNPG Cluster: its owner, with the password of its initdb secret."""
        initdb = cluster["spec"]["bootstrap"]["initdb"]
        cname = cluster["metadata"]["name"]
        secret_name = (initdb.get("secret") or {}).get("name", f"{cname}-app")
        creds = (
            store.source("Secret", secret_name, False, f"Cluster {cname} spec.bootstrap.initdb.secret") or {}
        )
        if creds.get("username", b"").decode() != initdb["owner"]:
            raise PodRunnerError(
                f"Cluster {cname}: initdb secret's username is not the owner {initdb['owner']!r}"
            )
        return cls(cluster, initdb["owner"], creds["password"].decode(), base)

    @property
    def database(self) -> str:
        return str(self.cluster["spec"]["bootstrap"]["initdb"]["database"])

    def start(self, cpus: Sequence[int] | None = None) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise PodRunnerError("no PostgreSQL server in /usr/lib/postgresql (run `make e2e-deps`)")
        self.base.mkdir(parents=True)
        shutil.chown(self.base, "postgres", "postgres")
        data, sock = self.base / "data", self.base / "sock"
        sock.mkdir()
        shutil.chown(sock, "postgres", "postgres")
        initdb = self.cluster["spec"]["bootstrap"]["initdb"]
        pwfile = self.base / "pw"
        pwfile.write_text(secrets.token_urlsafe(24))  # the superuser's: nobody uses it
        shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        run_command(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                f"--encoding={initdb.get('encoding', 'UTF8')}",
                f"--lc-collate={initdb.get('localeCollate', 'C')}",
                f"--lc-ctype={initdb.get('localeCType', 'C')}",
            ],
            env={"PATH": "/usr/bin:/bin", "LANG": "C"},
            **self._as_postgres(),
        )
        pwfile.unlink()
        self.port = free_port()
        self._cpus = cpus
        self.resume()
        self.psql(
            'CREATE ROLE :"owner" LOGIN PASSWORD :\'pw\';\nCREATE DATABASE :"db" OWNER :"owner";\n',
            variables={"owner": self.owner, "pw": self.password, "db": self.database},
        )

    def resume(self) -> None:
        """Start the server on its data directory and port (first start, or again after stop())."""
        bindir = postgres_bin()
        assert bindir is not None
        params = {
            str(k): str(v)
            for k, v in (self.cluster["spec"].get("postgresql", {}).get("parameters") or {}).items()
        }
        params |= {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.base / "sock"),
        }
        argv = [str(bindir / "postgres"), "-D", str(self.base / "data")]
        for key, value in params.items():
            argv += ["-c", f"{key}={value}"]
        if self._cpus:
            argv = ["taskset", "-c", ",".join(map(str, self._cpus)), *argv]
        log = self.base.parent / "logs" / "postgres.log"
        offset = log.stat().st_size if log.exists() else 0
        self.proc = spawn("postgres", argv, log, env={"LANG": "C"}, **self._as_postgres())
        deadline = time.monotonic() + 60
        while "database system is ready to accept connections" not in read_from(log, offset):
            if not self.proc.alive() or time.monotonic() > deadline:
                raise PodRunnerError(f"postgres did not become ready:\n{self.proc.log_tail()}")
            time.sleep(0.05)

    def psql(
        self, sql: str, *, database: str = "postgres", variables: Mapping[str, str] | None = None
    ) -> str:
        """Run SQL as the superuser over the Unix socket; returns psql's unaligned output."""
        bindir = postgres_bin()
        assert bindir is not None
        argv = [str(bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", str(self.base / "sock"), "-p", str(self.port), "-U", "postgres", "-d", database]
        for key, value in (variables or {}).items():
            argv += ["-v", f"{key}={value}"]
        return run_command(argv, input=sql, env={"PATH": "/usr/bin:/bin"}, **self._as_postgres()).stdout

    def max_connections(self) -> int:
        return int(self.psql("SHOW max_connections").strip())

    def connections(self) -> int:
        """Client connections open to the application database now (pg_stat_activity)."""
        return int(
            self.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :'db'", variables={"db": self.database}
            ).strip()
        )

    def reset_database(self) -> None:
        """Drop the application database and create it empty again, as CNPG's initdb leaves it."""
        self.psql(
            'DROP DATABASE IF EXISTS :"db" WITH (FORCE);\nCREATE DATABASE :"db" OWNER :"owner";\n',
            variables={"owner": self.owner, "db": self.database},
        )

    def _as_postgres(self) -> dict[str, Any]:
        return {"user": "postgres", "group": "postgres", "extra_groups": [], "cwd": str(self.base)}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(signal.SIGINT, grace=30)  # fast shutdown


def cluster_of(render: Render, container: Obj, store: Store) -> Obj:
    """The CNPG Cluster behind the server's PGHOST (`<cluster>-rw`...), or the render's only one."""
    where = "spec.template.spec.containers[0]"
    pghost = kubelet_env(container, store, {}, where).get("PGHOST", "")
    clusters = render.find("Cluster")
    for c in clusters:
        if pghost.startswith(c["metadata"]["name"] + "-"):
            return c
    if len(clusters) == 1:
        return clusters[0]
    raise PodRunnerError(f"{render.path}: cannot tell which CNPG Cluster backs PGHOST={pghost!r}")
