"""Run and time a model on an attached Edge TPU through LiteRT's libedgetpu delegate.

Inference goes through the on-board script's functions so the host and the board share one code path;
without a device these functions refuse in one line instead of silently timing the CPU.
"""
from __future__ import annotations

from pathlib import Path

from edgetpu.board import classify as board
from pipeline.core.errors import PipelineError
from pipeline.core.litert import time_invokes
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
    """Latency of ``runs`` invocations on random input, after ``warmup`` (the first loads the parameters).

    The keys are LiteRT's (``pipeline.core.litert.benchmark``); ``mean_ms``/``p50_ms``/``p90_ms`` stay
    for scripts written against earlier versions.
    """
    stats = time_invokes(tpu_interpreter(model), runs, warmup)
    return {"model": str(model), "device": "edgetpu", **stats, "mean_ms": stats["latency_ms_mean"],
            "p50_ms": stats["latency_ms_median"], "p90_ms": stats["latency_ms_p90"]}
