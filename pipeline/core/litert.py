"""Run .tflite classifiers with LiteRT: preprocessing from the file's metadata, accuracy, latency, top-k.

Everything here works on any image classifier file, ours or third-party: normalization comes from
the TFLite metadata when present, and integer inputs are quantized with the tensor's own scale and
zero point.

No file reaches LiteRT's native code unverified: ``make_interpreter`` runs ``parse_model``'s checks
on the very bytes it hands the interpreter, and the first time a process meets a file it loads and
runs it once in a child process, so a damaged file that crashes LiteRT kills the child and the
caller gets a one-line error instead of dying silently.
"""
from __future__ import annotations

import hashlib
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.data import ImageSet
from pipeline.core.errors import PipelineError, first_line
from pipeline.core.tflite_file import TFLiteModel, parse_model, read_file

DEFAULT_MEAN = DEFAULT_STD = 127.5
PROBE_TIMEOUT_S = 120  # one load, allocate and invoke; far above any model this pipeline handles
_REPO_ROOT = Path(__file__).resolve().parents[2]
_probed: set[str] = set()  # sha256 of the files that loaded and ran in a child process


def make_interpreter(path: str | Path, threads: int = 1):
    """A LiteRT interpreter (XNNPACK on by default) with tensors allocated, for a verified, probed file."""

    if threads < 1:
        raise PipelineError(f"--threads must be at least 1, got {threads}")
    path = Path(path)
    data = read_file(path)
    parse_model(data, path)  # raises on any defect; the interpreter gets these same bytes
    return _interpreter(data, path.name, threads)


def _interpreter(data: bytes, name: str, threads: int):
    """An interpreter over bytes that ``parse_model`` has verified, after the crash probe."""
    from ai_edge_litert.interpreter import Interpreter

    if threads < 1:
        raise PipelineError(f"--threads must be at least 1, got {threads}")
    probe(data, name)
    try:
        interpreter = Interpreter(model_content=data, num_threads=threads)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise PipelineError(f"LiteRT cannot run {name}: {first_line(exc)}") from None
    return interpreter


def probe(data: bytes, name: str) -> None:
    """Load, allocate and invoke a model once in a child process, the first time this process meets it.

    LiteRT's native code can crash on files that pass every structural check; in a child that takes
    down only the child. Files are known by sha256, so benchmark and evaluate pay this once per file.
    """
    digest = hashlib.sha256(data).hexdigest()
    if digest in _probed:
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-c", "from pipeline.core.litert import _probe_child; _probe_child()"]
    try:
        child = subprocess.run(command, input=data, capture_output=True, timeout=PROBE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise PipelineError(f"LiteRT did not load and run {name} within {PROBE_TIMEOUT_S} s: the file is damaged "
                            "or far too large") from None
    if child.returncode < 0:
        raise PipelineError(f"LiteRT crashed ({_signal_name(-child.returncode)}) while loading {name}: the file is "
                            "damaged or unsupported")
    if child.returncode:
        reason = (child.stdout.decode(errors="replace").strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        raise PipelineError(f"LiteRT cannot run {name}: {reason}")
    _probed.add(digest)


def _probe_child() -> None:
    """The child side of ``probe``: model bytes on stdin; on failure, one line on stdout and exit status 1."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=sys.stdin.buffer.read(), num_threads=1)
        interpreter.allocate_tensors()
        random_input(interpreter)
        interpreter.invoke()
    except Exception as exc:  # the parent turns whatever it was into its one-line error
        print(first_line(exc) or type(exc).__name__)
        sys.exit(1)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


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
        path = Path(path)
        data = read_file(path)
        model = parse_model(data, path)  # read and verified once, for the checks below and the interpreter
        if len(model.inputs) != 1 or not model.outputs:
            raise PipelineError(f"{Path(path).name} is not an image classifier ({len(model.inputs)} inputs, "
                                f"{len(model.outputs)} outputs)")
        image, scores = model.input_tensors[0], model.output_tensors[0]
        if image.rank != 4 or image.shape[-1] != 3 or scores.rank < 1:
            raise PipelineError(f"{Path(path).name} is not an image classifier (input shape {image.shape})")
        for t in (image, scores):
            if not (t.dtype == "float32" or (t.dtype in ("uint8", "int8") and t.scale)):
                raise PipelineError(f"{Path(path).name}: tensor {t.name!r} ({t.dtype}) is neither float32 nor "
                                    "quantized uint8/int8, as a classifier's input and output must be")
        meta = model.metadata
        mean = (meta.get("mean") or [DEFAULT_MEAN])[0]
        std = (meta.get("std") or [DEFAULT_STD])[0]
        return cls(path, model, _interpreter(data, path.name, threads), mean, std, meta.get("labels", []))

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
    """Fixed-seed random data in every input (the probe child and the benchmark feed the same)."""
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        if np.issubdtype(detail["dtype"], np.integer):
            info = np.iinfo(detail["dtype"])
            data = rng.integers(info.min, info.max + 1, size=detail["shape"], dtype=detail["dtype"])
        else:
            data = rng.uniform(-1, 1, size=detail["shape"]).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], data)


def time_invokes(interpreter, runs: int, warmup: int) -> dict:
    """Median/mean/p90 milliseconds of ``runs`` invokes on random input after ``warmup`` untimed ones.

    The one latency measurement of the project: LiteRT on the CPU and the Edge TPU runtime both report
    through it, with the same keys.
    """
    random_input(interpreter)
    latency_samples(interpreter, warmup)
    samples = sorted(latency_samples(interpreter, runs))
    return {
        "latency_ms_median": statistics.median(samples),
        "latency_ms_mean": statistics.fmean(samples),
        "latency_ms_p90": samples[min(len(samples) - 1, int(0.9 * len(samples)))],
        "runs": runs,
    }


def benchmark(path: str | Path, threads: int = 1, runs: int = 50, warmup: int = 5) -> dict:
    """Median/mean/p90 invoke latency of ``path`` in LiteRT with ``threads`` XNNPACK threads."""
    interpreter = make_interpreter(path, threads)
    try:
        return {**time_invokes(interpreter, runs, warmup), "threads": threads}
    except (RuntimeError, ValueError) as exc:
        raise PipelineError(f"LiteRT cannot run {Path(path).name}: {first_line(exc)}") from None
