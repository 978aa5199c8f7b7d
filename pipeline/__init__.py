"""tflpipe: lightweight CNNs to pruned, quantized, metadata-carrying int8 TFLite for phones and the Edge TPU.

The public API is :mod:`pipeline.api`; its names are also reachable here (``pipeline.run_pipeline``),
loaded on first use so that the foundation (``pipeline.core``), which the zoo and the Edge TPU
package import, never pulls in the layers above it.
"""
from __future__ import annotations

import os
from typing import Any

# TF-MOT and larq need the Keras 2 API, chosen when TensorFlow is first imported: set it here, the first
# code of any import of the project, so that no import order (TF-MOT or larq before pipeline.core.tf_env)
# can load TensorFlow with Keras 3.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def __getattr__(name: str) -> Any:
    import importlib

    api = importlib.import_module("pipeline.api")  # not `from pipeline import api`, which would call this again
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
