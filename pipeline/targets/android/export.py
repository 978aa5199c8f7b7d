"""``tflpipe export android``: put a run's model, labels and a model config into the Android app's assets.

The app hard-codes nothing about the model: input size, element type, quantization, normalization
and the label file all come from ``model_config.json`` written here from the .tflite itself.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.fsutil import ensure_writable_dir, write_bytes, write_json, write_text
from pipeline.core.labels import display_label, label_problem, read_labels
from pipeline.stages.artifacts import DEPLOYABLE as RUN_DIR_MODEL
from pipeline.stages.artifacts import LABELS as RUN_DIR_LABELS
from pipeline.targets.android.demo import input_spec

DEFAULT_ASSETS = Path(__file__).resolve().parents[3] / "android_demo/app/src/main/assets"
APP_BUILD_FILES = ("build.gradle", "build.gradle.kts")
MODEL_ASSET, LABELS_ASSET, CONFIG_ASSET = "model.tflite", "labels.txt", "model_config.json"
CONFIG_FORMAT = 1


def model_config(model_path: str | Path, labels: list[str]) -> dict:
    """The app's config for an image-classifier .tflite: everything the app needs to feed and read it."""
    from pipeline.core.litert import Classifier

    clf = Classifier.load(model_path, threads=1)
    spec = input_spec(clf)
    out = clf.model.output_tensors[0]
    if out.dtype not in ("uint8", "int8", "float32") or out.rank != 2:
        raise PipelineError(f"{Path(model_path).name} output is {out.dtype} {out.shape}, not a (1, classes) score vector")
    if len(labels) != out.shape[-1]:
        raise PipelineError(f"{len(labels)} labels for {out.shape[-1]} model outputs: the app would name classes wrongly")
    quantized = out.dtype != "float32"
    return {
        "format": CONFIG_FORMAT,
        "model_file": MODEL_ASSET,
        "labels_file": LABELS_ASSET,
        "num_classes": int(out.shape[-1]),
        "input": {
            "height": spec.height, "width": spec.width, "channels": 3, "layout": "NHWC", "color": "RGB",
            "dtype": spec.dtype, "scale": spec.scale, "zero_point": spec.zero_point, "mean": spec.mean, "std": spec.std,
        },
        "output": {
            "dtype": out.dtype,
            "scale": out.scale[0] if quantized else 1.0,
            "zero_point": out.zero_point[0] if quantized else 0,
        },
    }


def export_android(run_dir: str | Path, out_dir: str | Path | None = None) -> dict:
    """Copy RUN_DIR's int8 model and labels into ``out_dir`` (the app's assets) and write the config.

    Returns the config plus ``out_dir`` and ``files`` (the written paths).
    """
    target = default_assets() if out_dir is None else _given(out_dir)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PipelineError(f"run directory not found: {run_dir}")
    model, labels_path = run_dir / RUN_DIR_MODEL, run_dir / RUN_DIR_LABELS
    if not model.is_file():
        raise PipelineError(f"{run_dir} has no {RUN_DIR_MODEL}; run `tflpipe run` to produce it")
    if not labels_path.is_file():
        raise PipelineError(f"{run_dir} has no {RUN_DIR_LABELS}; the app needs labels to name what it sees")
    labels = read_labels(labels_path)
    for number, label in enumerate(labels, 1):
        problem = label_problem(label)
        if problem:  # the app splits labels.txt on \r too: one such label would shift every class name
            raise PipelineError(f"label {number} ('{display_label(label)}') of {labels_path} cannot go to the app: "
                                f"{problem}")
    config = model_config(model, labels)
    config["source"] = {"run_dir": str(run_dir.resolve()), "model": RUN_DIR_MODEL,
                        "sha256": hashlib.sha256(model.read_bytes()).hexdigest()}
    out = ensure_writable_dir(target)
    write_bytes(out / MODEL_ASSET, model.read_bytes())
    write_text(out / LABELS_ASSET, "".join(f"{label}\n" for label in labels))
    write_json(out / CONFIG_ASSET, config)
    return {**config, "out_dir": str(out), "files": [str(out / n) for n in (MODEL_ASSET, LABELS_ASSET, CONFIG_ASSET)]}


def default_assets() -> Path:
    """The demo app's assets folder, but only in a source checkout: an installed package has no app, and
    writing into site-packages would hide the files where nobody looks for them."""
    app = DEFAULT_ASSETS.parents[2]
    if DEFAULT_ASSETS.is_dir() and any((app / name).is_file() for name in APP_BUILD_FILES):
        return DEFAULT_ASSETS
    raise PipelineError("the Android demo app's sources are not next to this installation; "
                        "give its assets folder with --out (android_demo/app/src/main/assets of a checkout)")


def _given(out_dir: str | Path) -> Path:
    if not str(out_dir).strip():  # Path("") is the current folder
        raise PipelineError("--out must not be empty")
    return Path(out_dir)
