"""``tflpipe edgetpu ...`` and ``tflpipe nnapi ...``: check, compile, run and deploy for the two accelerator targets."""
from __future__ import annotations

from pathlib import Path

import click

from edgetpu import check as tpu_check
from edgetpu import compiler, runtime
from edgetpu import deploy as board_deploy
from edgetpu.rules import LATEST_RUNTIME
from pipeline.cli.common import emit, json_option, model_file
from pipeline.core.errors import PipelineError
from pipeline.core.labels import display_label, read_labels
from pipeline.core.tflite_file import read_model
from pipeline.targets import nnapi

_model = click.argument("model", type=model_file)


@click.group("edgetpu")
def edgetpu_group() -> None:
    """Coral Edge TPU: predict the op mapping, compile, run, deploy to a board."""


@edgetpu_group.command("check")
@_model
@click.option("--min-runtime", "min_runtime", type=click.IntRange(10, LATEST_RUNTIME), default=LATEST_RUNTIME,
              show_default=True, help="Edge TPU runtime version the board has.")
@click.option("--strict", is_flag=True, help="Exit non-zero unless every op maps to the Edge TPU.")
@json_option
def check_cmd(model: Path, min_runtime: int, strict: bool, as_json: bool) -> None:
    """Predict which ops the compiler maps to the Edge TPU and why the rest stay on the CPU."""
    report = tpu_check.check(model, min_runtime)
    emit(report.to_dict(), as_json, tpu_check.format_report)
    if strict and not report.fully_mapped:
        raise click.exceptions.Exit(1)


@edgetpu_group.command("compile")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True)
@click.option("-m", "--min-runtime", "min_runtime", type=int, help="Lowest Edge TPU runtime version to support.")
@click.option("-n", "--num-segments", type=click.IntRange(min=2), help="Split into N segments for N pipelined TPUs.")
@click.option("--timeout", "timeout_s", type=int, default=180, show_default=True)
@json_option
def compile_cmd(models: tuple[Path, ...], out_dir: Path, min_runtime: int | None, num_segments: int | None,
                timeout_s: int, as_json: bool) -> None:
    """Run edgetpu_compiler (several MODELS are co-compiled to share the parameter cache)."""
    result = compiler.compile_model(list(models), out_dir, min_runtime, num_segments, timeout_s=timeout_s)
    emit(result.to_dict(), as_json, compiler.format_result)


@edgetpu_group.command("run")
@_model
@click.option("--image", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--top-k", type=int, default=3, show_default=True)
@json_option
def run_cmd(model: Path, image: Path, labels: Path | None, top_k: int, as_json: bool) -> None:
    """Classify IMAGE on an attached Edge TPU."""
    data = runtime.run_image(model, image, _labels_for(model, labels), top_k)
    emit(data, as_json, lambda d: "\n".join(f"{display_label(t['label'])}: {t['score']:.3f}" for t in d["top"]))


def _labels_for(model: Path, labels: Path | None) -> list[str] | None:
    """The labels of ``--labels``, refused when their count is not the model's number of classes."""
    if labels is None:
        return None
    names = read_labels(labels)
    scores = read_model(model).output_tensors[:1]
    classes = scores[0].shape[-1] if scores and scores[0].shape else 0
    if classes != len(names):
        raise PipelineError(f"{labels} has {len(names)} labels but {model.name} scores {classes} classes: "
                            "they would be named wrongly")
    return names


@edgetpu_group.command("benchmark")
@_model
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
def benchmark_cmd(model: Path, runs: int, as_json: bool) -> None:
    """Time inference on an attached Edge TPU."""
    data = runtime.benchmark(model, runs)
    emit(data, as_json, lambda d: f"{d['model']}: {d['mean_ms']:.2f} ms mean, p90 {d['p90_ms']:.2f} ms on the Edge TPU")


@edgetpu_group.command("deploy")
@_model
@click.option("--host", required=True, help="USER@BOARD, e.g. mendel@coral.local or pi@raspberrypi.local.")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cpu-model", type=click.Path(dir_okay=False, path_type=Path),
              help="Uncompiled model for the script's CPU fallback.")
@click.option("--remote-dir", default="tflpipe", show_default=True)
@click.option("--port", type=int)
@click.option("-i", "--identity", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--run", "run_now", is_flag=True, help="Also run the classifier on the board's images/ folder.")
@click.option("--dry-run", is_flag=True, help="Print the ssh/scp commands without running them.")
def deploy_cmd(model: Path, host: str, labels: Path | None, cpu_model: Path | None, remote_dir: str,
               port: int | None, identity: Path | None, run_now: bool, dry_run: bool) -> None:
    """Copy MODEL, labels and the on-board classifier to a Coral board over ssh."""
    plan = board_deploy.plan_deploy(host, model, labels, cpu_model, remote_dir, port, identity)
    if dry_run:
        for command in plan.commands:
            click.echo(" ".join(command))
    else:
        for line in board_deploy.deploy(plan, run=run_now):
            click.echo(line)
    click.echo(f"on the board: {plan.run_command}")


@click.group("nnapi")
def nnapi_group() -> None:
    """Android NNAPI: per-op delegate coverage by API level."""


@nnapi_group.command("check")
@_model
@click.option("--api-level", type=click.IntRange(nnapi.MIN_API, nnapi.MAX_API), default=30, show_default=True)
@json_option
def nnapi_check_cmd(model: Path, api_level: int, as_json: bool) -> None:
    """Which ops the NNAPI delegate takes at an API level, and why the rest fall back to the CPU."""
    emit(nnapi.check(model, api_level).to_dict(), as_json, nnapi.format_report)


COMMANDS = [edgetpu_group, nnapi_group]
