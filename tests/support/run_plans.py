"""What the e2e workloads write: each run planned from a seed (params, tags, metrics, artifacts),
its facts as canonical lines (counted, digested, compared with what a server holds), and artifact
bodies generated while they are sent."""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

KIB = 2**10
MIB = 2**20
CHUNK = MIB
BASE_TS = 1_767_225_600_000  # metric timestamps are planned, not taken from the clock


@dataclass(frozen=True)
class RunPlan:
    """Everything one run will hold; every value is derived from the seed."""

    name: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: tuple[tuple[str, float, int, int], ...]  # (key, value, step, timestamp)
    artifacts: dict[str, bytes | Generated]  # path in the run's artifact root -> content

    def facts_of(self, what: str) -> list[tuple[str, ...]]:
        """The facts one acknowledged write (a Ledger entry's `what`) put on the server."""
        kinds = {"create": ("run",), "params+tags": ("param", "tag"), "metrics": ("metric",)}
        if what.startswith("artifact "):
            return [f for f in self.items() if f[0] == "artifact" and f[2] == what.removeprefix("artifact ")]
        return [f for f in self.items() if f[0] in kinds.get(what, ())]

    def items(self) -> Iterator[tuple[str, ...]]:
        """One canonical line per stored fact (what the check compares and counts)."""
        yield ("run", self.name)
        for key, value in self.params.items():
            yield ("param", self.name, key, value)
        for key, value in self.tags.items():
            yield ("tag", self.name, key, value)
        for key, metric, step, ts in self.metrics:
            yield ("metric", self.name, key, repr(metric), str(step), str(ts))
        for path, content in self.artifacts.items():
            sha = hashlib.sha256(content).hexdigest() if isinstance(content, bytes) else content.digest()
            yield ("artifact", self.name, path, str(len(content)), sha)


def plan(
    clients: int, runs_per_client: int, *, prefix: str, seed: int = 0, big_artifact: int = MIB
) -> list[list[RunPlan]]:
    """Per client, its runs: 5 params, 3 tags, 2 metrics x 10 steps, artifacts of 4 KiB and
    128 KiB, and on each client's first run one of `big_artifact` bytes."""
    out: list[list[RunPlan]] = []
    for c in range(clients):
        runs = []
        for r in range(runs_per_client):
            rng = random.Random(f"{seed}-{c}-{r}")
            artifacts: dict[str, bytes | Generated] = {
                "notes/small.txt": rng.randbytes(4 * KIB),
                "data/medium.bin": rng.randbytes(128 * KIB),
            }
            if r == 0 and big_artifact:
                artifacts["data/big.bin"] = rng.randbytes(big_artifact)
            runs.append(
                RunPlan(
                    name=f"{prefix}-c{c:02d}-r{r}",
                    params={f"p{i}": f"{rng.random():.12f}" for i in range(5)},
                    tags={f"t{i}": rng.choice(["a", "b", "c"]) * (i + 1) for i in range(3)},
                    metrics=tuple(
                        (key, round(rng.uniform(-1e3, 1e3), 6), step, BASE_TS + 1000 * step + c)
                        for key in ("loss", "accuracy")
                        for step in range(10)
                    ),
                    artifacts=artifacts,
                )
            )
        out.append(runs)
    return out


def facts(plans: Sequence[RunPlan]) -> Counter[tuple[str, ...]]:
    return Counter(item for p in plans for item in p.items())


def digest(items: Counter[tuple[str, ...]]) -> str:
    sha = hashlib.sha256()
    for item in sorted(items.elements()):
        sha.update("\x1f".join(item).encode() + b"\n")
    return sha.hexdigest()[:16]


class Generated:
    """`size` pseudo-random bytes from `seed`, produced while they are sent (never held whole), the
    same on every attempt. With `hold_at`, the first attempt stalls after that many bytes until
    `resume` is set: an upload caught mid-way by a fault, deterministically."""

    def __init__(
        self, size: int, seed: int, hold_at: int | None = None, resume: threading.Event | None = None
    ) -> None:
        self.size, self.seed, self.hold_at = size, seed, hold_at
        self.resume = resume or threading.Event()
        self.sent = 0
        self._digest: str | None = None

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        rng, self.sent = random.Random(self.seed), 0
        while self.sent < self.size:
            if self.hold_at is not None and self.sent >= self.hold_at:
                self.hold_at = None
                self.resume.wait(300)
            chunk = rng.randbytes(min(CHUNK, self.size - self.sent))
            self.sent += len(chunk)
            yield chunk

    def digest(self) -> str:
        if self._digest is None:
            rng, sha, left = random.Random(self.seed), hashlib.sha256(), self.size
            while left:
                chunk = rng.randbytes(min(CHUNK, left))
                sha.update(chunk)
                left -= len(chunk)
            self._digest = sha.hexdigest()
        return self._digest


def compare(expected: Counter[tuple[str, ...]], observed: Counter[tuple[str, ...]]) -> list[str]:
    """Every fact missing, duplicated or unexpected (an empty list: each planned fact exactly once)."""
    problems = []
    for item in sorted(set(expected) | set(observed)):
        if expected[item] != observed[item]:
            problems.append(f"{' '.join(item[:4])}...: expected {expected[item]}, found {observed[item]}")
    return problems


def tally(items: Counter[tuple[str, ...]]) -> dict[str, int]:
    kinds = Counter(item[0] for item in items.elements())
    kinds["artifact bytes"] = sum(int(item[3]) for item in items.elements() if item[0] == "artifact")
    return dict(kinds)
