"""Camera-frame preprocessing, specified to the bit so the Android app's Java mirror can match it.

This module is the single source of truth for turning a camera frame into a model input tensor; the
Java module ``android_demo/imagecore`` implements the same integer arithmetic, and golden vectors
produced from here prove both give the same bytes. The steps, in order:

1. YUV_420_888 to RGB (``yuv420_to_rgb``): full-range BT.601 (JFIF, what Android cameras deliver),
   16-bit fixed point, chroma sample ``(row // 2, col // 2)``, any row stride and pixel stride.
2. Rotation by the camera's ``rotationDegrees`` clockwise (0, 90, 180, 270).
3. Center crop to the model's aspect ratio (``crop_box``), integer arithmetic only.
4. Bilinear resize with half-pixel centres (``resize_map``/``resize_bilinear``): source position in
   Q16, weights in Q11, one rounding at the end.
5. Normalize ``(p - mean) / std`` and quantize with the input tensor's scale/zero point through a
   256-entry table computed in float64 (``input_lut``), so no per-pixel float rounding can differ.

Steps 2-4 are folded into one gather plan (``Preprocessor``), which is what makes the Python demo
loop fast; ``preprocess_reference`` spells the steps out one by one and tests check they agree.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import PipelineError

ROTATIONS = (0, 90, 180, 270)
# Full-range BT.601 in Q16: R = Y + 1.402 V', G = Y - 0.344136 U' - 0.714136 V', B = Y + 1.772 U'.
_YUV_SHIFT = 16
_R_V, _G_U, _G_V, _B_U = 91881, 22554, 46802, 116130
_POS_BITS = 16  # resize source position: Q16
_W_BITS = 11  # resize weights: Q11 (0..2048)


@dataclass(frozen=True)
class InputSpec:
    """What a model's image input needs: size, element type, quantization and normalization."""

    height: int
    width: int
    dtype: str  # "uint8", "int8" or "float32"
    scale: float = 0.0
    zero_point: int = 0
    mean: float = 127.5
    std: float = 127.5

    def __post_init__(self) -> None:
        if self.dtype not in ("uint8", "int8", "float32"):
            raise PipelineError(f"input type {self.dtype} is not an image input (need uint8, int8 or float32)")
        if self.dtype != "float32" and self.scale <= 0:
            raise PipelineError(f"quantized {self.dtype} input needs a positive scale, got {self.scale}")
        if self.std == 0:
            raise PipelineError("normalization std must not be 0")


def yuv420_to_rgb(
    y: bytes | np.ndarray,
    u: bytes | np.ndarray,
    v: bytes | np.ndarray,
    width: int,
    height: int,
    y_row_stride: int,
    uv_row_stride: int,
    uv_pixel_stride: int,
) -> np.ndarray:
    """RGB (H, W, 3 uint8) from the three planes of an Android ``YUV_420_888`` image.

    Plane buffers may end right after their last sample (Android omits the last row's padding).
    """
    yb, ub, vb = (np.frombuffer(p, np.uint8) if isinstance(p, (bytes, bytearray)) else np.asarray(p, np.uint8).ravel() for p in (y, u, v))
    rows, cols = np.arange(height), np.arange(width)
    need_y = (height - 1) * y_row_stride + width
    cr, cc = rows // 2, cols // 2
    need_uv = int(cr[-1]) * uv_row_stride + int(cc[-1]) * uv_pixel_stride + 1
    if len(yb) < need_y or len(ub) < need_uv or len(vb) < need_uv:
        raise PipelineError(f"YUV planes too short for {width}x{height} with the given strides")
    luma = yb[rows[:, None] * y_row_stride + cols[None, :]].astype(np.int32) << _YUV_SHIFT
    uv_index = cr[:, None] * uv_row_stride + cc[None, :] * uv_pixel_stride
    du = ub[uv_index].astype(np.int32) - 128
    dv = vb[uv_index].astype(np.int32) - 128
    half = 1 << (_YUV_SHIFT - 1)
    r = (luma + _R_V * dv + half) >> _YUV_SHIFT
    g = (luma - _G_U * du - _G_V * dv + half) >> _YUV_SHIFT
    b = (luma + _B_U * du + half) >> _YUV_SHIFT
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def rgb_to_yuv420(rgb: np.ndarray, pixel_stride: int = 2, row_padding: int = 0) -> dict:
    """Android-like YUV_420_888 planes from RGB, to make synthetic camera frames for tests and goldens.

    ``pixel_stride`` 2 gives the NV21 layout phones usually deliver (V and U interleaved), 1 gives
    I420. This direction is only a test-data generator; the Java side never needs it.
    """
    h, w, _ = rgb.shape
    f = rgb.astype(np.float64)
    yv = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    uv = -0.168736 * f[..., 0] - 0.331264 * f[..., 1] + 0.5 * f[..., 2] + 128
    vv = 0.5 * f[..., 0] - 0.418688 * f[..., 1] - 0.081312 * f[..., 2] + 128
    ch, cw = (h + 1) // 2, (w + 1) // 2
    y_stride = w + row_padding
    y_plane = np.zeros(y_stride * h, np.uint8)
    y_plane.reshape(h, y_stride)[:, :w] = np.clip(np.rint(yv), 0, 255)
    u_sub = np.clip(np.rint(uv[::2, ::2]), 0, 255).astype(np.uint8)
    v_sub = np.clip(np.rint(vv[::2, ::2]), 0, 255).astype(np.uint8)
    uv_stride = cw * pixel_stride + row_padding
    if pixel_stride == 2:  # one interleaved VU buffer; the U plane starts one byte into it
        vu = np.zeros(uv_stride * ch + 1, np.uint8)
        grid = vu[: uv_stride * ch].reshape(ch, uv_stride)
        grid[:, 0 : 2 * cw : 2], grid[:, 1 : 2 * cw : 2] = v_sub, u_sub
        end = (ch - 1) * uv_stride + 2 * (cw - 1) + 1
        v_plane, u_plane = vu[:end], vu[1 : end + 1]
    elif pixel_stride == 1:
        planes = []
        for sub in (u_sub, v_sub):
            p = np.zeros(uv_stride * ch, np.uint8)
            p.reshape(ch, uv_stride)[:, :cw] = sub
            planes.append(p[: (ch - 1) * uv_stride + cw])
        u_plane, v_plane = planes
    else:
        raise PipelineError(f"pixel stride must be 1 or 2, got {pixel_stride}")
    return {
        "y": y_plane[: (h - 1) * y_stride + w].tobytes(), "u": u_plane.tobytes(), "v": v_plane.tobytes(),
        "width": w, "height": h, "y_row_stride": y_stride, "uv_row_stride": uv_stride, "uv_pixel_stride": pixel_stride,
    }


def check_rotation(degrees: int) -> int:
    if degrees not in ROTATIONS:
        raise PipelineError(f"rotation must be one of {ROTATIONS}, got {degrees}")
    return degrees


def rotate(image: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate clockwise by ``degrees`` (Android's ``rotationDegrees`` makes the frame upright)."""
    return np.rot90(image, k=-(check_rotation(degrees) // 90))


def crop_box(height: int, width: int, out_height: int, out_width: int) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width): the largest centred region with the output's aspect ratio."""
    if width * out_height > height * out_width:
        ch, cw = height, height * out_width // out_height
    else:
        ch, cw = width * out_height // out_width, width
    return (height - ch) // 2, (width - cw) // 2, ch, cw


def resize_map(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: first source index, second source index, Q11 weight of the second.

    Source position = (d + 0.5) * src / dst - 0.5 in Q16, floored, clamped to [0, src - 1].
    """
    d = np.arange(dst, dtype=np.int64)
    pos = ((2 * d + 1) * src << _POS_BITS) // (2 * dst) - (1 << (_POS_BITS - 1))
    pos = np.clip(pos, 0, (src - 1) << _POS_BITS)
    i0 = pos >> _POS_BITS
    weight = (pos & ((1 << _POS_BITS) - 1)) >> (_POS_BITS - _W_BITS)
    return i0, np.minimum(i0 + 1, src - 1), weight.astype(np.int32)


def _blend(p00, p01, p10, p11, wx, wy) -> np.ndarray:
    one = 1 << _W_BITS
    top = p00.astype(np.int32) * (one - wx) + p01.astype(np.int32) * wx
    bottom = p10.astype(np.int32) * (one - wx) + p11.astype(np.int32) * wx
    shift = 2 * _W_BITS
    return ((top * (one - wy) + bottom * wy + (1 << (shift - 1))) >> shift).astype(np.uint8)


def resize_bilinear(image: np.ndarray, out_height: int, out_width: int) -> np.ndarray:
    """Integer-exact bilinear resize of an (H, W, C) uint8 image (see ``resize_map``)."""
    y0, y1, wy = resize_map(image.shape[0], out_height)
    x0, x1, wx = resize_map(image.shape[1], out_width)
    wx, wy = wx[None, :, None], wy[:, None, None]
    rows0, rows1 = image[y0], image[y1]
    return _blend(rows0[:, x0], rows0[:, x1], rows1[:, x0], rows1[:, x1], wx, wy)


def input_lut(spec: InputSpec) -> np.ndarray:
    """The model input value for every pixel value 0..255: normalized, then quantized if integer.

    float64 ``(p - mean) / std / scale``, rounded half to even (Java's ``Math.rint``), plus the zero
    point, clamped to the type's range.
    """
    x = (np.arange(256, dtype=np.float64) - spec.mean) / spec.std
    if spec.dtype == "float32":
        return x.astype(np.float32)
    info = np.iinfo(np.dtype(spec.dtype))
    return np.clip(np.rint(x / spec.scale) + spec.zero_point, info.min, info.max).astype(spec.dtype)


def preprocess_reference(rgb: np.ndarray, spec: InputSpec, rotation: int = 0) -> np.ndarray:
    """The specification, step by step: rotate, crop, resize, normalize/quantize -> (1, H, W, 3)."""
    img = rotate(rgb, rotation)
    top, left, ch, cw = crop_box(img.shape[0], img.shape[1], spec.height, spec.width)
    img = resize_bilinear(img[top : top + ch, left : left + cw], spec.height, spec.width)
    return input_lut(spec)[img][None]


class Preprocessor:
    """Fast preprocessing for a stream of same-sized frames: rotation, crop, resize (and BGR order) as one gather.

    The gather indices depend only on the frame shape and rotation, so they are computed once; each
    frame then costs one take, a little integer arithmetic and one table lookup. The blend is
    rearranged as ``(p0 << 11) + (p1 - p0) * w``, algebraically equal to ``_blend`` in exact integers.
    """

    def __init__(self, spec: InputSpec, rotation: int = 0, bgr: bool = False):
        self.spec, self.rotation, self.bgr = spec, check_rotation(rotation), bgr
        self._lut = input_lut(spec)
        self._plan: tuple | None = None
        self._plan_shape: tuple[int, int] | None = None

    def _make_plan(self, height: int, width: int) -> tuple:
        k = self.rotation // 90
        rh, rw = (width, height) if k % 2 else (height, width)
        top, left, ch, cw = crop_box(rh, rw, self.spec.height, self.spec.width)
        y0, y1, wy = resize_map(ch, self.spec.height)
        x0, x1, wx = resize_map(cw, self.spec.width)
        source = np.rot90(np.arange(height * width, dtype=np.int64).reshape(height, width), k=-k)
        crop = source[top : top + ch, left : left + cw]
        channels = np.array([2, 1, 0] if self.bgr else [0, 1, 2])
        taps = np.stack([(crop[ys][:, xs][..., None] * 3 + channels).ravel() for ys in (y0, y1) for xs in (x0, x1)])
        shape = (self.spec.height, self.spec.width, 3)
        weight_x = np.broadcast_to(wx.astype(np.int32)[None, :, None], shape).ravel().copy()
        weight_y = np.broadcast_to(wy.astype(np.int32)[:, None, None], shape).ravel().copy()
        return taps, weight_x, weight_y

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """(1, H, W, 3) model input for one (h, w, 3) uint8 RGB frame (BGR when ``bgr``)."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise PipelineError(f"expected an (h, w, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        if self._plan_shape != frame.shape[:2]:
            self._plan, self._plan_shape = self._make_plan(*frame.shape[:2]), frame.shape[:2]
        taps, wx, wy = self._plan
        p = np.ascontiguousarray(frame).reshape(-1).take(taps).astype(np.int32)
        top = p[0] << _W_BITS
        top += (p[1] - p[0]) * wx
        bottom = p[2] << _W_BITS
        bottom += (p[3] - p[2]) * wx
        bottom -= top
        bottom *= wy
        top <<= _W_BITS
        top += bottom
        top += 1 << (2 * _W_BITS - 1)
        top >>= 2 * _W_BITS
        return self._lut.take(top).reshape(1, self.spec.height, self.spec.width, 3)


def dequantize(raw: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Scores as float32: ``(q - zero_point) * scale`` in float32 arithmetic (as Java's float)."""
    if raw.dtype == np.float32:
        return raw
    return (raw.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def top_k(scores: np.ndarray, k: int, threshold: float = float("-inf")) -> list[tuple[int, float]]:
    """(index, score) of the ``k`` best scores at or above ``threshold``; ties go to the lower index."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), float(scores[i])) for i in order if scores[i] >= threshold]



class FpsMeter:
    """Frames per second over the last ``window`` frames, from frame-end timestamps (seconds)."""

    def __init__(self, window: int = 30):
        if window < 2:
            raise PipelineError(f"an FPS window needs at least 2 frames, got {window}")
        self._stamps: deque[float] = deque(maxlen=window)

    def tick(self, now: float | None = None) -> float:
        self._stamps.append(time.perf_counter() if now is None else now)
        return self.fps

    @property
    def fps(self) -> float:
        if len(self._stamps) < 2 or self._stamps[-1] <= self._stamps[0]:
            return 0.0
        return (len(self._stamps) - 1) / (self._stamps[-1] - self._stamps[0])
