"""The zero-downtime mode run for real (rendered/homelab-ha.yaml, whatever E2E_RENDER says): the
pre-upgrade hook Job's pod migrates the empty database once, then the Deployment's two pods (no
migration init container) start at the same moment with no schema race and serve behind one
Service address; then a rolling restart as the Deployment controller does it with the rendered
strategy (maxSurge 1, maxUnavailable 0: a new pod, Ready, then an old one deleted; twice) while
clients write with retries, and no request fails and nothing is lost.

The Service is tests/support/service.py's stand-in: only Ready pods (the rendered readiness
probe) receive new connections, a deleted pod none from its deletion on.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from mlflow_gitops import chart
from mlflow_gitops.podrunner import PodRunner
from tests.support.pods import own_stack, start_together
from tests.support.readback import Reader
from tests.support.rehearsal import SchemaAudit
from tests.support.run_plans import RunPlan, compare, facts, plan, tally
from tests.support.service import ServiceStandIn
from tests.support.workload import Client, Ledger

pytestmark = pytest.mark.e2e

HA_RENDER = chart.RENDERED / "homelab-ha.yaml"
JOB = "mlflow-migrate"
CLIENTS = 24
MIN_RUNS_AFTER = 2  # each client logs runs until the restart is over, and at least this many


@dataclass
class Mode:
    db: PodRunner
    pods: dict[str, PodRunner]
    service: ServiceStandIn
    audit: SchemaAudit
    job_code: int
    job_output: str
    ddl_by_job: list[tuple[str, int]]
    starts: list[str | None]


def head() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return str(_get_latest_schema_revision())


def revision(db: PodRunner) -> str:
    return db.postgres.psql("SELECT version_num FROM alembic_version", database=db.postgres.database).strip()


def job_pod(runner: PodRunner) -> dict:
    return copy.deepcopy(runner.render.one("Job", JOB)["spec"]["template"]["spec"])


@pytest.fixture(scope="module")
def mode() -> Iterator[Mode]:
    with own_stack(render=HA_RENDER, with_pod=False) as db:  # PostgreSQL alone, empty
        audit = SchemaAudit(db.postgres, revisions=False)
        host = PodRunner(HA_RENDER, replica_of=db, init_containers=())  # a pod network for the Job's pod
        host.start(pod=False)
        host.start_pod(server=False)
        try:
            deadline = float(host.render.one("Job", JOB)["spec"]["activeDeadlineSeconds"])
            code, output = host.run_pod_spec(f"Job {JOB}", job_pod(host), deadline)
        finally:
            host.stop()
        ddl_by_job = audit.ddl()
        pods = {f"mlflow-{i}": PodRunner(HA_RENDER, replica_of=db) for i in range(2)}
        starts = start_together(list(pods.values()))
        service = ServiceStandIn(db.main_container["readinessProbe"])
        try:
            for name, pod in pods.items():
                service.add(name, pod)
            yield Mode(db, pods, service, audit, code, output, ddl_by_job, starts)
        finally:
            service.close()
            for pod in pods.values():
                pod.stop()


def test_the_hook_job_migrates_once_and_two_pods_start_with_no_schema_race(
    mode: Mode, figures: Callable[[str], None]
) -> None:
    figures(
        f"{JOB} Job pod: exit {mode.job_code}, {mode.job_output.strip().splitlines()[-1]!r}, "
        f"{len(mode.ddl_by_job)} DDL commands (table creation, then alembic); "
        f"2 pods started together: {mode.starts}; DDL by the servers: {len(mode.audit.ddl()) - len(mode.ddl_by_job)}"
    )
    assert mode.job_code == 0, mode.job_output
    assert f"schema empty -> {head()}" in mode.job_output
    assert mode.ddl_by_job, "the Job created no table"
    assert mode.starts == [None, None], "a pod failed to start"
    assert mode.audit.ddl() == mode.ddl_by_job, "a server changed the schema"
    assert revision(mode.db) == head()
    for pod in mode.pods.values():
        assert [c["name"] for c in pod.pod.get("initContainers", [])] == ["remove-partial-uploads"]
    for name in mode.pods:
        mode.service.wait_ready(name, 60)
    reader = Reader(mode.service.url, mode.pods["mlflow-0"].route_host)
    assert reader.create_experiment(f"ha-{uuid.uuid4().hex[:8]}")


def test_the_job_finds_no_database_before_a_first_install(mode: Mode) -> None:
    """Argo CD runs the hook before its first sync too: no database Service resolves yet."""
    host = PodRunner(HA_RENDER, replica_of=mode.db, init_containers=())
    host.start(pod=False)
    host.start_pod(server=False)
    spec = job_pod(host)
    for item in spec["containers"][0]["env"]:
        if item["name"] == "PGHOST":
            item["value"] = "mlflow-postgres-not-created-yet-rw"
    try:
        code, output = host.run_pod_spec(f"Job {JOB}", spec, 120)
    finally:
        host.stop()
    assert code == 0, output
    assert "does not resolve" in output and "nothing to migrate" in output


def test_a_rolling_restart_under_load_fails_no_request_and_loses_nothing(
    mode: Mode, figures: Callable[[str], None]
) -> None:
    service, route_host = mode.service, mode.pods["mlflow-0"].route_host
    for name in mode.pods:
        service.wait_ready(name, 60)
    experiment = Reader(service.url, route_host).create_experiment(f"rolling-{uuid.uuid4().hex[:8]}")
    ledger, restarted, lock = Ledger(), threading.Event(), threading.Lock()
    attempted: list[RunPlan] = []

    def client(c: int) -> None:
        writer = Client(service.url, route_host, ledger, experiment)
        for r in itertools.count():
            if restarted.is_set() and r >= MIN_RUNS_AFTER:
                return
            ((p,),) = plan(
                1, 1, prefix=f"rolling-c{c:02d}-r{r}", seed=c * 10_000 + r, big_artifact=256 * 1024
            )
            with lock:
                attempted.append(p)
            writer.log_run(p)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    started, steps = time.monotonic(), []
    while len(ledger.acked) < CLIENTS * 4:  # the load is on before the first pod goes
        assert time.monotonic() - started < 300, "the clients do not get going"
        time.sleep(0.1)
    for old in list(mode.pods):  # the Deployment controller: surge one, wait Ready, delete one old
        new_name = f"{old}-next"
        new = PodRunner(HA_RENDER, replica_of=mode.db)
        new.start()
        service.add(new_name, new)
        service.wait_ready(new_name, 120)
        acked_before = len(ledger.acked)
        service.remove(old)
        mode.pods.pop(old).stop_pod()  # SIGTERM, grace, then the pod is gone
        steps.append(
            f"{new_name} Ready, {old} deleted ({len(ledger.acked) - acked_before} writes acked meanwhile)"
        )
        mode.pods[new_name] = new
    restarted.set()
    for t in threads:
        t.join(600)
    seconds = time.monotonic() - started
    assert not any(t.is_alive() for t in threads), "clients still running after 600 s"
    expected = facts(attempted)
    observed, statuses = Reader(service.url, route_host).experiment_facts(experiment)
    lost = compare(expected, observed)
    counts = tally(expected)
    never_ready = [t for t, _n, _e in service.events if not service.ready()]
    figures(
        f"rolling restart (maxSurge 1, maxUnavailable 0) under {CLIENTS} clients in {seconds:.0f} s: "
        f"{'; '.join(steps)}; requests {sum(ledger.answers.values())}, answers {dict(ledger.answers)}, "
        f"writes acked {len(ledger.acked)} (after a retry {len(ledger.retried)}), refused {len(ledger.refused)}, "
        f"given up {len(ledger.given_up)}; runs {counts['run']}, metric points {counts['metric']}, "
        f"artifacts {counts['artifact']}; lost or duplicated {len(lost)}; connections refused by the Service "
        f"{service.refused}; new connections per pod {dict(service.connections)}"
    )
    assert ledger.refused == [] and ledger.given_up == [], (ledger.refused[:3], ledger.given_up[:3])
    assert not lost, "\n".join(lost[:20])
    assert statuses == Counter({"FINISHED": counts["run"]})
    assert service.refused == 0 and not never_ready, "the Service had no Ready endpoint"
    # A deleted pod closes its clients' idle keep-alive connections: a request sent on one at that
    # moment sees the connection close and is sent again (as MLflow's client does); no answer is
    # an HTTP error.
    assert set(ledger.answers) <= {"200", "connection error"}, dict(ledger.answers)
