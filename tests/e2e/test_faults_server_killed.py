"""The server SIGKILLed mid-load and its pod recreated (strategy: Recreate), on a pod of its own
(mlflow_gitops.podrunner) with the shipped settings: no acknowledged write is lost, and the partial
uploads the kill leaves are removed by the recreated pod's init container.

The kill is driven by what the harness observes (a quarter of the writes acknowledged, the big
upload stalled part-way), never by a fixed delay, so a slower machine changes the figures, not the
outcome.

The clients and their retry semantics are in workload.py: a write is retried until acknowledged,
and every write is idempotent, so whatever was acknowledged, before or after a fault, must be on
the server exactly once.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.fault_load import CLIENTS, EVENT_BOUND, RUNS_PER_CLIENT, quarter_acked
from tests.support.pods import own_stack
from tests.support.readback import Reader
from tests.support.run_plans import MIB, Generated, RunPlan, compare, digest, facts, plan, tally
from tests.support.workload import Ledger, join_all, run_clients, wait_for

pytestmark = pytest.mark.e2e

BIG = 200 * MIB  # the upload the SIGKILL interrupts
HOLD_AT = 16 * MIB  # ... stalled after this many bytes, so that the kill finds it mid-way
PARTIAL = ".artifact.uploading."
CLEANUP = "remove-partial-uploads"


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _files(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # renamed into place meanwhile
        return -1


@dataclass
class Killed:
    expected: Counter[tuple[str, ...]]
    observed: Counter[tuple[str, ...]]
    statuses: Counter[str]
    plans: dict[str, RunPlan]
    ledger: Ledger
    acked_before_kill: list[tuple[str, str]]
    partials: dict[Path, int]  # left by the kill: path -> size
    partials_after_restart: list[Path]
    complete_at_kill: dict[Path, str | None]  # every finished file at the kill -> sha256
    complete_after_restart: dict[Path, str | None]
    cleanup_log: str
    claim: Path
    restart_seconds: float
    seconds: float


@pytest.fixture(scope="module")
def killed_mid_load() -> Iterator[Killed]:
    """32 clients plus one uploading 200 MiB; the server's process tree SIGKILLed once a quarter of
    the writes are acknowledged and the big upload is stalled part-way; the pod recreated; the
    clients retry through it all."""
    with own_stack() as stack:
        reader = Reader(stack.url, stack.route_host)
        experiment = reader.create_experiment(f"sigkill-{uuid.uuid4().hex[:8]}")
        resume = threading.Event()
        big = RunPlan(
            "sigkill-big",
            {},
            {},
            (),
            {"big/blob.bin": Generated(BIG, seed=7, hold_at=HOLD_AT, resume=resume)},
        )
        plans = plan(CLIENTS, RUNS_PER_CLIENT, prefix="sigkill", seed=1)
        ledger = Ledger()
        claim = stack.volume_path("artifacts")

        def big_upload_stalled() -> bool:
            return any(p.name.startswith(PARTIAL) and _size(p) >= MIB for p in _files(claim))

        started = time.monotonic()
        threads = run_clients(stack.url, stack.route_host, experiment, [*plans, [big]], ledger)
        try:
            wait_for(
                lambda: quarter_acked(ledger) and big_upload_stalled(),
                EVENT_BOUND,
                "a quarter acked, the big upload under way",
            )
            killed_at = time.monotonic()
            stack.kill()
            partials = {p: p.stat().st_size for p in _files(claim) if p.name.startswith(PARTIAL)}
            complete = {p: _sha256(p) for p in _files(claim) if not p.name.startswith(PARTIAL)}
            resume.set()
            restarting = time.monotonic()
            stack.restart_pod()
            restart_seconds = time.monotonic() - restarting
            after = [p for p in partials if p.exists()]
            complete_after = {p: _sha256(p) for p in complete}
        finally:
            resume.set()
            join_all(threads, EVENT_BOUND)
        seconds = time.monotonic() - started
        observed, statuses = reader.experiment_facts(experiment)
        all_plans = [*(p for runs in plans for p in runs), big]
        yield Killed(
            expected=facts(all_plans),
            observed=observed,
            statuses=statuses,
            plans={p.name: p for p in all_plans},
            ledger=ledger,
            acked_before_kill=ledger.acked_before(killed_at),
            partials=partials,
            partials_after_restart=after,
            complete_at_kill=complete,
            complete_after_restart=complete_after,
            cleanup_log=stack.init_logs.get(CLEANUP, ""),
            claim=claim,
            restart_seconds=restart_seconds,
            seconds=seconds,
        )


def test_sigkill_mid_load_loses_no_acknowledged_write(
    killed_mid_load: Killed, figures: Callable[[str], None]
) -> None:
    k = killed_mid_load
    before = [f for run, what in k.acked_before_kill for f in k.plans[run].facts_of(what)]
    lost_before = [f for f in before if k.observed[f] != 1]
    problems = compare(k.expected, k.observed)
    counts = tally(k.expected)
    figures(
        f"clients={CLIENTS}+1 (200 MiB upload) runs={counts['run']} writes acked={len(k.ledger.acked)} "
        f"facts={sum(k.expected.values())}; faults=1 SIGKILL of the server tree + pod recreated in "
        f"{k.restart_seconds:.1f} s; acked before the kill={len(k.acked_before_kill)} writes "
        f"({len(before)} facts), lost={len(lost_before)}; retried after the kill={len(k.ledger.retried)} "
        f"writes (runs adopted={len(k.ledger.adopted)}), landed other than once={len(problems)}; "
        f"checksum expected {digest(k.expected)} stored {digest(k.observed)}; "
        f"answers={dict(k.ledger.answers)}; {k.seconds:.1f} s"
    )
    assert k.acked_before_kill and k.ledger.retried, "the kill did not fall mid-load"
    assert not lost_before, f"acknowledged before the kill, then missing or duplicated: {lost_before[:10]}"
    assert not k.ledger.refused and not k.ledger.given_up, (k.ledger.refused[:5], k.ledger.given_up[:5])
    assert not problems, "\n".join(problems[:20])
    assert k.statuses == Counter({"FINISHED": counts["run"]})


def test_partial_uploads_left_by_sigkill_are_removed_when_the_pod_is_recreated(
    killed_mid_load: Killed, figures: Callable[[str], None]
) -> None:
    k = killed_mid_load
    changed = [p for p, sha in k.complete_at_kill.items() if k.complete_after_restart[p] != sha]
    figures(
        f"partial uploads after the kill: {len(k.partials)} "
        f"({', '.join(f'{s / MIB:.0f} MiB' for s in sorted(k.partials.values(), reverse=True)[:3])}); "
        f"after the recreated pod's {CLEANUP}: {len(k.partials_after_restart)}; complete files at the kill "
        f"{len(k.complete_at_kill)}, changed since {len(changed)}"
    )
    assert any(size >= MIB for size in k.partials.values()), f"no partial big upload: {k.partials}"
    assert not k.partials_after_restart, f"left after the init container ran: {k.partials_after_restart}"
    for path in k.partials:  # the init container names what it deletes (`find -print -delete`)
        assert f"/mlflow/artifacts/{path.relative_to(k.claim)}" in k.cleanup_log
    assert not changed, f"complete artifacts changed or vanished: {changed[:5]}"
