"""The MAC/parameter counter, and every zoo net at its paper configuration against published figures.

Published figures are rounded, so a row passes within 3% unless its convention column says why it
differs. MACs are conv + dense multiply-accumulates with the classifier included; params are
trainable weights (BN gamma/beta included, moving statistics not) unless the row says otherwise.
"""
from __future__ import annotations

from typing import NamedTuple

import pytest

from keras_models import build_model
from keras_models.macs import count
from pipeline.core.tf_env import keras


class Published(NamedTuple):
    name: str
    knobs: dict
    size: int
    macs_m: float | None  # published mult-adds, millions (None: not published)
    params_m: float | None  # published parameters, millions
    source: str
    convention: str = ""  # how the published count differs from ours, if it does
    macs_tolerance: float = 0.03
    params_key: str = "params"  # "params" or "params_without_bn"


PAPER_TABLE = [
    Published("mobilenet_v1", {"alpha": 1.0}, 224, 569, 4.2, "Howard 2017, Table 8"),
    Published("mobilenet_v1", {"alpha": 0.75}, 224, 325, 2.6, "Howard 2017, Table 6"),
    Published("mobilenet_v1", {"alpha": 0.5}, 224, 149, 1.3, "Howard 2017, Table 6"),
    Published("mobilenet_v1", {"alpha": 0.25}, 224, 41, None, "Howard 2017, Table 6",
              "params printed as 0.5M, too coarse to compare"),
    Published("mobilenet_v1", {"alpha": 1.0}, 160, 290, 4.2, "Howard 2017, Table 7"),
    Published("mobilenet_v1", {"alpha": 1.0}, 128, 186, 4.2, "Howard 2017, Table 7"),
    Published("mobilenet_v2", {"alpha": 1.0}, 224, 300, 3.4, "Sandler 2018, Table 4",
              "paper's 3.4M leaves out BN gamma/beta (with them: 3.50M, as Keras/torchvision report)",
              params_key="params_without_bn"),
    Published("mobilenet_v2", {"alpha": 1.4}, 224, 585, None, "Sandler 2018, Table 4",
              "paper's 6.9M params for 1.4 is not reproduced by Keras or timm either (6.1M, as here)"),
    Published("mobilenet_v3_large", {"alpha": 1.0}, 224, 219, 5.4, "Howard 2019, Table 3"),
    Published("mobilenet_v3_large", {"alpha": 0.75}, 224, 155, 4.0, "Howard 2019, Table 3"),
    Published("mobilenet_v3_large", {"alpha": 1.0, "minimalistic": True}, 224, 209, 3.9, "Howard 2019, Table 3"),
    Published("mobilenet_v3_small", {"alpha": 1.0}, 224, 56, 2.5, "Howard 2019, Table 3"),
    Published("mobilenet_v3_small", {"alpha": 0.75}, 224, 44, 2.0, "Howard 2019, Table 3"),
    Published("squeezenet_1_0", {}, 224, 819, 1.248424, "params: Iandola 2016, Table 1; MACs: torchvision (0.82 G)",
              "paper gives no MAC count"),
    Published("squeezenet_1_1", {}, 224, 350, 1.235496, "torchvision model table (0.35 G, 1,235,496)",
              "the v1.1 release note gives only '2.4x less computation than 1.0'"),
    Published("shufflenet_v1", {"groups": 3, "alpha": 1.0}, 224, 140, None, "Zhang 2017, Table 2",
              "paper's 'MFLOPs' are mult-adds; no params published"),
    Published("shufflenet_v1", {"groups": 8, "alpha": 1.0}, 224, 140, None, "Zhang 2017, Table 2",
              "paper's 'MFLOPs' are mult-adds; no params published"),
    Published("shufflenet_v1", {"groups": 3, "alpha": 0.5}, 224, 38, None, "Zhang 2017, Table 2",
              "paper's 'MFLOPs' are mult-adds; no params published"),
    Published("shufflenet_v2", {"alpha": 0.5}, 224, 41, 1.4, "Ma 2018, Table 5", "paper's 'FLOPs' are mult-adds"),
    Published("shufflenet_v2", {"alpha": 1.0}, 224, 146, 2.3, "Ma 2018, Table 5", "paper's 'FLOPs' are mult-adds"),
    Published("shufflenet_v2", {"alpha": 1.5}, 224, 299, 3.5, "Ma 2018, Table 5", "paper's 'FLOPs' are mult-adds"),
    Published("shufflenet_v2", {"alpha": 2.0}, 224, 591, 7.4, "Ma 2018, Table 5", "paper's 'FLOPs' are mult-adds"),
    Published("mnasnet_a1", {"alpha": 1.0}, 224, 312, 3.9, "Tan 2019, Table 1"),
    Published("mnasnet_b1", {"alpha": 1.0}, 224, 310, 4.383312, "torchvision mnasnet1_0 (= B1: 0.31 G, 4,383,312)"),
    Published("efficientnet_lite0", {}, 224, 407, 4.7, "tensorflow/tpu efficientnet/lite README",
              "official MAdds run ~5% above conv+dense MACs (independent counts: 385M)", macs_tolerance=0.06),
    Published("efficientnet_lite1", {}, 240, 631, 5.4, "tensorflow/tpu efficientnet/lite README",
              "official MAdds run ~5% above conv+dense MACs (independent counts: 600M)", macs_tolerance=0.06),
    Published("efficientnet_lite2", {}, 260, 899, 6.1, "tensorflow/tpu efficientnet/lite README",
              "official MAdds run ~5% above conv+dense MACs (independent counts: 860M)", macs_tolerance=0.06),
    Published("efficientnet_lite3", {}, 280, None, 8.2, "tensorflow/tpu efficientnet/lite README"),
    Published("efficientnet_lite4", {}, 300, None, 13.0, "tensorflow/tpu efficientnet/lite README"),
    Published("resnet50", {}, 224, 3800, 25.6, "He 2016, Table 1 (FLOPs = multiply-adds); params: Keras applications"),
    Published("densenet121", {}, 224, 2830, 8.0, "params: Huang 2017, Table 2; MACs: torchvision (2.83 G)"),
]
# The figures the issue names; the other rows (bigger or repeated builds) run with -m slow.
DEFAULT_ROWS = {("mobilenet_v1", 224, 1.0), ("mobilenet_v1", 224, 0.5), ("mobilenet_v2", 224, 1.0),
                ("mobilenet_v3_large", 224, 1.0), ("mobilenet_v3_small", 224, 1.0), ("shufflenet_v2", 224, 1.0),
                ("squeezenet_1_1", 224, None), ("mnasnet_a1", 224, 1.0), ("efficientnet_lite0", 224, None)}


def _row_id(row: Published) -> str:
    knobs = ",".join(f"{k}={v}" for k, v in row.knobs.items())
    return f"{row.name}[{knobs}]@{row.size}"


def _is_default(row: Published) -> bool:
    return (row.name, row.size, row.knobs.get("alpha")) in DEFAULT_ROWS and "minimalistic" not in row.knobs


@pytest.mark.parametrize("row", [
    pytest.param(r, id=_row_id(r), marks=() if _is_default(r) else pytest.mark.slow) for r in PAPER_TABLE
])
def test_matches_published_figures(row: Published):
    counted = count(build_model(row.name, row.size, **row.knobs))
    params = counted.params - counted.norm_params if row.params_key == "params_without_bn" else counted.params
    if row.macs_m is not None:
        assert counted.macs / 1e6 == pytest.approx(row.macs_m, rel=row.macs_tolerance), row.source
    if row.params_m is not None:
        assert params / 1e6 == pytest.approx(row.params_m, rel=0.03), row.source
    keras.backend.clear_session()


def test_width_multiplier_scales_macs_near_alpha_squared():
    """Pointwise convs dominate MobileNet v1, so MACs fall by about alpha^2 (depthwise ones by alpha)."""
    full = count(build_model("mobilenet_v1", 224, alpha=1.0)).macs
    half = count(build_model("mobilenet_v1", 224, alpha=0.5)).macs
    assert 0.25 < half / full < 0.25 * 1.1


def test_resolution_scales_macs_by_pixel_count():
    """Sizes divisible by 32 keep every stride exact, so all conv MACs scale by (128/256)^2."""
    at_256 = count(build_model("mobilenet_v2", 256, alpha=0.35))
    at_128 = count(build_model("mobilenet_v2", 128, alpha=0.35))
    classifier = 1280 * 1000
    assert (at_128.macs - classifier) / (at_256.macs - classifier) == pytest.approx(0.25, rel=1e-9)
    assert at_128.params == at_256.params


def test_counter_follows_the_conv_formulas():
    """Grouped conv, depthwise conv and dense against the textbook formulas, on odd sizes."""
    inputs = keras.Input((10, 12, 6))
    x = keras.layers.Conv2D(9, 3, strides=2, padding="same", groups=3, use_bias=False)(inputs)  # 5x6 out
    x = keras.layers.DepthwiseConv2D(5, padding="valid", depth_multiplier=2)(x)  # 1x2x18 out
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(7)(x)
    counted = count(keras.Model(inputs, outputs))
    grouped = 5 * 6 * 3 * 3 * (6 // 3) * 9
    depthwise = 1 * 2 * 5 * 5 * 18
    dense = 36 * 7
    assert counted.macs == grouped + depthwise + dense
    params = 3 * 3 * 2 * 9 + (5 * 5 * 9 * 2 + 18) + 2 * 18 + (36 * 7 + 7)
    assert counted.params == params and counted.norm_params == 2 * 18
    assert counted.non_trainable_params == 2 * 18
    assert [c.macs for c in counted.layers if c.macs] == [grouped, depthwise, dense]


def test_counter_sees_through_tf_mot_wrappers():
    """A QAT-wrapped model has the same MACs and weights-to-learn as the float one."""
    import tensorflow_model_optimization as tfmot

    import keras_models

    model = build_model("mobilenet_v3_small", 64, alpha=0.35, classes=5)
    with keras_models.quantize_scope():
        qat = tfmot.quantization.keras.quantize_model(model)
    assert count(qat).macs == count(model).macs > 0
    assert count(qat).params == count(model).params
