"""Every 4xx/5xx the bench sees, explained by the server's own log.

The load generator tags each API request with a query parameter (`?bench=<tag>`; MLflow reads a
POST's JSON body only, and uvicorn's access log prints the whole target), and records each answer
>= 400 or connection error as an event: op, status or exception, the tag, wall-clock start and end.
Here the server's log (the pod's main container output: uvicorn's access lines and MLflow's
records, each `YYYY/MM/DD HH:MM:SS` in the server's local time, tracebacks on the lines after
their record) is cut into records and each event gets its excerpt: the access line of that request
and every traceback or warning logged within `window` seconds before it (for an error without an
access line, e.g. a client timeout, those logged while the request was out). Events with the same
cause are counted together under one excerpt.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TAG_PARAM = "bench"
STAMP = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) (\S+)")
ACCESS = re.compile(r'INFO:\s+\S+ - "(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})')
PROBLEM_LEVELS = ("WARNING", "ERROR", "CRITICAL", "WARNING:", "ERROR:", "CRITICAL:")
# The answers MLflow's Python client retries (mlflow.utils.request_utils); it also retries
# connection errors and timeouts. Anything else >= 400 (a 400 "QueuePool limit ...") is final.
RETRIED = frozenset({408, 429, 500, 502, 503, 504})
EXCERPT_LINES = 40
TAG = re.compile(rf"[?&]{TAG_PARAM}=([^&\s]+)")


def local_epoch(stamp: str) -> float:
    """A log timestamp (the server's local time, as this process's) as epoch seconds."""
    return datetime.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S").timestamp()


@dataclass(frozen=True)
class Record:
    line: int  # 1-based number of its first line in the log text
    stamp: float | None  # epoch seconds, whole seconds as logged; None before the first stamped line
    lines: tuple[str, ...]

    @property
    def access(self) -> re.Match[str] | None:
        return ACCESS.search(self.lines[0])

    @property
    def problem(self) -> bool:
        """A traceback, or a record logged at WARNING or above."""
        m = STAMP.match(self.lines[0])
        return (m is not None and m.group(2) in PROBLEM_LEVELS) or any(
            ln.startswith("Traceback") for ln in self.lines
        )

    @property
    def tag(self) -> str | None:
        """The bench's tag of the request this access line logs."""
        m = self.access
        found = TAG.search(m["target"]) if m else None
        return found.group(1) if found else None


def parse(text: str, to_epoch: Callable[[str], float] = local_epoch) -> list[Record]:
    """The log cut into records: a stamped line starts one, unstamped lines (a traceback's) belong
    to the record before them."""
    records: list[Record] = []
    start, stamp = 1, None
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        m = STAMP.match(line)
        if m or not lines:
            if lines:
                records.append(Record(start, stamp, tuple(lines)))
            start, lines = number, []
            stamp = to_epoch(m.group(1)) if m else stamp
        lines.append(line)
    if lines:
        records.append(Record(start, stamp, tuple(lines)))
    return records


def tag_index(records: Sequence[Record]) -> dict[str, int]:
    """Tag -> position of the access line that carries it."""
    return {tag: k for k, r in enumerate(records) if (tag := r.tag) is not None}


def excerpt(
    records: Sequence[Record],
    event: Mapping[str, Any],
    window: float = 1.0,
    index: Mapping[str, int] | None = None,
) -> list[Record]:
    """The records that explain one error event: its access line (found by the event's tag) and the
    problems logged within `window` s before it; without an access line, the problems logged
    from `window` s before the request until `window` s after it ended. Stamps are whole seconds
    (truncated), hence the extra second below."""
    index = tag_index(records) if index is None else index
    found = index.get(str(event.get("tag")))
    if found is not None:
        access = records[found]
        since = (access.stamp or 0.0) - window
        before: list[Record] = []
        for r in reversed(records[:found]):
            if r.stamp is not None and r.stamp < since:
                break
            if r.problem:
                before.insert(0, r)
        return [*before, access]
    lo, hi = float(event["t0"]) - window, float(event["t1"]) + window
    return [r for r in records if r.problem and r.stamp is not None and lo - 1 < r.stamp <= hi]


def cause(event: Mapping[str, Any], records: Sequence[Record]) -> str:
    """One line naming the error: op, status (or exception), and the last line of the last
    traceback in its excerpt, else the start of the answer's body."""
    status = str(event["code"]) if event.get("code") is not None else str(event.get("error", "error"))
    why = ""
    for r in reversed(records):
        tb = [ln.strip() for ln in r.lines[1:] if ln.strip()]
        if any(ln.startswith("Traceback") for ln in r.lines) and tb:
            why = tb[-1]
            break
    if not why:
        why = " ".join(str(event.get("body", "")).split())[:160]
    return f"{event['op']} {status}: {why}".rstrip(": ")


def silence(event: Mapping[str, Any]) -> str:
    """What an error with nothing in the log around it says."""
    took = float(event["t1"]) - float(event["t0"])
    if event.get("code") is None:
        return (
            f"(no access line: the server had not answered when the client gave up after {took:.0f} s, "
            "and logged nothing at WARNING or above meanwhile)"
        )
    return f"(no access line found for this {event['code']} and nothing at WARNING or above around it)"


def explain(
    text: str, events: Iterable[Mapping[str, Any]], window: float = 1.0, **kw: Any
) -> list[dict[str, Any]]:
    """Distinct errors of `events`, each with its count, whether a client would retry it, the
    tags of its first few events and the log excerpt of the first; most frequent first."""
    records = parse(text, **kw)
    index = tag_index(records)
    groups: dict[str, dict[str, Any]] = {}
    for event in events:
        found = excerpt(records, event, window, index)
        key = cause(event, found)
        group = groups.get(key)
        if group is None:
            code = event.get("code")
            groups[key] = group = {
                "cause": key,
                "count": 0,
                "retried_by_client": code is None or int(code) in RETRIED,
                "tags": [],
                "log": [ln for r in found for ln in r.lines][-EXCERPT_LINES:] or [silence(event)],
            }
        group["count"] += 1
        if len(group["tags"]) < 5:
            group["tags"].append(event.get("tag"))
    return sorted(groups.values(), key=lambda g: -int(g["count"]))


def final_answers(status: Mapping[str, int]) -> int:
    """Answers >= 400 that MLflow's client would not retry, from a status -> count map."""
    return sum(n for code, n in status.items() if int(code) >= 400 and int(code) not in RETRIED)


def merge(by_phase: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The distinct errors of several phases: counts added, the phases named, the first excerpt."""
    out: dict[str, dict[str, Any]] = {}
    for phase, groups in by_phase.items():
        for g in groups:
            m = out.setdefault(str(g["cause"]), {**g, "count": 0, "phases": []})
            m["count"] += int(g["count"])
            m["phases"].append(phase)
    return sorted(out.values(), key=lambda g: -int(g["count"]))
