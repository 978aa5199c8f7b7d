"""The run's report: ``report.json`` (all figures), ``report.md`` and ``report.png``."""
from __future__ import annotations

from pathlib import Path

from pipeline.core.fsutil import save_figure, write_json, write_text
from pipeline.runner.config import RunConfig
from pipeline.stages.artifacts import DEPLOYABLE, LABELS, ROW_TITLES
from pipeline.targets import TARGETS


def summary_rows(state: dict) -> list[dict]:
    stages = state.get("results", {}).get("evaluate", {}).get("stages", {})
    return [{"stage": key, "title": ROW_TITLES.get(key, key), **entry} for key, entry in stages.items()]


def target_lines(state: dict) -> list[str]:
    """One line per deployment target the run checked or prepared, then the reasons behind any CPU op."""
    results = state.get("results", {})
    return [line for name, target in TARGETS.items() if name in results for line in target.summary(results[name])]


def write_report(out: Path, config: RunConfig, state: dict) -> list[str]:
    rows = summary_rows(state)
    report = {
        "config": config.to_dict(),
        "stages_done": state.get("done", []),
        "results": state.get("results", {}),
        "summary": rows,
        "deployable": DEPLOYABLE,
        "labels": LABELS,
    }
    write_json(out / "report.json", report)
    write_text(out / "report.md", _markdown(config, state, rows))
    files = ["report.json", "report.md"]
    if any(r["kind"] == "tflite" for r in rows):
        _plot(out / "report.png", rows)
        files.append("report.png")
    return files


def _fmt(value, pattern: str) -> str:
    return pattern.format(value) if value is not None else "—"


def _markdown(config: RunConfig, state: dict, rows: list[dict]) -> str:
    results = state.get("results", {})
    lines = [
        f"# tflpipe run: {config.model} (alpha {config.alpha}, {config.input_size}px)",
        "",
        f"Data: `{config.data}`, {results.get('evaluate', {}).get('validation_images', '?')} validation images. "
        f"Pruning: {config.prune_sparsity:.0%} target sparsity; QAT: {'on' if config.qat else 'off'}; "
        f"integer I/O: {config.io_dtype}." + (f" Adapted to {config.latency_budget} ({config.adapt_strategy})."
                                              if config.latency_budget else ""),
        "",
        "Peak memory: the anonymous memory LiteRT + XNNPACK allocate for the model in a fresh process, 1 thread.",
        "",
        "| stage | accuracy | size (bytes) | gzip (bytes) | weight sparsity | latency 1 thread (ms) | latency 2 threads (ms) "
        "| peak memory (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['title']} | {r['accuracy']:.2%} | {_fmt(r.get('size_bytes'), '{:,}')} | {_fmt(r.get('gzip_bytes'), '{:,}')} | "
            f"{_fmt(r.get('weight_sparsity'), '{:.1%}')} | {_fmt(r.get('latency_ms_1t'), '{:.2f}')} | {_fmt(r.get('latency_ms_2t'), '{:.2f}')} | "
            f"{_fmt(r.get('peak_memory_bytes') and r['peak_memory_bytes'] / 2**20, '{:.2f}')} |"
        )
    lines += _compression_lines(results)
    targets = target_lines(state)
    if targets:
        lines += ["", "## Deployment targets", ""] + [f"- {t}" if not t.startswith("  ") else f"  - {t.strip()}" for t in targets]
        failed = [r["failed"] for r in results.values() if isinstance(r, dict) and "failed" in r]
        lines += [f"\n**Failed:** {f}" for f in failed]
    timings = ", ".join(f"{name} {results[name]['seconds']:.0f} s" for name in state.get("done", []) if name in results)
    lines += ["", f"Stage times: {timings}.", "", "![accuracy vs size vs latency](report.png)", ""]
    return "\n".join(lines)


def _compression_lines(results: dict) -> list[str]:
    """What pruning, distillation, clustering and the quantization debugger did, in words and small tables."""
    lines: list[str] = []
    if "prune" in results:
        r = results["prune"]
        lines += ["", f"Measured sparsity of the pruned Keras kernels: {r['sparsity']:.1%} "
                      f"({r.get('pattern', 'unstructured')}, {r.get('allocation', 'uniform')} over layers)."]
        if r.get("allocation", "uniform") != "uniform":
            lines += ["", "| layer | sparsity |", "|---|---:|", *(f"| {name} | {value:.1%} |" for name, value in r["per_layer"].items())]
    if results.get("train", {}).get("distilled_from"):
        teacher = results.get("teacher", {})
        accuracy = f" ({teacher['keras_accuracy']:.2%})" if "keras_accuracy" in teacher else ""
        lines += ["", f"Distilled from teacher {results['train']['distilled_from']}{accuracy} in every training stage."]
    if "qat" in results and "scheme" in results["qat"]:
        lines += ["", f"QAT scheme: {results['qat']['scheme']}."]
    if "cluster" in results:
        r = results["cluster"]
        int8 = results.get("evaluate", {}).get("stages", {}).get("tflite_int8", {})
        survived = f"; the int8 file has at most {int8['max_unique_per_channel']} distinct values per output channel" \
            if "max_unique_per_channel" in int8 else ""
        lines += ["", f"Clustering: {r['clusters']} clusters per layer ({r['init']} init){survived}.", "",
                  "| layer | distinct Keras weights |", "|---|---:|"]
        lines += [f"| {name} | {n} |" for name, n in r["unique_values"].items()]
    if "quant_debug" in results:
        r = results["quant_debug"]
        lines += ["", f"Layers int8 hurts most (RMSE in quantization steps; all layers in `{r['file']}`):", ""]
        lines += [f"- {w['layer']} ({w['op']}): {w['rmse_over_scale']:.3f}" for w in r["worst"]]
        if "selective" in r:
            sel = r["selective"]
            lines += ["", f"Selective int8 `{sel['file']}` keeps {', '.join(sel['float_layers'])} in float: it {sel['edgetpu']}."]
    return lines


def _plot(target: Path, rows: list[dict]) -> None:
    """Accuracy against file size and against latency, one point per TFLite stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tflite = [r for r in rows if r["kind"] == "tflite"]
    fig, (ax_size, ax_lat) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for r in tflite:
        ax_size.scatter(r["gzip_bytes"] / 1024, r["accuracy"] * 100, s=60)
        ax_size.annotate(r["title"], (r["gzip_bytes"] / 1024, r["accuracy"] * 100), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax_lat.scatter(r["latency_ms_1t"], r["accuracy"] * 100, s=60)
        ax_lat.annotate(r["title"], (r["latency_ms_1t"], r["accuracy"] * 100), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax_size.set_xlabel("gzip size (KiB)")
    ax_size.set_ylabel("validation accuracy (%)")
    ax_lat.set_xlabel("LiteRT latency, 1 thread (ms)")
    for ax in (ax_size, ax_lat):
        ax.grid(alpha=0.3)
        ax.margins(x=0.3, y=0.15)  # room for the point labels
    fig.suptitle("Accuracy vs size vs latency per stage")
    save_figure(fig, target)
