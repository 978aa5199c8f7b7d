"""Everything tests share, in one module: CLI invocation, tiny image data, tiny converted models,
and a run folder standing in for ``tflpipe run``'s with an official model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
from click.testing import CliRunner, Result

from pipeline.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference_models"
OFFICIAL_MODEL = "mobilenet_v1_0.25_128_quant.tflite"
TINY_V2 = ["--model", "mobilenet_v2", "--alpha", "0.35", "--input-size", "32", "--batch-size", "16"]
TINY_V1 = ["--model", "mobilenet_v1", "--alpha", "0.25", "--input-size", "32", "--batch-size", "16"]


def invoke(*args) -> Result:
    """``tflpipe ARGS`` in-process, every argument as a string."""
    return CliRunner().invoke(main, [str(a) for a in args])


def json_output(result: Result) -> dict:
    """The JSON a ``--json`` command printed (after any progress lines); the command must have succeeded."""
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def colour_blobs(classes: int = 3, per_class: int = 12, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images a tiny net can tell apart: a class-coloured square on dark noise; (N, H, W, 3) uint8 and labels."""
    rng = np.random.default_rng(seed)
    palette = np.array([[220, 40, 40], [40, 200, 60], [50, 60, 230], [230, 200, 40], [200, 50, 200]])
    images = rng.integers(0, 60, size=(classes * per_class, size, size, 3)).astype(np.uint8)
    labels = np.repeat(np.arange(classes), per_class)
    for i, c in enumerate(labels):
        y, x = rng.integers(0, size // 2, size=2)
        images[i, y : y + size // 2, x : x + size // 2] = palette[c % len(palette)]
    return images, labels


def write_image_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 32, seed: int = 0) -> Path:
    """The blobs as an ``image_dataset_from_directory`` folder (``root/class_<c>/<i>.png``)."""
    from PIL import Image

    images, labels = colour_blobs(classes, per_class, size, seed)
    for i, (image, c) in enumerate(zip(images, labels)):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root


def official_run_dir(out: Path, reference_dir: Path = REFERENCE_DIR) -> Path:
    """A RUN_DIR as ``tflpipe run`` leaves it, with an official model standing in for ours."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(reference_dir / OFFICIAL_MODEL, out / "model_int8.tflite")
    shutil.copyfile(reference_dir / "imagenet_labels.txt", out / "labels.txt")
    return out


def convert(build: Callable, shape: tuple[int, ...], path: Path, int8: bool = True, batch: int | None = 1) -> Path:
    """Convert the tiny Keras model ``build(inputs)`` (full int8 with uint8 I/O unless ``int8`` is False).

    Used by the Edge TPU and NNAPI rule tests; each converts in about a second."""
    from pipeline.core.tf_env import keras, tf

    inputs = keras.Input(shape=shape, batch_size=batch)
    model = keras.Model(inputs, build(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)

        def data():
            for _ in range(8):
                yield [rng.uniform(-1, 1, size=(1, *[d or 8 for d in shape])).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    path.write_bytes(converter.convert())
    return path


def conv_net(x):
    from pipeline.core.tf_env import keras

    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.layers.Dense(4, activation="softmax")(x)


def hard_swish_in_middle(x):
    """conv -> HARD_SWISH (not on the Edge TPU) -> conv -> pool -> dense: everything after it is CPU."""
    from pipeline.core.tf_env import keras, tf

    x = keras.layers.Conv2D(8, 3, padding="same")(x)
    x = keras.layers.Lambda(lambda t: t * tf.nn.relu6(t + 3.0) / 6.0)(x)
    return conv_net(x)


def five_d(x):
    """A reshape to 5-D with two outer dimensions above 1, a 5-D transpose and back."""
    from pipeline.core.tf_env import keras, tf

    x = keras.layers.Conv2D(8, 1)(x)
    x = keras.layers.Lambda(lambda t: tf.transpose(tf.reshape(t, (2, 2, 2, 2, 8)), (1, 0, 2, 3, 4)))(x)
    x = keras.layers.Lambda(lambda t: tf.reshape(t, (1, 4, 4, 8)))(x)
    return conv_net(x)


def big_dense(x):
    """About 9 MB of int8 weights: more than the Edge TPU's 8 MiB parameter cache."""
    from pipeline.core.tf_env import keras

    x = keras.layers.Flatten()(x)
    return keras.layers.Dense(3000)(keras.layers.Dense(3000)(x))
