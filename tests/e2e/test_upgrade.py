"""Upgrade rehearsal: what the previous MLflow minor wrote survives the upgrade to the chart's pin.

The previous version is derived, never written here: the pin is Chart.yaml's appVersion (the image
the render runs, .venv), the previous one requirements-previous.txt's (.venv-previous, installed by
`make e2e-deps`), which tests/test_previous_version.py keeps exactly one minor behind. So when
Renovate bumps MLflow, this compares the new pin with the one before it, unedited.

As the cluster does it with `strategy: Recreate`: the render's pod with the previous image (its own
migration init container creates the schema, its server takes the data) is stopped; the pod of the
current render starts on the same PostgreSQL and artifact claim, its `mlflow-db-migration` init
container migrates, its server serves. Then the previous version is started again on the migrated
database, as a `helm rollback` would: refused, with the exact error, and nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlflow_gitops.podrunner import PodRunner, PodRunnerError, mlflow_version
from tests.support.ci import unavailable
from tests.support.pods import PREVIOUS_VENV, RENDER, edited_render, own_stack
from tests.support.rehearsal import Data, SchemaAudit, populate, read_back
from tests.support.versions import app_version, parse, previous_version

pytestmark = pytest.mark.e2e

MIGRATION = "mlflow-db-migration"
IMAGE = "burakince/mlflow"
PREFIX = "rehearsal"


@dataclass
class Rehearsal:
    previous: str
    current: str
    old_head: str  # alembic_version as the previous pod left it
    new_head: str  # ... after the current pod's init container
    written: Data  # what the previous server acknowledged
    before: Data  # read back through the previous server, before the upgrade
    after: Data  # read back through the current server, after it
    steps: list[tuple[str, str, int]]  # alembic_version changes during the upgrade
    ddl: list[tuple[str, int]]  # DDL commands during the upgrade
    init_log: str
    server_log: str
    refusals: dict[str, str]  # how the previous version failed on the migrated database
    changes_after_refusals: tuple[list[tuple[str, str, int]], list[tuple[str, int]]]


def migration_graph() -> dict[str, str]:
    """The current mlflow's migrations: revision -> the revision it follows (MLflow's is linear)."""
    from alembic.script import ScriptDirectory
    from mlflow.store import db_migrations

    script = ScriptDirectory(str(Path(db_migrations.__file__).parent))
    return {r.revision: str(r.down_revision) for r in script.walk_revisions()}


def latest_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return str(_get_latest_schema_revision())


def previous_render(directory: Path, previous: str) -> Path:
    """The render with the previous image: what the release was before the bump."""

    def downgrade(deployment: dict) -> None:
        spec = deployment["spec"]["template"]["spec"]
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            if str(container["image"]).startswith(f"{IMAGE}:"):
                container["image"] = f"{IMAGE}:{previous}"

    return edited_render(directory, downgrade)


def refusal(runner: PodRunner) -> str:
    """Start a pod that must not start; the harness's account of why it did not."""
    try:
        runner.start()
    except PodRunnerError as err:
        return str(err)
    finally:
        runner.stop()
    return ""


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    previous, current = previous_version(), app_version()
    installed = mlflow_version(PREVIOUS_VENV)
    if installed != previous:
        unavailable(f"{PREVIOUS_VENV} has mlflow {installed}, not {previous}: run `make e2e-deps`")
    old_render = previous_render(tmp_path_factory.mktemp("previous"), previous)
    with own_stack(render=old_render, venv=PREVIOUS_VENV) as old:  # PostgreSQL, the previous pod
        written = populate(old.url, old.route_host, PREFIX)
        before = read_back(old.url, old.route_host, PREFIX)
        old.stop_pod()  # Recreate: the old pod is gone before the new one starts
        audit = SchemaAudit(old.postgres)
        old_head = audit.revision()
        new = PodRunner(RENDER, replica_of=old)
        try:
            new.start()  # remove-partial-uploads, mlflow-db-migration, then the server
            after = read_back(new.url, new.route_host, PREFIX)
            new_head, steps, ddl = audit.revision(), audit.steps(), audit.ddl()
            init_log, server_log = new.init_logs[MIGRATION], new.server.log_tail(400)
        finally:
            new.stop()
        refusals = {
            "server": refusal(PodRunner(old_render, replica_of=old, init_containers=(), venv=PREVIOUS_VENV)),
            "pod": refusal(PodRunner(old_render, replica_of=old, venv=PREVIOUS_VENV)),
        }
        yield Rehearsal(
            previous, current, old_head, new_head, written, before, after, steps, ddl, init_log, server_log,
            refusals, (audit.steps()[len(steps) :], audit.ddl()[len(ddl) :]),
        )  # fmt: skip


def test_the_rehearsal_migrates_from_the_minor_before_the_pin(rehearsal: Rehearsal) -> None:
    assert parse(rehearsal.previous) < parse(rehearsal.current)
    assert parse(rehearsal.previous)[:1] <= parse(rehearsal.current)[:1]
    assert mlflow_version() == rehearsal.current, "the current pod must run the chart's appVersion"


def test_everything_the_previous_minor_wrote_reads_back_after_the_upgrade(
    rehearsal: Rehearsal, figures: Callable[[str], None]
) -> None:
    counts = rehearsal.written.counts()
    figures(
        f"MLflow {rehearsal.previous} -> {rehearsal.current}: carried over "
        + ", ".join(f"{n} {kind}" for kind, n in counts.items())
    )
    assert rehearsal.before == rehearsal.written, "the previous server does not show what it acknowledged"
    assert rehearsal.after.runs == rehearsal.written.runs
    assert rehearsal.after.experiments == rehearsal.written.experiments
    assert rehearsal.after.models == rehearsal.written.models
    assert rehearsal.after.versions == rehearsal.written.versions
    assert all(counts.values()), counts


def test_the_migration_ran_exactly_once_in_the_init_container(
    rehearsal: Rehearsal, figures: Callable[[str], None]
) -> None:
    graph = migration_graph()
    chain, revision = [], rehearsal.new_head
    while revision and revision != rehearsal.old_head:
        chain.append((graph[revision], revision))
        revision = graph[revision]
    chain.reverse()
    figures(
        f"alembic_version {rehearsal.old_head} -> {rehearsal.new_head} in {len(rehearsal.steps)} steps "
        f"({' -> '.join([rehearsal.old_head, *(n for _o, n, _p in rehearsal.steps)])}), "
        f"{len(rehearsal.ddl)} DDL commands, all by backend pid(s) {sorted({p for *_x, p in rehearsal.steps})}"
    )
    assert rehearsal.old_head in graph and rehearsal.old_head != rehearsal.new_head
    assert rehearsal.new_head == latest_revision(), "the current server's schema is not at its head"
    assert chain, f"{rehearsal.old_head} does not precede {rehearsal.new_head}"
    assert [(o, n) for o, n, _p in rehearsal.steps] == chain, "each migration step exactly once, in order"
    sessions = {p for *_x, p in rehearsal.steps} | {p for _t, p in rehearsal.ddl}
    assert len(sessions) == 1, f"the migration ran in {len(sessions)} database sessions: {rehearsal.ddl}"
    assert "Updating database tables" in rehearsal.init_log
    assert "Updating database tables" not in rehearsal.server_log, "the server migrated too"


def test_the_previous_minor_refuses_the_migrated_database(
    rehearsal: Rehearsal, figures: Callable[[str], None]
) -> None:
    server, pod = rehearsal.refusals["server"], rehearsal.refusals["pod"]
    out_of_date = (
        f"Detected out-of-date database schema (found version {rehearsal.new_head}, "
        f"but expected {rehearsal.old_head})"
    )
    unknown = f"Can't locate revision identified by '{rehearsal.new_head}'"
    figures(
        f"MLflow {rehearsal.previous} on the migrated database: server: {out_of_date}; pod: {MIGRATION}: {unknown}"
    )
    assert "the server exited" in server and out_of_date in server, server
    assert f"({MIGRATION}): exited 1" in pod and unknown in pod, pod
    assert rehearsal.changes_after_refusals == ([], []), "a refused start changed the schema"
