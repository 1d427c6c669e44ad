"""The pure logic of `make bench` (mlflow_gitops/bench/): statistics, tables, the README block. Nothing
here runs a server or times anything."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from mlflow_gitops import bench


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert bench.percentile(values, 0) == 1.0
    assert bench.percentile(values, 50) == 3.0
    assert bench.percentile(values, 95) == pytest.approx(4.8)
    assert bench.percentile(values, 100) == 5.0
    assert bench.percentile([7.0], 95) == 7.0
    assert bench.percentile([], 50) is None


def test_summary_of_no_values_has_no_figures() -> None:
    assert bench.summary([]) == {"n": 0, "p50": None, "p95": None, "max": None}
    assert bench.summary([0.1, 0.3])["max"] == 0.3


def test_workers_replace_the_rendered_ones_or_are_added() -> None:
    assert bench.with_workers(["server", "--workers=2", "--port=5000"], 4) == [
        "server",
        "--port=5000",
        "--workers=4",
    ]
    assert bench.with_workers(["server"], 1) == ["server", "--workers=1"]
    assert bench.arg_value(["server", "--workers=3"], "workers") == "3"
    assert bench.arg_value(["server"], "workers") is None


def test_settings_read_mlflow_defaults_where_nothing_is_set() -> None:
    cfg = bench.Config("defaults", bench.RENDER)
    unset = bench.settings(cfg, ["server"], {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "0"})
    assert (unset["workers"], unset["job_execution"], unset["pool"]) == (4, True, {})
    shipped = bench.settings(
        cfg,
        ["server", "--workers=2"],
        {
            bench.JOBS: "false",
            "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "3",
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "7",
        },
    )
    assert shipped["summary"] == "2 workers, jobs off, pool 3+7"


def test_markdown_table_rejects_a_row_of_the_wrong_width() -> None:
    assert bench.markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    with pytest.raises(ValueError):
        bench.markdown_table(["a", "b"], [["1"]])


def test_readme_block_is_replaced_and_nothing_else() -> None:
    text = f"# t\nbefore\n{bench.BEGIN}\nold\ntable\n{bench.END}\nafter\n"
    assert bench.replace_block(text, "new\n") == f"# t\nbefore\n{bench.BEGIN}\nnew\n{bench.END}\nafter\n"
    for broken in ("no markers", f"{bench.BEGIN}{bench.BEGIN}{bench.END}"):
        with pytest.raises(ValueError):
            bench.replace_block(broken, "x")


def _record(**over: Any) -> dict[str, Any]:
    mix = {
        "32": {
            "errors": 0,
            "health": {"p50": 0.2, "p95": 0.9, "max": 1.0},
            "latency": {"p50": 0.5, "p95": 1.5},
        }
    }
    rec: dict[str, Any] = {
        "name": "shipped",
        "peak_pss_bytes": 700 * bench.MIB,
        "peak_connections": 30,
        "mix": mix,
    }
    rec.update(over)
    return rec


TARGETS = bench.Targets(memory_bytes=bench.GIB, connections=100, health_timeout_s=3.0, errors_at=32)


def test_a_configuration_within_every_target_misses_none() -> None:
    assert bench.misses(_record(), TARGETS) == []


def test_each_missed_target_is_named() -> None:
    assert bench.misses(_record(peak_pss_bytes=bench.GIB), TARGETS) == ["memory"]
    assert bench.misses(_record(peak_connections=100), TARGETS) == ["connections"]
    errors = _record()
    errors["mix"]["32"]["errors"] = 1
    assert bench.misses(errors, TARGETS) == ["4xx/5xx@32"]
    slow = _record()
    slow["mix"]["32"]["health"]["p95"] = 3.0
    assert bench.misses(slow, TARGETS) == ["/health p95"]
    assert bench.misses({"failed": "boom"}, TARGETS) == ["did not run"]


def test_committed_readme_block_matches_committed_results() -> None:
    """The Capacity table in README.md is generated from bench/results.json (`make bench`)."""
    results = json.loads((bench.OUT / "results.json").read_text())
    readme = bench.README.read_text()
    block = readme.split(bench.BEGIN)[1].split(bench.END)[0]
    assert block.strip() == bench.tables(results).strip(), (
        "run `python -m mlflow_gitops.bench --publish-only`"
    )


def test_tables_have_a_row_per_configuration_even_a_failed_one() -> None:
    results = json.loads((bench.OUT / "results.json").read_text())
    broken = copy.deepcopy(results)
    broken["configs"].append({"name": "broken", "failed": "server exited 1", "settings": {"summary": "-"}})
    text = bench.tables(broken)
    for table in text.split("\n\n"):
        lines = [ln for ln in table.splitlines() if ln.startswith("|")]
        assert len({ln.count("|") for ln in lines}) <= 1, table
    assert text.count("| broken |") == 2
