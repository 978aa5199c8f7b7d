"""Timing flatbuffers on a target: this machine's LiteRT (XNNPACK), or a phone over adb (``adb.py``).

A measurer times whole models given as bytes; profiles and the kernel table only differ in what they
hand it. Times are medians in milliseconds; each measurement runs until it has both a minimum number of
invokes and a minimum wall time, so microsecond kernels get thousands of runs and big ones a few dozen.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.core.errors import PipelineError, first_line
from pipeline.core.litert import random_input


class Measurer(Protocol):
    """Anything that can time a model's invoke on a target."""

    target: str
    threads: int

    def time(self, model: bytes) -> float:
        """Median milliseconds of one invoke of ``model``."""

    def describe(self) -> dict:
        """Where and how it measures (recorded in tables and profiles)."""


@dataclass
class LocalMeasurer:
    """LiteRT on this machine's CPU with the XNNPACK delegate (LiteRT's default), ``threads`` threads."""

    threads: int = 1
    min_runs: int = 15
    min_seconds: float = 0.05
    max_runs: int = 5000
    target: str = "cpu"

    def interpreter(self, model: bytes):
        from ai_edge_litert.interpreter import Interpreter

        try:
            interpreter = Interpreter(model_content=model, num_threads=self.threads)
            interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise PipelineError(f"LiteRT cannot load the kernel: {first_line(exc)}") from None
        random_input(interpreter)
        return interpreter

    def time(self, model: bytes) -> float:
        return self.time_interpreter(self.interpreter(model))

    def time_interpreter(self, interpreter) -> float:
        invoke = interpreter.invoke
        for _ in range(3):
            invoke()
        samples: list[float] = []
        started = time.perf_counter()
        while len(samples) < self.max_runs and (
                len(samples) < self.min_runs or time.perf_counter() - started < self.min_seconds):
            t0 = time.perf_counter()
            invoke()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples) * 1000.0

    def describe(self) -> dict:
        import platform

        from ai_edge_litert import __version__ as litert_version

        return {"target": self.target, "threads": self.threads, "runtime": f"LiteRT {litert_version} + XNNPACK",
                "machine": platform.machine(), "cpu": _cpu_name(), "cores": os.cpu_count(),
                "cache_bytes": last_level_cache_bytes()}


def last_level_cache_bytes() -> int | None:
    """Size of this CPU's largest cache (sysfs), which decides whether a net's packed weights stay warm between
    invokes; None where sysfs does not say."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = entry.read_text(encoding="utf-8").strip().upper()
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes) if sizes else None


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"
