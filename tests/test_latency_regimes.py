"""The latency table's large-depthwise kernel class (issue 15): depthwise kernels over 25 taps leave XNNPACK's
fast path and are predicted from their own warm and cold timings, blended by how far a net's packed weights
overflow the cache. Fast: tables of made-up timings and a measurer that only reads the model's size."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.latency import space
from pipeline.latency.kernels import Kernel, synthesize
from pipeline.latency.table import (
    FORMAT,
    BuildPlan,
    LatencyTable,
    as_cold,
    as_uint8,
    build_table,
    cold_fraction,
    family,
    load_table,
    packed_bytes,
)

OVERHEAD = 0.01
WARM_MS, COLD_MS, SMALL_MS = 1.0, 4.0, 0.1
CURVE = [[1e6, 0.0], [4e6, 1.0]]  # warm up to 1 MB of weights, cold from 4 MB
PLAN = BuildPlan(initial=8, rounds=0, validation=0, neighbours=0, fusion_samples=1, minutes=1)


class SizeMeasurer:
    """Times from the model's size (no CPU time); records a digest of every model it times."""

    target = "cpu"

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self.timed: list[str] = []

    def time(self, model: bytes) -> float:
        self.timed.append(hashlib.sha1(model).hexdigest())
        return 0.001 + len(model) * 1e-6

    def describe(self) -> dict:
        return {"target": self.target, "threads": self.threads, "runtime": "fake", "cache_bytes": 2**20}


def made_up_table(curve: list | None = CURVE, cold: bool = True) -> LatencyTable:
    """Large depthwise kernels take WARM_MS alone and COLD_MS cold, 3x3 ones SMALL_MS, whatever their shape."""
    rows: list[tuple[Kernel, float]] = []
    for size in (1, 2, 4, 8):
        for channels in (16, 96, 384):
            large = space.depthwise(size, size, channels, 7, 1)
            rows.append((large, WARM_MS + OVERHEAD))
            if cold:
                rows.append((as_cold(large), COLD_MS + OVERHEAD))
            rows.append((space.depthwise(size, size, channels, 3, 1), SMALL_MS + OVERHEAD))
    meta = {"target": "cpu-int8", "threads": 1, "overhead_ms": OVERHEAD}
    return LatencyTable(meta | ({"cache_curve": curve} if curve else {}), rows)


def test_depthwise_kernels_over_25_taps_are_their_own_class():
    assert family(space.depthwise(8, 8, 32, 3, 1)) == "DEPTHWISE_CONV_2D"
    assert family(space.depthwise(8, 8, 32, 5, 2)) == "DEPTHWISE_CONV_2D"  # 25 taps: still the fast path
    seven = space.depthwise(8, 8, 32, 7, 1)
    assert family(seven) == "DEPTHWISE_CONV_2D:large"
    assert family(as_cold(seven)) == "DEPTHWISE_CONV_2D:large:cold"
    assert family(as_uint8(seven)) == "DEPTHWISE_CONV_2D:large:uint8"
    assert family(space.conv(8, 8, 32, 32, 7, 1)) == "CONV_2D"  # a full 7x7 convolution is not depthwise
    # The cold tag changes the key (a separate measurement) but not the model that is timed.
    assert as_cold(seven).key != seven.key and synthesize(as_cold(seven)) == synthesize(seven)
    # ~6.4 KB of packed weights per channel at 7x7 (measured: 6.2 MB at 960 channels), bytes as stored otherwise.
    assert packed_bytes(space.depthwise(1, 1, 960, 7, 1)) == 960 * 6400
    assert packed_bytes(space.depthwise(1, 1, 960, 3, 1)) == 960 * 9 + 960 * 4


def test_cold_fraction_follows_the_measured_curve():
    assert cold_fraction([], 1e9) == 0.0  # a /1 table: no curve, warm
    assert cold_fraction(CURVE, 1e5) == 0.0 and cold_fraction(CURVE, 1e8) == 1.0
    assert cold_fraction(CURVE, 2e6) == pytest.approx(0.5)  # log-linear between the points


@pytest.mark.parametrize("working_set, expected, fraction", [(5e5, WARM_MS, 0.0),
                                                             (2e6, (WARM_MS * COLD_MS) ** 0.5, 0.5),
                                                             (8e6, COLD_MS, 1.0)])
def test_large_kernels_are_predicted_between_warm_and_cold(working_set: float, expected: float, fraction: float):
    table = made_up_table()
    large, small = space.depthwise(4, 4, 96, 7, 1), space.depthwise(4, 4, 96, 3, 1)
    predicted_large, predicted_small = table.predict_kernels([large, small], working_set=working_set)
    assert predicted_large == pytest.approx(expected, rel=0.02)
    # The fast path's time does not change; only its few weights are read cold, at the measured cost of a byte.
    cold_reads = fraction * packed_bytes(small) * table.cold_ms_per_byte
    assert predicted_small == pytest.approx(SMALL_MS + cold_reads, rel=0.02) and cold_reads < 0.1 * SMALL_MS


def test_the_working_set_defaults_to_the_kernels_weights():
    table = made_up_table()
    few = [space.depthwise(1, 1, 64, 7, 1)]  # 0.4 MB: warm
    many = [space.depthwise(1, 1, 960, 7, 1)] * 4  # 24.6 MB: cold
    assert table.predict_kernels(few)[0] == pytest.approx(WARM_MS, rel=0.02)
    assert table.predict_kernels(many)[0] == pytest.approx(COLD_MS, rel=0.02)


def test_other_kernels_pay_the_measured_cost_of_their_weights_read_cold():
    table = made_up_table()
    median = space.depthwise(1, 1, 96, 7, 1)  # of the twins' costs per byte: 16, 96 and 384 channels
    assert table.cold_ms_per_byte == pytest.approx((COLD_MS - WARM_MS) / packed_bytes(median))
    small = space.depthwise(4, 4, 384, 3, 1)
    warm, cold = (table.predict_kernels([small], working_set=w)[0] for w in (5e5, 8e6))
    assert cold - warm == pytest.approx(packed_bytes(small) * table.cold_ms_per_byte)  # the whole cold share
    halfway = table.predict_kernels([small], working_set=2e6)[0]
    assert halfway - warm == pytest.approx(0.5 * (cold - warm))
    assert made_up_table(cold=False).cold_ms_per_byte == 0.0  # no cold twins measured: no cost known


@pytest.mark.parametrize("curve, cold", [(None, True), (CURVE, False)])
def test_a_table_without_cold_timings_or_curve_predicts_warm(curve, cold: bool):
    table = made_up_table(curve, cold)
    assert table.predict_kernels([space.depthwise(1, 1, 960, 7, 1)] * 4)[0] == pytest.approx(WARM_MS, rel=0.02)


def test_an_old_format_table_loads_and_a_newer_one_is_one_line(tmp_path: Path):
    table = made_up_table(curve=None, cold=False)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(table.to_json() | {"format": "tflpipe-latency-table/1"}))
    assert load_table(old).predict_kernels([space.depthwise(2, 2, 96, 7, 1)])[0] == pytest.approx(WARM_MS, rel=0.02)
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(table.to_json() | {"format": "tflpipe-latency-table/9"}))
    with pytest.raises(PipelineError, match="newer than this tflpipe reads") as caught:
        load_table(newer)
    assert "\n" not in str(caught.value)
    assert table.to_json()["format"] == FORMAT


def test_extending_a_table_measures_only_the_kernels_it_lacks(tmp_path: Path):
    out = tmp_path / "t.json"
    first = SizeMeasurer()
    build_table(first, "cpu-int8", out, PLAN, ops=["ADD"], progress=False)
    old = load_table(out)
    second, logged = SizeMeasurer(), []
    extended = build_table(second, "cpu-int8", out, PLAN, ops=["ADD", space.LARGE_DEPTHWISE], progress=False,
                           log=logged.append)
    old_models = {hashlib.sha1(synthesize(k)).hexdigest() for k, _ in old.rows}
    assert not old_models & set(second.timed)  # no ADD kernel timed again
    assert {k.key for k, _ in old.rows} <= {k.key for k, _ in extended.rows}
    assert any("extending" in line for line in logged) and extended.meta["reused_kernels"] == len(old.rows)
    families = [family(k) for k, _ in extended.rows]
    assert families.count("DEPTHWISE_CONV_2D:large") == families.count("DEPTHWISE_CONV_2D:large:cold") >= 4
    # Time grows with the bundle, not per copy here: no cache effect, so the curve says warm everywhere.
    assert extended.cache_curve and all(fraction == 0.0 for _, fraction in extended.cache_curve)


def test_an_extension_keeps_every_kernel_and_the_curve_its_large_kernels_gave(tmp_path: Path):
    out = tmp_path / "t.json"
    build_table(SizeMeasurer(), "cpu-int8", out, PLAN, ops=["ADD", space.LARGE_DEPTHWISE], progress=False)
    built = load_table(out)
    odd = space.binary("ADD", (1, 3, 5, 7), (1, 3, 5, 7))  # as if an adaptive round had drawn it
    marked = [[123.0, 0.25], [456.0, 0.5]]  # no measurement gives these sizes
    LatencyTable(built.meta | {"cache_curve": marked}, [*built.rows, (odd, 0.5)]).save(out)
    second = SizeMeasurer()
    extended = build_table(second, "cpu-int8", out, PLAN, ops=["ADD", space.LARGE_DEPTHWISE, space.STEM_CONV],
                           progress=False)
    assert odd.key in {k.key for k, _ in extended.rows} and extended.cache_curve == marked
    assert any(k.activations[0].shape[-1] == 3 and k.op == "CONV_2D" for k, _ in extended.rows)
    # The same extension of a table without a curve measures one: dozens of bundles more.
    LatencyTable(built.meta | {"cache_curve": []}, built.rows).save(out)
    third = SizeMeasurer()
    build_table(third, "cpu-int8", out, PLAN, ops=["ADD", space.LARGE_DEPTHWISE, space.STEM_CONV], progress=False)
    assert len(third.timed) >= len(second.timed) + 20


def test_extending_a_table_of_another_thread_count_is_one_line(tmp_path: Path):
    out = tmp_path / "t.json"
    build_table(SizeMeasurer(threads=2), "cpu-int8", out, PLAN, ops=["ADD"], progress=False)
    before = out.read_bytes()
    with pytest.raises(PipelineError, match="2 thread") as caught:
        build_table(SizeMeasurer(threads=1), "cpu-int8", out, PLAN, ops=["ADD"], progress=False)
    assert "\n" not in str(caught.value) and out.read_bytes() == before
