"""Edge TPU and NNAPI predictions for every zoo net at a small config, plus agreement with the real compiler.

Each zoo net is built at ``--size`` px (and width 0.35 where it has one), random weights, 10 classes,
converted to full int8 with uint8 I/O from random calibration data (mapping does not depend on the
weights' values), then checked with ``edgetpu.check`` and ``pipeline.targets.nnapi``. The reference pairs in
../shared/reference_models compare the prediction with what Coral's compiler left outside its
custom op. Run: ``nice -n 10 python -m benchmarks.edgetpu_nnapi``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._report import write_section
from edgetpu.check import check, compiled_cpu_ops
from pipeline.targets import nnapi

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference_models"


def reference_rows() -> list[str]:
    rows = ["| pair | ops | predicted CPU ops | compiler's CPU ops | agree |", "|---|---|---|---|---|"]
    for compiled in sorted(REFERENCE_DIR.rglob("*_edgetpu.tflite")):
        source = compiled.with_name(compiled.name.removesuffix("_edgetpu.tflite") + ".tflite")
        report, actual = check(source), compiled_cpu_ops(compiled)
        rows.append(f"| {source.stem} | {report.total_ops} | {_ops(report.cpu_ops)} | {_ops(actual)} | "
                    f"{'yes' if report.cpu_ops == actual else 'NO'} |")
    return rows


def convert_zoo_net(name: str, size: int, out: Path) -> tuple[Path, str]:
    """The net as ``tflpipe run`` deploys it: QAT-wrapped (ranges from one training-mode batch), full int8."""
    import keras_models
    from keras_models import ZooError
    from pipeline.api import convert
    from pipeline.stages.qat import quantize

    spec = keras_models.get_spec(name)
    knobs = {"alpha": 0.35} if "alpha" in spec.knobs else {}
    try:
        model = keras_models.build_model(name, input_size=size, classes=10, **knobs)
    except ZooError:
        knobs = {}
        model = keras_models.build_model(name, input_size=size, classes=10)
    images = np.random.default_rng(0).integers(0, 256, (8, size, size, 3), dtype=np.uint8)
    qat = quantize(model)
    qat(images.astype(np.float32) / 127.5 - 1, training=True)
    out.write_bytes(convert(qat, "qat_int8", images, io_dtype="uint8"))
    config = f"{size}px" + "".join(f", {k} {v}" for k, v in knobs.items())
    return out, config


def zoo_rows(size: int, only: list[str] | None) -> list[str]:
    import keras_models

    rows = ["| net | config | ops | Edge TPU mapped | CPU ops and first reason | params (MiB) | NNAPI API 27 / 29 / 30 |",
            "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for spec in keras_models.list_models():
            if only and spec.name not in only:
                continue
            start = time.perf_counter()
            try:
                path, config = convert_zoo_net(spec.name, size, Path(tmp) / f"{spec.name}.tflite")
            except Exception as exc:  # one net failing to build or convert must not hide the others
                rows.append(f"| {spec.name} | {size}px | - | conversion failed: {str(exc).splitlines()[0][:120]} | | | |")
                continue
            tpu = check(path)
            levels = [nnapi.check(path, level).to_dict() for level in (27, 29, 30)]
            why = tpu.model_errors[:1] or tpu.reasons[:1]
            cpu = "none" if tpu.fully_mapped else f"{_ops(tpu.cpu_ops)}; {why[0] if why else ''}"
            coverage = " / ".join(f"{r['delegated_ops']}/{r['total_ops']}" for r in levels)
            rows.append(f"| {spec.name} | {config} | {tpu.total_ops} | {tpu.accelerated_ops}/{tpu.total_ops} | {cpu} | "
                        f"{tpu.details['parameter_bytes'] / 2**20:.2f} | {coverage} |")
            print(rows[-1], f"({time.perf_counter() - start:.0f} s)", flush=True)
    return rows


def _ops(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in counts.items()) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--only", nargs="*", help="zoo nets to include (default: all)")
    args = parser.parse_args()
    refs = reference_rows()
    print("\n".join(refs), flush=True)
    zoo = zoo_rows(args.size, args.only)
    markdown = "\n".join([
        "## Edge TPU mapping and NNAPI coverage (`benchmarks/edgetpu_nnapi.py`)", "",
        "Prediction (`tflpipe edgetpu check`) versus Coral's compiler on the reference pairs (`reference_models` and its `coral_pairs`): CPU ops are the ops "
        "the compiler left outside `edgetpu-custom-op` in `X_edgetpu.tflite`.", "", *refs, "",
        f"Zoo nets at {args.size} px, width 0.35 where the net has one, random weights, QAT-wrapped and converted to "
        "full int8 (uint8 I/O) as `tflpipe run` deploys them. "
        "Edge TPU: predicted ops on the TPU (runtime 14). NNAPI: ops the TFLite NNAPI delegate takes at Android API "
        "27 / 29 / 30 (`tflpipe nnapi check`); NNAPI is deprecated from Android 15.", "", *zoo,
    ])
    write_section("edgetpu_nnapi", markdown)


if __name__ == "__main__":
    main()
