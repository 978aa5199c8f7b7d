"""Runtime memory: LiteRT's arena planner reproduced on hand-built graphs, the XNNPACK runtime prediction
against a measured interpreter, and one-line errors for bad input."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.tflite_file import Operator, Tensor, TFLiteModel, read_model
from pipeline.latency.memory import (
    ARENA_ALIGNMENT,
    PER_XNNPACK_OPERATOR_BYTES,
    greedy_offsets,
    measure_peak,
    memory_report,
    plan_arena,
    predict_runtime,
)
from tests.helpers import convert

TOLERANCE = 0.10  # the goal: predicted peak within ±10 % of measured


def graph(sizes: list[int], ops: list[tuple[tuple[int, ...], tuple[int, ...]]], inputs: list[int],
          outputs: list[int], name: str = "RELU") -> TFLiteModel:
    """A main subgraph of uint8 vectors of the given byte sizes, wired by (inputs, outputs) ops."""
    tensors = [Tensor(index=i, name=f"t{i}", shape=(1, size), dtype="uint8") for i, size in enumerate(sizes)]
    operators = [Operator(index=k, name=name, inputs=ins, outputs=outs, custom=False, version=1)
                 for k, (ins, outs) in enumerate(ops)]
    return TFLiteModel(path=Path("hand_built.tflite"), size_bytes=0, tensors=tensors, operators=operators,
                       inputs=inputs, outputs=outputs, subgraph_count=1)


def test_chain_arena_is_the_input_plus_the_two_largest_neighbours():
    # input -> 6400 -> 3200 -> 640 -> output: the graph input stays, and at most two neighbours live at once
    model = graph([64, 6400, 3200, 640, 64], [((0,), (1,)), ((1,), (2,)), ((2,), (3,)), ((3,), (4,))], [0], [4])
    plan = plan_arena(model)
    assert plan.arena_bytes == 64 + 6400 + 3200
    assert plan.peak_bytes == plan.arena_bytes  # no weights, no variables
    by_index = {t.index: t for t in plan.tensors}
    assert (by_index[0].first_op, by_index[0].last_op) == (0, 3)  # graph input: the whole run
    assert (by_index[4].first_op, by_index[4].last_op) == (3, 3)  # graph output: from its writer to the end
    assert by_index[3].offset == 64  # reuses the gap the dead 6400-byte tensor left


def test_residual_skip_tensor_lives_across_the_branch():
    # conv -> a; a -> b -> c; add(a, c) -> out: a must survive until the add
    model = graph([256, 4096, 2048, 4096, 4096],
                  [((0,), (1,)), ((1,), (2,)), ((2,), (3,)), ((1, 3), (4,))], [0], [4])
    plan = plan_arena(model)
    by_index = {t.index: t for t in plan.tensors}
    skip = by_index[1]
    assert (skip.first_op, skip.last_op) == (0, 3)
    for other in (2, 3, 4):  # everything alive beside the skip tensor sits outside its bytes
        t = by_index[other]
        assert t.offset >= skip.offset + skip.bytes or t.offset + t.bytes <= skip.offset
    # at the add, input + skip + c + out are alive at once
    assert plan.arena_bytes == 256 + 4096 + 4096 + 4096


def test_offsets_are_aligned_and_overlapping_lifetimes_never_share_bytes():
    offsets, size = greedy_offsets([(0, 10, 0, 2), (1, 100, 1, 2), (2, 30, 2, 2), (3, 500, 3, 3)], ARENA_ALIGNMENT)
    assert all(offset % ARENA_ALIGNMENT == 0 for offset in offsets.values())
    spans = {0: (offsets[0], offsets[0] + 10), 1: (offsets[1], offsets[1] + 100), 2: (offsets[2], offsets[2] + 30)}
    for a in spans:
        for b in spans:
            if a < b:
                assert spans[a][1] <= spans[b][0] or spans[b][1] <= spans[a][0]
    assert offsets[3] == 0 and size == 500  # alone in time: the 500-byte record takes offset 0


def test_split_and_concatenation_cost_one_xnnpack_operator_per_part():
    # input -> SPLIT into 3 -> CONCATENATION of the 3 -> output, against the same graph as two 1-in 1-out ops
    model = graph([48, 16, 16, 16, 48], [((0,), (1, 2, 3)), ((1, 2, 3), (4,))], [0], [4])
    model.operators = [replace(model.operators[0], name="SPLIT"), replace(model.operators[1], name="CONCATENATION")]
    plain = graph([48, 48, 48], [((0,), (1,)), ((1,), (2,))], [0], [2], name="RESHAPE")
    shuffled, copied = predict_runtime(model), predict_runtime(plain)
    assert shuffled.delegated_ops == copied.delegated_ops == 2
    assert shuffled.overhead_bytes - copied.overhead_bytes == (3 + 3 - 2) * PER_XNNPACK_OPERATOR_BYTES


def dense_net(x):
    from pipeline.core.tf_env import keras

    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(1024, activation="relu")(x)
    # 2 MB of weights: big enough that the allocator's reuse of already-mapped free memory (tens of KB of
    # anonymous memory that never shows as growth) stays well inside the tolerance
    x = keras.layers.Dense(2048, activation="relu")(x)
    return keras.layers.Dense(10, activation="softmax")(x)


@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory) -> Path:
    return convert(dense_net, (96, 96, 3), tmp_path_factory.mktemp("memory") / "tiny.tflite")


def test_predicted_peak_within_tolerance_of_measured(tiny_int8):
    model = read_model(tiny_int8)
    predicted = predict_runtime(model)
    measured = measure_peak(tiny_int8)
    assert measured["peak_growth_bytes"] >= measured["allocated_bytes"] > 0
    ratio = predicted.growth_bytes / measured["peak_growth_bytes"]
    assert abs(ratio - 1) <= TOLERANCE, (predicted, measured)
    # XNNPACK takes the convs and dense layers; LiteRT keeps the uint8<->int8 QUANTIZEs and the int8 SOFTMAX
    assert set(predicted.cpu_ops) == {"QUANTIZE", "SOFTMAX"} and predicted.partitions == 1
    assert predicted.packed_weights_bytes > plan_arena(model).weights_bytes  # tiles, int32 bias, scales


def test_memory_report_with_measurement(tiny_int8):
    report = memory_report(tiny_int8, threads=1, measure=True)
    assert report["predicted_peak_bytes"] == predict_runtime(read_model(tiny_int8)).growth_bytes
    assert report["predicted_total_bytes"] == report["predicted_peak_bytes"] + tiny_int8.stat().st_size
    assert abs(report["predicted_over_measured"] - 1) <= TOLERANCE
    assert report["without_delegate"]["arena_bytes"] > 0


def test_corrupt_file_is_one_line_error(tmp_path, tiny_int8):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(tiny_int8.read_bytes()[:200])
    for call in (lambda: measure_peak(bad), lambda: memory_report(bad)):
        with pytest.raises(PipelineError) as info:
            call()
        assert "\n" not in str(info.value) and "bad.tflite" in str(info.value)
    with pytest.raises(PipelineError, match="not found"):
        memory_report(tmp_path / "missing.tflite")


def test_threads_must_be_positive(tiny_int8):
    with pytest.raises(PipelineError, match="at least 1"):
        memory_report(tiny_int8, threads=0)
    with pytest.raises(PipelineError, match="at least 1"):
        measure_peak(tiny_int8, threads=0)
