"""Single import point for TensorFlow so every module gets the Keras 2 API that TF-MOT needs.

TF-MOT 0.8 only accepts tf_keras (Keras 2) models; ``TF_USE_LEGACY_KERAS`` must be set before
TensorFlow is first imported, so nothing in the project imports tensorflow directly.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras"]
