"""pipeline.targets.android.frames: the bit-exact frame preprocessing the Android app mirrors."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.labels import read_labels
from pipeline.targets.android import frames

UINT8 = frames.InputSpec(224, 224, "uint8", 1 / 128, 128)
SPECS = [
    UINT8,
    frames.InputSpec(40, 48, "int8", 0.0123, -5, 120.0, 60.0),
    frames.InputSpec(24, 32, "float32"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.dtype}-{s.height}x{s.width}")
@pytest.mark.parametrize("shape", [(480, 640), (121, 97), (50, 50)])
def test_fast_preprocessor_equals_the_step_by_step_specification(spec, shape):
    rgb = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    for rotation in frames.ROTATIONS:
        expected = frames.preprocess_reference(rgb, spec, rotation)
        assert expected.shape == (1, spec.height, spec.width, 3) and expected.dtype == np.dtype(spec.dtype)
        np.testing.assert_array_equal(frames.Preprocessor(spec, rotation)(rgb), expected)
        np.testing.assert_array_equal(frames.Preprocessor(spec, rotation, bgr=True)(rgb[..., ::-1].copy()), expected)


def test_resize_map_uses_half_pixel_centres():
    i0, i1, w = frames.resize_map(4, 2)
    assert i0.tolist() == [0, 2] and i1.tolist() == [1, 3] and w.tolist() == [1024, 1024]
    i0, _, w = frames.resize_map(2, 4)
    assert i0.tolist() == [0, 0, 0, 1] and w.tolist() == [0, 512, 1536, 0]
    img = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(frames.resize_bilinear(img, 7, 9), img)


def test_crop_box_and_rotation():
    assert frames.crop_box(480, 640, 224, 224) == (0, 80, 480, 480)
    assert frames.crop_box(640, 480, 224, 224) == (80, 0, 480, 480)
    grid = np.arange(6).reshape(2, 3)
    assert frames.rotate(grid, 90).tolist() == [[3, 0], [4, 1], [5, 2]]
    assert frames.rotate(grid, 270).tolist() == [[2, 5], [1, 4], [0, 3]]
    with pytest.raises(PipelineError, match="rotation"):
        frames.Preprocessor(UINT8, rotation=45)


def test_input_table_normalizes_quantizes_and_rounds_half_to_even():
    lut = frames.input_lut(UINT8)
    assert (lut[0], lut[128], lut[255]) == (0, 129, 255)
    halves = frames.input_lut(frames.InputSpec(1, 1, "int8", 2.0, 0, 0.0, 1.0))
    assert (halves[1], halves[3], halves[255]) == (0, 2, 127)
    floats = frames.input_lut(frames.InputSpec(1, 1, "float32"))
    assert floats.dtype == np.float32 and floats[0] == -1.0 and floats[255] == 1.0


@pytest.mark.parametrize("pixel_stride,padding", [(1, 0), (2, 0), (1, 5), (2, 16)])
def test_yuv_planes_with_any_layout_decode_to_the_same_rgb(pixel_stride, padding):
    yy, xx = np.mgrid[0:60, 0:81]
    rgb = np.stack([xx * 3, yy * 4, (xx + yy)], -1).astype(np.uint8)  # smooth: chroma subsampling is lossless-ish
    f = frames.rgb_to_yuv420(rgb, pixel_stride, padding)
    out = frames.yuv420_to_rgb(f["y"], f["u"], f["v"], 81, 60, f["y_row_stride"], f["uv_row_stride"], pixel_stride)
    reference = frames.rgb_to_yuv420(rgb, 1, 0)
    ref = frames.yuv420_to_rgb(reference["y"], reference["u"], reference["v"], 81, 60, 81, 41, 1)
    np.testing.assert_array_equal(out, ref)
    assert np.abs(out.astype(int) - rgb).max() <= 8
    with pytest.raises(PipelineError, match="too short"):
        frames.yuv420_to_rgb(f["y"][:-1], f["u"], f["v"], 81, 60, f["y_row_stride"], f["uv_row_stride"], pixel_stride)


def test_yuv_known_values():
    grey = frames.yuv420_to_rgb(bytes([0, 100, 200, 255]), b"\x80", b"\x80", 2, 2, 2, 1, 1)
    assert grey[..., 0].ravel().tolist() == [0, 100, 200, 255] and (grey == grey[..., :1]).all()
    red = frames.yuv420_to_rgb(bytes([100] * 4), b"\x80", b"\xff", 2, 2, 2, 1, 1)
    assert red[0, 0].tolist() == [255, 9, 100]


def test_dequantize_and_top_k_ties_and_threshold():
    scores = frames.dequantize(np.array([10, 30, 30, 200], np.uint8), 0.5, 10)
    assert scores.dtype == np.float32 and scores.tolist() == [0.0, 10.0, 10.0, 95.0]
    assert frames.top_k(scores, 3) == [(3, 95.0), (1, 10.0), (2, 10.0)]
    assert frames.top_k(scores, 3, threshold=50) == [(3, 95.0)]


def test_fps_meter_and_input_spec_checks(tmp_path):
    meter = frames.FpsMeter(3)
    assert [meter.tick(t) for t in (0.0, 0.1, 0.2, 0.6)] == pytest.approx([0.0, 10.0, 10.0, 4.0])
    with pytest.raises(PipelineError, match="not an image input"):
        frames.InputSpec(1, 1, "int16")
    with pytest.raises(PipelineError, match="positive scale"):
        frames.InputSpec(1, 1, "uint8", 0.0)
    (tmp_path / "labels.txt").write_text("a\r\n\n b \n")
    assert read_labels(tmp_path / "labels.txt") == ["a", "b"]
    with pytest.raises(PipelineError, match="not found"):
        read_labels(tmp_path / "missing.txt")
