"""The phone app's frame loop on this machine: OpenCV capture, ``pipeline.targets.android.frames`` preprocessing, LiteRT.

It measures what a phone demo has to achieve (frames per second end to end, and where a frame's
time goes) with exactly the preprocessing the Android app mirrors. With two or more threads one of
them captures and preprocesses the next frame while the interpreter runs the current one, so
preprocessing hides behind inference instead of adding to it.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pipeline.core.data import IMAGE_SUFFIXES
from pipeline.core.errors import PipelineError
from pipeline.core.labels import display_label, read_labels
from pipeline.stages.artifacts import DEPLOYABLE as RUN_DIR_MODEL
from pipeline.stages.artifacts import LABELS as RUN_DIR_LABELS
from pipeline.targets.android import frames


@dataclass
class DemoModel:
    """A loaded image classifier with what the loop needs: input spec, output quantization, labels."""

    path: Path
    interpreter: object
    spec: frames.InputSpec
    output_dtype: str
    output_scale: float
    output_zero_point: int
    labels: list[str]

    def classify(self, tensor: np.ndarray) -> np.ndarray:
        """Dequantized scores for one preprocessed (1, H, W, 3) input."""
        interp = self.interpreter
        interp.set_tensor(self._input_index, tensor)
        interp.invoke()
        raw = interp.get_tensor(self._output_index)[0]
        return frames.dequantize(raw, self.output_scale, self.output_zero_point)

    def __post_init__(self) -> None:
        self._input_index = self.interpreter.get_input_details()[0]["index"]
        self._output_index = self.interpreter.get_output_details()[0]["index"]

    def label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)


def resolve_model(source: str | Path) -> tuple[Path, Path | None]:
    """(model file, labels file or None) for a RUN_DIR or a .tflite file."""
    source = Path(source)
    if source.is_dir():
        model, labels = source / RUN_DIR_MODEL, source / RUN_DIR_LABELS
        if not model.is_file():
            raise PipelineError(f"{source} is not a run directory: {RUN_DIR_MODEL} is missing")
        if not labels.is_file():
            raise PipelineError(f"{source} has no {RUN_DIR_LABELS}; the demo needs labels to name what it sees")
        return model, labels
    if not source.is_file():
        raise PipelineError(f"model not found: {source}")
    if source.suffix != ".tflite":
        raise PipelineError(f"{source} is neither a run directory nor a .tflite file")
    return source, None


def input_spec(classifier) -> frames.InputSpec:
    """The ``frames.InputSpec`` of a ``litert.Classifier`` (its metadata's mean/std, else 127.5)."""
    t = classifier.model.input_tensors[0]
    quantized = t.dtype != "float32"
    return frames.InputSpec(
        height=t.shape[1], width=t.shape[2], dtype=t.dtype,
        scale=t.scale[0] if quantized and t.scale else 0.0,
        zero_point=t.zero_point[0] if quantized and t.zero_point else 0,
        mean=classifier.mean, std=classifier.std,
    )


def load_model(source: str | Path, threads: int = 1) -> DemoModel:
    """Load a RUN_DIR's int8 model and labels, or any image-classifier .tflite (labels from its metadata)."""
    from pipeline.core.litert import Classifier

    path, labels_path = resolve_model(source)
    clf = Classifier.load(path, threads)
    try:
        spec = input_spec(clf)
    except PipelineError as exc:
        raise PipelineError(f"{path.name} is not an image classifier: {exc}") from None
    out = clf.model.output_tensors[0]
    if out.dtype not in ("uint8", "int8", "float32"):
        raise PipelineError(f"{path.name} has a {out.dtype} output; an image classifier's scores are uint8, int8 or float32")
    labels = read_labels(labels_path) if labels_path else clf.labels
    if labels_path and out.shape[-1:] != (len(labels),):
        raise PipelineError(f"{labels_path} has {len(labels)} labels for the {out.shape} output of {path.name}: "
                            "the demo would name classes wrongly")
    quantized = out.dtype != "float32"
    return DemoModel(
        path, clf.interpreter, spec, out.dtype,
        out.scale[0] if quantized else 1.0, out.zero_point[0] if quantized else 0, labels,
    )


def open_video(path: str | Path):
    import cv2

    if not Path(path).is_file():
        raise PipelineError(f"video not found: {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise PipelineError(f"cannot open video {path} (not a video OpenCV can decode)")
    return capture


def open_camera(index: int):
    import cv2

    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        capture.release()
        raise PipelineError(f"camera {index} is not available")
    return capture


def capture_frames(capture) -> Iterator[np.ndarray]:
    """BGR frames from an opened cv2.VideoCapture until it runs dry."""
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def image_frames(folder: str | Path, skipped: list[Path]) -> Iterator[np.ndarray]:
    """BGR frames decoded from the image files of a folder, in name order.

    Sub-folders (never entered, so link loops cannot trap it), broken links and files OpenCV cannot
    decode (corrupt, or a header claiming more pixels than OpenCV allows) go to ``skipped`` instead.
    """
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"image folder not found: {folder}")
    files = []
    for entry in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if not entry.is_file():
            skipped.append(entry)
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            files.append(entry)
    if not files:
        raise PipelineError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}"
                            + (f"; {skipped_summary(skipped)}" if skipped else ""))

    def generate() -> Iterator[np.ndarray]:
        for path in files:
            try:
                frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            except cv2.error:  # raised, not None, for a header over OpenCV's pixel limit
                frame = None
            if frame is None:
                skipped.append(path)
            else:
                yield frame

    return generate()


def skipped_summary(skipped: list[Path]) -> str:
    """One line for what a folder source left out: how many, and one of them."""
    return (f"skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} (sub-folders are not searched; broken "
            f"links and undecodable images are left out), e.g. {display_label(skipped[0].name)}")


@dataclass
class FrameResult:
    index: int
    top_k: list[tuple[int, float]]
    fps: float


def run_loop(
    model: DemoModel,
    source: Iterator[np.ndarray],
    max_frames: int | None = None,
    overlap: bool = False,
    top_k: int = 3,
    threshold: float = 0.0,
    rotation: int = 0,
    on_frame: Callable[[np.ndarray, FrameResult], None] | None = None,
) -> dict:
    """Classify frames until the source ends or ``max_frames``; return the timing summary.

    ``overlap`` moves capture and preprocessing to a second thread that keeps at most two frames
    ready, so the interpreter never waits for a frame it could have had.
    """
    pre = frames.Preprocessor(model.spec, rotation, bgr=True)
    model.classify(np.zeros((1, model.spec.height, model.spec.width, 3), model.spec.dtype))  # warm-up
    limit = max_frames if max_frames is not None else float("inf")
    times: dict[str, list[float]] = {"capture_ms": [], "preprocess_ms": [], "inference_ms": [], "postprocess_ms": []}
    meter, last = frames.FpsMeter(30), None

    def produce() -> Iterator[tuple[np.ndarray, np.ndarray, float, float]]:
        count = 0
        while count < limit:
            t0 = time.perf_counter()
            frame = next(source, None)
            if frame is None:
                return
            t1 = time.perf_counter()
            tensor = pre(frame)
            yield frame, tensor, t1 - t0, time.perf_counter() - t1
            count += 1

    stream = _threaded(produce()) if overlap else produce()
    start = time.perf_counter()
    for index, (frame, tensor, capture_s, preprocess_s) in enumerate(stream):
        t0 = time.perf_counter()
        scores = model.classify(tensor)
        t1 = time.perf_counter()
        best = frames.top_k(scores, top_k, threshold)
        last = FrameResult(index, best, meter.tick())
        if on_frame:
            on_frame(frame, last)
        t2 = time.perf_counter()
        for key, seconds in zip(times, (capture_s, preprocess_s, t1 - t0, t2 - t1)):
            times[key].append(seconds * 1e3)
    elapsed = time.perf_counter() - start
    count = len(times["inference_ms"])
    if not count:
        raise PipelineError("the source produced no frames")
    summary = {"frames": count, "fps": count / elapsed, **{k: float(np.mean(v)) for k, v in times.items()}}
    summary["top_k"] = [{"index": i, "label": model.label(i), "score": s} for i, s in last.top_k]
    return summary


def _threaded(items: Iterator) -> Iterator:
    """Run ``items`` in a worker thread, two items ahead; its exceptions surface in the consumer."""
    ready: queue.Queue = queue.Queue(maxsize=2)
    done, stop = object(), threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    worker = threading.Thread(target=work, name="capture-preprocess", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def annotate(frame: np.ndarray, result: FrameResult, labels: Callable[[int], str]) -> np.ndarray:
    """Draw top-k and FPS onto a BGR frame (in place) for display or a recorded video."""
    import cv2

    lines = [f"{result.fps:5.1f} fps"] + [f"{s:.2f} {display_label(labels(i), 40)}" for i, s in result.top_k]
    for row, text in enumerate(lines):
        y = 24 + 22 * row
        cv2.putText(frame, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(frame, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return frame


def make_test_video(path: str | Path, images: list[Path], frames_count: int = 120, size: tuple[int, int] = (640, 480), fps: float = 30.0) -> Path:
    """Write an MJPG AVI (JPEG frames) panning and zooming over ``images``: benchmarks and tests need a
    camera-like video and nothing may be downloaded."""
    import cv2

    width, height = size
    sources = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in images]
    if not sources or any(s is None for s in sources):
        raise PipelineError(f"cannot read the images for a test video: {', '.join(map(str, images))}")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise PipelineError(f"cannot write video {path}")
    per_image = max(1, frames_count // len(sources))
    for i in range(frames_count):
        src = sources[min(i // per_image, len(sources) - 1)]
        t = (i % per_image) / per_image
        scale = max(width / src.shape[1], height / src.shape[0]) * (1.1 + 0.3 * t)  # slow zoom
        big = cv2.resize(src, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        x = int((big.shape[1] - width) * t)  # pan left to right
        y = (big.shape[0] - height) // 2
        writer.write(np.ascontiguousarray(big[y : y + height, x : x + width]))
    writer.release()
    return Path(path)
