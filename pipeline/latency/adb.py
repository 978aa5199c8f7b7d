"""Timing flatbuffers on an Android phone over adb with TensorFlow's own ``benchmark_model`` binary.

The phone's numbers come from the tool that TFLite's published phone benchmarks use, not from a runtime
of ours: each model is pushed to the device and ``benchmark_model`` runs it with the chosen delegate
(XNNPACK, the builtin CPU kernels, GPU or NNAPI). Its log format (``tensorflow/lite/tools/benchmark``:
``benchmark_model.cc``, ``profiling_listener.cc``; ``tsl/util/stats_calculator.cc``) is parsed here:

- ``INFO: count=50 first=… curr=… min=… max=… avg=… std=…`` after each phase (warm-up, then the regular
  runs; some builds add ``p5=… median=… p95=…``), and
- ``INFO: Inference timings in us: Init: …, First inference: …, Warmup (avg): …, Inference (avg): …``;
- with ``--enable_op_profiling=true``, ``Operator-wise Profiling Info for Regular Benchmark Runs:`` and
  its tab-separated ``Run Order`` tables (``[node type] [first] [avg ms] [%] [cdf%] [mem KB]
  [times called] [Name]``; older builds add ``[start]``), one per subgraph and one under
  ``Delegate internal:`` when a delegate profiles its own ops.

One phone runs one benchmark at a time (two at once would time each other), so every model goes to the
same file on the device and a model already there is not pushed again. Unverified against a real phone
here: the tests replay recorded command lines and output through a stand-in ``adb``.
"""
from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.tflite_file import parse_model, read_file

DELEGATES = {"xnnpack": ["--use_xnnpack=true"], "cpu": ["--use_xnnpack=false"], "gpu": ["--use_gpu=true"],
             "nnapi": ["--use_nnapi=true"]}
NIGHTLY = "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/"
NIGHTLY_BINARIES = {"arm64-v8a": "android_aarch64_benchmark_model", "armeabi-v7a": "android_arm_benchmark_model"}
PROPERTIES = {"device": "ro.product.model", "manufacturer": "ro.product.manufacturer",
              "android": "ro.build.version.release", "abi": "ro.product.cpu.abi", "soc": "ro.soc.model"}
_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")  # USB serials, emulator-5554, host:port, mDNS names
_REMOTE = re.compile(r"/[A-Za-z0-9_.,+=@%/-]+")  # absolute and taken literally by the device's shell
_NUMBER = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"  # C++ streams print doubles as 14154.1 or 1.41541e+06
_FIELD = re.compile(rf"(\w+)=({_NUMBER})")
PROFILE_HEADER = "Operator-wise Profiling Info for Regular Benchmark Runs:"


def parse_timings(output: str) -> dict:
    """The regular runs' figures from ``benchmark_model``'s log, in milliseconds (``median_ms`` when the
    build prints percentiles, else None); a PipelineError when the log holds no timing line."""
    lines = [line.strip().removeprefix("INFO: ") for line in output.replace("\r", "").splitlines()]
    summary_at = next((i for i, line in enumerate(lines) if line.startswith("Inference timings in us:")), None)
    summary = lines[summary_at] if summary_at is not None else ""
    figures = {key: re.search(rf"{re.escape(key)}: ({_NUMBER})", summary)
               for key in ("Init", "First inference", "Inference (avg)")}
    if not all(figures.values()):
        raise PipelineError("benchmark_model printed no timings ('Inference timings in us' missing or cut): "
                            f"{_last_line(output)}")
    result = {"avg_ms": float(figures["Inference (avg)"].group(1)) / 1000, "median_ms": None, "runs": None,
              "init_ms": float(figures["Init"].group(1)) / 1000,
              "first_ms": float(figures["First inference"].group(1)) / 1000}
    # The regular runs' statistics are the last "count=" line before the summary (the warm-up's comes first).
    stats = next((line for line in reversed(lines[:summary_at]) if line.startswith("count=")), None)
    if stats:
        values = dict(_FIELD.findall(stats))
        result["runs"] = int(values["count"])
        if "median" in values:
            result["median_ms"] = float(values["median"]) / 1000
    return result


def _delegate_op(name: str) -> str:
    """``Delegate/Convolution (NHWC, QC8) IGEMM:3`` -> ``Convolution (NHWC, QC8) IGEMM``."""
    return name.removeprefix("Delegate/").rsplit(":", 1)[0]


def parse_op_profile(output: str) -> list[dict]:
    """Per-op rows of ``--enable_op_profiling=true`` output: each op the interpreter ran, and each op inside a
    delegate when the delegate profiles them (otherwise the delegate's fused node as one row). ``share`` is a
    row's part of the rows' summed average time."""
    lines = output.replace("\r", "").splitlines()
    start = next((i for i, line in enumerate(lines) if PROFILE_HEADER in line), None)
    if start is None:
        raise PipelineError(f"benchmark_model printed no operator profile ({PROFILE_HEADER!r} missing): "
                            f"{_last_line(output)}")
    rows: list[dict] = []
    section: int | str = 0
    columns: list[str] = []
    state = "between tables"
    for line in lines[start + 1:]:
        text = line.strip()
        if state == "rows":
            if text:
                rows.append(_profile_row(columns, line, section))
            else:
                state = "between tables"
        elif state == "header":
            if "[node type]" not in text:
                raise PipelineError(f"unexpected operator profile header from benchmark_model: {text[:120]}")
            columns = [c.strip().strip("[]").lower() for c in text.split("\t") if c.strip()]
            state = "rows"
        elif text.startswith("Primary graph"):
            section = 0
        elif match := re.match(r"Subgraph \(index: (\d+).*\) profile:$", text):
            section = int(match.group(1))
        elif text.startswith("Delegate internal:"):
            section = "delegate"
        elif re.fullmatch(r"=+ Run Order =+", text):
            state = "header"
    if not rows:
        raise PipelineError("benchmark_model's operator profile has no Run Order rows; is the model empty?")
    inner = [r for r in rows if r["kind"] == "delegate_op"]
    leaves = [r for r in rows if r["kind"] == "op" or r["kind"] == ("delegate_op" if inner else "delegate")]
    total = sum(r["ms"] for r in leaves)
    for row in leaves:
        row["share"] = round(row["ms"] / total, 4) if total else 0.0
    return leaves


def _profile_row(columns: list[str], line: str, section: int | str) -> dict:
    cells = [c.strip() for c in line.split("\t")]
    cells = cells[1:] if cells and not cells[0] else cells  # every field starts with a tab
    if len(cells) < len(columns):
        raise PipelineError(f"unexpected operator profile line from benchmark_model: {line.strip()[:120]}")
    named = dict(zip(columns[:-1], cells))
    name = "\t".join(cells[len(columns) - 1:])
    node_type = named["node type"]
    try:
        avg_ms, first_ms = float(named["avg ms"]), float(named["first"])
        times_called = int(float(named["times called"]))
    except (KeyError, ValueError):
        raise PipelineError(f"unexpected operator profile line from benchmark_model: {line.strip()[:120]}") from None
    if section == "delegate" or node_type == "DelegateOpInvoke" or name.startswith("Delegate/"):
        kind, op = "delegate_op", _delegate_op(name) if node_type == "DelegateOpInvoke" else node_type
    elif node_type.startswith("TfLite") and "Delegate" in node_type:
        kind, op = "delegate", node_type
    elif re.fullmatch(re.escape(node_type) + r"/\d+", name):
        kind, op = "event", node_type  # not an op: an interpreter event ("tag/subgraph"), left out
    else:
        kind, op = "op", node_type.split("/", 1)[0]
    return {"op": op, "name": name, "ms": avg_ms, "first_ms": first_ms, "times_called": times_called,
            "kind": kind, "subgraph": None if section == "delegate" else section}


@dataclass
class AdbMeasurer:
    """``benchmark_model`` on the Android device ``serial`` with ``delegate`` and ``threads`` CPU threads."""

    serial: str
    threads: int = 1
    delegate: str = "xnnpack"
    binary: str = "/data/local/tmp/benchmark_model"
    workdir: str = "/data/local/tmp/tflpipe"
    num_runs: int = 50
    warmup_runs: int = 5
    min_secs: float = 0.3
    warmup_min_secs: float = 0.1
    max_secs: float = 30.0
    timeout_s: float = 60.0  # devices, getprop, push; a benchmark run gets max_secs on top
    _connected: bool = field(default=False, init=False, repr=False)
    _ready: bool = field(default=False, init=False, repr=False)
    _described: dict | None = field(default=None, init=False, repr=False)
    _pushed: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.delegate not in DELEGATES:
            raise PipelineError(f"unknown delegate {self.delegate!r}; choose one of {', '.join(DELEGATES)}")
        if not _SERIAL.fullmatch(self.serial):
            raise PipelineError(f"--adb takes a device serial as `adb devices` lists it, got {self.serial!r}")
        for what, path in (("benchmark binary", self.binary), ("work folder", self.workdir)):
            if not _REMOTE.fullmatch(path):
                raise PipelineError(f"the {what} on the device must be an absolute path of letters, digits and "
                                    f". _ , + = @ % / -, got {path!r}")

    @property
    def target(self) -> str:
        return f"android-{self.delegate}"

    @property
    def remote_model(self) -> str:
        return f"{self.workdir}/model.tflite"

    # --- adb -------------------------------------------------------------------------------------------

    def _adb(self, *args: str, what: str, timeout: float | None = None, check: bool = True,
             device: bool = True) -> str:
        """Run adb (on this device unless ``device`` is False); stdout, or a one-line PipelineError."""
        command = ["adb", *(["-s", self.serial] if device else []), *args]
        timeout = timeout or self.timeout_s
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise PipelineError(_NO_ADB) from None
        except subprocess.TimeoutExpired:
            raise PipelineError(f"adb {what} on {self.serial} timed out after {timeout:g} s") from None
        if check and proc.returncode != 0:
            raise PipelineError(f"adb {what} on {self.serial} failed (exit {proc.returncode}): "
                                f"{_last_line(proc.stderr, proc.stdout)}")
        return proc.stdout

    def _connect(self) -> None:
        """adb is installed and lists the device as ready."""
        if self._connected:
            return
        if shutil.which("adb") is None:
            raise PipelineError(_NO_ADB)
        states = {}
        for line in self._adb("devices", what="devices", device=False).replace("\r", "").splitlines():
            parts = line.split()
            if len(parts) >= 2 and not line.startswith(("*", "List of")):
                states[parts[0]] = parts[1]
        state = states.get(self.serial)
        if state is None:
            listed = ", ".join(f"{s} ({st})" for s, st in states.items()) or "none"
            raise PipelineError(f"no Android device {self.serial} (adb devices lists: {listed}); connect it with USB "
                                "debugging on, or `adb connect HOST:PORT`")
        if state != "device":
            hints = {"unauthorized": "unlock the phone and accept its 'Allow USB debugging' prompt",
                     "offline": "reconnect the cable, or run `adb kill-server` and retry"}
            raise PipelineError(f"Android device {self.serial} is {state}; {hints.get(state, 'wait until it is booted')}")
        self._connected = True

    def check_device(self) -> None:
        """The device is ready and ``benchmark_model`` is on it and executable (else how to put it there)."""
        if self._ready:
            return
        described = self.describe()
        binary = shlex.quote(self.binary)
        found = self._adb("shell", f"if [ -x {binary} ]; then echo executable; elif [ -e {binary} ]; then echo present; "
                                   "else echo missing; fi", what="shell", check=False).split()
        status = found[-1] if found else "missing"
        if status == "present":
            raise PipelineError(f"{self.binary} on {self.serial} is not executable; run "
                                f"`adb -s {self.serial} shell chmod +x {self.binary}`")
        if status != "executable":
            raise PipelineError(f"no benchmark_model at {self.binary} on {self.serial}; {_push_hint(self, described)}")
        self._ready = True

    def describe(self) -> dict:
        """Device model, maker, Android version, ABI and SoC (``getprop``), delegate and threads."""
        if self._described is None:
            self._connect()
            script = "; ".join(f"getprop {prop}" for prop in PROPERTIES.values())
            values = self._adb("shell", script, what="getprop").replace("\r", "").split("\n")
            props = {key: (values[i].strip() if i < len(values) else "") or "unknown"
                     for i, key in enumerate(PROPERTIES)}
            self._described = {"target": self.target, "threads": self.threads, "serial": self.serial,
                               "runtime": f"TFLite benchmark_model ({self.delegate})", **props}
        return dict(self._described)

    # --- measuring --------------------------------------------------------------------------------------

    def command(self, *extra: str) -> list[str]:
        """The ``benchmark_model`` command line run on the device for the pushed model."""
        return [self.binary, f"--graph={self.remote_model}", f"--num_threads={self.threads}",
                *DELEGATES[self.delegate], f"--num_runs={self.num_runs}", f"--warmup_runs={self.warmup_runs}",
                f"--min_secs={self.min_secs:g}", f"--warmup_min_secs={self.warmup_min_secs:g}",
                f"--max_secs={self.max_secs:g}", *extra]

    def _push(self, model: bytes) -> None:
        digest = hashlib.sha256(model).hexdigest()
        if digest == self._pushed:
            return
        with tempfile.TemporaryDirectory(prefix="tflpipe-adb-") as folder:
            local = Path(folder) / "model.tflite"
            local.write_bytes(model)
            self._adb("push", str(local), self.remote_model, what="push")
        self._pushed = digest

    def _run(self, model: bytes, *extra: str) -> str:
        self.check_device()
        self._push(model)
        timeout = self.timeout_s + 2 * self.max_secs + 2 * self.warmup_min_secs
        return self._adb("shell", *self.command(*extra), what="shell benchmark_model", timeout=timeout)

    def timings(self, model: bytes) -> dict:
        """Everything ``benchmark_model`` reports of ``model``'s runs, in milliseconds."""
        return parse_timings(self._run(model))

    def time(self, model: bytes) -> float:
        figures = self.timings(model)
        return figures["median_ms"] if figures["median_ms"] is not None else figures["avg_ms"]

    def op_profile(self, model: bytes) -> list[dict]:
        """Per-op rows from the tool's own profiler (``--enable_op_profiling=true``)."""
        return parse_op_profile(self._run(model, "--enable_op_profiling=true"))


_NO_ADB = ("adb not found on PATH; install Android SDK platform-tools "
           "(https://developer.android.com/tools/releases/platform-tools) and put adb on PATH")


def _last_line(*outputs: str) -> str:
    for output in outputs:
        lines = [line.strip() for line in (output or "").replace("\r", "").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "no output"


def _push_hint(measurer: AdbMeasurer, described: dict) -> str:
    abi = described.get("abi", "unknown")
    name = NIGHTLY_BINARIES.get(abi)
    push = (f"`adb -s {measurer.serial} push benchmark_model {measurer.binary}` and "
            f"`adb -s {measurer.serial} shell chmod +x {measurer.binary}`")
    if name is None:
        return f"build TFLite's benchmark_model for its ABI {abi} (tensorflow/lite/tools/benchmark), then {push}"
    return f"download TensorFlow's nightly prebuilt {NIGHTLY}{name} (ABI {abi}), then {push}"


def profile_on_device(path: str | Path, measurer: AdbMeasurer) -> dict:
    """Per-op milliseconds of the model file ``path`` from ``benchmark_model``'s profiler on the phone, beside
    the whole model's time from an unprofiled run (profiling adds its own cost to each op)."""
    path = Path(path)
    data = read_file(path)
    model = parse_model(data, path.name)  # verified before the phone sees it
    if not model.operators:
        raise PipelineError(f"{path.name} has no operators to profile")
    whole = measurer.time(data)
    rows = measurer.op_profile(data)
    summed = sum(r["ms"] for r in rows)
    by_op: dict[str, float] = {}
    for row in rows:
        by_op[row["op"]] = by_op.get(row["op"], 0.0) + row["ms"]
    return {"model": path.name, **measurer.describe(), "whole_ms": round(whole, 4), "sum_ms": round(summed, 4),
            "sum_over_whole": round(summed / whole, 4) if whole else None,
            "profiler": "benchmark_model --enable_op_profiling=true",
            "by_op": {k: round(v, 4) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
            "kernels": [{**r, "ms": round(r["ms"], 4)} for r in rows]}
