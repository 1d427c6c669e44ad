"""The kubelet's HTTP probes, as the bench replays them against a measured /health latency series.

What the kubelet does (pkg/kubelet/prober): one worker per probe and container probes once, then
waits for the next tick of a `periodSeconds` ticker; a probe still running when a tick comes makes
the next probe start as soon as it ends (Go's ticker keeps one tick and drops the rest). A probe
fails when no answer comes within `timeoutSeconds` or the status is not 2xx/3xx. `failureThreshold`
failures in a row turn readiness off (the pod leaves the Service's endpoints: with one replica, no
endpoint at all) or make liveness restart the container; one success (successThreshold 1, the only
value liveness allows) resets the count.

Nothing here opens a socket: the load generator probes for real with `next_probe_at`, and
`replay` / `worst_case` ask what a probe with other settings would have seen in the same series.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# Kubernetes' defaults for a probe's timing fields (core/v1 Probe).
DEFAULTS = {"periodSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3, "initialDelaySeconds": 0}

# One sequential /health measurement: (start s from the phase's start, seconds until the answer or
# until the client gave up, answered 2xx/3xx).
Sample = tuple[float, float, bool]


@dataclass(frozen=True)
class Probe:
    name: str  # "readiness" | "liveness"
    period_s: float
    timeout_s: float
    failure_threshold: int
    initial_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.period_s <= 0 or self.timeout_s <= 0 or self.failure_threshold < 1:
            raise ValueError(
                f"{self.name} probe: period {self.period_s} s, timeout {self.timeout_s} s, failureThreshold "
                f"{self.failure_threshold}: period and timeout must be > 0 and the threshold >= 1"
            )

    @classmethod
    def of(cls, container: Mapping[str, Any], name: str) -> Probe:
        """The rendered container's `<name>Probe` with Kubernetes' defaults for unset fields."""
        spec = {**DEFAULTS, **(container.get(f"{name}Probe") or {})}
        return cls(
            name,
            float(spec["periodSeconds"]),
            float(spec["timeoutSeconds"]),
            int(spec["failureThreshold"]),
            float(spec["initialDelaySeconds"]),
        )

    def hang_detected_within_s(self) -> float:
        """Worst case from a server hanging (accepting, never answering) to the threshold being
        reached: up to a period until the next probe, then `failureThreshold` probes that each
        time out, a period apart or back to back when the timeout is longer than the period."""
        return (
            self.period_s + (self.failure_threshold - 1) * max(self.period_s, self.timeout_s) + self.timeout_s
        )

    def text(self) -> str:
        return (
            f"every {self.period_s:g} s, timeout {self.timeout_s:g} s, "
            f"failureThreshold {self.failure_threshold}"
        )

    def asdict(self) -> dict[str, Any]:
        return {**asdict(self), "hang_detected_within_s": self.hang_detected_within_s()}


def next_probe_at(started: float, ended: float, offset: float, period: float) -> float:
    """When the kubelet starts the next probe, given the last one ran from `started` to `ended` and
    ticks come at `offset + k * period`: at once if a tick came while it ran, else the next tick."""
    tick = offset + (math.floor((started - offset) / period) + 1) * period
    return max(ended, tick)


def answer_at(series: Sequence[Sample], t: float) -> tuple[float, bool] | None:
    """What a /health request sent at `t` (s from the phase's start) would have got: the answer of
    the last measurement sent at or before `t` (each checker is sequential, so that one was in
    flight or had just ended); None before the phase and after the last measurement ended."""
    if t < 0 or not series:
        return None
    k = max(1, bisect.bisect_right([s[0] for s in series], t))  # the first starts a hair after 0
    start, latency, ok = series[k - 1]
    if k == len(series) and t > start + latency:
        return None
    return latency, ok


@dataclass(frozen=True)
class Outcome:
    probes: int
    failed: int
    max_in_a_row: int
    tripped_at: float | None  # seconds from the start when failureThreshold was reached

    @property
    def tripped(self) -> bool:
        return self.tripped_at is not None


def judge(results: Sequence[tuple[float, bool]], threshold: int) -> Outcome:
    """`results` = (start s, failed) of consecutive probes: how many failed, the longest run of
    failures, and when the run first reached `threshold` (None: never)."""
    run = longest = failed = 0
    tripped_at: float | None = None
    for t, bad in results:
        run = run + 1 if bad else 0
        failed += bad
        longest = max(longest, run)
        if run >= threshold and tripped_at is None:
            tripped_at = t
    return Outcome(len(results), failed, longest, tripped_at)


def replay(series: Sequence[Sample], probe: Probe, offset: float) -> list[tuple[float, bool]]:
    """The probes a kubelet with `probe`'s settings, first probing at `offset`, would have made
    during the series, each judged by the answer a request sent then got: (start, failed)."""
    out: list[tuple[float, bool]] = []
    t = offset
    while (answer := answer_at(series, t)) is not None:
        latency, ok = answer
        failed = not ok or latency >= probe.timeout_s
        out.append((t, failed))
        t = next_probe_at(t, t + min(latency, probe.timeout_s), offset, probe.period_s)
    return out


def worst_case(series: Sequence[Sample], probe: Probe, step: float = 0.25) -> dict[str, Any]:
    """`replay` at every phase of the probe's period (`step` apart): the most failures and the
    longest run of failures any phase saw, and the share of phases that reached the threshold."""
    phases = max(1, int(probe.period_s / step))
    outcomes = [judge(replay(series, probe, k * step), probe.failure_threshold) for k in range(phases)]
    return {
        "phases": phases,
        "probes_min": min(o.probes for o in outcomes),
        "failed_max": max(o.failed for o in outcomes),
        "max_in_a_row": max(o.max_in_a_row for o in outcomes),
        "tripped_share": sum(o.tripped for o in outcomes) / phases,
    }


def timeout_needed(series: Sequence[Sample]) -> float:
    """The shortest timeout under which no /health request of the series would have failed:
    just above the slowest answer (inf when one was not 2xx/3xx or never came)."""
    if any(not ok for _t, _lat, ok in series):
        return math.inf
    return max((lat for _t, lat, _ok in series), default=0.0)
