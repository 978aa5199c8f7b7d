"""Latency of what a user has in hand: a ``.tflite``, a Keras file, or a zoo net with its knobs.

The latency model works on int8 flatbuffers; Keras models and zoo nets are converted to full int8 with
random calibration first (same ops and shapes as the deployed model, a few seconds).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.core.tflite_file import parse_model, read_file
from pipeline.latency.memory import memory_report
from pipeline.latency.predict import predict_flatbuffer
from pipeline.latency.table import load_table

KERAS_SUFFIXES = (".h5", ".keras", ".hdf5")


def model_flatbuffer(source: str | Path, input_size: int | None = None, classes: int = 1000,
                     trust_code: bool = False, **knobs: Any) -> tuple[bytes, str]:
    """The int8 flatbuffer of ``source`` and a name for it: a ``.tflite`` as it is, a Keras file or a zoo
    net (``knobs`` such as alpha) converted."""
    from pipeline.core.keras_convert import full_int8_flatbuffer

    path = Path(source)
    if path.suffix == ".tflite":
        data = read_file(path)
        parse_model(data, path)  # verified: unpack() trusts its offsets
        return data, path.name
    if path.suffix in KERAS_SUFFIXES or path.is_dir():
        from pipeline.stages.convert import load_keras_model

        if not path.exists():
            raise PipelineError(f"{path} does not exist")
        return full_int8_flatbuffer(load_keras_model(path, trust_code)), path.name
    from keras_models import REGISTRY, build_model

    if str(source) not in REGISTRY:
        raise PipelineError(f"{source!r} is neither a .tflite/.h5/.keras file nor a zoo net "
                            f"({', '.join(sorted(REGISTRY))})")
    model = build_model(str(source), input_size, classes=classes, **{k: v for k, v in knobs.items() if v is not None})
    return full_int8_flatbuffer(model), f"{source} {model.input_shape[1]}px"


def predict(source: str | Path, table: str | Path, threads: int | None = None, measure: bool = False,
            top: int | None = None, **build: Any) -> dict:
    """Predicted latency of ``source`` from ``table`` (per-kernel breakdown), and measured here if asked."""
    loaded = load_table(table)
    data, name = model_flatbuffer(source, **build)
    prediction = predict_flatbuffer(data, loaded, threads)
    result = {"model": name, **prediction.to_json(top)}
    if measure and loaded.device != "cpu":
        raise PipelineError(f"--measure times on this CPU, but the table was measured on {loaded.device}")
    if measure:
        from pipeline.latency.measure import LocalMeasurer

        measured = LocalMeasurer(threads=loaded.threads, min_seconds=0.5).time(data)
        result["measured_ms"] = round(measured, 4)
        result["error"] = round(prediction.latency_ms / measured - 1, 4)
    if loaded.device == "cpu" and measure:  # the memory model describes LiteRT + XNNPACK on this CPU
        with tempfile.TemporaryDirectory() as folder:  # measured in a child process that reads a file
            path = Path(folder) / "model.tflite"
            path.write_bytes(data)
            result["memory"] = memory_report(path, loaded.threads, measure=True)
    elif loaded.device == "cpu":
        result["memory"] = memory_report(parse_model(data, name), loaded.threads)
    return result
