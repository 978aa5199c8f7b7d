"""Golden vectors for the JVM module: camera frames, the Python model input for them, and the model's top-k.

The Java tests in ``imagecore`` read these files and must reproduce the input tensor byte for byte
and the top-k exactly; ``tests/test_android_jvm.py`` checks the committed files still equal what
``pipeline.targets.android.frames`` and the model produce now. Run from the repository root:

    .venv/bin/python android_demo/tools/make_golden.py
"""
from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.core.labels import read_labels
from pipeline.core.tflite_file import read_model  # noqa: E402
from pipeline.targets.android import frames  # noqa: E402

GOLDEN_DIR = REPO / "android_demo/imagecore/src/test/resources/golden"
REFERENCE_DIR = REPO.parent / "shared/reference_models"
MODEL = "mobilenet_v1_0.25_128_quant.tflite"  # 128x128x3 uint8 input: 49 KB per tensor
LABELS = "imagenet_labels.txt"
TOP_K = 5

# name, source, frame width x height, pixel stride, row padding, rotation, spec override
_CASES = (
    ("cat_nv21_r0", "cat.bmp", (192, 144), 2, 16, 0, None),
    ("grace_hopper_nv21_r90", "grace_hopper.bmp", (192, 144), 2, 0, 90, None),
    ("parrot_i420_r270", "parrot.jpg", (192, 144), 1, 8, 270, None),
    ("synthetic_nv21_r180", "synthetic", (160, 120), 2, 24, 180, None),
    ("synthetic_odd_i420_r0", "synthetic", (75, 53), 1, 3, 0, None),
    ("synthetic_int8_48x40_r90", "synthetic", (160, 120), 2, 0, 90, frames.InputSpec(40, 48, "int8", 0.0123, -5, 120.0, 60.0)),
    ("synthetic_float32_24x32_r0", "synthetic", (96, 64), 1, 0, 0, frames.InputSpec(24, 32, "float32", mean=127.5, std=127.5)),
)


def _camera_rgb(source: str, size: tuple[int, int], rotation: int, seed: int) -> np.ndarray:
    """A landscape sensor frame whose content needs ``rotation`` clockwise to be upright."""
    from PIL import Image

    width, height = size
    if source == "synthetic":
        yy, xx = np.mgrid[0:height, 0:width]
        rng = np.random.default_rng(seed)
        base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], -1)
        noise = rng.integers(-12, 12, size=(height, width, 3))
        return np.clip(base + noise, 0, 255).astype(np.uint8)
    upright = Image.open(REFERENCE_DIR / source).convert("RGB")
    turned = upright.rotate(rotation, expand=True)  # PIL turns counter-clockwise: undone by the camera rotation
    return np.asarray(turned.resize((width, height), Image.BILINEAR))


def _model_io(model_path: Path) -> tuple[frames.InputSpec, dict, object]:
    from pipeline.core.litert import make_interpreter

    model = read_model(model_path)
    tin, tout = model.input_tensors[0], model.output_tensors[0]
    meta = model.metadata
    spec = frames.InputSpec(
        tin.shape[1], tin.shape[2], tin.dtype, tin.scale[0], tin.zero_point[0],
        (meta.get("mean") or [127.5])[0], (meta.get("std") or [127.5])[0],
    )
    out = {"dtype": tout.dtype, "scale": tout.scale[0], "zero_point": tout.zero_point[0]}
    return spec, out, make_interpreter(model_path, threads=1)


def _escape(value: str) -> str:
    """java.util.Properties value escaping (backslash, leading space, non-ASCII)."""
    text = value.replace("\\", "\\\\")
    text = "".join(c if ord(c) < 128 else f"\\u{ord(c):04x}" for c in text)
    return "\\" + text if text.startswith(" ") else text


def build_cases(reference_dir: Path = REFERENCE_DIR) -> dict[str, dict[str, bytes]]:
    """Every golden file's content (uncompressed), keyed by case name then file suffix."""
    spec_model, out_info, interpreter = _model_io(reference_dir / MODEL)
    labels = read_labels(reference_dir / LABELS)
    cases: dict[str, dict[str, bytes]] = {}
    for seed, (name, source, size, pixel_stride, padding, rotation, spec) in enumerate(_CASES):
        rgb_frame = _camera_rgb(source, size, rotation, seed)
        yuv = frames.rgb_to_yuv420(rgb_frame, pixel_stride, padding)
        rgb = frames.yuv420_to_rgb(yuv["y"], yuv["u"], yuv["v"], yuv["width"], yuv["height"],
                                   yuv["y_row_stride"], yuv["uv_row_stride"], yuv["uv_pixel_stride"])
        spec = spec or spec_model
        tensor = frames.preprocess_reference(rgb, spec, rotation)
        props = {
            "frame.width": yuv["width"], "frame.height": yuv["height"], "frame.yRowStride": yuv["y_row_stride"],
            "frame.uvRowStride": yuv["uv_row_stride"], "frame.uvPixelStride": yuv["uv_pixel_stride"],
            "frame.yLength": len(yuv["y"]), "frame.uLength": len(yuv["u"]), "frame.vLength": len(yuv["v"]),
            "rotation": rotation, "input.height": spec.height, "input.width": spec.width, "input.dtype": spec.dtype,
            "input.scale": spec.scale, "input.zeroPoint": spec.zero_point, "input.mean": spec.mean, "input.std": spec.std,
        }
        files = {"frame": yuv["y"] + yuv["u"] + yuv["v"], "input": tensor.astype(tensor.dtype.newbyteorder("<")).tobytes()}
        if spec is spec_model:
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
            interpreter.invoke()
            raw = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
            scores = frames.dequantize(raw, out_info["scale"], out_info["zero_point"])
            props.update({"output.dtype": out_info["dtype"], "output.scale": out_info["scale"],
                          "output.zeroPoint": out_info["zero_point"], "top.count": TOP_K})
            for rank, (index, score) in enumerate(frames.top_k(scores, TOP_K)):
                props.update({f"top.{rank}.index": index, f"top.{rank}.score": repr(score), f"top.{rank}.label": labels[index]})
            files["output"] = raw.tobytes()
        files["properties"] = "".join(f"{k}={_escape(str(v))}\n" for k, v in sorted(props.items())).encode()
        cases[name] = files
    return cases


def write_golden(out_dir: Path = GOLDEN_DIR, reference_dir: Path = REFERENCE_DIR) -> list[Path]:
    """Write the golden files (binary ones gzipped, byte-stable) and the case list; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, files in build_cases(reference_dir).items():
        for suffix, data in files.items():
            if suffix == "properties":
                path = out_dir / f"{name}.properties"
                path.write_bytes(data)
            else:
                path = out_dir / f"{name}.{suffix}.gz"
                with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
                    gz.write(data)
            written.append(path)
    (out_dir / "cases.txt").write_text("".join(f"{name}\n" for name, *_ in _CASES))
    shutil.copyfile(reference_dir / LABELS, out_dir / "labels.txt")
    return written + [out_dir / "cases.txt", out_dir / "labels.txt"]


if __name__ == "__main__":
    for p in write_golden():
        print(p.relative_to(REPO), p.stat().st_size)
