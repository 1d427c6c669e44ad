"""The pure logic of `make bench` (mlflow_gitops/bench/): statistics, the kubelet's probes replayed
against a latency series, errors explained from a server log, tables and bench/README.md's blocks.
Nothing here runs a server or times anything."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from mlflow_gitops.bench import configs, load, report, serverlog
from mlflow_gitops.bench.configs import GIB, MIB, OUT, README, Targets
from mlflow_gitops.bench.probes import (
    Outcome,
    Probe,
    answer_at,
    judge,
    next_probe_at,
    replay,
    timeout_needed,
    worst_case,
)
from mlflow_gitops.bench.stats import percentile, summary


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 95) == pytest.approx(4.8)
    assert percentile(values, 100) == 5.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_summary_of_no_values_has_no_figures() -> None:
    assert summary([]) == {"n": 0, "p50": None, "p95": None, "max": None}
    assert summary([0.1, 0.3])["max"] == 0.3


def test_workers_replace_the_rendered_ones_or_are_added() -> None:
    assert configs.with_workers(["server", "--workers=2", "--port=5000"], 4) == [
        "server",
        "--port=5000",
        "--workers=4",
    ]
    assert configs.with_workers(["server"], 1) == ["server", "--workers=1"]
    assert configs.arg_value(["server", "--workers=3"], "workers") == "3"
    assert configs.arg_value(["server"], "workers") is None


def test_settings_read_mlflow_defaults_where_nothing_is_set() -> None:
    cfg = configs.Config("defaults", configs.RENDER)
    unset = configs.settings(cfg, ["server"], {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "0"})
    assert (unset["workers"], unset["job_execution"], unset["pool"]) == (4, True, {})
    shipped = configs.settings(
        cfg,
        ["server", "--workers=2"],
        {
            configs.JOBS: "false",
            "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "3",
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "7",
        },
    )
    assert shipped["summary"] == "2 workers, jobs off, pool 3+7"


# -- the kubelet's probes ----------------------------------------------------------------------


def test_probe_reads_the_rendered_fields_and_kubernetes_defaults() -> None:
    container = {"livenessProbe": {"httpGet": {"path": "/health"}, "periodSeconds": 30, "timeoutSeconds": 20}}
    live = Probe.of(container, "liveness")
    assert (live.period_s, live.timeout_s, live.failure_threshold) == (30, 20, 3)
    ready = Probe.of(container, "readiness")  # not rendered: Kubernetes' defaults
    assert (ready.period_s, ready.timeout_s, ready.failure_threshold) == (10, 1, 3)
    with pytest.raises(ValueError, match="failureThreshold 0"):
        Probe("liveness", 10, 1, 0)


def test_a_hung_server_is_detected_later_when_the_timeout_outlasts_the_period() -> None:
    assert Probe("liveness", 30, 10, 5).hang_detected_within_s() == 30 + 4 * 30 + 10
    assert Probe("liveness", 10, 30, 3).hang_detected_within_s() == 10 + 2 * 30 + 30


def test_next_probe_waits_for_the_tick_or_starts_at_once_when_one_came_while_it_ran() -> None:
    assert next_probe_at(5.0, 6.0, offset=5.0, period=10.0) == 15.0
    assert next_probe_at(5.0, 17.0, offset=5.0, period=10.0) == 17.0  # tick at 15 was kept
    assert next_probe_at(17.0, 18.0, offset=5.0, period=10.0) == 25.0
    assert next_probe_at(17.0, 40.0, offset=5.0, period=10.0) == 40.0  # 25 kept, 35 dropped


def test_answer_at_a_time_is_the_last_measurement_sent_before_it() -> None:
    series = [(0.0, 1.0, True), (1.25, 12.0, True), (13.5, 0.5, False)]
    assert answer_at(series, -0.1) is None
    assert answer_at(series, 0.5) == (1.0, True)
    assert answer_at(series, 10.0) == (12.0, True)
    assert answer_at(series, 13.9) == (0.5, False)
    assert answer_at(series, 14.1) is None  # after the last one ended


def _series(latencies: list[float], gap: float = 0.25) -> list[tuple[float, float, bool]]:
    """Sequential /health measurements: each sent `gap` s after the last one was answered."""
    out, t = [], 0.0
    for lat in latencies:
        out.append((t, lat, True))
        t += lat + gap
    return out


def test_probes_fail_only_where_health_was_slower_than_the_timeout() -> None:
    series = _series([0.5] * 20 + [12.0, 12.0, 12.0] + [0.5] * 40)
    probe = Probe("readiness", 10, 10, 3)
    results = replay(series, probe, offset=0.0)
    failed = [t for t, bad in results if bad]
    assert failed and all(15.0 <= t < 15.0 + 3 * 12.25 for t in failed)
    assert len(failed) < len(results)
    assert not any(bad for _t, bad in replay(series, Probe("readiness", 10, 15, 3), offset=0.0))


def test_judge_trips_only_on_threshold_failures_in_a_row() -> None:
    spaced = [(0, True), (10, True), (20, False), (30, True), (40, True)]
    assert judge(spaced, 3) == Outcome(probes=5, failed=4, max_in_a_row=2, tripped_at=None)
    assert not judge(spaced, 3).tripped
    in_a_row = [(0, False), (10, True), (20, True), (30, True)]
    outcome = judge(in_a_row, 3)
    assert outcome.tripped and outcome.tripped_at == 30
    assert judge(in_a_row, 4).tripped_at is None


def test_worst_case_over_phases_finds_the_phase_that_trips() -> None:
    # 25 s of /health at 11 s each in a quiet series: a 10 s timeout fails there at some phases.
    series = _series([0.2] * 40 + [11.0, 11.0] + [0.2] * 100)
    tight = worst_case(series, Probe("readiness", 10, 10, 2))
    assert tight["failed_max"] >= 2 and tight["tripped_share"] > 0
    assert worst_case(series, Probe("readiness", 10, 10, 4))["tripped_share"] == 0
    roomy = worst_case(series, Probe("readiness", 10, 12, 1))
    assert roomy["failed_max"] == 0 and roomy["tripped_share"] == 0
    assert timeout_needed(series) == 11.0
    assert timeout_needed([*series, (series[-1][0] + 1, 0.1, False)]) == float("inf")


def test_client_backoff_is_mlflows_urllib3_retry() -> None:
    rng = random.Random(1)
    assert load.backoff(1, rng) == 0.0
    assert 4.0 <= load.backoff(2, rng) < 5.0
    assert 64.0 <= load.backoff(6, rng) < 65.0
    assert load.backoff(9, rng) == 120.0
    assert {400, 403, 404}.isdisjoint(serverlog.RETRIED) and {429, 500, 503} <= serverlog.RETRIED


# -- errors explained from the server's log ------------------------------------------------------

LOG = """\
Registry store URI not provided. Using backend store URI.
2026/12/03 09:25:02 INFO:     Uvicorn running on http://0.0.0.0:5000 (Press CTRL+C to quit)
2026/12/03 09:26:10 INFO:     127.0.0.1:40001 - "POST /api/2.0/mlflow/runs/create?bench=m128c1-1 HTTP/1.1" 200 OK
2026/12/03 09:26:11 ERROR mlflow.server: Exception on /api/2.0/mlflow/runs/search [POST]
Traceback (most recent call last):
  File "mlflow/server/handlers.py", line 1, in search_runs_impl
    from mlflow.server import auth
AttributeError: module 'mlflow.server.auth' has no attribute 'auth_config'
2026/12/03 09:26:11 INFO:     127.0.0.1:40002 - "POST /api/2.0/mlflow/runs/create?bench=m128c2-1 HTTP/1.1" 200 OK
2026/12/03 09:26:12 INFO:     127.0.0.1:40003 - "POST /api/2.0/mlflow/runs/search?bench=m128c3-4 HTTP/1.1" 500 Internal Server Error
2026/12/03 09:26:20 INFO:     127.0.0.1:40004 - "POST /api/2.0/mlflow/runs/search?bench=m128c3-40 HTTP/1.1" 200 OK
2026/12/03 09:26:40 WARNING mlflow.store.db.utils: QueuePool limit of size 10 overflow 31 reached
2026/12/03 09:26:41 INFO:     127.0.0.1:40005 - "POST /api/2.0/mlflow/runs/log-batch?bench=m128c4-9 HTTP/1.1" 400 Bad Request
2026/12/03 09:27:00 INFO:     127.0.0.1:40006 - "POST /api/2.0/mlflow/runs/search?bench=m128c5-2 HTTP/1.1" 500 Internal Server Error
"""


def _utc(stamp: str) -> float:
    import datetime

    return datetime.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S").replace(tzinfo=datetime.UTC).timestamp()


T = _utc("2026/12/03 09:26:12")


def test_log_records_keep_a_traceback_with_the_line_that_started_it() -> None:
    records = serverlog.parse(LOG, to_epoch=_utc)
    first = records[0]
    assert first.stamp is None and first.lines == (
        "Registry store URI not provided. Using backend store URI.",
    )
    tb = next(r for r in records if r.problem and "Traceback" in "\n".join(r.lines))
    assert len(tb.lines) == 5 and tb.lines[-1].startswith("AttributeError")
    assert [r.tag for r in records if r.tag] == [
        "m128c1-1",
        "m128c2-1",
        "m128c3-4",
        "m128c3-40",
        "m128c4-9",
        "m128c5-2",
    ]


def test_an_error_gets_its_access_line_and_the_traceback_just_before_it() -> None:
    event = {
        "op": "search",
        "code": 500,
        "tag": "m128c3-4",
        "t0": T - 1,
        "t1": T,
        "body": "Internal Server Error",
    }
    found = serverlog.excerpt(serverlog.parse(LOG, to_epoch=_utc), event)
    lines = [ln for r in found for ln in r.lines]
    assert lines[-1].endswith(
        '"POST /api/2.0/mlflow/runs/search?bench=m128c3-4 HTTP/1.1" 500 Internal Server Error'
    )
    assert "AttributeError: module 'mlflow.server.auth' has no attribute 'auth_config'" in lines
    assert not any("m128c2-1" in ln or "m128c3-40" in ln for ln in lines), "only problems and its own line"
    assert serverlog.cause(event, found) == (
        "search 500: AttributeError: module 'mlflow.server.auth' has no attribute 'auth_config'"
    )


def test_a_traceback_logged_long_before_does_not_explain_a_later_error() -> None:
    event = {
        "op": "search",
        "code": 500,
        "tag": "m128c5-2",
        "t0": T + 47,
        "t1": T + 48,
        "body": "Internal Server Error",
    }
    found = serverlog.excerpt(serverlog.parse(LOG, to_epoch=_utc), event)
    assert [r.tag for r in found] == ["m128c5-2"]
    assert serverlog.cause(event, found) == "search 500: Internal Server Error"


def test_an_error_without_an_access_line_gets_what_was_logged_while_it_was_out() -> None:
    event = {
        "op": "log_batch",
        "error": "ReadTimeout",
        "tag": "m128c9-1",
        "t0": T + 26,
        "t1": T + 30,
        "body": "",
    }
    found = serverlog.excerpt(serverlog.parse(LOG, to_epoch=_utc), event)
    assert [ln for r in found for ln in r.lines] == [
        "2026/12/03 09:26:40 WARNING mlflow.store.db.utils: QueuePool limit of size 10 overflow 31 reached"
    ]


def test_a_timeout_with_nothing_logged_says_the_server_had_not_answered() -> None:
    event = {
        "op": "create_run",
        "error": "ReadTimeout",
        "tag": "m256c1-2",
        "t0": T + 60,
        "t1": T + 180,
        "body": "",
    }
    [group] = serverlog.explain(LOG, [event], to_epoch=_utc)
    assert group["retried_by_client"] and group["cause"] == "create_run ReadTimeout"
    [line] = group["log"]
    assert line.startswith("(no access line: the server had not answered when the client gave up after 120 s")


def test_errors_are_grouped_by_cause_and_marked_retried_or_final() -> None:
    events = [
        {"op": "search", "code": 500, "tag": "m128c3-4", "t0": T - 1, "t1": T, "body": "x"},
        {
            "op": "log_batch",
            "code": 400,
            "tag": "m128c4-9",
            "t0": T + 28,
            "t1": T + 29,
            "body": "QueuePool limit",
        },
        {"op": "search", "code": 500, "tag": "m128c3-4", "t0": T - 1, "t1": T, "body": "x"},
    ]
    groups = serverlog.explain(LOG, events, to_epoch=_utc)
    assert [(g["count"], g["retried_by_client"]) for g in groups] == [(2, True), (1, False)]
    assert groups[1]["cause"] == "log_batch 400: QueuePool limit"
    assert any("QueuePool limit of size 10" in ln for ln in groups[1]["log"])
    merged = serverlog.merge({"mix32": groups, "mix128": groups[:1]})
    assert (merged[0]["count"], merged[0]["phases"]) == (4, ["mix32", "mix128"])
    assert (merged[1]["count"], merged[1]["phases"]) == (1, ["mix32"])
    assert serverlog.final_answers({"200": 9, "400": 2, "500": 3, "404": 1}) == 3


# -- tables and bench/README.md ---------------------------------------------------------------


def test_markdown_table_rejects_a_row_of_the_wrong_width() -> None:
    assert report.markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    with pytest.raises(ValueError):
        report.markdown_table(["a", "b"], [["1"]])


def test_readme_block_is_replaced_and_nothing_else() -> None:
    text = f"# t\nbefore\n{report.BEGIN}\nold\ntable\n{report.END}\nafter\n"
    assert report.replace_block(text, "new\n") == f"# t\nbefore\n{report.BEGIN}\nnew\n{report.END}\nafter\n"
    for broken in ("no markers", f"{report.BEGIN}{report.BEGIN}{report.END}"):
        with pytest.raises(ValueError):
            report.replace_block(broken, "x")


def _record(**over: Any) -> dict[str, Any]:
    mix = {
        "32": {
            "errors": 0,
            "health": {"p50": 0.2, "p95": 0.9, "max": 1.0},
            "latency": {"p50": 0.5, "p95": 1.5},
        }
    }
    rec: dict[str, Any] = {"name": "shipped", "peak_pss_bytes": 700 * MIB, "peak_connections": 30, "mix": mix}
    rec.update(over)
    return rec


TARGETS = Targets(memory_bytes=GIB, connections=100, health_timeout_s=3.0, errors_at=32)


def test_a_configuration_within_every_target_misses_none() -> None:
    assert report.misses(_record(), TARGETS) == []


def test_each_missed_target_is_named() -> None:
    assert report.misses(_record(peak_pss_bytes=GIB), TARGETS) == ["memory"]
    assert report.misses(_record(peak_connections=100), TARGETS) == ["connections"]
    errors = _record()
    errors["mix"]["32"]["errors"] = 1
    assert report.misses(errors, TARGETS) == ["4xx/5xx@32"]
    slow = _record()
    slow["mix"]["32"]["health"]["p95"] = 3.0
    assert report.misses(slow, TARGETS) == ["/health p95"]
    assert report.misses({"failed": "boom"}, TARGETS) == ["did not run"]


def _block(text: str, begin: str, end: str) -> str:
    return text.split(begin)[1].split(end)[0].strip()


def test_committed_readme_blocks_match_committed_results() -> None:
    """bench/README.md's tables are generated from bench/results.json and bench/overload/results.json."""
    readme = README.read_text()
    results = json.loads((OUT / "results.json").read_text())
    hint = "run `python -m mlflow_gitops.bench --publish-only`"
    assert _block(readme, report.BEGIN, report.END) == report.tables(results).strip(), hint
    overload = json.loads((OUT / "overload" / "results.json").read_text())
    assert (
        _block(readme, report.OVERLOAD_BEGIN, report.OVERLOAD_END) == report.overload_tables(overload).strip()
    ), hint


def test_tables_have_a_row_per_configuration_even_a_failed_one() -> None:
    results = json.loads((OUT / "results.json").read_text())
    broken = copy.deepcopy(results)
    broken["configs"].append({"name": "broken", "failed": "server exited 1", "settings": {"summary": "-"}})
    text = report.tables(broken)
    for table in text.split("\n\n"):
        lines = [ln for ln in table.splitlines() if ln.startswith("|")]
        assert len({ln.count("|") for ln in lines}) <= 1, table
    assert text.count("| broken |") == 2


def test_a_configurations_errors_are_listed_with_their_log_excerpt() -> None:
    results = json.loads((OUT / "results.json").read_text())
    shipped = next(r for r in results["configs"] if r["name"] == "shipped")
    shipped["errors_total"] = 2
    shipped["errors"] = [
        {
            "cause": "search 500: AttributeError: no attribute 'auth_config'",
            "count": 2,
            "retried_by_client": True,
            "tags": ["m32c1-3"],
            "log": ["Traceback (most recent call last):", "AttributeError: no attribute 'auth_config'"],
            "phases": ["mix32"],
        }
    ]
    text = report.tables(results)
    assert "shipped 2," in " ".join(text.split())
    assert "- `search 500: AttributeError: no attribute 'auth_config'`: 2 in mix32; retried" in text
    assert "    Traceback (most recent call last):" in text
