"""``tflpipe prune-channels``: structured channel pruning of a saved Keras model into a smaller dense one."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.common import emit, existing_path, json_option, setup_logging
from pipeline.core.errors import PipelineError
from pipeline.core.fsutil import ensure_writable_file, save_keras_model
from pipeline.stages.options import CHANNEL_CRITERIA


def _out_file(ctx: click.Context, param: click.Parameter, value: str) -> Path:
    """``--out`` checked before any work starts (an empty value would mean the current folder)."""
    if not value.strip():
        raise click.BadParameter("must not be empty", ctx=ctx, param=param)
    return ensure_writable_file(value)


def _human(d: dict) -> str:
    before, after = d["before"], d["after"]
    return (f"saved {d['model']}: channels {before['channels']} -> {after['channels']}, "
            f"params {before['params']:,} -> {after['params']:,}, MACs {before['macs']:,} -> {after['macs']:,}")


@click.command("prune-channels")
@click.argument("model_path", type=existing_path)
@click.option("--ratio", type=float, help="Fraction of the channels to remove from every prunable group, in [0, 1).")
@click.option("--ratios", "ratios_file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON or YAML file mapping producer layer names to their ratio, e.g. {block_1_expand: 0.3}.")
@click.option("--criterion", type=click.Choice(CHANNEL_CRITERIA), default="l1", show_default=True,
              help="Channel importance: l1/l2 norm of the filters, or bn (|gamma| of the batch norm).")
@click.option("--divisor", type=click.IntRange(min=1), default=1, show_default=True,
              help="Round kept channel counts to multiples of this (8 suits most accelerators).")
@click.option("--out", callback=_out_file, required=True, help="Where to save the pruned model (.h5 or .keras).")
@click.option("--trust-model-code", "trust_code", is_flag=True,
              help="Load models holding Lambda layers or non-Keras classes: loading runs their stored code.")
@json_option
def prune_channels(model_path, ratio, ratios_file, criterion, divisor, out, trust_code, as_json):
    """Remove whole filters (structured pruning) and save a smaller dense model; fine-tune it afterwards."""
    from pipeline.stages.channel_prune import channel_summary, load_ratios, prune_by_ratio
    from pipeline.stages.convert import load_keras_model

    setup_logging()
    if (ratio is None) == (ratios_file is None):
        raise PipelineError("give exactly one of --ratio (every group) or --ratios FILE (per layer)")
    model = load_keras_model(model_path, trust_code)
    ratios = ratio if ratios_file is None else load_ratios(ratios_file, model)
    pruned = prune_by_ratio(model, ratios, criterion, divisor)
    save_keras_model(pruned, out)
    emit({"model": str(out), "criterion": criterion, "before": channel_summary(model),
          "after": channel_summary(pruned)}, as_json, _human)


COMMANDS = [prune_channels]
