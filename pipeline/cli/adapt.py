"""``tflpipe adapt``: prune a trained net to a latency (and memory) budget on the target, NetAdapt or AMC."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.common import emit, field_default, json_option, model_file
from pipeline.stages.options import ADAPT_STRATEGIES


def _default(name: str):
    from pipeline.stages.options import AdaptSettings

    return field_default(AdaptSettings, name)


@click.command()
@click.argument("model_path", type=model_file)
@click.option("--data", required=True, help="Image folder (<class>/*.jpg) or builtin:digits the model was trained on.")
@click.option("--budget", required=True, help="Latency budget: a share of the model's predicted latency (0.5x) or "
                                              "a time (4.0ms).")
@click.option("--table", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Latency table of the target (`tflpipe latency build`).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder (model_adapted.h5, report.json, trajectory.png); an interrupted run resumes there.")
@click.option("--strategy", type=click.Choice(list(ADAPT_STRATEGIES)), default="netadapt", show_default=True,
              help="netadapt (one group per iteration, fine-tuned proposals) or AMC-style per-layer ratios searched "
                   "by the cross-entropy method (amc) or by the paper's DDPG agent (amc-ddpg).")
@click.option("--target", type=click.Choice(["cpu-int8", "cpu-float32"]), help="Refuse a table of another target.")
@click.option("--threads", type=click.IntRange(1, 64), help="Refuse a table measured at another thread count.")
@click.option("--memory-budget", "memory_budget_mb", type=float, help="Predicted LiteRT peak memory limit, MB.")
@click.option("--first-step", type=float, default=_default("first_step"), show_default=True,
              help="NetAdapt: first latency drop as a share of the original latency.")
@click.option("--decay", type=float, default=_default("decay"), show_default=True,
              help="NetAdapt: the drop is multiplied by this each iteration.")
@click.option("--short-steps", type=int, default=_default("short_steps"), show_default=True,
              help="NetAdapt: fine-tune steps per proposal.")
@click.option("--finalists", type=int, default=_default("finalists"), show_default=True,
              help="NetAdapt: proposals fine-tuned per iteration, best by held-out accuracy first (0: all).")
@click.option("--workers", type=click.IntRange(1, 64), default=_default("workers"), show_default=True,
              help="NetAdapt: processes scoring proposals in parallel.")
@click.option("--episodes", type=int, default=_default("episodes"), show_default=True, help="AMC: agent evaluations.")
@click.option("--final-epochs", type=int, default=_default("final_epochs"), show_default=True,
              help="Epochs of the final fine-tune.")
@click.option("--final-learning-rate", type=float,
              help="Peak learning rate of the final fine-tune (cosine-decayed); default: --learning-rate's.")
@click.option("--distill/--no-distill", default=_default("distill"), show_default=True,
              help="Final fine-tune by knowledge distillation from the unadapted net (its softened outputs and the "
                   "labels), or from the labels alone. Changing it (or the options below, or --final-epochs) in "
                   "an --out that holds a finished search redoes only the final fine-tune.")
@click.option("--distill-temperature", type=float, default=_default("distill_temperature"), show_default=True,
              help="Distillation temperature softening both nets' class distributions.")
@click.option("--distill-weight", type=float, default=_default("distill_weight"), show_default=True,
              help="Share of the distillation loss from the teacher's outputs (the rest from the labels).")
@click.option("--learning-rate", type=float, default=_default("learning_rate"), show_default=True,
              help="Fine-tuning learning rate.")
@click.option("--batch-size", type=int, default=_default("batch_size"), show_default=True, help="Fine-tuning batch.")
@click.option("--criterion", type=click.Choice(["l1", "l2", "bn"]), default=_default("criterion"), show_default=True,
              help="Filter importance: L1/L2 norm (NetAdapt) or BatchNorm |gamma| (network slimming).")
@click.option("--divisor", type=int, default=_default("divisor"), show_default=True,
              help="Channel counts move in steps of this many.")
@click.option("--validation-split", type=float, default=0.1, show_default=True,
              help="Held-out share of --data that ranks proposals and reports accuracy.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--trust-model-code", is_flag=True, help="Allow Lambda layers and custom code in the Keras file.")
@click.option("--measure/--no-measure", default=True, show_default=True,
              help="Convert both nets to int8 and time them here beside the prediction (when the table is this "
                   "CPU's).")
@json_option
def adapt(model_path: Path, data: str, table: Path, out: Path, target: str | None, threads: int | None,
          validation_split: float, trust_model_code: bool, measure: bool, as_json: bool, **settings) -> None:
    """Prune MODEL_PATH's channels until its int8 latency on the target meets --budget."""
    from pipeline.core.fsutil import ensure_writable_dir
    from pipeline.stages.adapt import AdaptSettings, adapt_file

    ensure_writable_dir(out)
    result = adapt_file(model_path, data, table, AdaptSettings(**settings), out, validation_split, target, threads,
                        trust_model_code, measure, progress=not as_json, log=lambda line: click.echo(f"tflpipe: {line}", err=True))

    def human(d: dict) -> str:
        lines = [f"{d['model']} -> {out / 'model_adapted.h5'} ({d['strategy']}, {len(d['trajectory']) - 1} step(s))",
                 f"predicted {d['original_ms']:.3f} -> {d['predicted_ms']:.3f} ms (budget {d['target_ms']:.3f} ms)",
                 f"held-out accuracy {d['holdout_accuracy_before']:.2%} -> {d['holdout_accuracy_after']:.2%}; "
                 f"params {d['params_before']:,} -> {d['params_after']:,}"]
        final = d["final_fine_tune"]
        if final["final_epochs"]:
            how = (f"distilled from the unadapted net (T={final['distill_temperature']:g}, weight "
                   f"{final['distill_weight']:g})" if final["distill"] else "from the labels alone")
            rate = final.get("final_learning_rate")
            lines.append(f"final fine-tune: {final['final_epochs']} epoch(s), {how}"
                         + (f", learning rate {rate:g}" if rate else ""))
        if "measured_after_ms" in d:
            lines.append(f"measured int8 {d['measured_before_ms']:.3f} -> {d['measured_after_ms']:.3f} ms "
                         f"(prediction {d['predicted_over_measured'] - 1:+.1%})")
        return "\n".join(lines)

    emit(result, as_json, human)


COMMANDS = [adapt]
