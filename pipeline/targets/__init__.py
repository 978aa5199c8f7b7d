"""Deployment targets side by side, as one table: what each checks or prepares for a finished model.

The Edge TPU and NNAPI checkers share one shape (``check(model) -> TargetReport``, see
:mod:`pipeline.core.target_report`); Android's target writes the camera app's assets. Each entry
names the run settings it reads, so ``run`` re-runs exactly the targets whose settings changed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.core.errors import StageFailed

log = logging.getLogger("tflpipe")


def edgetpu_target(model: Path, run_dir: Path, allow_cpu_ops: bool = False) -> dict:
    """Static Edge TPU check of ``model``, and the real compiler's verdict when it is installed."""
    from edgetpu.check import check
    from edgetpu.compiler import INSTALL_HINT, compile_model, find_compiler

    report = check(model)
    result: dict = {"check": report.to_dict()}
    cpu_ops = report.cpu_ops
    if find_compiler():
        compiled = compile_model(model, run_dir / "edgetpu").to_dict()
        result["compile"] = compiled
        cpu_ops = {name: n for m in compiled["models"] for name, n in m["cpu_ops"].items()}
    else:
        result["compile"] = {"skipped": INSTALL_HINT}
        log.warning("edgetpu: static check only; %s", INSTALL_HINT)
    mapped = not report.model_errors and not cpu_ops
    result["fully_mapped"] = mapped
    if not mapped and not allow_cpu_ops:
        problems = report.model_errors or [f"{name} x{n}" for name, n in cpu_ops.items()]
        raise StageFailed(f"edgetpu: the model does not map fully to the Edge TPU ({'; '.join(problems)}); "
                          "see report.md for the reasons, or pass --allow-cpu-ops to accept CPU ops", result)
    return result


def nnapi_target(model: Path, run_dir: Path, nnapi_api_level: int = 30) -> dict:
    """Which ops of ``model`` Android's NNAPI delegate takes, by API level."""
    from pipeline.targets.nnapi import check

    result = check(model, api_level=nnapi_api_level).to_dict()
    if result["cpu_ops"]:
        log.warning("nnapi: %d of %d ops fall back to the CPU at API %d", result["total_ops"] - result["delegated_ops"],
                    result["total_ops"], result["api_level"])
    return result


def android_target(model: Path, run_dir: Path) -> dict:
    """The Android demo's assets (model, labels, model_config.json) in the run folder, ready to copy."""
    from pipeline.targets.android.export import export_android

    return export_android(run_dir, run_dir / "android")


def _edgetpu_lines(r: dict) -> list[str]:
    check = r["check"]
    where = ("compiled: " + ", ".join(Path(p).name for p in r["compile"]["outputs"])) if "outputs" in r["compile"] \
        else "not compiled: edgetpu_compiler is not installed here"
    lines = [f"Edge TPU: {check['mapped_ops']}/{check['total_ops']} ops predicted on the TPU"
             f"{'' if r['fully_mapped'] else ' (NOT fully mapped)'}; {where}"]
    lines += [f"  CPU: {reason}" for reason in (*check["model_errors"], *check["reasons"])]
    return lines + [f"  warning: {w}" for w in check["warnings"]]


def _nnapi_lines(r: dict) -> list[str]:
    lines = [f"NNAPI (API {r['api_level']}): {r['delegated_ops']}/{r['total_ops']} ops delegated in "
             f"{r['partitions']} partition(s)"]
    lines += [f"  CPU: {reason}" for reason in r["reasons"]]
    return lines + [f"  note: {note}" for note in r["notes"]]


def _android_lines(r: dict) -> list[str]:
    return [f"Android: {', '.join(Path(f).name for f in r['files'])} in {r['out_dir']}; put them into the "
            "app with `tflpipe export android RUN_DIR` (see android_demo/README.md)"]


@dataclass(frozen=True)
class Target:
    name: str
    title: str
    run: Callable[..., dict]  # (deployable model, run folder, **settings) -> result
    settings: tuple[str, ...]  # run settings passed to ``run`` by name
    summary: Callable[[dict], list[str]]  # the report's lines for a result


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("edgetpu", "Coral Edge TPU: op mapping (and edgetpu_compiler when installed)", edgetpu_target,
           ("allow_cpu_ops",), _edgetpu_lines),
    Target("nnapi", "Android NNAPI delegate: per-op coverage by API level", nnapi_target, ("nnapi_api_level",),
           _nnapi_lines),
    Target("android", "Android camera app: model, labels and model_config.json", android_target, (), _android_lines),
)}
