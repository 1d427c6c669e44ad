"""PostgreSQL down, on a pod of its own (mlflow_gitops.podrunner) with the shipped settings:
restarted mid-load (the server recovers without restarting and loses no acknowledged write), and
down when the pod starts (the migration waits for a database that comes back, and gives up in
bounded time on one that never does).

Each outage is driven by what the harness observes (writes acknowledged, a client answered with an
error, the migration logging a failed attempt), never by a fixed delay, so a slower machine changes
the figures, not the outcome.

The clients and their retry semantics are in workload.py: a write is retried until acknowledged,
and every write is idempotent, so whatever was acknowledged, before or after a fault, must be on
the server exactly once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from mlflow_gitops.podrunner import PodRunner, PodRunnerError
from tests.support.fault_load import CLIENTS, EVENT_BOUND, RUNS_PER_CLIENT, quarter_acked
from tests.support.pods import own_stack
from tests.support.readback import Reader
from tests.support.run_plans import compare, facts, plan, tally
from tests.support.workload import Ledger, join_all, run_clients, wait_for

pytestmark = pytest.mark.e2e

MIGRATION = "mlflow-db-migration"
RETRY_NOTICE = "Operation will be retried in"  # MLflow's line for a failed connection attempt
MIGRATION_RETRIES = 9  # create_sqlalchemy_engine_with_retry: 10 attempts, 9 sleeps
RETRY_SLEEPS = sum(0.1 * (2**a - 1) for a in range(1, MIGRATION_RETRIES + 1))  # 101.3 s


@dataclass
class Outage:
    expected: Counter[tuple[str, ...]]
    observed: Counter[tuple[str, ...]]
    ledger: Ledger
    answers_during: Counter[str]
    server_pids: tuple[int, int]
    server_alive: bool
    down_seconds: float
    back_at: float
    first_ack_after: float | None
    seconds: float


@pytest.fixture(scope="module")
def outage_stack() -> Iterator[PodRunner]:
    with own_stack() as stack:
        yield stack


@pytest.fixture(scope="module")
def postgres_restarted_mid_load(outage_stack: PodRunner) -> Outage:
    stack = outage_stack
    reader = Reader(stack.url, stack.route_host)
    experiment = reader.create_experiment(f"pg-restart-{uuid.uuid4().hex[:8]}")
    plans = plan(CLIENTS, RUNS_PER_CLIENT, prefix="pg-restart", seed=2)
    ledger = Ledger()
    started = time.monotonic()
    threads = run_clients(stack.url, stack.route_host, experiment, plans, ledger)
    try:
        wait_for(lambda: quarter_acked(ledger), EVENT_BOUND, "a quarter of the writes acknowledged")
        pid = stack.server.pid
        answers = Counter(ledger.answers)
        failures = ledger.failures
        stack.postgres.stop()  # fast shutdown: every backend terminated
        down_at = time.monotonic()
        try:  # down until a client has been answered with an error: the outage was seen
            wait_for(lambda: ledger.failures > failures, EVENT_BOUND, "a client answered with an error")
        finally:
            stack.postgres.resume()
        back_at = time.monotonic()
        answers_during = Counter(ledger.answers) - answers
    finally:
        join_all(threads, EVENT_BOUND)
    seconds = time.monotonic() - started
    observed, _ = reader.experiment_facts(experiment)
    return Outage(
        expected=facts([p for runs in plans for p in runs]),
        observed=observed,
        ledger=ledger,
        answers_during=answers_during,
        server_pids=(pid, stack.server.pid),
        server_alive=stack.server.alive(),
        down_seconds=back_at - down_at,
        back_at=back_at,
        first_ack_after=min((t for t, _run, _what in ledger.acked if t >= back_at), default=None),
        seconds=seconds,
    )


def test_server_recovers_from_a_database_restart_without_restarting(
    postgres_restarted_mid_load: Outage, figures: Callable[[str], None]
) -> None:
    o = postgres_restarted_mid_load
    recovery = None if o.first_ack_after is None else o.first_ack_after - o.back_at
    figures(
        f"PostgreSQL down {o.down_seconds:.1f} s mid-load: answers meanwhile {dict(o.answers_during)}; server pid "
        f"{o.server_pids[0]} -> {o.server_pids[1]}; first write acknowledged "
        f"{'never' if recovery is None else f'{recovery:.2f} s'} after PostgreSQL was back"
    )
    assert o.server_alive and o.server_pids[0] == o.server_pids[1], "the server restarted"
    assert sum(n for a, n in o.answers_during.items() if a != "200"), "no client saw the outage"
    assert recovery is not None, "no write was acknowledged after PostgreSQL came back"


def test_database_restart_mid_load_loses_no_acknowledged_write(
    postgres_restarted_mid_load: Outage, figures: Callable[[str], None]
) -> None:
    o = postgres_restarted_mid_load
    problems = compare(o.expected, o.observed)
    counts = tally(o.expected)
    figures(
        f"clients={CLIENTS} runs={counts['run']} writes acked={len(o.ledger.acked)} "
        f"facts={sum(o.expected.values())}; faults=1 PostgreSQL restart; retried={len(o.ledger.retried)} "
        f"(runs adopted={len(o.ledger.adopted)}); refused={len(o.ledger.refused)}; "
        f"lost or duplicated={len(problems)}; answers={dict(o.ledger.answers)}; "
        f"{o.seconds:.1f} s"
    )
    assert not o.ledger.refused, o.ledger.refused[:5]
    assert not o.ledger.given_up, o.ledger.given_up[:5]
    assert not problems, "\n".join(problems[:20])


def test_migration_waits_for_a_database_that_comes_back(
    outage_stack: PodRunner, figures: Callable[[str], None]
) -> None:
    """The pod recreated while PostgreSQL is down. Once the migration init container (the chart's
    connection check) has logged a failed attempt, the database comes back: the container succeeds
    on a later attempt, before it gives up, and the server starts and serves."""
    stack = outage_stack
    errors: list[str] = []

    def recreate() -> None:
        try:
            stack.restart_pod(ready_timeout=EVENT_BOUND)
        except PodRunnerError as err:
            errors.append(str(err))

    stack.postgres.stop()
    started = time.monotonic()
    pod = threading.Thread(target=recreate)
    pod.start()
    try:
        wait_for(
            lambda: RETRY_NOTICE in stack.init_log(MIGRATION) or not pod.is_alive(),
            EVENT_BOUND,
            f"{MIGRATION} logging a failed connection attempt",
        )
        failed_while_down = stack.init_log(MIGRATION).count(RETRY_NOTICE)
    finally:
        stack.postgres.resume()
    back_at = time.monotonic()
    pod.join(EVENT_BOUND + RETRY_SLEEPS)
    assert not pod.is_alive(), "the pod was still starting long after the database came back"
    assert not errors, errors[0]
    retries = stack.init_logs[MIGRATION].count(RETRY_NOTICE)
    migrated = stack.init_exited_at[MIGRATION] - back_at
    figures(
        f"database down until {MIGRATION} had failed {failed_while_down} time(s) "
        f"({back_at - started:.1f} s after the pod was created): it retried {retries} times in all, exited 0 "
        f"{migrated:.1f} s after the database was back; server ready {time.monotonic() - back_at:.1f} s after"
    )
    assert failed_while_down >= 1, "the migration never found the database down"
    assert retries < MIGRATION_RETRIES + 1, "the migration used up its attempts"
    assert migrated > 0, "the migration finished before the database was back"
    assert Reader(stack.url, stack.route_host).create_experiment(f"after-{uuid.uuid4().hex[:8]}")


@dataclass
class GiveUp:
    started: float
    ended: float | None = None
    error: str = ""
    log: str = ""
    thread: threading.Thread = field(init=False)


GIVE_UP_TEST = "test_migration_gives_up_in_bounded_time_when_the_database_stays_down"


@pytest.fixture(scope="module", autouse=True)
def database_never_returns(request: pytest.FixtureRequest) -> Iterator[GiveUp | None]:
    """A pod started on a database that never comes back, from the start of this module: its
    ~100 s of retries run behind the other tests here (it mostly sleeps)."""
    if not any(item.name == GIVE_UP_TEST for item in request.session.items):
        yield None
        return
    with own_stack(with_pod=False) as stack:
        stack.postgres.stop()
        result = GiveUp(started=time.monotonic())

        def start() -> None:
            try:
                stack.start_pod()
            except PodRunnerError as err:
                result.error = str(err)
            result.log = stack.init_logs.get(MIGRATION, "")
            result.ended = time.monotonic()

        result.thread = threading.Thread(target=start, daemon=True)
        result.thread.start()
        yield result


def test_migration_gives_up_in_bounded_time_when_the_database_stays_down(
    database_never_returns: GiveUp | None, figures: Callable[[str], None]
) -> None:
    g = database_never_returns
    assert g is not None
    g.thread.join(max(0.0, g.started + RETRY_SLEEPS + EVENT_BOUND - time.monotonic()))
    assert g.ended is not None, f"the pod was still starting {RETRY_SLEEPS + EVENT_BOUND:.0f} s after"
    elapsed = g.ended - g.started
    retries = g.log.count("Operation will be retried in")
    figures(
        f"database never back: {MIGRATION} gave up after {retries + 1} attempts, {elapsed:.1f} s after "
        f"the pod started (MLflow's sleeps: {RETRY_SLEEPS:.1f} s); the kubelet then restarts it with backoff"
    )
    assert f"({MIGRATION}): exited 1" in g.error, g.error or "the pod started"
    assert retries == MIGRATION_RETRIES
    assert elapsed >= RETRY_SLEEPS, "it gave up sooner than MLflow's retry schedule"
