"""The upgrade rehearsal's data: what the previous MLflow writes through its API, read back through
the current one, and PostgreSQL's own record of the schema migration.

`populate` logs, through the REST API as a client does: experiments with tags; runs (the e2e
workload's plan: params, tags, metrics of several steps, artifact files whose checksums are
recorded) in each; a registered model per experiment with tags and a description, versions whose
source is a run's logged model files, version tags, and aliases. `read_back` reads all of it again
through a server: the two are compared as plain values (runs and artifacts as the workload's facts,
artifact bytes by SHA-256).

`SchemaAudit` installs, as the superuser, triggers that record every change of `alembic_version`
(old -> new revision, backend pid) and every DDL command into a schema of their own: the proof that
the migration ran once, step by step, in one session, and that a refused start changed nothing.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mlflow_gitops.podrunner import Postgres
from tests.support.readback import Reader
from tests.support.run_plans import RunPlan, facts, plan
from tests.support.workload import Client, Ledger

EXPERIMENTS = 3
RUNS_PER_EXPERIMENT = 2
VERSIONS_PER_MODEL = 2
ALIASES = ("champion", "challenger")
MODEL_FILES = {"MLmodel": b"artifact_path: model\nflavors: {}\n", "model.pkl": bytes(range(256)) * 64}

Facts = Counter[tuple[str, ...]]


@dataclass
class Data:
    """What the API shows: runs as facts, everything else as plain values, keyed by name."""

    experiments: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> its tags
    runs: Facts = field(default_factory=Counter)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> description, tags, aliases
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)  # "name/version" -> its fields

    def counts(self) -> dict[str, int]:
        kinds = Counter(item[0] for item in self.runs.elements())
        return {
            "experiments": len(self.experiments),
            "runs": kinds["run"],
            "params": kinds["param"],
            "run tags": kinds["tag"],
            "metric points": kinds["metric"],
            "artifact files": kinds["artifact"],
            "artifact bytes": sum(int(i[3]) for i in self.runs.elements() if i[0] == "artifact"),
            "registered models": len(self.models),
            "model versions": len(self.versions),
            "aliases": sum(len(m["aliases"]) for m in self.models.values()),
        }


def _run_plans(prefix: str, experiment: int) -> list[RunPlan]:
    runs = plan(
        1, RUNS_PER_EXPERIMENT, prefix=f"{prefix}-e{experiment}", seed=experiment, big_artifact=256 * 1024
    )
    return [
        RunPlan(
            p.name,
            p.params,
            p.tags,
            p.metrics,
            {**p.artifacts, **{f"model/{k}": v for k, v in MODEL_FILES.items()}},
        )
        for p in runs[0]
    ]


def populate(base: str, host: str, prefix: str) -> Data:
    """Write the rehearsal's data through the server at `base`; returns what was written."""
    reader, ledger, written = Reader(base, host), Ledger(), Data()
    for e in range(EXPERIMENTS):
        name, tags = f"{prefix}-e{e}", {"team": f"team-{e}", "stage": "rehearsal"}
        body = {"name": name, "tags": [{"key": k, "value": v} for k, v in tags.items()]}
        experiment_id = str(reader.post("/api/2.0/mlflow/experiments/create", body)["experiment_id"])
        written.experiments[name] = tags
        client, plans = Client(base, host, ledger, experiment_id), _run_plans(prefix, e)
        for p in plans:
            assert client.log_run(p), f"{p.name}: {ledger.refused or ledger.given_up}"
        written.runs.update(facts(plans))
        model, model_tags = f"{prefix}-model-{e}", {"owner": f"team-{e}"}
        reader.post(
            "/api/2.0/mlflow/registered-models/create",
            {
                "name": model,
                "description": f"model {e}",
                "tags": [{"key": k, "value": v} for k, v in model_tags.items()],
            },
        )
        runs = {r["info"]["run_name"]: r["info"] for r in reader.runs(experiment_id)}
        for v, p in enumerate(plans[:VERSIONS_PER_MODEL], start=1):
            info = runs[p.name]
            source = f"{info['artifact_uri']}/model"
            version_tags = {"validated": str(v % 2 == 0).lower()}
            created = reader.post(
                "/api/2.0/mlflow/model-versions/create",
                {
                    "name": model,
                    "source": source,
                    "run_id": info["run_id"],
                    "description": f"version {v} of model {e}",
                    "tags": [{"key": k, "value": val} for k, val in version_tags.items()],
                },
            )["model_version"]
            assert created["version"] == str(v), created
            written.versions[f"{model}/{v}"] = {
                "source": source,
                "run": p.name,
                "description": f"version {v} of model {e}",
                "tags": version_tags,
                "status": "READY",
            }
        aliases = {alias: str(v) for v, alias in enumerate(ALIASES, start=1)}
        for alias, version in aliases.items():
            reader.post(
                "/api/2.0/mlflow/registered-models/alias", {"name": model, "alias": alias, "version": version}
            )
        written.models[model] = {"description": f"model {e}", "tags": model_tags, "aliases": aliases}
    return written


def read_back(base: str, host: str, prefix: str) -> Data:
    """Everything `populate(prefix=prefix)` wrote, as the server at `base` shows it now."""
    reader, found = Reader(base, host), Data()
    run_names: dict[str, str] = {}
    for e in range(EXPERIMENTS):
        name = f"{prefix}-e{e}"
        experiment = reader.get("/api/2.0/mlflow/experiments/get-by-name", experiment_name=name)["experiment"]
        found.experiments[name] = {
            t["key"]: t["value"] for t in experiment.get("tags", []) if not t["key"].startswith("mlflow.")
        }
        runs, _statuses = reader.experiment_facts(experiment["experiment_id"])
        found.runs.update(runs)
        run_names |= {
            r["info"]["run_id"]: r["info"]["run_name"] for r in reader.runs(experiment["experiment_id"])
        }
        model = reader.get("/api/2.0/mlflow/registered-models/get", name=f"{prefix}-model-{e}")[
            "registered_model"
        ]
        found.models[model["name"]] = {
            "description": model.get("description", ""),
            "tags": {t["key"]: t["value"] for t in model.get("tags", [])},
            "aliases": {a["alias"]: a["version"] for a in model.get("aliases", [])},
        }
        for v in range(1, VERSIONS_PER_MODEL + 1):
            mv = reader.get("/api/2.0/mlflow/model-versions/get", name=model["name"], version=str(v))[
                "model_version"
            ]
            found.versions[f"{model['name']}/{v}"] = {
                "source": mv["source"],
                "run": run_names.get(mv.get("run_id", ""), mv.get("run_id")),
                "description": mv.get("description", ""),
                "tags": {t["key"]: t["value"] for t in mv.get("tags", [])},
                "status": mv.get("status"),
            }
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SchemaAudit:
    """Triggers in schema `rehearsal` of the application database (superuser-owned, invisible to
    MLflow's table checks, which look at `public`)."""

    DDL = """
    CREATE SCHEMA rehearsal;
    CREATE TABLE rehearsal.revisions (at timestamptz DEFAULT clock_timestamp(), pid int DEFAULT pg_backend_pid(),
                                      old text, new text);
    CREATE TABLE rehearsal.ddl (at timestamptz DEFAULT clock_timestamp(), pid int DEFAULT pg_backend_pid(),
                                tag text);
    CREATE FUNCTION rehearsal.ddl() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
    BEGIN
      INSERT INTO rehearsal.ddl (tag) VALUES (tg_tag);
    END $$;
    """
    EVENT = "CREATE EVENT TRIGGER rehearsal_ddl ON ddl_command_end EXECUTE FUNCTION rehearsal.ddl();\n"
    REVISIONS = """
    CREATE FUNCTION rehearsal.revision() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
    BEGIN
      INSERT INTO rehearsal.revisions (old, new)
      VALUES (CASE WHEN TG_OP = 'UPDATE' THEN OLD.version_num END, NEW.version_num);
      RETURN NEW;
    END $$;
    CREATE TRIGGER rehearsal_revision AFTER INSERT OR UPDATE ON public.alembic_version
      FOR EACH ROW EXECUTE FUNCTION rehearsal.revision();
    """

    def __init__(self, postgres: Postgres, *, revisions: bool = True) -> None:
        """`revisions`: also record alembic_version's changes (the table must exist: MLflow's)."""
        self.pg = postgres
        setup = self.DDL + (self.REVISIONS if revisions else "") + self.EVENT  # the event trigger last
        self.pg.psql(setup, database=postgres.database)

    def revision(self) -> str:
        return self.pg.psql(
            "SELECT string_agg(version_num, ',') FROM public.alembic_version", database=self.pg.database
        ).strip()

    def steps(self) -> list[tuple[str, str, int]]:
        """Every change of alembic_version since the audit began: (old, new, backend pid), in order."""
        out = self.pg.psql(
            "SELECT old, new, pid FROM rehearsal.revisions ORDER BY at", database=self.pg.database
        )
        return [(o, n, int(p)) for o, n, p in (line.split("|") for line in out.splitlines() if line)]

    def ddl(self) -> list[tuple[str, int]]:
        """Every DDL command since the audit began: (command tag, backend pid), in order."""
        out = self.pg.psql("SELECT tag, pid FROM rehearsal.ddl ORDER BY at", database=self.pg.database)
        return [(t, int(p)) for t, p in (line.split("|") for line in out.splitlines() if line)]
