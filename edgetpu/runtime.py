"""Run and time a model on an attached Edge TPU through LiteRT's libedgetpu delegate.

Inference goes through the on-board script's functions so the host and the board share one code path;
without a device these functions refuse in one line instead of silently timing the CPU.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgetpu.board import classify as board
from pipeline.core.errors import PipelineError
from pipeline.core.tflite_file import read_model

NO_DEVICE = ("no Edge TPU available: the libedgetpu delegate could not be loaded; install the Edge TPU runtime "
             "(apt-get install libedgetpu1-std, https://coral.ai/docs/accelerator/get-started/) and attach a Coral device")


def tpu_interpreter(model: str | Path):
    """An interpreter with the Edge TPU delegate, or a one-line PipelineError when there is no device."""
    read_model(model)  # a missing or damaged file fails here, in one line
    delegate = board.load_edgetpu_delegate()
    if delegate is None:
        raise PipelineError(NO_DEVICE)
    interpreter = board._tflite().Interpreter(model_path=str(model), experimental_delegates=[delegate])
    interpreter.allocate_tensors()
    return interpreter


def run_image(model: str | Path, image: str | Path, labels: list[str] | None = None, top_k: int = 3) -> dict:
    """Classify one image on the Edge TPU."""
    from PIL import Image

    interpreter = tpu_interpreter(model)
    with Image.open(image) as img:
        tensor = board.preprocess(img, interpreter, 127.5, 127.5)
    top = board.classify(interpreter, tensor, top_k)
    return {"model": str(model), "image": str(image), "device": "edgetpu",
            "top": [{"index": i, "label": labels[i] if labels and i < len(labels) else str(i), "score": s} for i, s in top]}


def benchmark(model: str | Path, runs: int = 50, warmup: int = 5) -> dict:
    """Latency of ``runs`` invocations on random input, after ``warmup`` (the first loads the parameters)."""
    interpreter = tpu_interpreter(model)
    detail = interpreter.get_input_details()[0]
    rng = np.random.default_rng(0)
    info = np.iinfo(detail["dtype"]) if np.issubdtype(detail["dtype"], np.integer) else None
    data = (rng.integers(info.min, info.max + 1, size=detail["shape"]) if info else rng.standard_normal(detail["shape"]))
    interpreter.set_tensor(detail["index"], data.astype(detail["dtype"]))
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        interpreter.invoke()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000
    return {"model": str(model), "device": "edgetpu", "runs": runs, "mean_ms": float(ms.mean()),
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90))}
