"""Why the Deployment is `strategy: Recreate`, and why its migration init container may run again.

A server that finds no tables creates MLflow's schema itself; two started at once on an empty
database may both do, and then one dies on a UniqueViolation in PostgreSQL's catalog (MLflow 3.15
does, most times). The chart migrates in an init container before the server starts
(`databaseMigration`); that container is safe to run again, one after the other or two at once on a
migrated schema. Two pods at once on an empty database may race in that container instead: a loser
exits 1 and its retry (the kubelet's) succeeds. Recreate keeps it to one pod at a time (the
partial-upload cleanup needs that too).

The tests assert what the chart promises whether or not MLflow's race happens on a given run: every
pod ends up serving on a schema at head, and a failure, when there is one, is that race and no
other. Whether it happened is reported in the figures.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from mlflow_gitops.podrunner import PodRunner
from tests.support.pods import RENDER, own_stack, start_together
from tests.support.readback import Reader

pytestmark = pytest.mark.e2e

MIGRATION = "mlflow-db-migration"
SCHEMA_RACE = ("UniqueViolation", "DuplicateTable", "DuplicateObject")


@pytest.fixture(scope="module")
def database() -> Iterator[PodRunner]:
    """PostgreSQL alone; each test empties it and starts pods of the Deployment against it."""
    with own_stack(with_pod=False) as holder:
        yield holder


def _head() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return str(_get_latest_schema_revision())


def _revision(database: PodRunner) -> str:
    pg = database.postgres
    return pg.psql("SELECT version_num FROM alembic_version", database=pg.database).strip()


def _schema_race(error: str) -> bool:
    return any(name in error for name in SCHEMA_RACE)


def test_two_servers_at_once_on_an_empty_database_fail_only_on_the_schema_race(
    database: PodRunner, figures: Callable[[str], None]
) -> None:
    """Without the migration init container (what `databaseMigration: false` and two replicas
    would give): at least one server starts, and any that does not died of the schema race."""
    database.postgres.reset_database()
    servers = [PodRunner(RENDER, replica_of=database, init_containers=()) for _ in range(2)]
    try:
        outcomes = start_together(servers)
    finally:
        for server in servers:
            server.stop()
    failures = [o for o in outcomes if o is not None]
    figures(
        f"2 servers (no init containers) at once on an empty database: {len(failures)} exited on the "
        f"schema race (MLflow's race {'happened' if failures else 'did not happen this time'})"
    )
    assert all(_schema_race(f) for f in failures), failures
    assert None in outcomes, "neither server started"
    assert _revision(database) == _head()


def test_two_pods_at_once_on_an_empty_database_recover_by_retrying_the_migration(
    database: PodRunner, figures: Callable[[str], None]
) -> None:
    database.postgres.reset_database()
    pods = [PodRunner(RENDER, replica_of=database) for _ in range(2)]
    try:
        first = start_together(pods)
        lost = [o for o in first if o is not None]
        assert all(f"({MIGRATION}): exited 1" in o and _schema_race(o) for o in lost), lost
        for pod, outcome in zip(pods, first, strict=True):
            if outcome is not None:
                pod.start()  # the kubelet runs the failed init container again
        figures(
            f"2 whole pods at once on an empty database: {len(lost)} lost the race in {MIGRATION}"
            f"{', ready after one retry' if lost else ''}; schema at {_revision(database)} (head {_head()})"
        )
        assert _revision(database) == _head()
        for pod in pods:
            assert Reader(pod.url, pod.route_host).create_experiment(f"race-{uuid.uuid4().hex[:8]}")
    finally:
        for pod in pods:
            pod.stop()


def test_migration_init_container_is_safe_to_rerun(
    database: PodRunner, figures: Callable[[str], None]
) -> None:
    database.postgres.reset_database()
    with PodRunner(RENDER, replica_of=database) as pod:  # migrates the empty database
        reader = Reader(pod.url, pod.route_host)
        before = reader.create_experiment(f"before-{uuid.uuid4().hex[:8]}")
        codes = [pod.run_init_container(MIGRATION).popen.wait(120) for _ in range(2)]  # one after the other
        together = [pod.run_init_container(MIGRATION) for _ in range(2)]
        codes += [proc.popen.wait(120) for proc in together]
        revision = _revision(database)
        pod.restart_pod()  # the server starts on the schema migrated four more times
        figures(f"{MIGRATION} run again 2x in sequence and 2x at once: exit codes {codes}; schema {revision}")
        assert codes == [0, 0, 0, 0]
        assert revision == _head()
        assert reader.get("/api/2.0/mlflow/experiments/get", experiment_id=before)["experiment"][
            "name"
        ].startswith("before-")
        assert reader.create_experiment(f"after-{uuid.uuid4().hex[:8]}")
