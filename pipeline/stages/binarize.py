"""Binarized networks (1-bit weights and activations) with larq, and their Larq Compute Engine file.

A binarized convolution keeps sign(W) and sign(x) only, so a dot product becomes XNOR + popcount and
every weight packs into one bit: 32x less weight memory than float32 and, on ARM with Larq Compute
Engine (LCE) kernels, several times faster than an int8 convolution.

* Courbariaux, Hubara, Soudry, El-Yaniv and Bengio, 2016, "Binarized Neural Networks: Training Deep
  Neural Networks with Weights and Activations Constrained to +1 or -1" (BinaryNet,
  arXiv:1602.02830): sign() in the forward pass, the straight-through estimator (gradient of
  hard-tanh) in the backward pass, real-valued latent weights clipped to [-1, 1], BatchNorm after
  every binary layer, Adam.
* Rastegari, Ordonez, Redmon and Farhadi, 2016, "XNOR-Net: ImageNet Classification Using Binary
  Convolutional Neural Networks" (ECCV 2016, arXiv:1603.05279): the XNOR/popcount formulation, and
  the convention of keeping the first and the last layer in full precision.

``larq`` (training) and ``larq-compute-engine`` (conversion) are optional: this module imports
without them; its functions raise :class:`PipelineError` saying what to install. Measured with the
project stack (TensorFlow 2.21, tf_keras 2.21, NumPy 2.4): larq 0.14.0 trains, and LCE 0.16.0's
converter writes a flatbuffer with ``LceBconv2d``/``LceQuantize`` custom ops, but LCE's Python
interpreter (``larq_compute_engine.testing.Interpreter``) is built against the NumPy 1.x C API and
reads every NumPy 2 input as 0 bytes, so :func:`lce_predict` reports that instead of running. Plain
LiteRT cannot run an LCE file (its custom ops are unknown to it); the LCE runtime on the device can.
Install both without their dependencies, or pip downgrades NumPy (larq 0.14 declares numpy<2):
``pip install --no-deps larq terminaltables larq-compute-engine``.
"""
from __future__ import annotations

import math
from dataclasses import replace
from importlib import metadata
from typing import Sequence

import numpy as np

from pipeline.core.data import ImageSet
from pipeline.core.errors import PipelineError
from pipeline.core.tf_env import keras, tf
from pipeline.stages.train import FitSettings, fit

INSTALL_HINT = "pip install --no-deps larq terminaltables larq-compute-engine"

# BinaryNet trains its latent weights without decay (decay pulls them to 0, where signs flip at
# random) and without label smoothing; the pipeline's SGD + cosine loop is otherwise reused as is.
BINARY_FIT = FitSettings(epochs=10, learning_rate=0.05, weight_decay=0.0, label_smoothing=0.0)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _stack() -> str:
    return f"tensorflow {tf.__version__}, tf_keras {keras.__version__}, numpy {np.__version__}"


def _larq():
    """The larq package, or a PipelineError that says how to install it."""
    try:
        import larq
    except Exception as exc:  # ImportError, or an incompatibility raised while larq imports
        raise PipelineError(
            f"binarized networks need larq, which does not import ({type(exc).__name__}: {exc}); install larq: "
            f"`{INSTALL_HINT}` (--no-deps: larq 0.14 declares numpy<2 but runs with {_stack()})"
        ) from None
    return larq


def _lce():
    """The larq_compute_engine package, or a PipelineError naming what failed and the versions."""
    try:
        import larq_compute_engine
    except Exception as exc:
        raise PipelineError(
            f"LCE conversion needs larq-compute-engine ({_version('larq-compute-engine')}), which does not import "
            f"({type(exc).__name__}: {exc}) with {_stack()}; install it with `{INSTALL_HINT}`"
        ) from None
    return larq_compute_engine


def build_binary_net(input_shape: Sequence[int] = (32, 32, 3), classes: int = 10,
                     filters: Sequence[int] = (64, 128, 256), binary_first_layer: bool = True,
                     pool_before_bn: bool = False, name: str = "binarynet") -> keras.Model:
    """A small BinaryNet / XNOR-Net style classifier for [-1, 1] inputs (the pipeline's normalization).

    A stem convolution on the real-valued pixels (3x3, ``filters[0]`` channels) is followed by one
    block per entry of ``filters``: a binarized 3x3 convolution (``ste_sign`` on inputs and weights,
    latent weights clipped to [-1, 1], no bias), BatchNorm and 2x2 max pooling. Global average
    pooling and a float Dense + softmax classify. BatchNorm comes before the pooling (the order
    LCE fuses best: BatchNorm folds into ``LceBconv2d``'s output transform and the pooling runs on
    bit-packed signs as ``LceBMaxPool2d``). ``pool_before_bn`` gives larq's BinaryNet example order
    (conv, pool, BatchNorm): there the BN stays as float MUL/ADD in the LCE file, but in one short
    CIFAR-10 run (10k images, 314 steps) it scored 39.8% against 35.3% (single seed each).
    ``binary_first_layer`` binarizes the stem's weights as BinaryNet does (Courbariaux et al.,
    2016); False keeps it float as XNOR-Net does (Rastegari et al., 2016). Activations entering
    the stem are never binarized (they are pixels).
    """
    lq = _larq()
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3:
        raise PipelineError(f"input_shape must be (height, width, channels), got {input_shape}")
    if not filters:
        raise PipelineError("filters must name at least one binary block")
    if min(input_shape[:2]) < 2 ** len(filters):
        raise PipelineError(f"{len(filters)} blocks halve the input {len(filters)} times; {input_shape[:2]} is too "
                            f"small (at least {2 ** len(filters)} px), use fewer filters")
    if classes < 2:
        raise PipelineError(f"a classifier needs at least 2 classes, got {classes}")
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                  use_bias=False, padding="same")

    inputs = keras.Input(input_shape)
    if binary_first_layer:
        x = lq.layers.QuantConv2D(filters[0], 3, padding="same", kernel_quantizer="ste_sign",
                                  kernel_constraint="weight_clip", use_bias=False, name="stem_conv")(inputs)
    else:
        x = keras.layers.Conv2D(filters[0], 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, scale=False, name="stem_bn")(x)
    for i, width in enumerate(filters):
        x = lq.layers.QuantConv2D(int(width), 3, name=f"block{i + 1}_bconv", **binary)(x)
        bn = keras.layers.BatchNormalization(momentum=0.9, scale=False, name=f"block{i + 1}_bn")
        pool = keras.layers.MaxPool2D(2, name=f"block{i + 1}_pool")
        x = bn(pool(x)) if pool_before_bn else pool(bn(x))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(classes, name="logits")(x)
    outputs = keras.layers.Activation("softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)


def train_binary(model: keras.Model, train: ImageSet, val: ImageSet | None = None,
                 settings: FitSettings | None = None, callbacks=()) -> dict:
    """Train a binarized model in place with the pipeline's loop (:func:`pipeline.stages.train.fit`).

    ``settings`` defaults to :data:`BINARY_FIT`; decoupled weight decay is turned off whatever it
    says, since it would act on the latent binary weights. Returns fit's per-epoch history.
    """
    _larq()  # larq layers must be registered (and importable) to train
    settings = settings or BINARY_FIT
    if settings.weight_decay:
        settings = replace(settings, weight_decay=0.0)
    if len(train.class_names) != model.output_shape[-1]:
        raise PipelineError(f"{model.name} predicts {model.output_shape[-1]} classes, the data has "
                            f"{len(train.class_names)}; build it with classes={len(train.class_names)}")
    if tuple(train.images.shape[1:]) != tuple(model.input_shape[1:]):
        raise PipelineError(f"{model.name} takes {model.input_shape[1:]} images, the data holds "
                            f"{train.images.shape[1:]}; load the data at the model's size")
    return fit(model, train, val, settings, callbacks=callbacks, recalibrate=False)  # reported as trained


def binary_model_summary(model: keras.Model) -> dict:
    """Binarized weight count and weight memory at 1 bit (packed) against float32.

    A weight counts as binarized when larq marks it with ``precision == 1`` (the kernels of
    Quant* layers whose kernel quantizer is a 1-bit sign); every other variable (stem and Dense
    weights, BatchNorm parameters and moving statistics) counts as float32. Packed sizes round each
    binary tensor up to whole bytes. Works without larq (a float model reports 0 binary weights).
    """
    binary_layers: dict[str, int] = {}
    binary = floats = 0
    packed_bits_bytes = 0
    seen: set[int] = set()
    for layer in _leaf_layers(model):
        for weight in layer.weights:
            if id(weight) in seen:
                continue
            seen.add(id(weight))
            count = int(np.prod(weight.shape.as_list())) if weight.shape.rank else 1
            if getattr(weight, "precision", None) == 1:
                binary += count
                packed_bits_bytes += math.ceil(count / 8)
                binary_layers[layer.name] = binary_layers.get(layer.name, 0) + count
            else:
                floats += count
    binary_activation_layers = [
        layer.name for layer in _leaf_layers(model)
        if getattr(getattr(layer, "input_quantizer", None), "precision", None) == 1
    ]
    float32_bytes = 4 * (binary + floats)
    packed_bytes = packed_bits_bytes + 4 * floats
    return {
        "binary_weights": binary,
        "float_weights": floats,
        "binary_fraction": binary / max(1, binary + floats),
        "binary_layers": binary_layers,
        "binary_activation_layers": binary_activation_layers,
        "binary_weights_float32_bytes": 4 * binary,
        "binary_weights_packed_bytes": packed_bits_bytes,
        "float32_bytes": float32_bytes,
        "packed_bytes": packed_bytes,
        "compression": float32_bytes / max(1, packed_bytes),
    }


def _leaf_layers(model: keras.Model):
    """Every layer holding its own weights, nested models unrolled."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def convert_lce(model: keras.Model, int8_io: bool = False) -> bytes:
    """A Larq Compute Engine .tflite flatbuffer: binary convs become LceBconv2d on bit-packed weights.

    It runs on the LCE runtime (Android/ARM64 builds of LCE's interpreter or its benchmark
    tool), not on stock LiteRT, which rejects the custom op ``LceQuantize``. A plain
    ``tf.lite.TFLiteConverter`` also converts larq models, but to float CONV_2D + SIGN ops with
    float32 weights (no 1-bit kernels, ~20x larger). ``int8_io`` gives int8 input and output
    tensors (LCE's ``inference_input_type``/``inference_output_type``).
    """
    _larq()
    lce = _lce()
    io_type = tf.int8 if int8_io else tf.float32
    try:
        return lce.convert_keras_model(model, inference_input_type=io_type, inference_output_type=io_type)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise PipelineError(f"larq-compute-engine {_version('larq-compute-engine')} could not convert {model.name} "
                            f"with {_stack()}: {type(exc).__name__}: {first}") from None


def lce_predict(flatbuffer: bytes, images: np.ndarray, threads: int = 1) -> np.ndarray:
    """Outputs of an LCE flatbuffer for a batch of model inputs, via LCE's Python interpreter (x86 reference kernels).

    LCE 0.16.0's interpreter extension is compiled against the NumPy 1.x C API; under NumPy 2 it
    sees every input array as 0 bytes. That case raises PipelineError instead of a RuntimeError.
    """
    lce = _lce()
    try:
        interpreter = lce.testing.Interpreter(flatbuffer, num_threads=threads)
        return interpreter.predict(np.ascontiguousarray(images, dtype=interpreter.input_types[0]))
    except RuntimeError as exc:
        message = str(exc).strip()
        if "but got 0" in message and int(np.__version__.split(".")[0]) >= 2:
            raise PipelineError(
                f"larq-compute-engine {_version('larq-compute-engine')}'s interpreter extension "
                f"(interpreter_wrapper_lite, built for the NumPy 1.x C API) reads NumPy {np.__version__} arrays as 0 "
                "bytes; run LCE models with the LCE runtime on the device, or in an environment with numpy<2"
            ) from None
        raise PipelineError(f"the LCE interpreter failed: {message.splitlines()[0] if message else exc!r}") from None


def binarize(train: ImageSet, val: ImageSet, out, filters: Sequence[int] = (64, 128, 256),
             binary_first_layer: bool = True, settings: FitSettings | None = None) -> dict:
    """Train a binarized net on ``train``, convert it for LCE and write the artifacts into ``out``.

    Writes ``binary.h5`` (the larq Keras model), ``model_lce.tflite`` (1-bit kernels for the LCE
    runtime), ``labels.txt`` and ``binarize.json`` (returned): validation accuracy of the Keras
    model, binary/float weight counts and packed size, the LCE file's size, gzip size and ops.
    Both packages are checked before training so a missing one fails in seconds, not after it.
    """
    import gzip
    from pathlib import Path

    from pipeline.core.fsutil import save_keras_model, write_bytes, write_json, write_text
    from pipeline.core.tflite_file import read_model
    from pipeline.stages.train import keras_accuracy

    _larq(), _lce()
    out = Path(out)
    model = build_binary_net(train.images.shape[1:], len(train.class_names), filters, binary_first_layer)
    history = train_binary(model, train, val, settings)
    out.mkdir(parents=True, exist_ok=True)
    save_keras_model(model, out / "binary.h5")
    flatbuffer = convert_lce(model)
    write_bytes(out / "model_lce.tflite", flatbuffer)
    write_text(out / "labels.txt", "\n".join(train.class_names) + "\n")
    summary = binary_model_summary(model)
    report = {
        "accuracy": keras_accuracy(model, val),
        "n": len(val),
        "epochs": len(history.get("loss", [])),
        "filters": [int(f) for f in filters],
        "binary_first_layer": binary_first_layer,
        **{k: summary[k] for k in ("binary_weights", "float_weights", "binary_fraction", "float32_bytes",
                                   "packed_bytes", "compression")},
        "lce_file_bytes": len(flatbuffer),
        "lce_gzip_bytes": len(gzip.compress(flatbuffer, 9)),
        "lce_ops": read_model(out / "model_lce.tflite").op_histogram(),
        "deploy": "Larq Compute Engine runtime (lce_benchmark_model or an app linking LCE's interpreter, "
                  "Android/ARM64); stock LiteRT and the Edge TPU cannot run LceBconv2d",
    }
    write_json(out / "binarize.json", report)
    return report

