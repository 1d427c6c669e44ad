"""The load the e2e fault tests put on a pod while a fault strikes, and how long they wait for an
event: CLIENTS clients of RUNS_PER_CLIENT runs each (tests/support/workload.py)."""

from __future__ import annotations

from tests.support.workload import Ledger

CLIENTS = 32
RUNS_PER_CLIENT = 3
EVENT_BOUND = 300.0  # generous bound for any awaited event, whatever the machine's speed


def quarter_acked(ledger: Ledger) -> bool:
    """A quarter of the planned writes acknowledged: mid-load."""
    planned = CLIENTS * RUNS_PER_CLIENT * 6 + CLIENTS  # create, 2 batches, 2 artifacts, finish; 1 MiB each
    return len(ledger.acked) * 4 >= planned
