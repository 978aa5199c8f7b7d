"""Per-layer quantization error (TFLite's QuantizationDebugger) and selective quantization.

The debugger runs the int8 model and, beside every quantized op, its float twin on the same inputs;
the error of each op's output, in units of its quantization step (RMSE / scale), points at the layers
int8 hurts most. Selective quantization keeps the worst of them in float: better accuracy on CPU
and GPU, but a model with float ops no longer runs whole on the Edge TPU (nor on NNAPI int8 paths).
"""
from __future__ import annotations

import csv
import io

import numpy as np

from pipeline.core.tf_env import keras, tf
from pipeline.stages.convert import check_calibration_images, keras_converter, representative_dataset, run_converter

EDGETPU_NOTE = ("keeps float ops: for CPU/GPU targets only; the Edge TPU runs only full-int8 models, "
                "so this file would fall back to the CPU there")


def _converter(model: keras.Model, images: np.ndarray):
    converter = keras_converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(images)
    return converter


def _debugger(model: keras.Model, images: np.ndarray, samples: int, denylist: list[str] | None = None):
    check_calibration_images(model, images, "quantization debugging")
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_debug_metrics={"mean_abs_error": lambda diff: float(np.mean(np.abs(diff)))},
        denylisted_nodes=denylist or None,
    )
    return tf.lite.experimental.QuantizationDebugger(
        converter=_converter(model, images),
        debug_dataset=representative_dataset(images, samples),
        debug_options=options,
    )


def layer_errors(model: keras.Model, images: np.ndarray, samples: int = 64) -> list[dict]:
    """Every quantized op's output error, worst first.

    Rows: ``{"layer", "op", "tensor", "rmse_over_scale", "mean_abs_error", "mean_error", "scale"}``;
    ``tensor`` is the name ``selective_quantize`` takes.
    """
    debugger = _debugger(model, images, samples)
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    dump.seek(0)
    rows = []
    for row in csv.DictReader(dump):
        scale = float(row["scale"]) or float("nan")
        rows.append({
            "layer": _layer_name(row["tensor_name"]),
            "op": row["op_name"],
            "tensor": row["tensor_name"],
            "rmse_over_scale": float(np.sqrt(float(row["mean_squared_error"])) / scale),
            "mean_abs_error": float(row["mean_abs_error"]),
            "mean_error": float(row["mean_error"]),
            "scale": scale,
        })
    rows.sort(key=lambda r: -np.nan_to_num(r["rmse_over_scale"]))
    return rows


def _layer_name(tensor_name: str) -> str:
    """The Keras layer a converter tensor name comes from: ``model/conv_pw_3/Conv2D;...`` -> ``conv_pw_3``."""
    parts = tensor_name.split(";")[-1].split("/")
    return parts[1] if len(parts) > 2 else parts[0]


def selective_quantize(model: keras.Model, images: np.ndarray, keep_float: list[str], samples: int = 64) -> bytes:
    """An int8 model whose ``keep_float`` tensors' ops (names from ``layer_errors``) stay in float."""
    debugger = _debugger(model, images, samples, denylist=keep_float)
    return run_converter(_SelectiveConverter(debugger), "selective int8")


class _SelectiveConverter:
    """Adapts the debugger's model builder to ``run_converter``'s one-method interface."""

    def __init__(self, debugger):
        self.debugger = debugger

    def convert(self) -> bytes:
        return self.debugger.get_nondebug_quantized_model()
