"""The latency model: synthesized and cut-out kernels, per-kernel profiles, the resumable table builder, the
table reader, predictions (whole models and channel assignments), and ``tflpipe latency`` with its one-line
errors. One small table, measured once per module, serves every prediction test."""
from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.tflite_file import parse_model, read_file
from pipeline.latency import space
from pipeline.latency.kernels import Kernel, TensorSpec, kernel_of, op_name, submodel, synthesize, unpack
from pipeline.latency.measure import LocalMeasurer
from pipeline.latency.predict import model_kernels, predict_flatbuffer
from pipeline.latency.table import (
    UINT8_OPS,
    BuildPlan,
    LatencyTable,
    as_float,
    as_uint8,
    build_table,
    family,
    load_table,
)
from tests.helpers import OFFICIAL_MODEL, invoke, json_output

# What the reference MobileNet v1 (uint8) and a tiny MobileNet v2 (int8) are made of.
TABLE_OPS = ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MEAN", "SOFTMAX", "QUANTIZE",
             "AVERAGE_POOL_2D", "RESHAPE"]
TABLE_PLAN = BuildPlan(initial=80, rounds=1, validation=10, neighbours=1, fusion_samples=1, minutes=2)
FAST_TIMING = {"min_runs": 5, "min_seconds": 0.005}  # a few ms per kernel: the table is rough, the tests quick
TINY_V2 = {"input_size": 32, "classes": 10, "alpha": 0.35}


# --- fixtures and helpers ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference_model(reference_dir: Path) -> Path:
    return reference_dir / OFFICIAL_MODEL


@pytest.fixture(scope="module")
def table_file(tmp_path_factory) -> Path:
    """The one measured table of this module: the ops of both test nets, int8 and their uint8 twins."""
    out = tmp_path_factory.mktemp("latency_table") / "cpu.json"
    build_table(LocalMeasurer(threads=1, **FAST_TIMING), "cpu-int8", out, TABLE_PLAN, ops=TABLE_OPS, progress=False)
    return out


@pytest.fixture(scope="module")
def table(table_file: Path) -> LatencyTable:
    return load_table(table_file)


@pytest.fixture(scope="module")
def tiny_v2() -> dict:
    """MobileNet v2 α=0.35 at 32 px: the Keras model, its channel groups and its full-int8 flatbuffer."""
    from keras_models import build_model
    from pipeline.core.keras_convert import full_int8_flatbuffer
    from pipeline.stages.channel_prune import channel_groups, layer_channels

    model = build_model("mobilenet_v2", **TINY_V2)
    groups = channel_groups(model)
    return {"model": model, "groups": groups, "sizes": {g.id: g.size for g in groups},
            "compositions": {name: lc.outputs[0] for name, lc in layer_channels(model).items()
                             if len(lc.outputs) == 1},
            "flatbuffer": full_int8_flatbuffer(model)}


class Interrupted(Exception):
    """Stands in for Ctrl-C in the middle of a table build."""


class FakeMeasurer:
    """Times from the model's bytes: deterministic (two builds of one plan are equal) and free of CPU time.

    Records a digest of every model it times, and raises :class:`Interrupted` once ``fail_after`` are done.
    """

    target = "cpu"

    def __init__(self, threads: int = 1, fail_after: int | None = None) -> None:
        self.threads = threads
        self.fail_after = fail_after
        self.timed: list[str] = []

    def time(self, model: bytes) -> float:
        if self.fail_after is not None and len(self.timed) >= self.fail_after:
            raise Interrupted
        self.timed.append(hashlib.sha1(model).hexdigest())
        return 0.001 + len(model) * 1e-6

    def describe(self) -> dict:
        return {"target": self.target, "threads": self.threads, "runtime": "fake"}


SMALL_PLAN = BuildPlan(initial=8, rounds=1, validation=4, neighbours=1, fusion_samples=1, minutes=1)
SMALL_OPS = ["ADD", "MEAN"]


def run_model(data: bytes) -> list[np.ndarray]:
    """Invoke ``data`` once in LiteRT on random inputs; its outputs."""
    interpreter = LocalMeasurer().interpreter(data)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def assert_one_line(error: Exception | str) -> str:
    text = str(error)
    assert text and "\n" not in text.strip() and "Traceback" not in text, text
    return text


def assert_cli_error(result, *words: str) -> str:
    """A failed command that printed one ``Error:`` line (no traceback) containing ``words``."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # click's error exit, not a crash
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def operator_count(data: bytes) -> int:
    return len(unpack(data).subgraphs[0].operators)


# --- kernels -------------------------------------------------------------------------------------------------

def _twins(op: str) -> list[tuple[str, Callable[[Kernel], Kernel]]]:
    twins = [("int8", lambda k: k)]
    if op != "QUANTIZE":  # a float QUANTIZE is no kernel any float model has
        twins.append(("float32", as_float))
    if op in UINT8_OPS:
        twins.append(("uint8", as_uint8))
    return twins


@pytest.mark.parametrize("op", list(space.SAMPLERS))
def test_synthesized_kernels_run_in_litert_int8_float_and_uint8(op: str):
    rng = np.random.default_rng([11, space.SAMPLERS_ORDER.index(op)])
    for _ in range(2):
        kernel = space.sample(op, rng)
        macs, elements = space.kernel_size(kernel)
        assert macs <= space.MAX_MACS and elements <= space.MAX_ELEMENTS
        for dtype, twin in _twins(op):
            variant = twin(kernel)
            data = synthesize(variant)
            parsed = parse_model(data, f"{op}.tflite")
            assert [o.name for o in parsed.operators] == [op.split(":")[0]]  # a kernel class samples its op
            outputs = run_model(data)
            assert [tuple(o.shape) for o in outputs] == [t.shape for t in variant.outputs], (op, dtype)
            assert [o.dtype.name for o in outputs] == [t.dtype for t in variant.outputs], (op, dtype)
            if op != "QUANTIZE":
                assert {t.dtype for t in variant.activations} == {dtype}


def test_stem_class_draws_first_convolutions_that_train_the_conv_model():
    rng = np.random.default_rng(5)
    stems = [space.sample(space.STEM_CONV, rng) for _ in range(40)]
    assert {k.activations[0].shape[-1] for k in stems} == {3}
    assert min(k.activations[0].shape[1] for k in stems) >= 96
    assert {k.inputs[1].shape[1] for k in stems} == {3, 5, 7} and {family(k) for k in stems} == {"CONV_2D"}


def test_float_and_uint8_twins_convert_every_tensor_but_the_index_ones():
    kernel = space.split((1, 8, 8, 32), 4)
    floated = as_float(kernel)
    assert floated.inputs[0] == kernel.inputs[0]  # the axis stays an int32 index
    assert {t.dtype for t in floated.outputs} == {"float32"}
    conv = as_uint8(space.conv(8, 8, 16, 16, 3, 1))
    assert [t.dtype for t in conv.inputs] == ["uint8", "uint8", "int32"]  # bias stays int32
    assert family(conv) == "CONV_2D:uint8" and family(as_uint8(space.quantize((1, 8), True))) == "QUANTIZE"


def test_fused_kernel_synthesizes_the_chain_with_one_graph_input():
    head = space.pad(14, 14, 32, 1, 1)
    tail = space.conv(16, 16, 32, 32, 3, 1, padding=1)
    pair = Kernel(head.op, head.inputs, head.outputs, head.options, (tail,))
    parsed = parse_model(synthesize(pair), "pair.tflite")
    assert [o.name for o in parsed.operators] == ["PAD", "CONV_2D"]
    assert len(parsed.inputs) == 1 and parsed.operators[1].inputs[0] == parsed.operators[0].outputs[0]
    assert [tuple(o.shape) for o in run_model(synthesize(pair))] == [(1, 14, 14, 32)]


def test_synthesize_refuses_an_unknown_operator():
    bogus = Kernel("NOT_AN_OP", (TensorSpec((1, 4)),), (TensorSpec((1, 4)),))
    with pytest.raises(PipelineError, match="NOT_AN_OP"):
        synthesize(bogus)


def test_kernel_json_round_trip_keeps_everything_and_the_key():
    rng = np.random.default_rng(3)
    kernels = [space.sample(op, rng) for op in space.SAMPLERS]
    head = space.conv(14, 14, 32, 32, 1, 1)
    kernels.append(Kernel(head.op, head.inputs, head.outputs, head.options, (space.unary("RELU6", (1, 14, 14, 32)),)))
    for kernel in kernels:
        again = Kernel.from_json(json.loads(json.dumps(kernel.to_json())))
        assert again == kernel and again.key == kernel.key
    assert len({k.key for k in kernels}) == len(kernels)  # the key tells configurations apart


@pytest.mark.parametrize("which", ["reference", "tiny_v2"])
def test_kernel_of_every_op_resynthesizes_the_same_op_and_shapes(which: str, request):
    data = (read_file(request.getfixturevalue("reference_model")) if which == "reference"
            else request.getfixturevalue("tiny_v2")["flatbuffer"])
    model, parsed = unpack(data), parse_model(data, which)
    for index, original in enumerate(parsed.operators):
        kernel = kernel_of(model, index)
        again = synthesize(kernel)
        rebuilt = parse_model(again, f"{which}_{index}")
        assert [o.name for o in rebuilt.operators] == [original.name]
        op = rebuilt.operators[0]
        present = [t for t in original.inputs if t >= 0]  # -1: an omitted optional input (a bias)
        assert [rebuilt.tensor(t).shape for t in op.inputs] == [parsed.tensor(t).shape for t in present]
        assert [rebuilt.tensor(t).shape for t in op.outputs] == [parsed.tensor(t).shape for t in original.outputs]
        assert [rebuilt.tensor(t).dtype for t in op.outputs] == [parsed.tensor(t).dtype for t in original.outputs]
        assert kernel_of(unpack(again), 0) == kernel  # options, constants' index values and types survive
    run_model(synthesize(kernel_of(model, 0)))


def test_submodel_of_one_op_runs_with_its_real_weights(reference_model: Path):
    data = read_file(reference_model)
    model, parsed = unpack(data), parse_model(data, "ref")
    index = 3
    sub = parse_model(submodel(model, [index]), "one")
    assert [o.name for o in sub.operators] == [parsed.operators[index].name]
    weights = parsed.operators[index].inputs[1]
    assert sub.tensor(weights).constant and sub.tensor(weights).scale == parsed.tensor(weights).scale
    assert sub.inputs == [parsed.operators[index].inputs[0]]
    assert sub.outputs == list(parsed.operators[index].outputs)
    assert [tuple(o.shape) for o in run_model(submodel(model, [index]))] == [
        parsed.tensor(parsed.operators[index].outputs[0]).shape]
    assert len(model.subgraphs[0].operators) == len(parsed.operators)  # the model is left as it was
    assert list(model.subgraphs[0].inputs) == parsed.inputs


def test_submodel_of_a_pair_hides_the_tensor_between_them(reference_model: Path):
    data = read_file(reference_model)
    model, parsed = unpack(data), parse_model(data, "ref")
    first, second = parsed.operators[0], parsed.operators[1]
    assert first.outputs[0] == second.inputs[0]
    sub = parse_model(submodel(model, [1, 0]), "pair")
    assert [o.name for o in sub.operators] == [first.name, second.name]
    assert sub.inputs == parsed.inputs and sub.outputs == list(second.outputs)
    run_model(submodel(model, [0, 1]))
    last = len(parsed.operators) - 1  # the model's own output stays an output
    assert parse_model(submodel(model, [last]), "last").outputs == parsed.outputs


def test_submodel_keeps_an_output_that_the_rest_of_the_model_reads(tiny_v2: dict):
    data = tiny_v2["flatbuffer"]
    model, parsed = unpack(data), parse_model(data, "v2")
    readers: dict[int, list[int]] = {}
    for op in parsed.operators:
        for t in op.inputs:
            readers.setdefault(t, []).append(op.index)
    producer = next(op for op in parsed.operators if len(readers.get(op.outputs[0], [])) > 1)  # a residual skip
    skip = producer.outputs[0]
    reader = readers[skip][0]
    sub = parse_model(submodel(model, [producer.index, reader]), "skip")
    assert skip in sub.outputs and parsed.operators[reader].outputs[0] in sub.outputs
    assert len(run_model(submodel(model, [producer.index, reader]))) == 2


# --- profile --------------------------------------------------------------------------------------------------

def test_profile_covers_every_operator_once_and_sums_near_the_whole(reference_model: Path):
    from pipeline.latency.kernel_profile import profile

    result = profile(reference_model, threads=1, measurer=LocalMeasurer(threads=1, min_seconds=0.01))
    covered = sorted(i for row in result["kernels"] for i in row["ops"])
    assert covered == list(range(operator_count(read_file(reference_model))))
    assert result["whole_ms"] > 0 and all(row["ms"] >= 0 for row in result["kernels"])
    assert 0.5 <= result["sum_ms"] / result["whole_ms"] <= 1.5, result  # noisy shared CPU: a loose band
    assert sum(result["by_op"].values()) == pytest.approx(sum(r["ms"] for r in result["kernels"]), abs=1e-3)
    assert {k.split("+")[0] for k in result["by_op"]} == {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D",
                                                           "RESHAPE", "SOFTMAX"}
    memory = result["memory"]
    assert memory["predicted_peak_bytes"] > 0 and memory["measured_peak_bytes"] > 0
    assert memory["file_bytes"] == reference_model.stat().st_size


def test_profile_refuses_a_custom_op_model(reference_dir: Path):
    from pipeline.latency.kernel_profile import profile

    with pytest.raises(PipelineError, match="custom ops") as caught:
        profile(reference_dir / OFFICIAL_MODEL.replace(".tflite", "_edgetpu.tflite"))
    assert_one_line(caught.value)


def _corrupt_files(folder: Path, reference_model: Path) -> list[Path]:
    data = reference_model.read_bytes()
    files = {"truncated.tflite": data[: len(data) // 2], "empty.tflite": b"",
             "garbage.tflite": b"\x10\x00\x00\x00TFL3" + b"\xff" * 200, "zeros.tflite": bytes(100)}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return [folder / name for name in files]


def test_profile_of_a_missing_file_is_one_line(tmp_path: Path):
    from pipeline.latency.kernel_profile import profile

    with pytest.raises(PipelineError, match="not found") as caught:
        profile(tmp_path / "absent.tflite")
    assert_one_line(caught.value)


def test_profile_of_a_corrupt_file_is_one_line(tmp_path: Path, reference_model: Path):
    # Regression: profile() unpacks the bytes without verifying them (read_file only reads), so a truncated
    # or damaged .tflite ends in struct.error; zeros give "no operators" instead of "not a TFLite model".
    from pipeline.latency.kernel_profile import profile

    for path in _corrupt_files(tmp_path, reference_model):
        with pytest.raises(PipelineError) as caught:
            profile(path)
        assert path.name in assert_one_line(caught.value)


# --- building a table --------------------------------------------------------------------------------------

def test_built_table_is_written_and_its_journal_removed(table_file: Path, table: LatencyTable):
    assert table_file.is_file()
    assert not table_file.with_name(table_file.name + ".measurements.jsonl").exists()
    raw = json.loads(table_file.read_text())
    assert raw["kernel_count"] == len(raw["kernels"]) == len(table.rows)
    assert table.target == "cpu-int8" and table.threads == 1 and 0 < table.overhead_ms < 1
    families = set(table.ops)
    assert set(TABLE_OPS) <= families
    assert {f"{op}:uint8" for op in TABLE_OPS if op in UINT8_OPS} <= families  # TF1-style twins
    # 7x7 depthwise samples form their own class (warm and cold timings; tests/test_latency_regimes.py)
    large = {f"DEPTHWISE_CONV_2D:large{cold}{u8}" for cold in ("", ":cold") for u8 in ("", ":uint8")}
    assert families <= set(TABLE_OPS) | {f"{op}:uint8" for op in UINT8_OPS} | large
    assert all(ms > 0 for _, ms in table.rows)
    assert raw["measured_by"]["threads"] == 1 and "LiteRT" in raw["measured_by"]["runtime"]


def test_interrupted_build_resumes_without_measuring_again(tmp_path: Path):
    reference = FakeMeasurer()
    expected = build_table(reference, "cpu-int8", tmp_path / "whole.json", SMALL_PLAN, ops=SMALL_OPS,
                           progress=False)
    out = tmp_path / "resumed.json"
    journal = out.with_name(out.name + ".measurements.jsonl")
    first = FakeMeasurer(fail_after=20)  # the measurer raises while timing the 21st kernel
    with pytest.raises(Interrupted):
        build_table(first, "cpu-int8", out, SMALL_PLAN, ops=SMALL_OPS, progress=False)
    assert not out.exists() and len(journal.read_text().splitlines()) == 1 + 20  # header + one line a kernel
    second, logged = FakeMeasurer(), []
    resumed = build_table(second, "cpu-int8", out, SMALL_PLAN, ops=SMALL_OPS, progress=False, log=logged.append)
    assert any("resuming: 20 measurements" in line for line in logged), logged
    # nothing measured twice: together the two runs timed exactly what one uninterrupted build times
    assert Counter(first.timed) + Counter(second.timed) == Counter(reference.timed)
    assert len(resumed.rows) == len(expected.rows)
    assert [(k.key, ms) for k, ms in resumed.rows] == [(k.key, ms) for k, ms in expected.rows]
    assert not journal.exists() and load_table(out).rows == resumed.rows


def test_resume_after_a_line_cut_short_redoes_only_that_kernel(tmp_path: Path):
    counting = FakeMeasurer()
    build_table(counting, "cpu-int8", tmp_path / "count.json", SMALL_PLAN, ops=SMALL_OPS, progress=False)
    out = tmp_path / "cut.json"
    journal = out.with_name(out.name + ".measurements.jsonl")
    first = FakeMeasurer(fail_after=10)
    with pytest.raises(Interrupted):
        build_table(first, "cpu-int8", out, SMALL_PLAN, ops=SMALL_OPS, progress=False)
    text = journal.read_text()
    journal.write_text(text[: len(text) - 12])  # killed while writing the 10th measurement: 9 are kept
    second = FakeMeasurer(fail_after=5)
    with pytest.raises(Interrupted):
        build_table(second, "cpu-int8", out, SMALL_PLAN, ops=SMALL_OPS, progress=False)
    third = FakeMeasurer()
    build_table(third, "cpu-int8", out, SMALL_PLAN, ops=SMALL_OPS, progress=False)
    # Regression: after a cut line the journal appends onto it, so on the next resume the second run's
    # 5 measurements are lost (everything after the bad line is skipped) and timed again.
    assert len(first.timed) + len(second.timed) + len(third.timed) == len(counting.timed) + 1


def test_a_journal_for_another_thread_count_target_or_device_is_refused(tmp_path: Path):
    out = tmp_path / "t.json"
    journal = out.with_name(out.name + ".measurements.jsonl")
    header = {"target": "cpu-int8", "threads": 1, "device": "cpu", "serial": None}  # what FakeMeasurer writes
    journal.write_text(json.dumps({**header, "threads": 4}) + "\n")
    with pytest.raises(PipelineError, match="4 thread") as caught:
        build_table(FakeMeasurer(threads=1), "cpu-int8", out, SMALL_PLAN, ops=SMALL_OPS, progress=False)
    assert_one_line(caught.value)
    for other, word in (({"target": "cpu-float32"}, "cpu-float32"), ({"device": "android-gpu"}, "android-gpu")):
        journal.write_text(json.dumps({**header, **other}) + "\n")
        with pytest.raises(PipelineError, match=word):
            build_table(FakeMeasurer(threads=1), "cpu-int8", out, SMALL_PLAN, ops=SMALL_OPS, progress=False)
    assert not out.exists() and journal.exists()  # the other build's measurements are kept


def test_a_damaged_journal_header_is_one_line(tmp_path: Path):
    # Regression: _Journal json.loads()es the header unguarded; a header cut short (or not an object) ends
    # in JSONDecodeError / AttributeError tracebacks.
    out = tmp_path / "t.json"
    journal = out.with_name(out.name + ".measurements.jsonl")
    for header in ('{"target": "cpu-in', "[1, 2]"):
        journal.write_text(header + "\n")
        with pytest.raises(PipelineError) as caught:
            build_table(FakeMeasurer(), "cpu-int8", out, SMALL_PLAN, ops=SMALL_OPS, progress=False)
        assert journal.name in assert_one_line(caught.value)


def test_unknown_target_or_op_is_refused_before_measuring(tmp_path: Path):
    measurer = FakeMeasurer()
    with pytest.raises(PipelineError, match="cpu-int4") as caught:
        build_table(measurer, "cpu-int4", tmp_path / "t.json", SMALL_PLAN, progress=False)
    assert_one_line(caught.value)
    with pytest.raises(PipelineError, match="CONV_3D") as caught:
        build_table(measurer, "cpu-int8", tmp_path / "t.json", SMALL_PLAN, ops=["ADD", "CONV_3D"], progress=False)
    assert_one_line(caught.value)
    assert measurer.timed == [] and not list(tmp_path.iterdir())


def test_float32_table_holds_float_kernels_only(tmp_path: Path):
    table = build_table(FakeMeasurer(), "cpu-float32", tmp_path / "f.json", SMALL_PLAN, ops=["CONV_2D", "QUANTIZE"],
                        progress=False)
    assert table.ops == ["CONV_2D"]  # QUANTIZE has no float kernel
    assert {t.dtype for k, _ in table.rows for t in (*k.inputs, *k.outputs)} == {"float32"}


def test_a_build_with_nothing_to_measure_is_refused(tmp_path: Path):
    # QUANTIZE is dropped for cpu-float32, leaving no op: refused, not an empty table load_table would refuse.
    with pytest.raises(PipelineError, match="QUANTIZE"):
        build_table(FakeMeasurer(), "cpu-float32", tmp_path / "f.json", SMALL_PLAN, ops=["QUANTIZE"], progress=False)
    assert not (tmp_path / "f.json").exists()


# --- reading a table -----------------------------------------------------------------------------------------

def _table_json(table_file: Path) -> dict:
    return json.loads(table_file.read_text())


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"), ("not_json", "is not a latency table"), ("binary", "is not a latency table"),
    ("list", "format"), ("other_format", "format"), ("no_kernels_key", "malformed"), ("bad_threads", "malformed"),
    ("unknown_target", "malformed"), ("bad_kernel", "malformed"), ("empty_kernels", "no measurements"),
])
def test_load_table_refuses_bad_files_in_one_line(case: str, words: str, tmp_path: Path, table_file: Path):
    good = _table_json(table_file)
    contents = {
        "not_json": "{ not json", "binary": b"\xff\xfe\x00TFL3", "list": [1, 2, 3],
        "other_format": {**good, "format": "tflpipe-latency-table/0"},
        "no_kernels_key": {k: v for k, v in good.items() if k != "kernels"},
        "bad_threads": {**good, "threads": "many"}, "unknown_target": {**good, "target": "toaster"},
        "bad_kernel": {**good, "kernels": [[{"op": "ADD", "inputs": [[[1, 4], "int8"]], "outputs": []}, 0.1]]},
        "empty_kernels": {**good, "kernels": []},
    }
    path = tmp_path / "table.json"
    if case in contents:
        content = contents[case]
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(PipelineError, match=words) as caught:
        load_table(path)
    assert_one_line(caught.value)


def test_a_table_with_a_kernel_without_outputs_fails_in_one_line(tmp_path: Path, table_file: Path,
                                                                   reference_model: Path):
    # Regression: load_table accepts a kernel with "outputs": [] (or non-numeric shapes); the predictor then
    # crashes with IndexError in features() instead of a one-line error.
    good = _table_json(table_file)
    kernel, ms = next(row for row in good["kernels"] if row[0]["op"] == "CONV_2D")
    path = tmp_path / "edited.json"
    path.write_text(json.dumps({**good, "kernels": [*good["kernels"], [{**kernel, "outputs": []}, ms]]}))
    with pytest.raises(PipelineError) as caught:
        predict_flatbuffer(read_file(reference_model), load_table(path))
    assert_one_line(caught.value)


# --- predictions -------------------------------------------------------------------------------------------

def test_prediction_is_overhead_plus_its_kernels(table: LatencyTable, reference_model: Path):
    data = read_file(reference_model)
    prediction = predict_flatbuffer(data, table, threads=1)
    assert prediction.unmodelled == {} and all(row.ms is not None and row.ms >= 0 for row in prediction.rows)
    assert prediction.latency_ms == pytest.approx(table.overhead_ms + sum(row.ms for row in prediction.rows))
    assert sorted(i for row in prediction.rows for i in row.ops) == list(range(operator_count(data)))
    as_json = prediction.to_json()
    assert as_json["predicted_ms"] == round(prediction.latency_ms, 4) and as_json["kernels"] == len(prediction.rows)
    assert sum(layer["ms"] for layer in as_json["layers"]) == pytest.approx(
        prediction.latency_ms - table.overhead_ms, abs=1e-3)
    top = prediction.to_json(top=3)["layers"]
    assert [layer["ms"] for layer in top] == sorted((layer["ms"] for layer in as_json["layers"]), reverse=True)[:3]


def test_a_bigger_model_is_predicted_slower(table: LatencyTable, reference_dir: Path):
    small = predict_flatbuffer(read_file(reference_dir / OFFICIAL_MODEL), table).latency_ms
    bigger = predict_flatbuffer(read_file(reference_dir / "mobilenet_v1_0.5_160_quant.tflite"), table).latency_ms
    assert bigger > 1.5 * small, (small, bigger)  # 4.5x the MACs


def test_ops_missing_from_the_table_are_listed_not_guessed(table: LatencyTable, reference_model: Path):
    without = LatencyTable(table.meta, [(k, ms) for k, ms in table.rows if k.op != "SOFTMAX"])
    prediction = predict_flatbuffer(read_file(reference_model), without)
    assert prediction.unmodelled == {"SOFTMAX": 1}
    softmax = [row for row in prediction.rows if row.kernel.op == "SOFTMAX"]
    assert len(softmax) == 1 and softmax[0].ms is None
    assert prediction.latency_ms == pytest.approx(without.overhead_ms + sum(r.ms or 0 for r in prediction.rows))
    assert prediction.to_json()["unmodelled_ops"] == {"SOFTMAX": 1}


def test_a_table_for_another_thread_count_is_refused(table: LatencyTable, reference_model: Path):
    with pytest.raises(PipelineError, match="1 thread") as caught:
        predict_flatbuffer(read_file(reference_model), table, threads=2)
    assert "--threads 2" in assert_one_line(caught.value)


def test_a_float_model_with_an_int8_table_is_refused_and_the_reverse(table: LatencyTable, reference_model: Path):
    float_model = synthesize(as_float(space.conv(16, 16, 8, 16, 3, 1)))
    with pytest.raises(PipelineError, match="float32") as caught:
        predict_flatbuffer(float_model, table)
    assert "cpu-float32" in assert_one_line(caught.value)
    float_table = LatencyTable({**table.meta, "target": "cpu-float32"}, table.rows)
    with pytest.raises(PipelineError, match="cpu-float32"):
        predict_flatbuffer(read_file(reference_model), float_table)


def test_model_kernels_fuse_only_the_table_pairs(reference_model: Path):
    model = unpack(read_file(reference_model))
    plain = model_kernels(model)
    fused = model_kernels(model, {("CONV_2D", "DEPTHWISE_CONV_2D")})
    assert all(len(row.ops) == 1 for row in plain)
    merged = [row for row in fused if row.kernel.fused]
    assert merged and all(row.kernel.op == "CONV_2D" and row.kernel.fused[0].op == "DEPTHWISE_CONV_2D"
                          for row in merged)
    assert sorted(i for row in fused for i in row.ops) == [i for row in plain for i in row.ops]
    assert op_name(model, model.subgraphs[0].operators[merged[0].ops[1]]) == "DEPTHWISE_CONV_2D"


# --- latency as a function of channels -----------------------------------------------------------------------

def _keep(tiny_v2: dict, fraction: float) -> dict[int, int]:
    return {g.id: max(1, int(g.size * fraction)) for g in tiny_v2["groups"] if g.prunable and g.size > 1}


def test_channel_latency_matches_the_pruned_model(table: LatencyTable, tiny_v2: dict):
    from pipeline.core.keras_convert import full_int8_flatbuffer
    from pipeline.latency.channels import ChannelLatency
    from pipeline.stages.channel_prune import prune_channels

    latency = ChannelLatency(table, tiny_v2["flatbuffer"], tiny_v2["compositions"], tiny_v2["sizes"], threads=1)
    assert latency.unmodelled == 0
    whole = predict_flatbuffer(tiny_v2["flatbuffer"], table).latency_ms
    assert latency.predict() == pytest.approx(whole, rel=1e-9)
    keep = _keep(tiny_v2, 0.5)
    pruned = full_int8_flatbuffer(prune_channels(tiny_v2["model"], keep))
    assert latency.predict(keep) == pytest.approx(predict_flatbuffer(pruned, table).latency_ms, rel=0.01)


def test_fewer_channels_are_not_slower(table: LatencyTable, tiny_v2: dict):
    from pipeline.latency.channels import ChannelLatency

    latency = ChannelLatency(table, tiny_v2["flatbuffer"], tiny_v2["compositions"], tiny_v2["sizes"])
    half, quarter = _keep(tiny_v2, 0.5), _keep(tiny_v2, 0.25)
    full_ms, half_ms, quarter_ms = latency.predict_many([{}, half, quarter])
    assert quarter_ms <= full_ms and half_ms <= full_ms and quarter_ms < full_ms
    assert [latency.predict(half), latency.predict(quarter)] == pytest.approx([half_ms, quarter_ms])
    unchanged = {g: size for g, size in tiny_v2["sizes"].items()}
    assert latency.predict(unchanged) == pytest.approx(full_ms)


def test_channel_latency_refuses_another_thread_count(table: LatencyTable, tiny_v2: dict):
    from pipeline.latency.channels import ChannelLatency

    with pytest.raises(PipelineError, match="thread"):
        ChannelLatency(table, tiny_v2["flatbuffer"], tiny_v2["compositions"], tiny_v2["sizes"], threads=3)


# --- the command line ------------------------------------------------------------------------------------------

def test_cli_profile_json(reference_model: Path):
    result = json_output(invoke("latency", "profile", reference_model, "--json"))
    assert result["model"] == OFFICIAL_MODEL and result["threads"] == 1
    assert sorted(i for row in result["kernels"] for i in row["ops"]) == list(
        range(operator_count(read_file(reference_model))))
    assert 0.5 <= result["sum_over_whole"] <= 1.5 and result["memory"]["predicted_peak_bytes"] > 0


def test_cli_profile_errors_are_one_line(reference_dir: Path, tmp_path: Path):
    assert_cli_error(invoke("latency", "profile", tmp_path / "absent.tflite"), "not found")
    edgetpu = reference_dir / OFFICIAL_MODEL.replace(".tflite", "_edgetpu.tflite")
    assert_cli_error(invoke("latency", "profile", edgetpu, "--json"), "custom ops")


def test_cli_profile_of_a_truncated_file_is_one_line(tmp_path: Path, reference_model: Path):
    # Regression (see test_profile_of_a_corrupt_file_is_one_line): struct.error escapes as a crash.
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(reference_model.read_bytes()[:100_000])
    assert_cli_error(invoke("latency", "profile", truncated, "--json"), "truncated.tflite")


def test_cli_build_quick_writes_a_table(tmp_path: Path, monkeypatch):
    import pipeline.latency.measure as measure

    monkeypatch.setattr(measure, "LocalMeasurer", functools.partial(LocalMeasurer, **FAST_TIMING))
    out = tmp_path / "add.json"
    result = json_output(invoke("latency", "build", "--quick", "--ops", "ADD", "--out", out, "--json"))
    table = load_table(out)
    assert result["table"] == str(out) and result["kernels"] == len(table.rows) > 150
    assert result["ops"] == table.ops == ["ADD", "ADD:uint8"] and result["threads"] == table.threads == 1
    assert set(result["validation_error"]) == {"ADD"}
    assert not out.with_name(out.name + ".measurements.jsonl").exists()


def test_cli_build_errors_are_one_line(tmp_path: Path):
    assert_cli_error(invoke("latency", "build", "--out", tmp_path / "t.json", "--ops", "ADD,FOO"), "FOO")
    result = invoke("latency", "build", "--out", tmp_path / "t.json", "--target", "cpu-int4")
    assert result.exit_code != 0 and "cpu-int4" in result.output and not (tmp_path / "t.json").exists()


def test_check_passes_a_fresh_table_and_fails_one_from_a_slower_machine(table_file: Path, tmp_path: Path):
    fresh = json_output(invoke("latency", "check", "--table", table_file, "--per-op", "2", "--json"))
    assert fresh["kernels"] >= 2 * 5 and set(fresh["by_op"]) <= set(load_table(table_file).ops)
    assert 0.5 < fresh["ratio"] < 2.0  # the same machine, rough timings (a few ms a kernel) under test load
    raw = _table_json(table_file)
    slower = tmp_path / "slower.json"  # as if built where every kernel took 4x as long
    slower.write_text(json.dumps({**raw, "kernels": [[k, 4 * ms] for k, ms in raw["kernels"]]}))
    result = invoke("latency", "check", "--table", slower, "--per-op", "2")
    assert result.exit_code == 1, result.output
    assert "rebuild it here" in result.output.splitlines()[0] and "by op: " in result.output
    drifted = json.loads(invoke("latency", "check", "--table", slower, "--per-op", "2", "--json").output)
    assert drifted["drifted"] and drifted["ratio"] < 0.5 and drifted["ratio"] == pytest.approx(fresh["ratio"] / 4,
                                                                                                rel=0.5)


def test_check_refuses_another_thread_count_or_a_phone_table(table: LatencyTable, table_file: Path, tmp_path: Path):
    from pipeline.latency.table import check_drift

    with pytest.raises(PipelineError, match="1 thread"):
        check_drift(table, LocalMeasurer(threads=2))
    raw = _table_json(table_file)
    phone = tmp_path / "phone.json"
    phone.write_text(json.dumps({**raw, "measured_by": {**raw["measured_by"], "target": "android-gpu"}}))
    assert_cli_error(invoke("latency", "check", "--table", phone), "android-gpu", "--adb")


def test_cli_predict_a_tflite(table_file: Path, table: LatencyTable, reference_model: Path):
    result = json_output(invoke("latency", "predict", reference_model, "--table", table_file, "--threads", "1",
                                "--json"))
    expected = predict_flatbuffer(read_file(reference_model), table)
    assert result["model"] == OFFICIAL_MODEL and result["predicted_ms"] == round(expected.latency_ms, 4)
    assert len(result["layers"]) == operator_count(read_file(reference_model)) and result["unmodelled_ops"] == {}
    assert result["memory"]["predicted_peak_bytes"] > 0 and "measured_ms" not in result


def test_cli_predict_text_names_the_ops_the_table_lacks(table_file: Path, reference_model: Path, tmp_path: Path):
    raw = _table_json(table_file)
    without = tmp_path / "no_softmax.json"
    without.write_text(json.dumps({**raw, "kernels": [row for row in raw["kernels"] if row[0]["op"] != "SOFTMAX"]}))
    result = invoke("latency", "predict", reference_model, "--table", without, "--top", "4")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{OFFICIAL_MODEL}: predicted ") and "(cpu-int8, 1 thread(s))" in lines[0]
    assert any(line.startswith("not in the table") and "SOFTMAX x1" in line for line in lines), result.output
    assert "slowest 4 kernels:" in lines and len(lines) - lines.index("slowest 4 kernels:") - 1 == 4


def test_cli_predict_a_zoo_net_and_measure_it(table_file: Path, table: LatencyTable, tiny_v2: dict):
    result = json_output(invoke("latency", "predict", "mobilenet_v2", "--alpha", "0.35", "--input-size", "32",
                                "--classes", "10", "--table", table_file, "--measure", "--json"))
    assert result["model"] == "mobilenet_v2 32px"
    # the same net built again has other random weights but the same kernels, hence the same prediction
    assert result["predicted_ms"] == round(predict_flatbuffer(tiny_v2["flatbuffer"], table).latency_ms, 4)
    assert result["measured_ms"] > 0
    assert (1 + result["error"]) * result["measured_ms"] == pytest.approx(result["predicted_ms"], abs=2e-4)
    assert result["memory"]["measured_peak_bytes"] > 0


def test_cli_predict_errors_are_one_line(table_file: Path, reference_model: Path, tmp_path: Path):
    assert_cli_error(invoke("latency", "predict", reference_model, "--table", tmp_path / "none.json"),
                     "does not exist", "latency build")
    assert_cli_error(invoke("latency", "predict", reference_model, "--table", table_file, "--threads", "2"),
                     "1 thread", "--threads 2")
    assert_cli_error(invoke("latency", "predict", "mobilenet_v9", "--table", table_file), "mobilenet_v9",
                     "zoo net")
    assert_cli_error(invoke("latency", "predict", "squeezenet_1_1", "--alpha", "0.5", "--table", table_file),
                     "alpha")
    assert_cli_error(invoke("latency", "predict", reference_model, "--table", reference_model),
                     "not a latency table")


def test_cli_predict_of_a_truncated_file_is_one_line(table_file: Path, reference_model: Path, tmp_path: Path):
    # Regression: stages.latency.model_flatbuffer reads a .tflite without verifying it (read_file, not
    # read_model), and unpack() raises struct.error.
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(reference_model.read_bytes()[:100_000])
    assert_cli_error(invoke("latency", "predict", truncated, "--table", table_file), "truncated.tflite")


@pytest.mark.slow
def test_cli_build_quick_with_every_op_is_usable(tmp_path: Path, reference_model: Path):
    """The real ``--quick`` plan (every sampler, default timing): the smoke table the help promises."""
    out = tmp_path / "quick.json"
    result = json_output(invoke("latency", "build", "--quick", "--out", out, "--json"))
    assert {op for op in result["ops"] if ":" not in op} == set(space.SAMPLERS)
    predicted = json_output(invoke("latency", "predict", reference_model, "--table", out, "--json"))
    assert predicted["unmodelled_ops"] == {} and predicted["predicted_ms"] > result["overhead_ms"]
