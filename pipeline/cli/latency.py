"""``tflpipe latency``: profile a .tflite per kernel, build a target's latency table, predict from it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click

from pipeline.cli.common import emit, json_option, model_file, zoo_options

if TYPE_CHECKING:
    from pipeline.latency.adb import AdbMeasurer

_THREADS = click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True,
                        help="CPU threads the runtime uses (XNNPACK).")


def _phone_options(command: Callable) -> Callable:
    """``--adb``, ``--delegate`` and ``--benchmark-binary``: measure on an Android phone instead of this CPU."""
    for option in reversed((
        click.option("--adb", "serial", metavar="SERIAL",
                     help="Measure on this Android device (`adb devices`) with TFLite's benchmark_model."),
        click.option("--delegate", type=click.Choice(["xnnpack", "cpu", "gpu", "nnapi"]),
                     help="With --adb: XNNPACK (default), the builtin CPU kernels, the GPU or NNAPI delegate."),
        click.option("--benchmark-binary", metavar="PATH", help="With --adb: benchmark_model on the device "
                     "[default: /data/local/tmp/benchmark_model]."),
    )):
        command = option(command)
    return command


def _phone(serial: str | None, delegate: str | None, binary: str | None, threads: int) -> AdbMeasurer | None:
    """The phone's measurer for ``--adb``, checked before any work starts; None without ``--adb``."""
    from pipeline.core.errors import PipelineError

    if serial is None:
        if delegate or binary:
            raise PipelineError("--delegate and --benchmark-binary measure on a phone; add --adb SERIAL")
        return None
    from pipeline.latency.adb import AdbMeasurer

    measurer = AdbMeasurer(serial, threads, delegate or "xnnpack", **({"binary": binary} if binary else {}))
    measurer.check_device()
    return measurer


@click.group()
def latency() -> None:
    """Measured cost of the target: per-kernel profiles, latency tables, predictions."""


def _memory_line(memory: dict | None) -> list[str]:
    if not memory:
        return []
    parts = memory["xnnpack"]
    line = (f"memory: predicted peak {memory['predicted_peak_bytes'] / 2**20:.2f} MB above the loaded file "
            f"(packed weights {parts['packed_weights_bytes'] / 2**20:.2f}, activations "
            f"{(parts['tflite_arena_bytes'] + parts['workspace_bytes']) / 2**20:.2f}, runtime "
            f"{parts['overhead_bytes'] / 2**20:.2f} MB)")
    if "measured_peak_bytes" in memory:
        line += (f"; measured {memory['measured_peak_bytes'] / 2**20:.2f} MB "
                 f"({memory['predicted_over_measured'] - 1:+.1%})")
    return [line]


def _kernel_lines(rows: list[dict], top: int) -> list[str]:
    shown = sorted(rows, key=lambda r: -(r["ms"] or 0))[:top]
    return [f"  {r['op']:<26} {r['name'][:34]:<34} {'x'.join(map(str, r.get('input', [])[1:])):>14} "
            f"{'-' if r['ms'] is None else format(r['ms'], '8.4f')} ms  "
            f"{'' if r['share'] is None else format(r['share'], '6.1%')}" for r in shown]


def _phone_profile_text(d: dict, top: int) -> str:
    lines = [f"{d['model']}: {d['whole_ms']:.3f} ms whole on {d['device']} ({d['target']}, {d['threads']} thread(s)); "
             f"ops sum to {d['sum_ms']:.3f} ms under benchmark_model's profiler",
             "by op: " + ", ".join(f"{k} {v:.3f}" for k, v in d["by_op"].items()),
             f"slowest {min(top, len(d['kernels']))} ops:"]
    return "\n".join(lines + _kernel_lines(d["kernels"], top))


@latency.command()
@click.argument("model_path", type=model_file)
@_THREADS
@click.option("--top", type=click.IntRange(1), default=15, show_default=True, help="Kernels listed (text output).")
@_phone_options
@json_option
def profile(model_path: Path, threads: int, top: int, serial: str | None, delegate: str | None,
            benchmark_binary: str | None, as_json: bool) -> None:
    """Where the time of any .tflite goes on this CPU (or a phone), per operator or fused kernel."""
    phone = _phone(serial, delegate, benchmark_binary, threads)
    if phone is not None:
        from pipeline.latency.adb import profile_on_device

        emit(profile_on_device(model_path, phone), as_json, lambda d: _phone_profile_text(d, top))
        return
    from pipeline.latency.kernel_profile import profile as run_profile

    result = run_profile(model_path, threads, progress=not as_json)

    def human(d: dict) -> str:
        lines = [f"{d['model']}: {d['whole_ms']:.3f} ms whole (median, {d['threads']} thread(s)); kernels sum to "
                 f"{d['sum_ms']:.3f} ms ({d['sum_over_whole']:.0%}), invoke overhead {d['overhead_ms'] * 1000:.1f} µs",
                 "by op: " + ", ".join(f"{k} {v:.3f}" for k, v in d["by_op"].items()),
                 *_memory_line(d.get("memory")),
                 f"slowest {min(top, len(d['kernels']))} kernels:"]
        return "\n".join(lines + _kernel_lines(d["kernels"], top))

    emit(result, as_json, human)


@latency.command()
@click.option("--target", type=click.Choice(["cpu-int8", "cpu-float32"]), default="cpu-int8", show_default=True,
              help="Kernel type to measure.")
@_THREADS
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Table file to write (JSON); an interrupted build resumes from OUT.measurements.jsonl.")
@click.option("--quick", is_flag=True, help="A small table in under a minute (tests, smoke checks).")
@click.option("--minutes", type=click.FloatRange(0.5), help="Time budget; sampling stops when it is spent.")
@click.option("--ops", help="Comma-separated ops to sample (e.g. CONV_2D,DEPTHWISE_CONV_2D); default all.")
@_phone_options
@json_option
def build(target: str, threads: int, out: Path, quick: bool, minutes: float | None, ops: str | None,
          serial: str | None, delegate: str | None, benchmark_binary: str | None, as_json: bool) -> None:
    """Measure kernels on this CPU (or a phone, --adb) and fit the latency predictor (nn-Meter style, resumable).

    --target names the kernels' type; a phone table records the device under measured_by."""
    from dataclasses import replace

    from pipeline.core.fsutil import ensure_writable_file
    from pipeline.latency.measure import LocalMeasurer
    from pipeline.latency.table import BuildPlan, build_table

    ensure_writable_file(out)
    plan = BuildPlan.quick() if quick else BuildPlan()
    if minutes is not None:
        plan = replace(plan, minutes=minutes)
    measurer = _phone(serial, delegate, benchmark_binary, threads) or LocalMeasurer(threads=threads)
    table = build_table(measurer, target, out, plan, ops=[op.strip() for op in (ops or "").split(",") if op.strip()],
                        progress=not as_json, log=lambda line: click.echo(f"tflpipe: {line}", err=True))
    summary = {"table": str(out), "target": table.target, "threads": table.threads,
               "kernels": len(table.rows), "ops": table.ops, "fusions": table.meta["fusions"],
               "overhead_ms": table.overhead_ms, "validation_error": table.meta["validation_error"],
               "measured_by": table.meta["measured_by"]}
    where = f" on {summary['measured_by']['device']} via {measurer.target}" if serial else ""
    emit(summary, as_json, lambda d: f"{d['table']}: {d['kernels']} kernels of {len(d['ops'])} ops measured{where} "
                                     f"({d['target']}, {d['threads']} thread(s)); fused pairs: "
                                     f"{', '.join('+'.join(p) for p in d['fusions']) or 'none'}")


@latency.command()
@click.argument("model")
@click.option("--table", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Latency table from `tflpipe latency build`.")
@click.option("--threads", type=click.IntRange(1, 64), help="Refuse a table measured at another thread count.")
@click.option("--measure", is_flag=True, help="Also time the model here and print the prediction's error.")
@click.option("--top", type=click.IntRange(1), default=15, show_default=True, help="Kernels listed (text output).")
@click.option("--trust-model-code", is_flag=True, help="Allow Lambda layers and custom code in a Keras file.")
@zoo_options
@json_option
def predict(model: str, table: Path, threads: int | None, measure: bool, top: int, trust_model_code: bool,
            as_json: bool, input_size: int | None, classes: int, **knobs) -> None:
    """Predicted latency of MODEL (.tflite, .h5/.keras, or a zoo net name with its knobs) from a table."""
    from pipeline.stages.latency import predict as run_predict

    result = run_predict(model, table, threads, measure, top=None if as_json else top, input_size=input_size,
                         classes=classes, trust_code=trust_model_code, **knobs)

    def human(d: dict) -> str:
        head = f"{d['model']}: predicted {d['predicted_ms']:.3f} ms ({d['target']}, {d['threads']} thread(s))"
        if "measured_ms" in d:
            head += f"; measured {d['measured_ms']:.3f} ms ({d['error']:+.1%})"
        lines = [head, *_memory_line(d.get("memory"))]
        if d["unmodelled_ops"]:
            lines.append("not in the table (counted as invoke overhead only): "
                         + ", ".join(f"{k} x{v}" for k, v in d["unmodelled_ops"].items()))
        return "\n".join(lines + [f"slowest {len(d['layers'])} kernels:"] + _kernel_lines(d["layers"], top))

    emit(result, as_json, human)


@latency.command()
@click.option("--table", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Latency table from `tflpipe latency build`.")
@click.option("--per-op", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Kernels of each op family timed again.")
@click.option("--tolerance", type=click.FloatRange(0.0, 10.0, min_open=True), default=0.10, show_default=True,
              help="Largest shift of the median (now / table) that passes.")
@_phone_options
@json_option
def check(table: Path, per_op: int, tolerance: float, serial: str | None, delegate: str | None,
          benchmark_binary: str | None, as_json: bool) -> None:
    """Does TABLE still describe this machine (or the phone, --adb)? Times some of its kernels again.

    Exits 1 when they run more than --tolerance faster or slower than the table says: predictions from it are
    that far off, so rebuild it here. A cloud machine of the same CPU name can be another host."""
    from pipeline.latency.measure import LocalMeasurer
    from pipeline.latency.table import check_drift, load_table

    loaded = load_table(table)
    measurer = _phone(serial, delegate, benchmark_binary, loaded.threads) or LocalMeasurer(threads=loaded.threads)
    result = {"table": str(table), **check_drift(loaded, measurer, per_op, tolerance=tolerance)}

    def human(d: dict) -> str:
        verdict = (f"off by {d['ratio']:.2f}x: rebuild it here with `tflpipe latency build`" if d["drifted"]
                   else "holds")
        return (f"{d['table']}: {verdict} (median now / table of {d['kernels']} kernels {d['ratio']:.2f}x, "
                f"{d['within_tolerance']:.0%} within ±{d['tolerance']:.0%}; built {d['built'] or '?'})\n"
                "by op: " + ", ".join(f"{k} {v:.2f}x" for k, v in d["by_op"].items()))

    emit(result, as_json, human)
    if result["drifted"]:
        raise click.exceptions.Exit(1)


COMMANDS = [latency]
