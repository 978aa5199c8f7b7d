"""Single import point for TensorFlow so every module gets the Keras 2 API that TF-MOT needs.

TF-MOT 0.8 only accepts tf_keras (Keras 2) models; ``TF_USE_LEGACY_KERAS`` must be set before
TensorFlow is first imported, so nothing in the project imports tensorflow directly.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """TensorFlow's C++ runtime logs CUDA probing noise before its log level applies; hide it."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _stderr_silenced():
    import tensorflow as tf
    import tf_keras as keras

    tf.config.list_physical_devices("GPU")  # the CUDA probe logs here, inside the silence

tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras"]
