"""Conversion time: the pipeline's converter against TFLite's ``from_keras_model``, same model, same output.

``pipeline.stages.convert.keras_converter`` converts the model's one inference function instead of
first saving it as a Keras SavedModel. For each conversion mode both converters run alternately
(``--rounds`` pairs) on the same Keras model; the table gives median seconds and their ratio, and
checks that both flatbuffers give identical outputs on the same input.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import write_section  # noqa: E402

MODES = ("float32", "ptq_int8", "qat_int8")


def _outputs(flatbuffer: bytes, image: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    x = image if detail["dtype"] == np.uint8 else (image.astype(np.float32) - 127.5) / 127.5
    interpreter.set_tensor(detail["index"], x.astype(detail["dtype"]))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def measure(rounds: int, size: int, alpha: float) -> list[str]:
    from keras_models import build_model
    from pipeline.core.tf_env import tf
    from pipeline.stages import convert as conversion
    from pipeline.stages.qat import quantize

    images = np.random.default_rng(0).integers(0, 256, (32, size, size, 3), dtype=np.uint8)
    float_model = build_model("mobilenet_v2", size, classes=10, alpha=alpha)
    qat_model = quantize(float_model)
    qat_model((images[:8].astype(np.float32) - 127.5) / 127.5, training=True)  # sets the fake-quant ranges
    ours = conversion.keras_converter
    theirs = tf.lite.TFLiteConverter.from_keras_model
    rows = []
    for mode in MODES:
        model = qat_model if mode == "qat_int8" else float_model
        seconds: dict[str, list[float]] = {"ours": [], "keras": []}
        flatbuffers = {}
        for _ in range(rounds):
            for name, make in (("ours", ours), ("keras", theirs)):
                conversion.keras_converter = make
                start = time.perf_counter()
                flatbuffers[name] = conversion.convert(model, mode, images)
                seconds[name].append(time.perf_counter() - start)
        conversion.keras_converter = ours
        same = np.array_equal(_outputs(flatbuffers["ours"], images[:1]), _outputs(flatbuffers["keras"], images[:1]))
        ours_s, keras_s = statistics.median(seconds["ours"]), statistics.median(seconds["keras"])
        rows.append(f"| {mode} | {keras_s:.1f} | {ours_s:.1f} | {keras_s / ours_s:.2f}x | "
                    f"{len(flatbuffers['ours']):,} / {len(flatbuffers['keras']):,} | {'yes' if same else 'NO'} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="Alternating pairs of conversions per mode.")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=0.35)
    args = parser.parse_args()
    rows = measure(args.rounds, args.size, args.alpha)
    write_section("conversion", "\n".join([
        "## Conversion time (`benchmarks/conversion.py`)",
        "",
        f"MobileNet v2 α={args.alpha} at {args.size} px, {args.rounds} alternating pairs per mode, median seconds. "
        "`from_keras_model` saves the model as a Keras SavedModel (tracing every layer for serialization) and "
        "loads it back before converting; the pipeline converts the one inference function.",
        "",
        "| mode | `from_keras_model` (s) | pipeline (s) | speed-up | bytes (pipeline / keras) | same outputs |",
        "|---|---:|---:|---:|---:|---|",
        *rows,
    ]))


if __name__ == "__main__":
    main()
