"""Run Coral's ``edgetpu_compiler`` and turn its console output and operation log into a report.

Options and output format follow Coral's "Edge TPU Compiler" page
(https://coral.ai/docs/edgetpu/compiler/): ``-o`` output dir, ``-s`` print the operation table,
``-m`` minimum runtime version, ``-n`` number of segments for pipelining, ``-t`` timeout, and several
models on one command line are co-compiled to share the on-chip parameter cache. The parser was
written against real logs quoted in public issues (tests/data/edgetpu_logs/SOURCES.md).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.tflite_file import read_model

COMPILER = "edgetpu_compiler"
INSTALL_HINT = (f"{COMPILER} not found on PATH; install it on x86-64 Debian/Ubuntu from Coral's apt repository "
                "(packages.cloud.google.com/apt coral-edgetpu-stable: apt-get install edgetpu-compiler, see "
                "https://coral.ai/docs/edgetpu/compiler/) or use Coral's Colab compiler, then re-run")
MAPPED = "Mapped to Edge TPU"
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_ROW = re.compile(r"^([A-Za-z0-9_\-]+)\s+(\d+)\s+(\S.*?)\s*$")
_FIELDS = {
    "Input model": "input", "Input": "input", "Output model": "output", "Output": "output",
    "Input size": "input_size", "Output size": "output_size",
    "On-chip memory used for caching model parameters": "on_chip_used",
    "On-chip memory remaining for caching model parameters": "on_chip_remaining",
    "Off-chip memory used for streaming uncached model parameters": "off_chip",
    "Number of Edge TPU subgraphs": "tpu_subgraphs", "Total number of operations": "total_ops",
    "Number of operations that will run on Edge TPU": "tpu_ops",
    "Number of operations that will run on CPU": "cpu_op_count", "Operation log": "operation_log",
}


@dataclass
class CompiledModel:
    """One model's block of compiler output."""

    input: str = ""
    output: str = ""
    input_size: int | None = None
    output_size: int | None = None
    on_chip_used: int | None = None
    on_chip_remaining: int | None = None
    off_chip: int | None = None
    tpu_subgraphs: int | None = None
    total_ops: int | None = None
    tpu_ops: int | None = None
    cpu_op_count: int | None = None
    operation_log: str = ""
    operators: list[dict] = field(default_factory=list)  # {"op", "count", "status"} rows of the op table

    @property
    def cpu_ops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.operators:
            if row["status"] != MAPPED:
                counts[row["op"]] = counts.get(row["op"], 0) + row["count"]
        return counts


@dataclass
class CompileLog:
    version: str = ""
    succeeded: bool = False
    compile_ms: int | None = None
    errors: list[str] = field(default_factory=list)
    models: list[CompiledModel] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"compiler_version": self.version, "succeeded": self.succeeded, "compile_ms": self.compile_ms,
                "errors": self.errors,
                "models": [{**vars(m), "cpu_ops": m.cpu_ops} for m in self.models]}


def parse_size(text: str) -> int:
    """'4.41MiB' -> bytes, as the compiler prints sizes."""
    m = re.fullmatch(r"\s*([\d.]+)\s*(B|KiB|MiB|GiB)\s*", text)
    if not m:
        raise ValueError(f"not a compiler size: {text!r}")
    return round(float(m.group(1)) * _UNITS[m.group(2)])


def parse_log(text: str) -> CompileLog:
    """Parse the compiler's console output (with or without ``-s``) or a ``*_edgetpu.log`` file."""
    log = CompileLog()
    current: CompiledModel | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("Edge TPU Compiler version"):
            log.version = line.rsplit(" ", 1)[-1]
        elif m := re.match(r"Model compiled successfully in (\d+) ms", line):
            log.compile_ms, log.succeeded = int(m.group(1)), True
        elif line.startswith("Compilation succeeded"):
            log.succeeded = True
        elif line.startswith("ERROR:") or line.startswith("Compilation failed"):
            log.errors.append(line)
            log.succeeded = False
        elif ":" in line and line.split(":", 1)[0] in _FIELDS:
            key, value = (s.strip() for s in line.split(":", 1))
            attr = _FIELDS[key]
            if attr == "input" or current is None:
                current = CompiledModel()
                log.models.append(current)
            if attr in ("input", "output", "operation_log"):
                setattr(current, attr, value)
            elif attr.endswith("size") or attr.startswith(("on_chip", "off_chip")):
                setattr(current, attr, parse_size(value))
            else:
                setattr(current, attr, int(value))
        elif (m := _ROW.match(line)) and current is not None and not line.startswith("Operator"):
            current.operators.append({"op": m.group(1), "count": int(m.group(2)), "status": m.group(3)})
    if log.errors:
        log.succeeded = False
    return log


@dataclass
class CompileResult:
    command: list[str]
    returncode: int
    log: CompileLog
    outputs: list[Path]
    stdout: str

    def to_dict(self) -> dict:
        return {"command": self.command, "returncode": self.returncode, **self.log.to_dict(),
                "outputs": [str(p) for p in self.outputs]}


def find_compiler() -> str | None:
    return shutil.which(COMPILER)


def compile_model(
    paths: str | Path | list[str | Path],
    out_dir: str | Path,
    min_runtime_version: int | None = None,
    num_segments: int | None = None,
    show_operations: bool = True,
    timeout_s: int = 180,
) -> CompileResult:
    """Compile one model (or co-compile several) into ``out_dir/<name>_edgetpu.tflite``.

    A missing compiler, a missing input or a failed compilation raises a one-line PipelineError.
    """
    models = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    for path in models:
        read_model(path)  # fail early, in one line, on a missing or damaged file
    if num_segments is not None and len(models) > 1:
        raise PipelineError("--num-segments applies to one model; co-compile several models without it")
    compiler = find_compiler()
    if compiler is None:
        raise PipelineError(INSTALL_HINT)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = [compiler, "-o", str(out)]
    if show_operations:
        command.append("-s")
    if min_runtime_version is not None:
        command += ["-m", str(min_runtime_version)]
    if num_segments is not None:
        command += ["-n", str(num_segments)]
    command += ["-t", str(timeout_s), *map(str, models)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s + 60)
    except subprocess.TimeoutExpired:
        raise PipelineError(f"{COMPILER} did not finish within {timeout_s + 60} s") from None
    log = parse_log(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0 or not log.succeeded:
        detail = (log.errors or [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-1:] or ["no output"])[0]
        raise PipelineError(f"{COMPILER} failed (exit {proc.returncode}): {detail}")
    outputs = sorted(out.glob("*_edgetpu.tflite"))
    return CompileResult(command, proc.returncode, log, outputs, proc.stdout)


def format_result(data: dict) -> str:
    lines = [f"edgetpu_compiler {data['compiler_version']}: " + ("ok" if data["succeeded"] else "failed")]
    for m in data["models"]:
        lines.append(f"  {m['input']} -> {m['output']}: {m['tpu_ops'] if m['tpu_ops'] is not None else m['total_ops']}"
                     f"/{m['total_ops']} ops on the Edge TPU, subgraphs {m['tpu_subgraphs']}")
        if m["cpu_ops"]:
            lines.append("    CPU: " + ", ".join(f"{k} x{v}" for k, v in m["cpu_ops"].items()))
        if m["off_chip"]:
            lines.append(f"    off-chip parameter streaming: {m['off_chip'] / 2**20:.2f} MiB")
    lines += [f"  output: {p}" for p in data["outputs"]]
    return "\n".join(lines)
