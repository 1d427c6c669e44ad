"""The bench's report: markdown tables for bench/README.md (the blocks between its markers) and
the terminal, from bench/results.json (capacity) and bench/overload/results.json (overload)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow_gitops.bench import chart
from mlflow_gitops.bench.configs import MIB, Targets

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
OVERLOAD_BEGIN, OVERLOAD_END = "<!-- overload:begin -->", "<!-- overload:end -->"
PROBES = ("readiness", "liveness")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {list(row)} has {len(row)} cells, expected {len(headers)}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def replace_block(text: str, body: str, begin: str = BEGIN, end: str = END) -> str:
    """`text` with everything between the begin and end markers replaced by `body`."""
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"expected exactly one {begin} and one {end}")
    head, rest = text.split(begin)
    _old, tail = rest.split(end)
    return f"{head}{begin}\n{body.strip()}\n{end}{tail}"


def misses(record: Mapping[str, Any], targets: Targets) -> list[str]:
    """The targets a configuration misses (empty: it meets them all)."""
    out: list[str] = []
    if record.get("failed"):
        return ["did not run"]
    if record["peak_pss_bytes"] >= targets.memory_bytes:
        out.append("memory")
    if record["peak_connections"] >= targets.connections:
        out.append("connections")
    top = record["mix"].get(str(targets.errors_at))
    if top is None or top["errors"] > 0:
        out.append(f"4xx/5xx@{targets.errors_at}")
    p95 = top["health"]["p95"] if top else None
    if p95 is None or p95 >= targets.health_timeout_s:
        out.append("/health p95")
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def _s(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.1f}")


def _mib(v: int | None) -> str:
    return "-" if v is None else f"{v / MIB:.0f}"


def explained(groups: Sequence[Mapping[str, Any]], indent: str = "  ") -> str:
    """Each distinct error: its cause, count, whether MLflow's client retries it, its log excerpt."""
    out = []
    for g in groups:
        where = f" in {', '.join(g['phases'])}" if g.get("phases") else ""
        retried = "retried by MLflow's client" if g["retried_by_client"] else "not retried by MLflow's client"
        out.append(f"{indent}- `{g['cause']}`: {g['count']}{where}; {retried}; server log:")
        log = g["log"] or ["(nothing logged around it)"]
        out.append(textwrap.indent("```text\n" + "\n".join(log) + "\n```", indent + "  "))
    return "\n".join(out)


def errors_section(results: Mapping[str, Any]) -> str:
    counts = ", ".join(
        f"{r['name']} {r['errors_total'] if not r.get('failed') else '-'}" for r in results["configs"]
    )
    text = textwrap.fill(f"4xx/5xx answers and connection errors in all phases: {counts}.", 100)
    details = [f"- {r['name']}:\n{explained(r['errors'])}" for r in results["configs"] if r.get("errors")]
    return "\n\n".join([text, *details]) if details else text


def tables(results: Mapping[str, Any]) -> str:
    """The markdown of the capacity block and the terminal."""
    targets = Targets(**results["targets"])
    levels = [int(x) for x in results["params"]["levels"]]
    top = levels[-1]
    facts = results["machine"]
    noise = max((float(r.get("foreign_cpu_max", 0)) for r in results["configs"]), default=0.0)
    head = (
        f"Measured {facts['date']} on {facts['cpu_model']} ({facts['cores']} cores), "
        f"kernel {facts['kernel']}, Python {facts['python']}, MLflow {facts['mlflow']}, "
        f"PostgreSQL {facts['postgresql']}; load average before the run {facts['loadavg_before']}; "
        f"other processes took at most {noise:.0%} of the server's CPU in any phase. "
        f"Server pinned to one CPU; PostgreSQL and the load generator on the other. "
        f"`make bench` ({results['duration_s'] / 60:.1f} min{', quick' if results['quick'] else ''}); "
        f"details in bench/results.json, chart in bench/results.png."
    )
    rows1: list[list[str]] = []
    rows2: list[list[str]] = []
    for r in results["configs"]:
        name = f"**{r['name']}**" if r["name"] == "shipped" else r["name"]
        if r.get("failed"):
            rows1.append([name, r["settings"]["summary"], *(["-"] * 7)])
            rows2.append([name, *(["-"] * (len(levels) + 4)), "did not run: " + r["failed"][:80]])
            continue
        a = r["artifacts"]
        rows1.append(
            [
                name,
                r["settings"]["summary"],
                _s(r["ready_s"]),
                _mib(r["idle_pss_bytes"]),
                f"{r['runs']['per_s']:.0f}",
                f"{r['metrics']['per_s']:.0f}",
                f"{a['upload_MBps']:.0f} / {a['download_MBps']:.0f}",
                f"{a['raw_write_MBps']:.0f}",
                str(r["errors_total"]),
            ]
        )
        mix = r["mix"]
        lat = [f"{_ms(mix[str(n)]['latency']['p50'])} / {_ms(mix[str(n)]['latency']['p95'])}" for n in levels]
        h = mix[str(top)]["health"]
        missed = misses(r, targets)
        rows2.append(
            [
                name,
                *lat,
                f"{_ms(h['p50'])} / {_ms(h['p95'])} / {_ms(h['max'])}",
                str(mix[str(top)]["errors"]),
                _mib(r["peak_pss_bytes"]),
                str(r["peak_connections"]),
                "yes" if not missed else "no: " + ", ".join(missed),
            ]
        )
    t1 = markdown_table(
        [
            "configuration",
            "settings",
            "ready s",
            "idle PSS MiB",
            "runs/s",
            "metric values/s",
            "artifact up / down MB/s",
            "disk write+fsync MB/s",
            "4xx/5xx (all phases)",
        ],
        rows1,
    )
    t2 = markdown_table(
        [
            "configuration",
            *[f"p50 / p95 ms @{n}" for n in levels],
            f"/health p50 / p95 / max ms @{top}",
            f"4xx/5xx @{top}",
            "peak PSS MiB",
            "peak DB conns",
            "meets targets",
        ],
        rows2,
    )
    legend = (
        f"Targets: peak PSS under {targets.memory_bytes / MIB:.0f} MiB (half the 2Gi limit), peak "
        f"connections under {targets.connections} (half of max_connections), no 4xx/5xx at {top} "
        f"clients, `/health` p95 under the liveness probe timeout ({targets.health_timeout_s:g} s)."
    )
    return f"{textwrap.fill(head, 100)}\n\n{t1}\n\n{t2}\n\n{textwrap.fill(legend, 100)}\n\n{errors_section(results)}\n"


def _n(v: int | None) -> str:
    return "-" if v is None else str(v)


def _probe_cell(p: Mapping[str, Any]) -> str:
    return f"{p['failed']} of {p['probes']} ({p['max_in_a_row']} in a row)"


def overload_tables(results: Mapping[str, Any]) -> str:
    """The markdown of the overload block and the terminal."""
    facts, o, params = results["machine"], results["overload"], results["params"]
    probes = o["probes"]
    head = (
        f"Measured {facts['date']} on {facts['cpu_model']} ({facts['cores']} cores), MLflow "
        f"{facts['mlflow']}, PostgreSQL {facts['postgresql']}: {o['render']} ({o['settings']['summary']}), "
        f"server pinned to one CPU; load average {facts['loadavg_before']} before, "
        f"{facts.get('loadavg_after', '?')} after; other processes took at most {o['foreign_cpu_max']:.0%} "
        f"of the server's CPU. {params['overload_seconds']:g} s per level "
        f"({results['duration_s'] / 60:.1f} min{', quick' if results['quick'] else ''}); probes as rendered: "
        + "; ".join(f"{name} {_text(probes[name])}" for name in PROBES)
        + ". Details in bench/overload/results.json, chart in bench/overload/results.png."
    )
    rows = []
    for n, m in o["levels"].items():
        h, p, w = m["health"], m["probes"], m["writes"]
        rows.append(
            [
                n,
                f"{m['per_s']:.0f}",
                f"{_s(m['latency']['p50'])} / {_s(m['latency']['p95'])}",
                f"{_s(h['p50'])} / {_s(h['p95'])} / {_s(h['max'])}",
                _probe_cell(p["readiness"]),
                "yes" if p["readiness"]["tripped"] else "no",
                _probe_cell(p["liveness"]),
                "yes" if p["liveness"]["tripped"] else "no",
                f"{w['acked']} / {w['lost']} / {_n(w.get('runs_duplicated'))}",
                str(m["not_retried"]),
                str(m["errors"]),
                f"{m['server_cpu']:.0%} / {m['foreign_cpu']:.0%}",
            ]
        )
    t1 = markdown_table(
        [
            "clients",
            "requests/s",
            "p50 / p95 s",
            "/health p50 / p95 / max s",
            "readiness probes failed",
            "NotReady",
            "liveness probes failed",
            "restarted",
            "writes acked / lost / runs twice",
            "answers not retried",
            "4xx/5xx",
            "server CPU / others",
        ],
        rows,
    )
    sweep_rows = []
    timeouts = list(next(iter(o["levels"].values()))["probes"]["readiness"]["sweep"])
    for name in PROBES:
        for n, m in o["levels"].items():
            cells = []
            for t in timeouts:
                w = m["probes"][name]["sweep"][t]
                cells.append(f"{w['failed_max']}" + (" (trips)" if w["tripped_share"] > 0 else ""))
            sweep_rows.append([f"{name} @{n}", *cells])
    t2 = markdown_table(["probe @clients", *[f"timeout {t} s" for t in timeouts]], sweep_rows)
    legend = (
        "Probes failed: of the kubelet-like probes made during the level, with the longest run of "
        "failures; NotReady / restarted: that run reached failureThreshold. Writes: create-run and "
        "log-batch requests, retried as MLflow's client retries; lost = not acknowledged in the end; "
        "runs twice = runs in the store beyond those acknowledged (a create-run the client gave up on "
        "was applied anyway, and its retry made another). "
        "The second table replays the sequential /health measurements against each probe at every "
        "phase of its period (period and failureThreshold as rendered) and gives the most failed "
        "probes of any phase per timeout; (trips) = some phase reached failureThreshold."
    )
    errs = [
        f"- {n} clients:\n{explained(m['errors_explained'])}"
        for n, m in o["levels"].items()
        if m["errors_explained"]
    ]
    err_text = "\n\n".join(errs) if errs else "No 4xx/5xx answer and no connection error at any level."
    return f"{textwrap.fill(head, 100)}\n\n{t1}\n\n{t2}\n\n{textwrap.fill(legend, 100)}\n\n{err_text}\n"


def _text(p: Mapping[str, Any]) -> str:
    return (
        f"every {p['period_s']:g} s, timeout {p['timeout_s']:g} s, failureThreshold {p['failure_threshold']} "
        f"(a hung server detected within {p['hang_detected_within_s']:g} s)"
    )


def publish(results: Mapping[str, Any], out: Path, readme: Path | None) -> str:
    text = tables(results)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    chart.capacity(results, out / "results.png")
    if readme is not None:
        readme.write_text(replace_block(readme.read_text(), text))
    return text


def publish_overload(results: Mapping[str, Any], out: Path, readme: Path | None) -> str:
    text = overload_tables(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    chart.overload(results, out / "results.png")
    if readme is not None:
        readme.write_text(replace_block(readme.read_text(), text, OVERLOAD_BEGIN, OVERLOAD_END))
    return text
