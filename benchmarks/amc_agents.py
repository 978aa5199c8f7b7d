"""AMC's two agents side by side: the cross-entropy method (``amc``) against the paper's DDPG (``amc-ddpg``).

Issue 15 asks for DDPG as in AMC (He et al., 2018) "or a simpler agent if you show it works as well". Both
agents search per-group pruning ratios of the cached CIFAR-10 MobileNet v1 α=0.5 of ``benchmarks/adapt.py``
for half its predicted int8 latency (1 thread, the latency table of ``benchmarks/latency_model.py``), each
episode scaled to the budget and rewarded with the held-out accuracy without fine-tuning (BatchNorm
statistics re-estimated): the same evaluation, budget and episode count for both, several seeds each. The
held-out images are those ``benchmarks/adapt.py`` holds out (5% of the training split). No final fine-tune:
the comparison is the search alone.

Each (agent, seed) is an ``adapt`` run under ``--work`` that resumes per episode; a finished one is cached in
``<agent>_s<seed>.json``, so the benchmark picks up where it stopped.

    python benchmarks/amc_agents.py [--episodes 60] [--seeds 0,1] [--work runs/bench_amc_agents]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import write_section  # noqa: E402
from benchmarks._state import PLOTS, RUN_TABLE, RUNS, STATE  # noqa: E402
from benchmarks.cifar10 import extract  # noqa: E402

CONFIG = ROOT / "benchmarks" / "configs" / "cifar10.yaml"
# benchmarks/adapt.py's base net and its run's latency table (the agents adapt the same net on the same table)
BASE = STATE / "adapt" / "base_mobilenet_v1_0.5.h5"
TABLE = STATE / "adapt" / RUN_TABLE
AGENTS = {"amc": "cross-entropy method", "amc-ddpg": "DDPG (AMC paper)"}


def _holdout_split(config):
    """``benchmarks/adapt.py``'s split: the training part of the config's split, 5% of it held out."""
    from pipeline.core.data import load_dataset, split

    train, _ = split(load_dataset(extract(), config.input_size, progress=True), config.validation_split, config.seed)
    return split(train, 0.05, config.seed + 1)


def run_agent(agent: str, seed: int, episodes: int, work: Path, data) -> dict:
    """One search, cached; ``data()`` gives (config, fit part, held-out part), loaded (with TensorFlow) only when
    a search has to run."""
    cached = work / f"{agent}_s{seed}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    from pipeline.core.fsutil import write_json
    from pipeline.core.tf_env import keras
    from pipeline.latency.table import load_table
    from pipeline.stages.adapt import AdaptSettings, adapt
    from pipeline.stages.convert import load_keras_model

    config, fit_part, holdout = data()
    settings = AdaptSettings(budget="0.5x", strategy=agent, final_epochs=0, batch_size=config.batch_size,
                             episodes=episodes, seed=seed)
    started = time.monotonic()
    keras.backend.clear_session()
    _, report = adapt(load_keras_model(BASE), fit_part, holdout, load_table(TABLE), settings,
                      work / f"{agent}_s{seed}", threads=1, progress=False,
                      log=lambda line: print(f"{agent} seed {seed}: {line}", flush=True))
    result = {"agent": agent, "seed": seed, "rewards": [e["reward"] for e in report["episodes"]],
              "predicted_ms": [e["predicted_ms"] for e in report["episodes"]], "target_ms": report["target_ms"],
              "original_ms": report["original_ms"], "accuracy_before": report["holdout_accuracy_before"],
              "holdout_images": len(holdout), "best_sizes": report["trajectory"][-1]["sizes"],
              "minutes_this_run": (time.monotonic() - started) / 60}
    write_json(cached, result)
    print(f"{agent} seed {seed}: best {max(result['rewards']):.2%}, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB", flush=True)
    return result


def _best_so_far(result: dict) -> np.ndarray:
    return np.maximum.accumulate(np.array(result["rewards"]))


def _warmup(work: Path, seed: int) -> int:
    """Episodes the DDPG agent spent on random actions (no exploration noise recorded)."""
    episodes = json.loads((work / f"amc-ddpg_s{seed}" / "state.json").read_text())["episodes"]
    return sum(1 for e in episodes if e.get("noise") is None)


def plot(results: list[dict], work: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.core.fsutil import save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, agent in zip(("tab:blue", "tab:red"), AGENTS):
        curves = [_best_so_far(r) for r in results if r["agent"] == agent]
        for curve in curves:
            ax.plot(np.arange(1, len(curve) + 1), 100 * curve, color=color, alpha=0.3, linewidth=1)
        if curves:
            mean = np.mean([c[: min(map(len, curves))] for c in curves], axis=0)
            ax.plot(np.arange(1, len(mean) + 1), 100 * mean, color=color, linewidth=2.2,
                    label=f"{agent}: {AGENTS[agent]} (mean of {len(curves)} seed(s))")
    ddpg_seeds = [r["seed"] for r in results if r["agent"] == "amc-ddpg"]
    if ddpg_seeds:
        ax.axvline(_warmup(work, ddpg_seeds[0]) + 0.5, color="tab:red", linestyle=":",
                   label="end of DDPG's random warm-up")
    ax.set_xlabel("episode")
    ax.set_ylabel("best held-out accuracy so far, % (no fine-tune)")
    ax.set_title("AMC agents, MobileNet v1 α=0.5 on CIFAR-10 at 0.5x predicted latency")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def render(results: list[dict], episodes: int, plot_path: Path) -> str:
    first = results[0]
    checkpoints = sorted({min(episodes, n) for n in (15, 30, episodes)})
    lines = ["## AMC agents: cross-entropy method vs DDPG (`benchmarks/amc_agents.py`)", "",
             f"MobileNet v1 α=0.5 trained on CIFAR-10 at 64 px (the base model of `benchmarks/adapt.py`, held-out "
             f"accuracy {first['accuracy_before']:.2%} on its {first['holdout_images']:,} held-out images) searched "
             f"for 0.5x its predicted int8 latency ({first['original_ms']:.3f} -> {first['target_ms']:.3f} ms, "
             "1 thread). "
             "Reward: held-out accuracy without fine-tuning (BatchNorm statistics re-estimated), every episode "
             "scaled to the budget the same way; the same episodes per agent. The DDPG agent spends its first "
             "quarter on uniformly random actions (its warm-up); the CEM agent samples a Gaussian refitted to the "
             "best tenth after every batch. Best reward after N episodes, mean ± spread (half the max-min range) "
             "over seeds:", "",
             "| agent | seeds | " + " | ".join(f"best after {n}" for n in checkpoints) + " | per seed (final) | "
             "wall minutes per search (shared machine, pauses included) |",
             "|---|---:|" + "---:|" * len(checkpoints) + "---|---:|"]
    finals = {}
    for agent in AGENTS:
        mine = [r for r in results if r["agent"] == agent]
        if not mine:
            continue
        cells = []
        for n in checkpoints:
            best = np.array([_best_so_far(r)[min(n, len(r["rewards"])) - 1] for r in mine])
            cells.append(f"{best.mean():.2%} ± {np.ptp(best) / 2:.2%}")
        finals[agent] = np.array([_best_so_far(r)[-1] for r in mine])
        minutes = np.mean([r["minutes_this_run"] for r in mine])
        lines.append(f"| {agent} ({AGENTS[agent]}) | {len(mine)} | " + " | ".join(cells) + " | "
                     + ", ".join(f"{b:.2%}" for b in finals[agent]) + f" | {minutes:.0f} |")
    lines.append("")
    if len(finals) == 2:
        cem, ddpg = finals["amc"], finals["amc-ddpg"]
        gap = 100 * (ddpg.mean() - cem.mean())
        if ddpg.min() > cem.max():
            verdict = f"**DDPG works better here**: every DDPG seed beats every CEM seed ({gap:+.2f} points of mean " \
                      "best"
        elif cem.min() > ddpg.max():
            verdict = f"**CEM works better here**: every CEM seed beats every DDPG seed ({-gap:+.2f} points of mean " \
                      "best"
        else:
            verdict = f"**No clear winner**: the seeds overlap (DDPG {gap:+.2f} points of mean best against CEM"
        caveat = " One seed per agent so far: not conclusive." if min(len(cem), len(ddpg)) < 2 else ""
        lines += [verdict + f" reward after {episodes} episodes, {len(cem)} and {len(ddpg)} seeds).{caveat}", ""]
    shown = os.path.relpath(plot_path, ROOT)
    lines.append(f"Plot: [{shown}]({shown}) (best reward so far vs "
                 "episode, each seed thin, the mean thick).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=60, help="episodes per search (both agents)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds, each searched by both agents")
    parser.add_argument("--work", type=Path, default=RUNS / "bench_amc_agents", help="cache folder")
    parser.add_argument("--no-write", action="store_true", help="print without updating BENCHMARKS.md")
    args = parser.parse_args()
    for needed, how in ((TABLE, "benchmarks/adapt.py"), (BASE, "benchmarks/adapt.py")):
        if not needed.is_file():
            raise SystemExit(f"run {how} first: {needed} is what it builds")
    args.work.mkdir(parents=True, exist_ok=True)
    loaded: list = []

    def data() -> list:
        if not loaded:
            from pipeline.api import load_config

            config = load_config(CONFIG, {"data": str(extract())})
            loaded.extend((config, *_holdout_split(config)))
        return loaded

    seeds = [int(s) for s in args.seeds.split(",") if s]
    results = [run_agent(agent, seed, args.episodes, args.work, data) for seed in seeds for agent in AGENTS]
    plot_path = PLOTS / "amc_agents_best_reward.png"
    plot(results, args.work, plot_path)
    markdown = render(results, args.episodes, plot_path)
    if not args.no_write:
        write_section("amc_agents", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
