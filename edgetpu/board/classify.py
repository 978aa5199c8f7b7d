#!/usr/bin/env python3
"""On-board image classifier for a Coral Dev Board or a Raspberry Pi with a USB Accelerator.

Self-contained on purpose: it is copied to the board alone and needs only numpy, PIL (or OpenCV for
a camera) and tflite_runtime or ai_edge_litert. It loads the libedgetpu delegate when an Edge TPU is
attached; otherwise it falls back to the CPU (running ``--cpu-model``, the uncompiled int8 model, when
the Edge TPU model itself cannot run without the TPU) so the same script also works on a laptop.

    python3 classify.py --model m_edgetpu.tflite --labels labels.txt --images photos/
    python3 classify.py --model m_edgetpu.tflite --labels labels.txt --camera 0 --frames 200
"""
from __future__ import annotations

import argparse
import ctypes
import platform
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def _tflite():
    try:
        import tflite_runtime.interpreter as tfl  # the board's usual package
    except ImportError:
        from ai_edge_litert import interpreter as tfl
    return tfl


def load_edgetpu_delegate():
    """The libedgetpu delegate, or None when no runtime library or no device is present."""
    library = EDGETPU_LIBRARIES.get(platform.system(), "libedgetpu.so.1")
    try:
        ctypes.CDLL(library)  # probe first: a failed load_delegate leaves a half-built object that warns on exit
    except OSError:
        return None
    try:
        return _tflite().load_delegate(library)
    except (ValueError, OSError, RuntimeError):  # runtime present but no device attached
        return None


def make_interpreter(model: str, cpu_model: str | None = None, use_tpu: bool = True):
    """(interpreter, device): the Edge TPU when present, else the CPU on ``model`` or ``cpu_model``."""
    tfl = _tflite()
    delegate = load_edgetpu_delegate() if use_tpu else None
    if delegate is not None:
        interpreter = tfl.Interpreter(model_path=model, experimental_delegates=[delegate])
        interpreter.allocate_tensors()
        return interpreter, "edgetpu"
    for candidate in (model, cpu_model):
        if candidate is None:
            continue
        try:
            interpreter = tfl.Interpreter(model_path=candidate)
            interpreter.allocate_tensors()
            return interpreter, "cpu"
        except RuntimeError:  # an Edge TPU compiled model has an op only the TPU runtime resolves
            continue
    raise SystemExit(f"no Edge TPU found and {model} cannot run on the CPU; pass --cpu-model with the uncompiled model")


def preprocess(image, interpreter, mean: float, std: float) -> np.ndarray:
    """Resize to the model's input and quantize (pixel - mean) / std with the input's scale and zero point."""
    detail = interpreter.get_input_details()[0]
    _, height, width, _ = detail["shape"]
    pixels = np.asarray(image.convert("RGB").resize((int(width), int(height))), dtype=np.float32)
    dtype = detail["dtype"]
    if dtype == np.float32:
        return ((pixels - mean) / std)[None]
    scale, zero_point = detail["quantization"]
    if not scale:
        return pixels.astype(dtype)[None]
    info = np.iinfo(dtype)
    q = np.round((pixels - mean) / std / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)[None]


def classify(interpreter, tensor: np.ndarray, top_k: int) -> list[tuple[int, float]]:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    scores = interpreter.get_tensor(out["index"])[0].astype(np.float32)
    scale, zero_point = out["quantization"]
    if scale:
        scores = (scores - zero_point) * scale
    order = np.argsort(-scores)[:top_k]
    return [(int(i), float(scores[i])) for i in order]


def image_frames(path: str) -> Iterator[tuple[str, object]]:
    from PIL import Image

    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images in {path}")
    for file in files:
        with Image.open(file) as img:
            yield file.name, img.copy()


def camera_frames(index: int, frames: int) -> Iterator[tuple[str, object]]:
    import cv2
    from PIL import Image

    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise SystemExit(f"cannot open camera {index}")
    try:
        for n in range(frames):
            ok, frame = cap.read()
            if not ok:
                break
            yield f"frame {n}", Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()


def read_labels(path: str | None) -> list[str]:
    if not path:
        return []
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the *_edgetpu.tflite model (or any int8 .tflite)")
    parser.add_argument("--cpu-model", help="uncompiled .tflite to run on the CPU when no Edge TPU is attached")
    parser.add_argument("--labels", help="labels.txt, one label per line")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="an image file or a folder of images")
    source.add_argument("--camera", type=int, help="camera index for OpenCV")
    parser.add_argument("--frames", type=int, default=100, help="camera frames to classify")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--mean", type=float, default=127.5, help="input normalization: (pixel - mean) / std")
    parser.add_argument("--std", type=float, default=127.5)
    parser.add_argument("--cpu", action="store_true", help="do not look for an Edge TPU")
    args = parser.parse_args(argv)

    interpreter, device = make_interpreter(args.model, args.cpu_model, use_tpu=not args.cpu)
    labels = read_labels(args.labels)
    frames = image_frames(args.images) if args.images else camera_frames(args.camera, args.frames)
    print(f"device: {device}")
    count, busy = 0, 0.0
    for name, image in frames:
        tensor = preprocess(image, interpreter, args.mean, args.std)
        start = time.perf_counter()
        top = classify(interpreter, tensor, args.top_k)
        busy += time.perf_counter() - start
        count += 1
        best = ", ".join(f"{labels[i] if i < len(labels) else i} {s:.3f}" for i, s in top)
        print(f"{name}: {best}")
    fps = count / busy if busy else 0.0
    print(f"{count} frames on {device}: {1000 * busy / max(count, 1):.1f} ms/inference, {fps:.1f} FPS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
