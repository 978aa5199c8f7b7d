"""Stage 4: Keras model to TFLite: float32, post-training int8 (PTQ) or int8 from a QAT model,
and the other post-training modes for CPU/GPU targets.

Full-integer conversion restricts the converter to int8 builtin kernels, so a layer that cannot be
quantized fails the conversion loudly instead of leaving a float op behind. The other modes keep
float input/output and (some) float math, so they suit CPUs and GPUs but not the Edge TPU:
``dynamic`` (int8 weights, float activations), ``float16`` (half-size weights, GPU-friendly),
``int16x8`` (int16 activations with int8 weights, for accuracy-sensitive nets) and
``sparse_float32`` (float32 with pruned weights stored sparse, for XNNPACK's sparse inference).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from pipeline.core.data import normalize
from pipeline.core.errors import PipelineError
from pipeline.core.keras_convert import keras_converter
from pipeline.stages.options import CONVERSION_MODES, IO_DTYPES

if TYPE_CHECKING:
    from pipeline.core.tf_env import keras

TRUST_FLAG = "--trust-model-code"
# Packages whose classes a config may name by module: what we ship or depend on, never an arbitrary import.
_TRUSTED_PACKAGES = ("keras", "tf_keras", "tensorflow_model_optimization", "keras_models")
# Where the TensorFlow functions a TFOpLambda layer may call live: tensor math only. It can name any
# TensorFlow API, including ones that write or delete files (tf.io.write_file, tf.io.gfile.rmtree).
_PURE_TF_MODULES = frozenset(f"tensorflow.python.ops.{m}" for m in (
    "array_ops", "array_ops_stack", "gen_array_ops", "math_ops", "gen_math_ops", "nn_ops", "gen_nn_ops", "nn_impl",
    "clip_ops", "image_ops_impl", "gen_image_ops", "special_math_ops", "tensor_getitem_override", "sort_ops"))
# Encodings of values (tuples, shapes, tensor specs, constants) in Keras configs: rebuilt as data, not code.
_DATA_CLASSES = frozenset(("__tuple__", "__ellipsis__", "__bytes__", "__tensor__", "__numpy__", "TensorShape", "TypeSpec",
                           "CompositeTensor"))
_NOT_LOADED = ("compile_config", "training_config")  # load_model(compile=False) never deserializes these


def load_keras_model(path: str | Path, trust_code: bool = False) -> keras.Model:
    """Load a ``.keras``/``.h5`` file or SavedModel folder, QAT-wrapped ones and zoo custom layers included.

    Keras runs code stored in the file while loading it (a Lambda layer's marshalled function, a class
    imported from a module the file names), so unless ``trust_code`` the file's config is read and
    checked first, without running any of it, and a file holding such code is refused.
    """
    import tensorflow_model_optimization as tfmot

    from pipeline.core.tf_env import keras
    from pipeline.stages.qat import custom_objects

    path = Path(path)
    if not path.exists():
        raise PipelineError(f"model not found: {path}")
    with tfmot.quantization.keras.quantize_scope(custom_objects()):
        if not trust_code:
            found = _unsafe_object(_model_configs(path), _keras_builtins(keras), keras)
            if found:
                raise PipelineError(f"refusing to load {path}: {found}; loading it would run code this project does "
                                    f"not ship (pass {TRUST_FLAG} if you trust where the file came from)")
        try:
            return keras.models.load_model(path, compile=False, safe_mode=not trust_code)
        except (OSError, ValueError, TypeError) as exc:
            reason = str(exc).splitlines()[0]
            if "Weight count mismatch" in reason and "quant_" in reason:
                reason = ("it looks like a cluster-preserving QAT (CQAT/PCQAT) model, which TF-MOT cannot rebuild "
                          "from a file; pass the clustered float model it came from with --qat-base")
            raise PipelineError(f"cannot load Keras model {path}: {reason}") from None


def _model_configs(path: Path) -> list:
    """The serialized objects Keras would rebuild from ``path``: read as JSON, nothing deserialized."""
    import h5py

    try:
        if path.is_dir():
            return _saved_model_configs(path)
        if path.suffix == ".keras" and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return [json.loads(archive.read("config.json"))]
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                config = f.attrs.get("model_config")
            return [json.loads(config)] if config is not None else []
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise PipelineError(f"cannot load Keras model {path}: its config cannot be read ({exc})".splitlines()[0]) from None
    return []  # no format Keras reads: its loader says so


def _saved_model_configs(path: Path) -> list:
    """The layer configs in a SavedModel's ``keras_metadata.pb``; without one nothing can be checked."""
    from google.protobuf.message import DecodeError
    from tf_keras.protobuf import saved_metadata_pb2

    metadata_file = path / "keras_metadata.pb"
    if not metadata_file.is_file():
        raise PipelineError(f"refusing to load {path}: a SavedModel without keras_metadata.pb cannot be checked for "
                            f"code stored in it; pass {TRUST_FLAG} if you trust where the file came from")
    metadata = saved_metadata_pb2.SavedMetadata()
    try:
        metadata.ParseFromString(metadata_file.read_bytes())
    except DecodeError as exc:
        raise ValueError(f"keras_metadata.pb is damaged: {exc}") from None
    return [json.loads(node.metadata) for node in metadata.nodes if node.metadata]


def _keras_builtins(keras) -> frozenset[str]:
    """Class names Keras resolves to its own code (Lambda excepted: it carries the file's code)."""
    namespaces = (keras.layers, keras.initializers, keras.regularizers, keras.constraints, keras.activations,
                  keras.losses, keras.metrics, keras.mixed_precision)
    names = {name for space in namespaces for name in dir(space) if not name.startswith("_")}
    names |= {"Functional", "Sequential", "Model", "TFOpLambda", "SlicingOpLambda", "function"}
    return frozenset((names | _DATA_CLASSES) - {"Lambda"})


def _unsafe_object(config, builtins: frozenset[str], keras) -> str | None:
    """What in a serialized Keras config would run code we do not ship when rebuilt (None: nothing)."""
    if isinstance(config, list):
        return next((found for item in config if (found := _unsafe_object(item, builtins, keras))), None)
    if not isinstance(config, dict):
        return None
    class_name, inner, module = config.get("class_name"), config.get("config"), config.get("module")
    if isinstance(class_name, str):
        name = inner.get("name") if isinstance(inner, dict) else None
        what = f"layer {str(name)[:80]!r}" if name else "an object"
        if class_name in ("Lambda", "__lambda__"):
            return f"{what} is a Lambda (Python code)"
        if isinstance(module, str) and module.split(".")[0] not in _TRUSTED_PACKAGES:
            return f"{what} of class {class_name[:80]!r} comes from module {module[:80]!r}"
        if class_name not in builtins and keras.utils.get_registered_object(class_name) is None:
            return f"{what} has class {class_name[:80]!r}, which is no Keras, TF-MOT or zoo class"
        function = inner.get("function") if isinstance(inner, dict) else None
        if class_name in ("TFOpLambda", "SlicingOpLambda") and not _pure_tf_function(function):
            return f"{what} calls TensorFlow function {str(function)[:80]!r}, which is no tensor math"
    return next((found for key, value in config.items()
                 if key not in _NOT_LOADED and (found := _unsafe_object(value, builtins, keras))), None)


def _pure_tf_function(function) -> bool:
    """Whether TensorFlow API name ``function`` (as a TFOpLambda stores it) is tensor math."""
    from tensorflow.python.util.tf_export import get_symbol_from_name

    symbol = get_symbol_from_name(function) if isinstance(function, str) else None
    return getattr(symbol, "__module__", None) in _PURE_TF_MODULES


def representative_dataset(images: np.ndarray, count: int = 200) -> Callable[[], Iterator[list[np.ndarray]]]:
    """Calibration samples for the converter, normalized exactly as in training."""
    chosen = images[np.random.default_rng(0).permutation(len(images))[:count]]

    def generate() -> Iterator[list[np.ndarray]]:
        for image in chosen:
            yield [normalize(image[None])]

    return generate


def convert(
    model: keras.Model,
    mode: str,
    calibration_images: np.ndarray | None = None,
    io_dtype: str = "uint8",
) -> bytes:
    """Return the flatbuffer of ``model`` converted in ``mode`` (a key of :data:`CONVERSION_MODES`).

    ``calibration_images`` (uint8, N x H x W x 3) are required for the calibrated modes; ``io_dtype``
    is the full-int8 models' input/output type.
    """
    from pipeline.core.tf_env import tf

    spec = CONVERSION_MODES.get(mode)
    if spec is None:
        raise PipelineError(f"unknown conversion mode {mode!r}; choose one of {', '.join(CONVERSION_MODES)}")
    if io_dtype not in IO_DTYPES:
        raise PipelineError(f"integer I/O type must be one of {', '.join(IO_DTYPES)}, got {io_dtype!r}")
    converter = keras_converter(model)
    if spec.calibrated:
        check_calibration_images(model, calibration_images, mode)
        converter.representative_dataset = representative_dataset(calibration_images)
    if spec.configure is not None:
        spec.configure(converter, tf, io_dtype)
    return run_converter(converter, mode)


def check_calibration_images(model: keras.Model, images: np.ndarray | None, mode: str) -> None:
    if images is None or not len(images):
        raise PipelineError(f"{mode} conversion needs representative images (--representative-data)")
    expected = tuple(model.input_shape[1:3])
    if tuple(images.shape[1:3]) != expected:
        raise PipelineError(f"representative images are {images.shape[1]}x{images.shape[2]} "
                            f"but the model takes {expected[0]}x{expected[1]}")


def run_converter(converter, mode: str) -> bytes:
    """The converter's flatbuffer, or its first error line as a PipelineError."""
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError and assorted internals
        first = next((line for line in str(exc).splitlines() if "error" in line.lower()), str(exc).splitlines()[0])
        raise PipelineError(f"TFLite conversion ({mode}) failed: {first.strip()}") from None


def float_ops(path: str | Path) -> list[str]:
    """Ops of a converted integer model that compute in float (should be none after full-int8)."""
    from pipeline.core.tflite_file import read_model

    model = read_model(path)
    found = set()
    for op in model.operators:
        if op.name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        if any(model.tensors[i].dtype == "float32" for i in op.inputs + op.outputs if i >= 0):
            found.add(op.name)
    return sorted(found)
