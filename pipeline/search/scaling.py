"""Compound scaling (Tan & Le, "EfficientNet", ICML 2019) against the target's latency instead of FLOPs.

From a base net, one coefficient φ scales depth by α^φ, width by β^φ and resolution by γ^φ. EfficientNet
grid-searches α, β, γ under α·β²·γ² ≈ 2 (twice the FLOPs per step of φ); here the constraint is the
latency the table predicts for the int8 net on the target: every grid point whose φ=1 net is predicted
at ``step`` (2x by default, ±10%) of the base's latency is trained briefly, the most accurate one wins,
and φ = 1, 2, ... give the family of nets for larger budgets, each with predicted (and, on this CPU's
tables, measured) latency.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

from pipeline.core.data import ImageSet
from pipeline.core.errors import PipelineError
from pipeline.latency.predict import predict_flatbuffer
from pipeline.latency.table import LatencyTable
from pipeline.search.space import Arch, Stage

GRID = (1.0, 1.1, 1.2, 1.3)
STEP_TOLERANCE = 0.10


@dataclass(frozen=True)
class Coefficients:
    depth: float  # α
    width: float  # β
    resolution: float  # γ


def scale(arch: Arch, c: Coefficients, phi: int) -> Arch:
    """``arch`` grown by φ steps: stage depths x α^φ (extra blocks copy the stage's last), widths x β^φ,
    resolution x γ^φ (to a multiple of 8)."""
    depth, width = c.depth ** phi, c.width ** phi
    stages = []
    for stage in arch.stages:
        blocks = stage.blocks + (stage.blocks[-1],) * (math.ceil(stage.depth * depth - 1e-9) - stage.depth)
        stages.append(Stage(round(stage.width * width, 4), stage.se, stage.act, blocks))
    resolution = max(32, int(round(arch.resolution * c.resolution ** phi / 8)) * 8)
    return Arch(resolution, tuple(stages))


def _predicted(arch: Arch, classes: int, table: LatencyTable) -> tuple[float, bytes]:
    from pipeline.core.keras_convert import full_int8_flatbuffer
    from pipeline.core.tf_env import keras
    from pipeline.search.space import build

    keras.backend.clear_session()
    flatbuffer = full_int8_flatbuffer(build(arch, classes))
    return predict_flatbuffer(flatbuffer, table).latency_ms, flatbuffer


def compound_scaling(base: Arch, datasets: Callable[[int], tuple[ImageSet, ImageSet]], table: LatencyTable,
                     score: Callable[[Arch, ImageSet, ImageSet], float], phis: tuple[int, ...] = (1, 2, 3),
                     step: float = 2.0, grid: tuple[float, ...] = GRID, tolerance: float = STEP_TOLERANCE,
                     log: Callable[[str], None] = lambda _: None) -> dict:
    """Grid-search α, β, γ for a ``step``-times latency increase per φ, then the family for ``phis``."""
    classes = len(datasets(base.resolution)[0].class_names)
    base_ms, _ = _predicted(base, classes, table)
    candidates = []
    for depth, width, resolution in itertools.product(grid, repeat=3):
        c = Coefficients(depth, width, resolution)
        if (depth, width, resolution) == (1.0, 1.0, 1.0):
            continue
        ratio = _predicted(scale(base, c, 1), classes, table)[0] / base_ms
        if abs(ratio / step - 1) <= tolerance:
            candidates.append((c, ratio))
    if not candidates:
        raise PipelineError(f"no α, β, γ in {list(grid)} scales {base.describe()} by {step}x latency (±{tolerance:.0%}); "
                            "widen the grid or change the step")
    log(f"{len(candidates)} grid points give {step}x the base latency; training their φ=1 nets")
    scored = []
    for c, ratio in candidates:
        arch = scale(base, c, 1)
        scored.append({"alpha": c.depth, "beta": c.width, "gamma": c.resolution, "latency_ratio": ratio,
                       "accuracy": score(arch, *datasets(arch.resolution))})
    best = max(scored, key=lambda s: s["accuracy"])
    chosen = Coefficients(best["alpha"], best["beta"], best["gamma"])
    family = []
    for phi in (0, *phis):
        arch = scale(base, chosen, phi)
        ms, flatbuffer = _predicted(arch, classes, table)
        member = {"phi": phi, "arch": arch.to_json(), "describe": arch.describe(), "predicted_ms": ms,
                  "size_bytes": len(flatbuffer)}
        if table.device == "cpu":
            from pipeline.latency.measure import LocalMeasurer

            member["measured_ms"] = LocalMeasurer(threads=table.threads, min_seconds=0.3).time(flatbuffer)
        family.append(member)
        log(f"φ={phi}: {ms:.3f} ms predicted ({arch.describe()})")
    return {"coefficients": {"alpha": chosen.depth, "beta": chosen.width, "gamma": chosen.resolution},
            "grid": scored, "family": family, "base_ms": base_ms, "step": step}
