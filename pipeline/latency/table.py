"""The latency table of a target: kernels measured there, the fusions its runtime makes, and a predictor.

Built the nn-Meter way (Zhang et al., "nn-Meter: towards accurate latency prediction of deep-learning
model inference on diverse edge devices", MobiSys 2021):

1. the fixed cost of an invoke is measured on a null kernel (a model's time is that cost once plus each
   kernel's time above it);
2. fusion detection: for op pairs a runtime may fuse (a pad into the next convolution, a ReLU into its
   producer), the pair is timed against its parts; a pair that costs no more than its first op is fused;
3. configurations of every op family are sampled from the shapes mobile nets use (``space.py``) and timed;
4. adaptive resampling: a per-op random forest is fitted, fresh configurations are timed and predicted,
   and around each one predicted worse than ±10% more configurations are sampled, until the time budget
   or the rounds run out.

Every timing is appended to ``TABLE.measurements.jsonl`` as it is taken, and the plan is deterministic
(seeded), so an interrupted build resumes where it stopped. The finished table is one JSON file.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.fsutil import atomic_path, write_json
from pipeline.latency import space
from pipeline.latency.kernels import CLAMP_RANGES, QUANT, Kernel, TensorSpec, synthesize, synthesize_bundle
from pipeline.latency.measure import Measurer

FORMAT = "tflpipe-latency-table/2"  # /2: large-depthwise kernel class, cold-cache twins, cache curve
READABLE_FORMATS = ("tflpipe-latency-table/1", FORMAT)  # a /1 table predicts large depthwise kernels warm only
TARGETS = {"cpu-int8": "int8", "cpu-float32": "float32"}  # target -> activation type of its kernels
# Op pairs a runtime may run as one kernel (XNNPACK folds explicit padding into convolutions and pools, and
# clamps into the op before them); the builder measures which ones this runtime really fuses.
FUSION_CANDIDATES = (("PAD", "CONV_2D"), ("PAD", "DEPTHWISE_CONV_2D"), ("PAD", "MAX_POOL_2D"),
                     ("CONV_2D", "RELU"), ("ADD", "RELU"), ("CONV_2D", "RELU6"), ("DEPTHWISE_CONV_2D", "RELU6"),
                     ("CONV_2D", "HARD_SWISH"))
ERROR_THRESHOLD = 0.10


@dataclass(frozen=True)
class BuildPlan:
    """How much to sample: ``initial`` configurations in all (shared by op weight), then up to ``rounds``
    rounds of ``validation`` fresh ones with ``neighbours`` more around each bad prediction."""

    initial: int = 4000
    rounds: int = 4
    validation: int = 500
    neighbours: int = 3
    fusion_samples: int = 4
    minutes: float = 110.0

    @classmethod
    def quick(cls) -> "BuildPlan":
        return cls(initial=150, rounds=1, validation=40, neighbours=1, fusion_samples=1, minutes=5.0)


def as_float(kernel: Kernel) -> Kernel:
    """The float32 twin of an int8 kernel (weights, biases and activations float; index tensors kept; no
    quantization option)."""
    def convert(t: TensorSpec) -> TensorSpec:
        if t.values is not None:
            return t
        return TensorSpec(t.shape, "float32" if t.dtype in ("int8", "uint8", "int32") else t.dtype, t.constant)
    return Kernel(kernel.op, tuple(convert(t) for t in kernel.inputs), tuple(convert(t) for t in kernel.outputs),
                  tuple(o for o in kernel.options if o[0] != QUANT), tuple(as_float(k) for k in kernel.fused))


UINT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D", "SOFTMAX",
             "RESHAPE", "CONCATENATION", "MEAN", "MUL")  # what TF1-era uint8 models (and Coral's) are made of
UINT8_SHARE = 0.3  # of an op's int8 sample count


def as_uint8(kernel: Kernel) -> Kernel:
    """The TF1-style uint8 twin of an int8 kernel (uint8 activations and weights, int32 bias, zero points
    moved by 128)."""
    def convert(t: TensorSpec) -> TensorSpec:
        return TensorSpec(t.shape, "uint8", t.constant, t.values) if t.dtype == "int8" else t

    def shift(option: tuple) -> tuple:
        if option[0] != QUANT:
            return option
        zp_in, zp_out, *rest = option[1]
        return (QUANT, (zp_in + 128, zp_out + 128, *rest))
    return Kernel(kernel.op, tuple(convert(t) for t in kernel.inputs), tuple(convert(t) for t in kernel.outputs),
                  tuple(shift(o) for o in kernel.options), tuple(as_uint8(k) for k in kernel.fused))


# --- kernel classes: where the runtime's cost regime changes -------------------------------------------------
COLD = ("cache", "cold")  # option of a kernel timed with its weights out of cache (ignored when synthesized)
COLD_BUNDLE_CACHES = 4  # a cold timing runs copies of the kernel whose packed weights fill 4x the cache
COLD_MAX_COPIES = 400
COLD_MAX_INVOKE_MS = 60.0  # fewer copies for kernels this slow: their weights matter less than their compute
DEFAULT_CACHE_BYTES = 32 * 2**20  # where the measurer cannot tell (a phone over adb)
CURVE_SHARES = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1, 3 / 2, 2)  # bundles of packed weights this share of the cache
CURVE_BUNDLES = 7  # random bundles per share, the median kept (a bundle takes ~0.1 s; its timing drifts on a
# shared machine: two 3-bundle curves of one quiet run differed by 0.09 at 18 MB)
CURVE_REPEATS = 5  # curves measured over the build (one per phase, the rest at its end), the median kept
CURVE_MAX_WARM_MS = 1.0  # bundle members: large kernels of the sizes 32-64 px nets have


def is_large_depthwise(kernel: Kernel) -> bool:
    """A depthwise kernel with more taps than XNNPACK's depthwise microkernels take (7x7 and up): it runs a
    generic path ~10x slower per tap, whose packed weights (~6 KB a channel) overflow the cache in a net."""
    if kernel.op != "DEPTHWISE_CONV_2D" or len(kernel.inputs) < 2 or len(kernel.inputs[1].shape) != 4:
        return False
    shape = kernel.inputs[1].shape
    return shape[1] * shape[2] > space.DEPTHWISE_FAST_TAPS


def is_cold(kernel: Kernel) -> bool:
    return COLD in kernel.options


def as_cold(kernel: Kernel) -> Kernel:
    """The kernel tagged to be timed cold (see :func:`cold_copies`); its key differs, its model does not."""
    return kernel if is_cold(kernel) else Kernel(kernel.op, kernel.inputs, kernel.outputs, (*kernel.options, COLD),
                                                 kernel.fused)


def as_warm(kernel: Kernel) -> Kernel:
    """The kernel itself, without the tag that says to time it cold."""
    return Kernel(kernel.op, kernel.inputs, kernel.outputs, tuple(o for o in kernel.options if o != COLD),
                  kernel.fused)


def family(kernel: Kernel) -> str:
    """What the predictor keys on: the op, ``:large`` for depthwise kernels past XNNPACK's fast path, ``:cold``
    for their out-of-cache timings, and ``:uint8`` for TF1-style kernels (XNNPACK runs them apart)."""
    name = kernel.op
    if is_large_depthwise(kernel):
        name += ":large" + (":cold" if is_cold(kernel) else "")
    acts = kernel.activations or kernel.outputs
    return f"{name}:uint8" if acts and acts[0].dtype == "uint8" and kernel.op != "QUANTIZE" else name


def packed_bytes(kernel: Kernel) -> int:
    """Bytes of weights the kernel reads each invoke, as XNNPACK packs them: a large depthwise kernel's generic
    path tiles every channel to 16 outputs of 8 inputs (6.4 KB a channel at 7x7, measured: 6.2 MB at 960
    channels); other kernels read their weights about as stored."""
    total = 0
    for part in (kernel, *kernel.fused):
        constants = [t for t in part.inputs if t.constant and t.values is None]
        if is_large_depthwise(part):
            _, kh, kw, channels = part.inputs[1].shape
            total += channels * (16 * 8 * kh * kw + 16 * 8)
        else:
            total += sum(int(np.prod(t.shape)) * (1 if t.dtype in ("int8", "uint8") else 4) for t in constants)
    return total


def cold_copies(kernel: Kernel, warm_ms: float, cache_bytes: int) -> int:
    """How many copies of ``kernel`` a cold timing runs side by side: enough that their packed weights fill
    several caches (each copy then reads its weights from memory, as in a net of many such layers), fewer
    when the kernel is so slow that its weights hardly matter."""
    wanted = -(-COLD_BUNDLE_CACHES * cache_bytes // max(packed_bytes(kernel), 1))
    affordable = int(COLD_MAX_INVOKE_MS / max(warm_ms, 1e-6))
    return int(max(2, min(wanted, affordable, COLD_MAX_COPIES)))


def cold_fraction(curve: list[list[float]], working_set: float) -> float:
    """How far a net whose packed weights total ``working_set`` bytes is from warm (0) to cold (1), read off
    the table's measured curve (log-linear between its points)."""
    if not curve:
        return 0.0
    sizes = np.log([max(float(w), 1.0) for w, _ in curve])
    return float(np.clip(np.interp(math.log(max(working_set, 1.0)), sizes, [f for _, f in curve]), 0.0, 1.0))


# --- features ------------------------------------------------------------------------------------------------

def _log(value: float) -> float:
    return math.log(max(value, 1.0))


def features(kernel: Kernel) -> list[float]:
    """What a kernel's time depends on, by op family (MACs, shapes, kernel size, stride, activation; a quantized
    clamp's branch mix)."""
    acts = kernel.activations
    x = acts[0].shape if acts else (1,)
    out = kernel.outputs[0].shape
    in_elems = sum(int(np.prod(t.shape)) for t in acts)
    out_elems = sum(int(np.prod(t.shape)) for t in kernel.outputs)
    macs, _ = space.kernel_size(kernel)
    act = float(kernel.option("fusedActivationFunction", 0) or 0)
    if kernel.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        w = kernel.inputs[1].shape
        k, stride = float(w[1]), float(kernel.option("strideH", 1))
        cin, cout = float(x[-1]), float(out[-1])
        pixels = out[1] * out[2]
        reduction = (1, w[1] * w[2]) if kernel.op == "DEPTHWISE_CONV_2D" else (w[3], w[1] * w[2])
        return [_log(macs), _log(cin), _log(cout), _log(pixels), _log(x[1] * x[2]), k, stride, act,
                _log(in_elems), _log(out_elems), _log(np.prod(w)), cin % 8, cout % 8,
                *_tiles(pixels, int(cout), *reduction)]
    if kernel.op == "FULLY_CONNECTED":
        cin, cout = kernel.inputs[1].shape[1], kernel.inputs[1].shape[0]
        return [_log(macs), _log(cin), _log(cout), _log(in_elems / cin), act, cin % 8, cout % 8,
                *_tiles(max(1, in_elems // cin), cout, cin, 1)]
    k = float(kernel.option("filterHeight", 0) or 0)
    stride = float(kernel.option("strideH", 0) or 0)
    broadcast = float(len(acts) > 1 and acts[0].shape != acts[1].shape)
    lasts = [t.shape[-1] if t.shape else 1 for t in (*acts, *kernel.outputs)]
    # Memory-bound ops: how many contiguous rows they move and how long each is (a channel shuffle's concat
    # of (HW, C, 1) tensors copies one byte at a time, 100x slower per element than a channel concat).
    memory = [_log(in_elems), _log(out_elems), float(len(acts)), float(len(kernel.outputs)), _log(x[-1]),
              _log(out[-1]), k, stride, act, broadcast, float(len(x)), float(bool(kernel.option("keepDims", False))),
              _log(min(lasts)), _log(max(lasts)), _log(out_elems / max(out[-1], 1)), float(min(lasts) == 1),
              float(kernel.option("padding", 0) or 0), _log(in_elems / max(out_elems, 1) * 100)]
    if kernel.op in CLAMP_RANGES and kernel.outputs[0].dtype in ("int8", "uint8"):
        return [*memory, *_clamp_features(kernel, out_elems)]
    return memory


CLAMP_MISPREDICT_COST = 2.6  # a (1, 14, 14, 480) int8 RELU: 0.29 ms with every input on one branch, 0.75 at 50/50


def _clamp_features(kernel: Kernel, elements: int) -> list[float]:
    """A clamp's branch mix and what it costs: random inputs make its branches unpredictable, so the time per
    element grows with the share of inputs off the majority branch (``mixed``), or, seen as two compares, with
    each compare's minority share (``mispredicted``); the log costs give the forest that product directly."""
    low, high, passed = clamp_branches(kernel)
    mixed = 1.0 - max(low, high, passed)
    mispredicted = min(low, 1.0 - low) + min(high, 1.0 - high)
    spread = 1.0 - (low ** 2 + high ** 2 + passed ** 2)
    return [low, high, passed, mixed, mispredicted, spread, _log(elements * (1 + CLAMP_MISPREDICT_COST * mixed)),
            _log(elements * (1 + CLAMP_MISPREDICT_COST * mispredicted))]


def clamp_branches(kernel: Kernel) -> tuple[float, float, float]:
    """Shares of uniformly distributed inputs a quantized clamp kernel clamps at its low bound, saturates at its
    high bound and passes requantized, computed the way LiteRT's ReluX does it (bounds are the clamp range in
    the output's quantization, within the type's range)."""
    zp_in, zp_out, ratio, scale_out = kernel.quant
    if not scale_out > 0:
        raise ValueError(f"{kernel.op} output scale {scale_out} is not positive")
    lowest, highest = (0, 255) if kernel.outputs[0].dtype == "uint8" else (-128, 127)
    bottom, top = CLAMP_RANGES[kernel.op]
    act_min = max(lowest, zp_out + round(bottom / scale_out))
    act_max = highest if math.isinf(top) else min(highest, zp_out + round(top / scale_out))
    values = zp_out + np.round((np.arange(lowest, highest + 1) - zp_in) * ratio)
    low, high = float(np.mean(values < act_min)), float(np.mean(values > act_max))
    return low, high, 1.0 - low - high


def _tiles(pixels: int, cout: int, cin: int, taps: int) -> list[float]:
    """MACs as the runtime's micro-kernels compute them: output channels, input channels and pixels
    rounded up to the register tiles of XNNPACK's GEMM and depthwise kernels (tiles of 8-64 channels, 4
    rows); the part of a tile left empty costs as much as a full one. Cross-validated on a 5,000-kernel
    table, these lift convolutions within ±10% from 51% to 82% and depthwise ones from 67% to 93%."""
    def up(value: int, step: int) -> int:
        return -(-value // step) * step

    padded = [_log(pixels * up(cout, n) * taps * up(cin, k)) for n, k in ((16, 8), (32, 4), (8, 16), (64, 1))]
    return [*padded, cout % 16, cout % 32, cin % 16, _log(pixels), _log(up(cout, 16)), _log(up(cin, 8)),
            pixels % 4, pixels % 7, _log(up(pixels, 4) * up(cout, 16) * taps * up(cin, 8))]


# --- the table -----------------------------------------------------------------------------------------------

@dataclass
class LatencyTable:
    """Measured kernels of one target at one thread count, and the random-forest predictor fitted on them."""

    meta: dict
    rows: list[tuple[Kernel, float]]
    _models: dict = field(default_factory=dict, repr=False)
    _cold_cost: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._families = set(self.ops)

    @property
    def target(self) -> str:
        return self.meta["target"]

    @property
    def threads(self) -> int:
        return int(self.meta["threads"])

    @property
    def overhead_ms(self) -> float:
        return float(self.meta["overhead_ms"])

    @property
    def device(self) -> str:
        """Where the kernels were timed: ``cpu`` (this machine's LiteRT) or ``android-<delegate>``."""
        return str(self.meta.get("measured_by", {}).get("target", "cpu"))

    @property
    def fusions(self) -> set[tuple[str, str]]:
        return {tuple(pair) for pair in self.meta.get("fusions", [])}

    @property
    def ops(self) -> list[str]:
        """The kernel families measured (ops, ``OP:uint8`` for TF1-style kernels)."""
        return sorted({family(k) for k, _ in self.rows})

    def _model(self, key: str):
        if key not in self._models:
            self._models[key] = fit([(k, ms) for k, ms in self.rows if family(k) == key])
        return self._models[key]

    @property
    def cache_curve(self) -> list[list[float]]:
        """[working-set bytes, cold fraction] pairs measured by the builder; empty for a /1 table."""
        return list(self.meta.get("cache_curve") or [])

    @property
    def cold_ms_per_byte(self) -> float:
        """What a byte of packed weights costs read from memory rather than the cache, as the builder measured
        it: the median over the large depthwise kernels timed both warm and cold of (cold - warm) / their
        packed bytes (0 for a table without such twins)."""
        if self._cold_cost is None:
            warm = {k.key: ms for k, ms in self.rows if not is_cold(k)}
            costs = [(ms - warm[as_warm(k).key]) / max(packed_bytes(k), 1) for k, ms in self.rows
                     if is_cold(k) and as_warm(k).key in warm]
            self._cold_cost = max(float(np.median(costs)), 0.0) if costs else 0.0
        return self._cold_cost

    def predict_kernels(self, kernels: list[Kernel], working_set: float | None = None) -> list[float | None]:
        """Milliseconds each kernel adds to a model's invoke (its time above the invoke overhead); None when
        the table has no measurements of its op.

        Every kernel was timed alone, its weights warm in the cache; in a net, the other layers' weights evict
        them as far as the net's packed weights, ``working_set`` bytes (by default those of ``kernels``),
        overflow the cache (the measured curve). Large depthwise kernels are then predicted between their warm
        and cold timings (geometrically); every other kernel pays that cold share of its packed weights at the
        measured cost of a cold byte (:attr:`cold_ms_per_byte`): +0.8 ms at 1 thread here for ResNet-50 at 128
        px (26 MB of weights), whose kernels timed alone sum to 10% under the whole net.
        """
        result: list[float | None] = [None] * len(kernels)
        by_op: dict[str, list[int]] = {}
        for i, kernel in enumerate(kernels):
            by_op.setdefault(family(kernel), []).append(i)
        fraction, curve = 0.0, self.cache_curve
        if curve:
            total = working_set if working_set is not None else sum(packed_bytes(k) for k in kernels)
            fraction = cold_fraction(curve, total)
        cold_byte_ms = fraction * self.cold_ms_per_byte if fraction > 0 else 0.0  # per packed byte, this net
        for op, indices in by_op.items():
            model = self._model(op) if op in self._families else None
            if model is None:
                continue
            rows = np.array([features(kernels[i]) for i in indices])
            log_ms = model.predict(rows)
            cold_family = op.replace(":large", ":large:cold")
            blended = cold_family != op and cold_family in self._families
            if blended and fraction > 0:
                log_ms = (1 - fraction) * log_ms + fraction * self._model(cold_family).predict(rows)
            for i, ms in zip(indices, np.exp(log_ms)):
                cold_reads = 0.0 if blended or not cold_byte_ms else cold_byte_ms * packed_bytes(kernels[i])
                result[i] = max(float(ms) - self.overhead_ms, 0.0) + cold_reads
        return result

    def to_json(self) -> dict:
        return {"format": FORMAT, **self.meta, "kernels": [[k.to_json(), ms] for k, ms in self.rows]}

    def save(self, path: str | Path) -> None:
        write_json(Path(path), self.to_json())


def fit(rows: list[tuple[Kernel, float]]):
    """Extremely randomized trees on log time: a random forest as in nn-Meter, with random split points,
    which cross-validated better on these kernels (convolutions within ±10%: 82% against 70%)."""
    from sklearn.ensemble import ExtraTreesRegressor

    if not rows:
        return None
    model = ExtraTreesRegressor(n_estimators=150, max_features=0.8, random_state=0, n_jobs=1)
    model.fit(np.array([features(k) for k, _ in rows]), np.log(np.array([max(ms, 1e-5) for _, ms in rows])))
    return model


def load_table(path: str | Path) -> LatencyTable:
    """A table written by :func:`build_table`, checked before use (user files are untrusted)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"latency table {path} does not exist; build one with `tflpipe latency build`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{path} is not a latency table ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") not in READABLE_FORMATS:
        found = raw.get("format") if isinstance(raw, dict) else None
        if isinstance(found, str) and found.startswith("tflpipe-latency-table/"):
            raise PipelineError(f"{path} is a latency table of format {found}, newer than this tflpipe reads "
                                f"({', '.join(READABLE_FORMATS)}); update tflpipe or rebuild the table")
        raise PipelineError(f"{path} is not a tflpipe latency table (format {FORMAT!r} expected)")
    try:
        rows = [(Kernel.from_json(k), float(ms)) for k, ms in raw.pop("kernels")]
        for kernel, _ in rows:
            features(kernel)  # every field the predictor reads is there and numeric
        meta = {key: raw[key] for key in ("target", "threads", "overhead_ms")} | raw
        if meta["target"] not in TARGETS and not str(meta["target"]).startswith("android"):
            raise ValueError(meta["target"])
        int(meta["threads"]), float(meta["overhead_ms"])
        for size, fraction in meta.get("cache_curve") or []:
            float(size), float(fraction)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PipelineError(f"{path}: malformed latency table ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise PipelineError(f"{path}: the latency table has no measurements")
    return LatencyTable(meta, rows)


DRIFT_TOLERANCE = 0.10  # the predictor's own accuracy goal: a larger shift is the table's, not the model's error
DRIFT_MIN_MS = 0.01  # kernels this fast are mostly invoke overhead and timer noise: not drawn for the check


def check_drift(table: LatencyTable, measurer: Measurer, per_op: int = 3, seed: int = 0,
                tolerance: float = DRIFT_TOLERANCE) -> dict:
    """Time ``per_op`` of the table's own kernels of every op family again on ``measurer`` and compare.

    A table is only as good as the machine it was measured on: the same CPU name in a cloud can be another host
    (here a table built on one session's machine predicted every 64 px net 2.0-2.3x too fast on a later one,
    hard-swish nets 1.45x), and a phone's clocks change with its thermal state. ``ratio`` is the median of now /
    then over the kernels drawn (those of at least ``DRIFT_MIN_MS``); ``drifted`` when it is off by more than
    ``tolerance``, in which case predictions are that far off too and the table should be rebuilt here."""
    if measurer.threads != table.threads:
        raise PipelineError(f"the table was measured at {table.threads} thread(s), not {measurer.threads}")
    if measurer.target != table.device:
        raise PipelineError(f"the table was measured on {table.device}, not {measurer.target}: check it there"
                            + ("" if table.device == "cpu" else " (--adb SERIAL --delegate ...)"))
    rng = np.random.default_rng(seed)
    by_family: dict[str, list[tuple[Kernel, float]]] = {}
    for kernel, ms in table.rows:
        if not is_cold(kernel) and ms >= DRIFT_MIN_MS:
            by_family.setdefault(family(kernel), []).append((kernel, ms))
    if not by_family:
        raise PipelineError(f"the table has no kernel of at least {DRIFT_MIN_MS} ms to time again")
    ratios: dict[str, list[float]] = {}
    for name, rows in sorted(by_family.items()):
        for index in rng.choice(len(rows), min(per_op, len(rows)), replace=False):
            kernel, then = rows[index]
            ratios.setdefault(name, []).append(measurer.time(synthesize(kernel)) / then)
    every = [r for values in ratios.values() for r in values]
    ratio = float(np.median(every))
    return {"ratio": ratio, "drifted": abs(ratio - 1) > tolerance, "tolerance": tolerance, "kernels": len(every),
            "within_tolerance": float(np.mean([abs(r - 1) <= tolerance for r in every])),
            "by_op": {name: float(np.median(values)) for name, values in ratios.items()},
            "table_measured_by": table.meta.get("measured_by", {}), "built": table.meta.get("built"),
            "now_measured_by": measurer.describe()}


# --- building --------------------------------------------------------------------------------------------------

NULL_KERNEL = Kernel("ADD", (TensorSpec((1, 1)), TensorSpec((1, 1))), (TensorSpec((1, 1)),))


_JOURNAL_KEYS = ("target", "threads", "device", "serial")  # a journal resumes only the same build


class _Journal:
    """Measurements appended as they are taken; reopened, it answers the ones already done."""

    def __init__(self, path: Path, meta: dict) -> None:
        self.path = path
        self.done: dict[str, float] = {}
        if path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            try:
                header = json.loads(lines[0]) if lines else {}
            except ValueError:
                header = None
            if not isinstance(header, dict):
                raise PipelineError(f"{path} is not a latency build journal; remove it to start the build afresh")
            if {k: header.get(k) for k in _JOURNAL_KEYS} != {k: meta[k] for k in _JOURNAL_KEYS}:
                raise PipelineError(f"{path} holds measurements of {header.get('target')} kernels on "
                                    f"{header.get('device')} {header.get('serial') or ''} at {header.get('threads')} "
                                    "thread(s); remove it or build that table")
            for number, line in enumerate(lines[1:], start=1):
                try:
                    key, ms = json.loads(line)
                    self.done[key] = float(ms)
                except (ValueError, TypeError):
                    # a line cut short by an interruption: drop it and what follows, so appends start clean
                    path.write_text("".join(f"{kept}\n" for kept in lines[:number]), encoding="utf-8")
                    break
        else:
            path.write_text(json.dumps({k: meta[k] for k in _JOURNAL_KEYS}) + "\n", encoding="utf-8")
        self.resumed = len(self.done)

    def record(self, key: str, ms: float) -> None:
        self.done[key] = ms
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps([key, ms]) + "\n")


def build_table(measurer: Measurer, target: str, out: str | Path, plan: BuildPlan = BuildPlan(),
                ops: Iterable[str] | None = None, seed: int = 0, progress: bool = True,
                log: Callable[[str], None] = lambda _: None) -> LatencyTable:
    """Measure kernels on ``measurer`` and write the table to ``out`` (resuming an interrupted build)."""
    if target not in TARGETS:
        raise PipelineError(f"unknown latency target {target!r}; choose one of {', '.join(TARGETS)}")
    out = Path(out)
    ops = list(ops or space.SAMPLERS)
    unknown = [op for op in ops if op not in space.SAMPLERS]
    if unknown:
        raise PipelineError(f"no sampler for {', '.join(unknown)}; known ops: {', '.join(space.SAMPLERS)}")
    asked = ops
    if target == "cpu-float32":
        ops = [op for op in ops if op != "QUANTIZE"]
    if not ops:
        raise PipelineError(f"nothing to measure: {target} has no kernels of {', '.join(asked)}; choose other --ops")
    described = measurer.describe()
    meta = {"target": target, "threads": measurer.threads, "device": described.get("target"),
            "serial": described.get("serial")}
    existing = _existing_table(out, meta)
    journal = _Journal(out.with_name(out.name + ".measurements.jsonl"), meta)
    for kernel, ms in existing.rows if existing else []:
        journal.done.setdefault(kernel.key, ms)
    started = time.monotonic()
    deadline = started + plan.minutes * 60
    convert = as_float if target == "cpu-float32" else (lambda k: k)
    uint8 = target == "cpu-int8"
    bar = _bar(progress, plan)
    if journal.resumed:
        log(f"resuming: {journal.resumed} measurements already in {journal.path.name}")
    reused = len(existing.rows) if existing else 0
    earlier_minutes = float(existing.meta.get("build_minutes", 0.0)) if existing else 0.0
    if reused:
        log(f"extending {out.name}: its {reused} kernels are kept, only the ones it lacks are measured")
    cache = int(described.get("cache_bytes") or DEFAULT_CACHE_BYTES)
    overheads: list[float] = []

    def measure(kernel: Kernel) -> float:
        key = kernel.key
        if key not in journal.done:
            if is_cold(kernel):
                warm = as_warm(kernel)
                copies = cold_copies(warm, measure(warm) - overheads[0], cache)
                bundle_ms = measurer.time(synthesize_bundle([warm] * copies))
                journal.record(key, (bundle_ms - overheads[0]) / copies + overheads[0])  # one copy's share
            else:
                journal.record(key, measurer.time(synthesize(kernel)))
        bar.update(1)
        return journal.done[key]

    def measure_bundle(kernels: list[Kernel]) -> float:
        key = "bundle:" + hashlib.sha1("".join(k.key for k in kernels).encode()).hexdigest()
        if key not in journal.done:
            journal.record(key, measurer.time(synthesize_bundle(kernels)))
        return journal.done[key]

    def null_time(round_: int) -> float:
        # Re-timed in each phase (keys differ by a no-op option) so drift on a shared machine is seen.
        tagged = Kernel(NULL_KERNEL.op, NULL_KERNEL.inputs, NULL_KERNEL.outputs, (("phase", round_),))
        return measure(tagged)

    overheads.append(null_time(0))
    fusions = _detect_fusions(lambda k: measure(convert(k)), plan, seed, overheads[0])
    # An extension keeps every kernel the table had, those its adaptive rounds would not draw again included.
    rows: dict[str, tuple[Kernel, float]] = {kernel.key: (kernel, ms) for kernel, ms in existing.rows} \
        if existing else {}
    kept_curve = existing.cache_curve if existing else []
    large_before = _large_keys(rows.values())

    def curve_holds() -> bool:
        """The table's own curve still holds: its large kernels are all there is to bundle, and measuring it again
        would only swap in the drift of the moment (two builds' plateaus: 0.61, 0.57)."""
        return bool(kept_curve) and _large_keys(rows.values()) == large_before

    def curve_now(round_: int) -> list[list[float]]:
        if curve_holds():
            return []
        return _cache_curve(list(rows.values()), measure_bundle, cache, overheads[0], [seed, round_])

    weights = {op: space.WEIGHTS.get(op, space.EXTRA_WEIGHTS.get(op, 1.0)) for op in ops}
    # Extra kernel classes do not shrink the ops' shares: extending a table with them keeps its kernels.
    total = sum(weights[op] for op in ops if op not in space.EXTRA_WEIGHTS) or sum(weights.values())
    for op in ops:
        rng = np.random.default_rng([seed, 1, space.SAMPLERS_ORDER.index(op)])
        count = max(4, round(plan.initial * weights[op] / total))
        for number in range(count + (round(count * UINT8_SHARE) if uint8 and op in UINT8_OPS else 0)):
            if time.monotonic() > deadline:
                break
            kernel = space.sample(op, rng)
            kernel = convert(kernel) if number < count else as_uint8(kernel)
            rows[kernel.key] = (kernel, measure(kernel))
            if is_large_depthwise(kernel):  # and its time inside a net whose weights overflow the cache
                cold = as_cold(kernel)
                rows[cold.key] = (cold, measure(cold))
    curves = [curve_now(0)]
    errors = {}
    for round_ in range(1, plan.rounds + 1):
        if time.monotonic() > deadline:
            log("time budget spent: stopping the adaptive rounds")
            break
        overheads.append(null_time(round_))
        curves.append(curve_now(round_))
        table = LatencyTable({"target": target, "threads": measurer.threads, "overhead_ms": overheads[0]},
                             list(rows.values()))
        fresh: list[tuple[Kernel, Kernel, float]] = []
        for op in ops:
            rng = np.random.default_rng([seed, 2, round_, space.SAMPLERS_ORDER.index(op)])
            for _ in range(max(2, round(plan.validation * weights[op] / total))):
                if time.monotonic() > deadline:
                    break
                kernel = convert(space.sample(op, rng))
                fresh.append((kernel, kernel, measure(kernel)))
        predicted = table.predict_kernels([k for _, k, _ in fresh])
        bad = []
        for (raw, kernel, ms), guess in zip(fresh, predicted):
            guess_total = (guess or 0.0) + table.overhead_ms
            error = abs(guess_total - ms) / ms
            errors.setdefault(family(kernel), []).append(error)
            if error > ERROR_THRESHOLD:
                bad.append(raw)
            rows[kernel.key] = (kernel, ms)
        share = 1 - len(bad) / max(len(fresh), 1)
        log(f"round {round_}: {share:.1%} of {len(fresh)} fresh kernels predicted within ±10%; "
            f"resampling around {len(bad)}")
        # One stream per kernel family: a family's new samples (an extension) move no other family's neighbours.
        streams: dict[str, np.random.Generator] = {}
        for kernel in bad:
            name = family(kernel)
            rng = streams.setdefault(name, np.random.default_rng([seed, 3, round_, zlib.crc32(name.encode())]))
            for near in map(convert, space.neighbours(kernel, rng, plan.neighbours)):
                if time.monotonic() > deadline:
                    break
                rows[near.key] = (near, measure(near))
    if curve_holds():
        curve = kept_curve
    else:
        measured, next_seed = [c for c in curves if c], len(curves)
        while len(measured) < CURVE_REPEATS:
            measured.append(_cache_curve(list(rows.values()), measure_bundle, cache, overheads[0], [seed, next_seed]))
            next_seed += 1
        curve = _median_curve(measured)
    bar.close()
    meta = {"target": target, "threads": measurer.threads, "overhead_ms": float(np.median(overheads)),
            "fusions": sorted(list(pair) for pair in fusions), "measured_by": described,
            "built": datetime.now(timezone.utc).isoformat(timespec="seconds"), "kernel_count": len(rows),
            "build_minutes": round(earlier_minutes + (time.monotonic() - started) / 60, 1),
            "resumed_measurements": journal.resumed,
            "reused_kernels": reused, "cache_bytes": cache, "cache_curve": curve,
            "plan": vars(plan) if hasattr(plan, "__dict__") else {},
            "validation_error": {op: {"within_10pct": float(np.mean(np.array(e) <= ERROR_THRESHOLD)), "n": len(e)}
                                 for op, e in sorted(errors.items())}}
    table = LatencyTable(meta, list(rows.values()))
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(table.to_json()), encoding="utf-8")
    journal.path.unlink()
    return table


def _existing_table(out: Path, meta: dict) -> LatencyTable | None:
    """The finished table at ``out`` (same target, threads and device), whose kernels seed the build:
    rebuilding a table with more samplers measures only what it lacks."""
    if not out.is_file():
        return None
    existing = load_table(out)
    found = {"target": existing.target, "threads": existing.threads, "device": existing.device,
             "serial": existing.meta.get("measured_by", {}).get("serial")}
    if {k: found[k] for k in ("target", "threads")} != {k: meta[k] for k in ("target", "threads")} \
            or (found["device"], found["serial"]) != (meta["device"] or "cpu", meta["serial"]):
        raise PipelineError(f"{out} is a table of {found['target']} kernels on {found['device']} at "
                            f"{found['threads']} thread(s); choose another --out or remove it to build this one")
    return existing


def _large_keys(rows: Iterable[tuple[Kernel, float]]) -> set[str]:
    return {kernel.key for kernel, _ in rows if is_large_depthwise(kernel)}


def _median_curve(curves: list[list[list[float]]]) -> list[list[float]]:
    """Point by point median of curves measured at different times of the build: how cold a net runs depends
    on what else fills the shared cache, which drifts (plateaus of 0.49 and 0.73 minutes apart here)."""
    curves = [c for c in curves if c]
    if not curves:
        return []
    points = np.median(np.array(curves, dtype=float), axis=0)
    return [[float(size), round(float(fraction), 4)] for size, fraction in points]


def _cache_curve(rows: list[tuple[Kernel, float]], measure_bundle: Callable[[list[Kernel]], float], cache: int,
                 overhead: float, seed: list[int]) -> list[list[float]]:
    """How cold a net's large depthwise kernels run as its packed weights grow: bundles of distinct measured
    large kernels (side by side in one model, as a net's layers) whose weights total a share of the cache, each
    timed whole; the point's fraction is where the bundle falls between its kernels' warm and cold sums
    (log scale, median of the bundles, clipped to [0, 1]), then fitted non-decreasing by isotonic regression (a
    running maximum let one high point decide every larger size). Empty without enough kernels."""
    timings = {k.key: ms for k, ms in rows}
    pairs = [(k, ms - overhead, timings[as_cold(k).key] - overhead) for k, ms in rows
             if is_large_depthwise(k) and not is_cold(k) and as_cold(k).key in timings
             and 0 < ms - overhead <= CURVE_MAX_WARM_MS]
    if len(pairs) < 4:
        return []
    rng = np.random.default_rng([*seed, 5])
    points = []
    for share in CURVE_SHARES:
        sizes, fractions = [], []
        for _ in range(CURVE_BUNDLES):
            members, total = [], 0
            for i in rng.permutation(len(pairs)):
                if total >= share * cache:
                    break
                members.append(pairs[int(i)])
                total += packed_bytes(pairs[int(i)][0])
            warm, cold = sum(m[1] for m in members), sum(m[2] for m in members)
            ms = measure_bundle([m[0] for m in members]) - overhead
            sizes.append(total)
            fractions.append(math.log(max(ms, 1e-9) / warm) / math.log(cold / warm) if cold > warm * 1.05 else 0.0)
        points.append((float(np.median(sizes)), float(np.clip(np.median(fractions), 0.0, 1.0))))
    from sklearn.isotonic import IsotonicRegression

    points.sort()
    fractions = IsotonicRegression(y_min=0.0, y_max=1.0).fit_transform(np.arange(len(points)), [f for _, f in points])
    return [[size, round(float(f), 4)] for (size, _), f in zip(points, fractions)]


def _detect_fusions(measure: Callable[[Kernel], float], plan: BuildPlan, seed: int, overhead: float) -> set:
    """The candidate pairs whose combined kernel costs no more than its first op plus a third of the second."""
    fused = set()
    for number, (first, second) in enumerate(FUSION_CANDIDATES):
        rng = np.random.default_rng([seed, 4, number])
        saved = []
        for _ in range(plan.fusion_samples):
            head = _fusable_head(first, second, rng)
            tail = _tail_for(second, head)
            pair = Kernel(head.op, head.inputs, head.outputs, head.options, (tail,))
            a, b, ab = measure(head), measure(tail), measure(pair)
            saved.append((a + b - overhead - ab) / max(b - overhead, 1e-6))
        if float(np.median(saved)) > 2 / 3:
            fused.add((first, second))
    return fused


def _fusable_head(first: str, second: str, rng: np.random.Generator) -> Kernel:
    if first == "PAD":
        size, c = int(rng.choice([14, 28, 56])), int(rng.choice([32, 64, 96]))
        return space.pad(size, size, c, 1, 1)
    if first == "ADD":
        size, c = int(rng.choice([14, 28])), int(rng.choice([64, 128]))
        return space.binary("ADD", (1, size, size, c), (1, size, size, c))
    size, c = int(rng.choice([14, 28, 56])), int(rng.choice([32, 64, 96]))
    if first == "DEPTHWISE_CONV_2D":
        return space.depthwise(size, size, c, 3, 1)
    return space.conv(size, size, c, c, 1, 1)


def _tail_for(second: str, head: Kernel) -> Kernel:
    shape = head.outputs[0].shape
    if second == "CONV_2D":
        return space.conv(shape[1], shape[2], shape[3], shape[3], 3, 1, padding=1)
    if second == "DEPTHWISE_CONV_2D":
        return space.depthwise(shape[1], shape[2], shape[3], 3, 1, padding=1)
    if second == "MAX_POOL_2D":
        return space.pool("MAX_POOL_2D", shape[1], shape[2], shape[3], 3, 2, 1)
    return space.unary(second, shape)


def _bar(progress: bool, plan: BuildPlan):
    from tqdm import tqdm

    expected = plan.initial + plan.rounds * plan.validation * (1 + plan.neighbours // 2) + 40
    return tqdm(total=expected, disable=not progress, unit="kernel", desc="latency table", leave=False)
