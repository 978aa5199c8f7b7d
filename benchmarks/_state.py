"""Where the benchmarks keep what they measured between runs.

Most cache under ``runs/`` (ignored). The ones that run longer than a session (the architecture search, the
NetAdapt / AMC rows: hours each on 2 cores) run on machines that a later session may not get back, so their run
folders are committed under ``benchmarks/state/`` and a fresh checkout resumes from the last commit; each such
folder's ``.gitignore`` leaves out what is rebuilt or needed only within a session. Plots linked from BENCHMARKS.md
are committed under ``benchmarks/plots/``.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "benchmarks" / "state"
PLOTS = ROOT / "benchmarks" / "plots"
RUNS = ROOT / "runs"
LATENCY_TABLE = RUNS / "bench_latency" / "table_cpu-int8_t1.json"  # built by benchmarks/latency_model.py
RUN_TABLE = "latency_table.json"


def run_table(work: Path, source: Path | None = None) -> Path:
    """The run's own copy of the 1-thread int8 latency table, taken on its first use from ``source`` (default: the
    latency benchmark's): a table rebuilt later (or on another machine) would move the budgets and predictions of a
    run under way."""
    from pipeline.core.fsutil import write_bytes

    path, source = work / RUN_TABLE, source or LATENCY_TABLE
    if not path.is_file():
        if not source.is_file():
            raise SystemExit(f"run benchmarks/latency_model.py first: {source} is the latency table it builds")
        work.mkdir(parents=True, exist_ok=True)
        write_bytes(path, source.read_bytes())
    return path
