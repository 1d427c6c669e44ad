"""The bench's charts (matplotlib, requirements-bench.txt): bench/results.png (capacity) and
bench/overload/results.png (/health latency and the kubelet's probes under overload)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow_gitops.bench.configs import GIB, MIB, Targets


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def capacity(results: Mapping[str, Any], path: Path) -> None:
    plt = _pyplot()
    ok = [r for r in results["configs"] if not r.get("failed")]
    names = [r["name"] for r in ok]
    targets = Targets(**results["targets"])
    levels = [int(x) for x in results["params"]["levels"]]
    top = str(levels[-1])
    fig, ax = plt.subplots(2, 3, figsize=(18, 9.5))
    for r in ok:
        ax[0][0].plot(
            levels, [r["mix"][str(n)]["latency"]["p95"] * 1000 for n in levels], marker="o", label=r["name"]
        )
    ax[0][0].set(
        title="mix p95 latency", xlabel="concurrent clients", ylabel="ms", xscale="log", xticks=levels
    )
    ax[0][0].set_xticklabels([str(n) for n in levels])
    ax[0][0].legend(fontsize=7)

    def bars(a: Any, values: list[float], title: str, unit: str, lines: Sequence[tuple[float, str]]) -> None:
        palette = {"shipped": "tab:green", "previous": "tab:orange", "defaults": "tab:gray"}
        colors = [palette.get(n, "tab:blue") for n in names]
        a.barh(names, values, color=colors)
        for (x, label), style in zip(lines, ("--", ":"), strict=False):
            a.axvline(x, color="tab:red", linestyle=style, label=label)
        if lines:
            a.legend(fontsize=7, loc="lower right")
        a.set(title=title, xlabel=unit)
        a.invert_yaxis()

    bars(
        ax[0][1],
        [r["peak_pss_bytes"] / MIB for r in ok],
        "peak PSS (process tree)",
        "MiB",
        [(targets.memory_bytes / MIB, "target"), (2 * GIB / MIB, "limit 2Gi")],
    )
    bars(
        ax[0][2],
        [r["peak_connections"] for r in ok],
        "peak DB connections",
        "connections",
        [(targets.connections, "target"), (2 * targets.connections, "max_connections")],
    )
    bars(
        ax[1][0],
        [r["mix"][top]["health"]["p95"] * 1000 for r in ok],
        f"/health p95 @{top} clients",
        "ms",
        [(targets.health_timeout_s * 1000, "liveness timeout")],
    )
    bars(ax[1][1], [r["runs"]["per_s"] for r in ok], "runs created per second", "runs/s", [])
    bars(
        ax[1][2], [r["metrics"]["per_s"] for r in ok], "metric values per second (log-batch)", "values/s", []
    )
    fig.suptitle(f"MLflow {results['machine']['mlflow']} on one CPU ({results['machine']['cpu_model']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def overload(results: Mapping[str, Any], path: Path) -> None:
    """Per level: /health latency over time, the probes' timeouts, and each kubelet probe made."""
    plt = _pyplot()
    o = results["overload"]
    levels = list(o["levels"].items())
    fig, axes = plt.subplots(1, len(levels), figsize=(8 * len(levels), 5), squeeze=False)
    for ax, (n, m) in zip(axes[0], levels, strict=True):
        series = m["health_series"]
        ax.plot(
            [s[0] for s in series],
            [s[1] for s in series],
            color="tab:blue",
            lw=0.5,
            marker=".",
            label="/health latency (sequential checks, at the time each was sent)",
        )
        for (name, p), color in zip(m["probes"].items(), ("tab:orange", "tab:red"), strict=False):
            ax.axhline(p["settings"]["timeout_s"], color=color, ls="--", lw=1, label=f"{name} timeout")
            for start, took, failed, _code in p["results"]:
                ax.plot([start], [took], marker="x" if failed else "o", color=color, ms=7)
            ax.plot([], [], marker="x", ls="", color=color, label=f"{name} probe: x failed, o passed")
        w = m["writes"]
        ax.set(
            title=f"{n} clients: {m['per_s']:.0f} req/s, writes lost {w['lost']} of {w['acked'] + w['lost']}",
            xlabel="s into the level",
            ylabel="s",
        )
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"MLflow {results['machine']['mlflow']} on one CPU, {o['settings']['summary']}: overload")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
