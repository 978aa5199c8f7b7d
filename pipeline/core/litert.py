"""Run .tflite classifiers with LiteRT: preprocessing from the file's metadata, accuracy, latency, top-k.

Everything here works on any image classifier file, ours or third-party: normalization comes from
the TFLite metadata when present, and integer inputs are quantized with the tensor's own scale and
zero point.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.data import ImageSet
from pipeline.core.errors import PipelineError
from pipeline.core.tflite_file import TFLiteModel, read_model

DEFAULT_MEAN = DEFAULT_STD = 127.5


def make_interpreter(path: str | Path, threads: int = 1):
    """A LiteRT interpreter (XNNPACK on by default) with tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    if threads < 1:
        raise PipelineError(f"--threads must be at least 1, got {threads}")
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise PipelineError(f"LiteRT cannot run {Path(path).name}: {str(exc).splitlines()[0]}") from None
    return interpreter


@dataclass
class Classifier:
    """One loaded image classifier and the facts needed to feed it."""

    path: Path
    model: TFLiteModel
    interpreter: object
    mean: float
    std: float
    labels: list[str]

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> "Classifier":
        model = read_model(path)
        image = model.input_tensors[0]
        if image.rank != 4 or image.shape[-1] != 3 or len(model.inputs) != 1:
            raise PipelineError(f"{Path(path).name} is not an image classifier (input shape {image.shape})")
        meta = model.metadata
        mean = (meta.get("mean") or [DEFAULT_MEAN])[0]
        std = (meta.get("std") or [DEFAULT_STD])[0]
        return cls(Path(path), model, make_interpreter(path, threads), mean, std, meta.get("labels", []))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.model.input_tensors[0].shape[1], self.model.input_tensors[0].shape[2]

    @property
    def num_classes(self) -> int:
        return self.model.output_tensors[0].shape[-1]

    def input_tensor(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB images (N, H, W, 3) to the model's input: normalize, then quantize if integer."""
        t = self.model.input_tensors[0]
        x = (images.astype(np.float32) - self.mean) / self.std
        if t.dtype == "float32":
            return x
        info = np.iinfo(np.dtype(t.dtype))
        q = np.round(x / t.scale[0]) + t.zero_point[0]
        return np.clip(q, info.min, info.max).astype(t.dtype)

    def scores(self, image: np.ndarray) -> np.ndarray:
        """Dequantized output scores for one uint8 RGB image at the model's input size."""
        interp = self.interpreter
        interp.set_tensor(interp.get_input_details()[0]["index"], self.input_tensor(image[None]))
        interp.invoke()
        out = interp.get_tensor(interp.get_output_details()[0]["index"])[0]
        t = self.model.output_tensors[0]
        if t.dtype == "float32":
            return out
        return (out.astype(np.float32) - t.zero_point[0]) * t.scale[0]

    def top_k(self, image: np.ndarray, k: int = 5) -> list[dict]:
        s = self.scores(image)
        order = np.argsort(-s)[:k]
        return [{"index": int(i), "label": self.labels[i] if i < len(self.labels) else str(i), "score": float(s[i])} for i in order]


def class_mapping(classifier: Classifier, class_names: list[str]) -> np.ndarray:
    """Map dataset class ids to model output ids: by label name when the file has labels, else by position."""
    if classifier.labels:
        lookup = {name.lower(): i for i, name in enumerate(classifier.labels)}
        if all(name.lower() in lookup for name in class_names):
            return np.array([lookup[name.lower()] for name in class_names])
    if len(class_names) == classifier.num_classes:
        return np.arange(len(class_names))
    raise PipelineError(
        f"the data has {len(class_names)} classes ({', '.join(class_names[:5])}...) that do not match the "
        f"model's {classifier.num_classes} outputs by name or count"
    )


def correct_mask(path: str | Path, data: ImageSet, threads: int = 2, progress: bool = False) -> np.ndarray:
    """Per image of ``data`` (already at the model's input size): did the .tflite classifier's top-1 hit the label?"""
    clf = Classifier.load(path, threads)
    if data.images.shape[1:3] != clf.input_size:
        raise PipelineError(f"images are {data.images.shape[1:3]} but {Path(path).name} takes {clf.input_size}")
    mapping = class_mapping(clf, data.class_names)
    iterator = range(len(data))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"evaluating {Path(path).name}", unit="img", leave=False)
    return np.array([np.argmax(clf.scores(data.images[i])) == mapping[data.labels[i]] for i in iterator], dtype=bool)


def evaluate(path: str | Path, data: ImageSet, threads: int = 2, progress: bool = False) -> dict:
    """Top-1 accuracy of a .tflite classifier on ``data`` (already at the model's input size)."""
    correct = correct_mask(path, data, threads, progress)
    return {"accuracy": float(correct.mean()) if len(data) else 0.0, "n": len(data)}


def latency_samples(interpreter, runs: int) -> list[float]:
    """Wall-clock milliseconds of ``runs`` invokes on the interpreter's current input."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def random_input(interpreter) -> None:
    detail = interpreter.get_input_details()[0]
    rng = np.random.default_rng(0)
    if np.issubdtype(detail["dtype"], np.integer):
        info = np.iinfo(detail["dtype"])
        data = rng.integers(info.min, info.max + 1, size=detail["shape"], dtype=detail["dtype"])
    else:
        data = rng.uniform(-1, 1, size=detail["shape"]).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], data)


def benchmark(path: str | Path, threads: int = 1, runs: int = 50, warmup: int = 5) -> dict:
    """Median/mean/p90 invoke latency of ``path`` in LiteRT with ``threads`` XNNPACK threads."""
    interpreter = make_interpreter(path, threads)
    random_input(interpreter)
    latency_samples(interpreter, warmup)
    samples = sorted(latency_samples(interpreter, runs))
    return {
        "latency_ms_median": statistics.median(samples),
        "latency_ms_mean": statistics.fmean(samples),
        "latency_ms_p90": samples[min(len(samples) - 1, int(0.9 * len(samples)))],
        "threads": threads,
        "runs": runs,
    }
