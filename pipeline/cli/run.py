"""``tflpipe run``: the whole pipeline, every setting of ``RunConfig`` as a flag."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.common import emit, existing_file, json_option, setup_logging
from pipeline.cli.options import distill_options, model_options, setting
from pipeline.stages.artifacts import DEPLOYABLE
from pipeline.stages.options import CENTROID_INITS, EXTRA_MODES, IO_DTYPES, PRUNE_ALLOCATIONS
from pipeline.targets import TARGETS


@click.command()
@click.option("--config", "config_path", type=existing_file, help="YAML file of settings; flags override it.")
@model_options
@distill_options
@setting("teacher_alpha", "Width multiplier of a zoo-net teacher.", type=float)
@setting("teacher_epochs", "Training epochs of a zoo-net teacher (none: --epochs).", type=int)
@setting("latency_budget", "Adapt the trained net (NetAdapt/AMC channel pruning) to this int8 latency on the "
                          "target: a share like 0.5x or a time like 4.0ms.")
@setting("latency_table", "Latency table of the target (`tflpipe latency build`), needed with --latency-budget.")
@setting("adapt_strategy", "Adaptation strategy.", type=click.Choice(["netadapt", "amc"]))
@setting("adapt_first_step", "NetAdapt's first latency drop, as a share of the original latency.", type=float)
@setting("adapt_final_epochs", "Fine-tuning epochs after the adaptation.", type=int)
@setting("memory_budget", "Predicted LiteRT peak memory (MB) the adapted net must fit in.", type=float)
@setting("prune_sparsity", "Target weight sparsity of magnitude pruning; 0 skips pruning.", type=float)
@setting("prune_epochs", "Fine-tuning epochs while pruning.", type=int)
@setting("prune_learning_rate", "Learning rate while pruning.", type=float)
@setting("prune_pattern", "unstructured, m:n structured such as 2:4, or xnnpack (1x1 convs only, for XNNPACK "
                          "sparse inference; needs sparsity >= 0.67).")
@setting("prune_allocation", "Spread of unstructured sparsity over layers: uniform or erk (big layers pruned more).",
         type=click.Choice(PRUNE_ALLOCATIONS))
@setting("cluster", "Weight clusters per layer (weight sharing); 0 skips clustering.", type=int)
@setting("cluster_init", "Centroid initialization.", type=click.Choice(list(CENTROID_INITS)))
@setting("cluster_epochs", "Fine-tuning epochs while clustering.", type=int)
@setting("cluster_learning_rate", "Learning rate while clustering.", type=float)
@setting("cluster_min_weights", "Leave kernels with fewer weights unclustered.", type=int)
@setting("qat", "Quantization-aware training before int8 conversion (PQAT/CQAT/PCQAT keep pruning and "
                "clustering).", "--qat/--no-qat")
@setting("qat_epochs", "QAT fine-tuning epochs.", type=int)
@setting("qat_learning_rate", "QAT learning rate.", type=float)
@setting("io_dtype", "Input/output type of the int8 models.", type=click.Choice(IO_DTYPES))
@click.option("--ptq-mode", "ptq_modes", multiple=True, type=click.Choice(EXTRA_MODES),
              help="Extra post-training conversion for CPU/GPU targets; repeatable.")
@setting("quant_debug", "Per-layer int8 error report (quant_debug.json).", is_flag=True)
@setting("selective_float", "Keep this many worst layers in float (model_selective_int8.tflite).", type=int)
@click.option("--target", "targets", multiple=True, type=click.Choice(list(TARGETS)),
              help="Deployment target(s) to check/prepare for; repeatable: "
                   + "; ".join(f"{t.name}: {t.title}" for t in TARGETS.values()) + ".")
@setting("allow_cpu_ops", "Let the edgetpu target pass with ops left on the CPU.", is_flag=True)
@setting("nnapi_api_level", "Android API level (27-34) the nnapi target checks against.", type=int)
@setting("benchmark_runs", "Timed LiteRT invocations per latency figure.", type=int)
@setting("tensorboard", "TensorBoard logs of every training stage in OUT/tensorboard.", "--tensorboard/--no-tensorboard")
@setting("trust_model_code", "Load a --teacher Keras file even if it carries Python code (Lambda layers); only "
                             "for files you trust.", is_flag=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/default"), show_default=True,
              help="Output folder for every artifact of the run.")
@click.option("--restart", is_flag=True, help="Ignore finished stages in --out and start over.")
@click.option("--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@json_option
def run(config_path, out, restart, quiet, as_json, targets, **flags):
    """Run the whole pipeline: train, prune, QAT, convert, metadata, evaluate, report.

    Re-running with the same settings resumes at the first unfinished stage.
    """
    from pipeline.runner.config import load_config
    from pipeline.runner.run import run_pipeline

    setup_logging(quiet)
    if targets:
        flags["targets"] = list(targets)
    flags["ptq_modes"] = list(flags["ptq_modes"]) or None
    config = load_config(config_path, flags)
    state = run_pipeline(config, out, restart=restart)
    from pipeline.runner.report import summary_rows, target_lines

    targets = {name: state["results"][name] for name in TARGETS if name in state["results"]}
    emit({"out": str(out), "stages_done": state["done"], "summary": summary_rows(state), "targets": targets},
         as_json, lambda d: _summary_text(d, out, target_lines(state)))


def _summary_text(data: dict, out: Path, targets: list[str]) -> str:
    lines = [f"{'stage':28} {'accuracy':>9} {'gzip KiB':>9} {'1t ms':>7} {'2t ms':>7}"]
    for r in data["summary"]:
        gz = f"{r['gzip_bytes'] / 1024:.1f}" if "gzip_bytes" in r else "—"
        l1 = f"{r['latency_ms_1t']:.2f}" if "latency_ms_1t" in r else "—"
        l2 = f"{r['latency_ms_2t']:.2f}" if "latency_ms_2t" in r else "—"
        lines.append(f"{r['title']:28} {r['accuracy']:>9.2%} {gz:>9} {l1:>7} {l2:>7}")
    lines += targets
    lines.append(f"report: {out / 'report.md'}  deployable model: {out / DEPLOYABLE}")
    return "\n".join(lines)



COMMANDS = [run]
