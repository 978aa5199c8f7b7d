"""The on-phone latency path (``--adb SERIAL``) against a stand-in adb that records its command lines and
replays output in the format of TFLite's ``benchmark_model``. No phone here: these tests pin the command
lines and the parsing, not a phone's behaviour.

Where the replayed output comes from (tensorflow/tensorflow):
- ``tensorflow/lite/tools/logging.h``: INFO lines go to stdout prefixed ``INFO: ``, ERROR lines to stderr.
- ``tensorflow/lite/tools/benchmark/benchmark_model.cc``: ``Run()`` logs ``Running benchmark for at least …``
  then the phase's ``Stat::OutputToStream`` (``count=… first=… curr=… min=… max=… avg=… std=…``), once for
  the warm-up and once for the regular runs; ``BenchmarkLoggingListener::OnBenchmarkEnd`` logs
  ``Inference timings in us: Init: …, First inference: …, Warmup (avg): …, Inference (avg): …``.
- ``xla/tsl/util/stats_calculator.{h,cc}``: percentile builds append `` p5=… median=… p95=…``; the op tables
  (``HeaderString``/``ColumnString``: tab-separated, right-aligned fields, 3 decimals; older builds have a
  ``[start]`` column and a 24-wide type field) and ``GetShortSummary``.
- ``tensorflow/lite/tools/benchmark/profiling_listener.cc`` and ``lite/profiling/profile_summary_formatter.cc``:
  ``Profiling Info for Benchmark Initialization:`` then ``Operator-wise Profiling Info for Regular Benchmark
  Runs:``, the Run Order / Top by Computation Time / Summary by node type tables, and ``Delegate internal:``;
  ``lite/profiling/profile_summarizer.cc``: node names ``[output tensors]:node_index``, delegate ops
  ``Delegate/<op>:<index>`` (type ``DelegateOpInvoke`` in older builds).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.latency import space
from pipeline.latency.adb import AdbMeasurer, parse_op_profile, parse_timings
from pipeline.latency.kernels import synthesize
from pipeline.latency.table import NULL_KERNEL, load_table
from tests.helpers import OFFICIAL_MODEL, invoke, json_output

SERIAL = "R5CT1234ABC"
REMOTE_MODEL = "/data/local/tmp/tflpipe/model.tflite"
BINARY = "/data/local/tmp/benchmark_model"
GETPROP = ("getprop ro.product.model; getprop ro.product.manufacturer; getprop ro.build.version.release; "
           "getprop ro.product.cpu.abi; getprop ro.soc.model")
BINARY_CHECK = (f"if [ -x {BINARY} ]; then echo executable; elif [ -e {BINARY} ]; then echo present; "
                "else echo missing; fi")
TIMING_FLAGS = ["--num_runs=50", "--warmup_runs=5", "--min_secs=0.3", "--warmup_min_secs=0.1", "--max_secs=30"]

# The stand-in: records argv (fields separated by \x1f, one call a line), keeps pushed files under
# $FAKE_ADB_DIR/device, and answers benchmark_model with a time that grows with the pushed file's size
# (100 us + 1 us per 16 bytes), so a wrong or missing push shows in the numbers.
FAKE_ADB = r"""#!/bin/sh
printf '%s\037' "$@" >> "$FAKE_ADB_DIR/calls"; printf '\n' >> "$FAKE_ADB_DIR/calls"
if [ "$1" = devices ]; then cat "$FAKE_ADB_DIR/devices"; exit 0; fi
shift 2  # -s SERIAL
case "$1" in
  push) mkdir -p "$FAKE_ADB_DIR/device$(dirname "$3")"; cp "$2" "$FAKE_ADB_DIR/device$3"
        echo "$2: 1 file pushed, 0 skipped."; exit 0 ;;
esac
case "$2" in
  getprop*) cat "$FAKE_ADB_DIR/getprop"; exit 0 ;;
  "if [ -x"*) echo "${FAKE_ADB_BINARY:-executable}"; exit 0 ;;
esac
if [ -n "$FAKE_ADB_EXIT" ]; then echo "INFO: STARTING!"; echo "$FAKE_ADB_STDERR" >&2; exit "$FAKE_ADB_EXIT"; fi
graph=""
for arg in "$@"; do case "$arg" in --graph=*) graph="${arg#--graph=}" ;; esac; done
if [ ! -f "$FAKE_ADB_DIR/device$graph" ]; then echo "ERROR: Could not open '$graph'." >&2; exit 1; fi
case "$*" in
  *--enable_op_profiling=true*) cat "$FAKE_ADB_DIR/${FAKE_ADB_PROFILE:-profile}"; exit 0 ;;
esac
if [ -n "$FAKE_ADB_OUTPUT" ]; then cat "$FAKE_ADB_OUTPUT"; exit 0; fi
size=$(wc -c < "$FAKE_ADB_DIR/device$graph")
sed "s/@AVG@/$((100 + size / 16))/g" "$FAKE_ADB_DIR/timings"
"""

TIMINGS = """INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Num threads: [1]
INFO: Graph: [/data/local/tmp/tflpipe/model.tflite]
INFO: #threads used for CPU inference: [1]
INFO: Use xnnpack: [1]
INFO: Loaded model /data/local/tmp/tflpipe/model.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 0.001352
INFO: Initialized session in 5.685ms.
INFO: Running benchmark for at least 5 iterations and at least 0.1 seconds but terminate if exceeding 30 seconds.
INFO: count=612 first=520 curr=160 min=118 max=520 avg=161.5 std=51

INFO: Running benchmark for at least 50 iterations and at least 0.3 seconds but terminate if exceeding 30 seconds.
INFO: count=2105 first=140 curr=131 min=117 max=402 avg=@AVG@ std=12

INFO: Inference timings in us: Init: 5685, First inference: 520, Warmup (avg): 161.5, Inference (avg): @AVG@
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the \
actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=3.125 overall=4.0625
"""


def _field(value: object, width: int) -> str:
    """``InitField``: a tab, then right-aligned in ``width`` (numbers fixed to 3 decimals)."""
    return "\t" + (f"{value:.3f}" if isinstance(value, float) else str(value)).rjust(width)


def _table(title: str, rows: list[tuple[str, float, float, str]], start: bool = False) -> str:
    """A Run Order table as ``StatsCalculator::GetStatsByMetric`` prints it (rows: type, first, avg, name)."""
    type_width = 24 if start else 40
    header = "".join([_field("[node type]", type_width), _field("[start]", 17) if start else "",
                      _field("[first]", 9), _field("[avg ms]", 9), _field("[%]", 8), _field("[cdf%]", 8),
                      _field("[mem KB]", 10), _field("[times called]", 9), "\t[Name]"])
    total, cdf, lines = sum(avg for _, _, avg, _ in rows), 0.0, []
    for node_type, first, avg, name in rows:
        cdf += avg
        lines.append("".join([_field(node_type, type_width), _field(0.0, 17) if start else "", _field(first, 9),
                              _field(avg, 9), _field(avg * 100 / total, 7) + "%", _field(cdf * 100 / total, 7) + "%",
                              _field(0.0, 10), _field(1, 9), f"\t{name}"]))
    return f"============================== {title} ==============================\n{header}\n" + \
        "\n".join(lines) + "\n\n"


def _profile_output(regular: str) -> str:
    init = _table("Run Order", [("ModifyGraphWithDelegate", 4.1, 4.1, "ModifyGraphWithDelegate/0"),
                                ("AllocateTensors", 0.2, 0.2, "AllocateTensors/0")])
    return (TIMINGS.replace("@AVG@", "1890.2") + "INFO: Profiling Info for Benchmark Initialization:\n" + init
            + "Timings (microseconds): count=1 curr=4300\nMemory (bytes): count=0\n2 nodes observed\n\n\n"
            + "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n" + regular)


# XNNPACK runs the whole graph but SOFTMAX; it profiles its own ops (newer builds: "Delegate internal:").
XNNPACK_PROFILE = _profile_output(
    _table("Run Order", [("TfLiteXNNPackDelegate", 1.92, 1.801, "[MobilenetV1/Logits/SpatialSqueeze]:31"),
                         ("SOFTMAX", 0.011, 0.009, "[MobilenetV1/Predictions/Reshape_1]:32")])
    + _table("Top by Computation Time", [("TfLiteXNNPackDelegate", 1.92, 1.801, "[MobilenetV1/Logits]:31")])
    + "Number of nodes executed: 2\n"
    + "Timings (microseconds): count=2105 first=1931 curr=1808 min=1790 max=2411 avg=1810.2 std=40\n"
    + "Memory (bytes): count=0\n2 nodes observed\n\n"
    + "Delegate internal: \n"
    + _table("Run Order", [("Convolution (NHWC, QC8) IGEMM", 0.61, 0.6, "Delegate/Convolution (NHWC, QC8) IGEMM:0"),
                           ("Convolution (NHWC, QC8) DWConv", 0.21, 0.2,
                            "Delegate/Convolution (NHWC, QC8) DWConv:1"),
                           ("Convolution (NHWC, QC8) IGEMM", 0.9, 0.8, "Delegate/Convolution (NHWC, QC8) IGEMM:2"),
                           ("Global Average Pooling (NWC, QS8)", 0.2, 0.191,
                            "Delegate/Global Average Pooling (NWC, QS8):3")])
    + "Timings (microseconds): count=2105 first=1911 curr=1790 min=1770 max=2390 avg=1791 std=39\n")

# The builtin kernels (--use_xnnpack=false) in an older build: a [start] column, and one op with a
# profiling description after its type.
CPU_PROFILE = _profile_output(
    _table("Run Order", [("CONV_2D", 1.2, 1.1, "[conv1/Relu6]:0"),
                         ("DEPTHWISE_CONV_2D", 0.5, 0.4, "[dw1/Relu6]:1"),
                         ("FULLY_CONNECTED/int8 per-channel", 0.3, 0.25, "[logits]:2"),
                         ("SOFTMAX", 0.05, 0.05, "[probs]:3")], start=True)
    + "Timings (microseconds): count=900 first=2100 curr=1800 min=1750 max=2600 avg=1800 std=60\n")


@pytest.fixture
def fake_adb(tmp_path: Path, monkeypatch) -> Path:
    """adb on PATH that records calls to FOLDER/calls and replays benchmark_model output; returns FOLDER."""
    folder, bin_dir = tmp_path / "adb", tmp_path / "bin"
    folder.mkdir()
    bin_dir.mkdir()
    (bin_dir / "adb").write_text(FAKE_ADB)
    (bin_dir / "adb").chmod(0o755)
    (folder / "calls").write_text("")
    (folder / "devices").write_text(f"List of devices attached\nemulator-5554\toffline\n{SERIAL}\tdevice\n\n")
    (folder / "getprop").write_text("Pixel 7\nGoogle\n14\narm64-v8a\nTensor G2\n")
    (folder / "timings").write_text(TIMINGS)
    (folder / "profile").write_text(XNNPACK_PROFILE)
    (folder / "cpu_profile").write_text(CPU_PROFILE)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_DIR", str(folder))
    for name in ("FAKE_ADB_BINARY", "FAKE_ADB_EXIT", "FAKE_ADB_OUTPUT", "FAKE_ADB_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return folder


def _calls(folder: Path) -> list[list[str]]:
    return [line.split("\x1f")[:-1] for line in (folder / "calls").read_text().splitlines()]


def _expected_ms(model: bytes) -> float:
    return (100 + len(model) // 16) / 1000


MODEL = synthesize(NULL_KERNEL)


# --- command lines ----------------------------------------------------------------------------------------------

def test_time_checks_the_device_pushes_and_runs_benchmark_model(fake_adb: Path) -> None:
    measurer = AdbMeasurer(SERIAL, threads=2)
    assert measurer.time(MODEL) == pytest.approx(_expected_ms(MODEL))
    devices, getprop, check, push, run = _calls(fake_adb)
    assert devices == ["devices"]
    assert getprop == ["-s", SERIAL, "shell", GETPROP]
    assert check == ["-s", SERIAL, "shell", BINARY_CHECK]
    assert push[:3] == ["-s", SERIAL, "push"] and push[4] == REMOTE_MODEL and push[3].endswith("model.tflite")
    assert (fake_adb / "device" / REMOTE_MODEL.lstrip("/")).read_bytes() == MODEL
    assert not Path(push[3]).exists()  # the local copy is a temporary file
    assert run == ["-s", SERIAL, "shell", BINARY, f"--graph={REMOTE_MODEL}", "--num_threads=2", "--use_xnnpack=true",
                   *TIMING_FLAGS]
    assert measurer.describe() == {"target": "android-xnnpack", "threads": 2, "serial": SERIAL,
                                   "runtime": "TFLite benchmark_model (xnnpack)", "device": "Pixel 7",
                                   "manufacturer": "Google", "android": "14", "abi": "arm64-v8a", "soc": "Tensor G2"}


@pytest.mark.parametrize("delegate, threads, flags", [
    ("xnnpack", 1, ["--num_threads=1", "--use_xnnpack=true"]),
    ("cpu", 4, ["--num_threads=4", "--use_xnnpack=false"]),
    ("gpu", 1, ["--num_threads=1", "--use_gpu=true"]),
    ("nnapi", 2, ["--num_threads=2", "--use_nnapi=true"]),
])
def test_each_delegate_and_thread_count_has_its_flags(fake_adb: Path, delegate: str, threads: int,
                                                      flags: list[str]) -> None:
    measurer = AdbMeasurer(SERIAL, threads, delegate, binary="/data/local/tmp/bm/benchmark_model_plus_flex")
    measurer.time(MODEL)
    assert measurer.target == f"android-{delegate}"
    assert _calls(fake_adb)[-1] == ["-s", SERIAL, "shell", "/data/local/tmp/bm/benchmark_model_plus_flex",
                                    f"--graph={REMOTE_MODEL}", *flags, *TIMING_FLAGS]


def test_device_is_checked_once_and_an_unchanged_model_is_pushed_once(fake_adb: Path) -> None:
    measurer = AdbMeasurer(SERIAL)
    other = synthesize(space.binary("ADD", (1, 8, 8, 16), (1, 8, 8, 16)))
    first, again, changed = measurer.time(MODEL), measurer.time(MODEL), measurer.time(other)
    assert first == again and changed == pytest.approx(_expected_ms(other))
    verbs = [call[2] if call[0] == "-s" else call[0] for call in _calls(fake_adb)]
    assert verbs == ["devices", "shell", "shell", "push", "shell", "shell", "push", "shell"]


# --- parsing -----------------------------------------------------------------------------------------------------

def test_timings_parse_avg_and_median_in_either_number_format() -> None:
    plain = parse_timings(TIMINGS.replace("@AVG@", "14154.1"))
    assert plain == {"avg_ms": pytest.approx(14.1541), "median_ms": None, "runs": 2105,
                     "init_ms": pytest.approx(5.685), "first_ms": pytest.approx(0.52)}
    # builds whose Stat prints percentiles; C++ streams print big doubles in exponent form
    percentiles = TIMINGS.replace("avg=@AVG@ std=12", "avg=1.41541e+06 std=12 p5=1390000 median=1410000 p95=1450000")
    figures = parse_timings(percentiles.replace("@AVG@", "1.41541e+06").replace("\n", "\r\n"))
    assert figures["median_ms"] == pytest.approx(1410.0) and figures["avg_ms"] == pytest.approx(1415.41)


def test_time_prefers_the_median_when_printed(fake_adb: Path, tmp_path: Path, monkeypatch) -> None:
    output = tmp_path / "median.txt"
    output.write_text(TIMINGS.replace("avg=@AVG@ std=12", "avg=@AVG@ std=12 p5=120 median=250 p95=400")
                      .replace("@AVG@", "300"))
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(output))
    assert AdbMeasurer(SERIAL).time(MODEL) == pytest.approx(0.25)


def test_op_profile_takes_the_delegates_own_ops_and_the_ops_it_left(fake_adb: Path) -> None:
    rows = AdbMeasurer(SERIAL).op_profile(MODEL)
    assert _calls(fake_adb)[-1][-1] == "--enable_op_profiling=true"
    assert [(r["op"], r["kind"]) for r in rows] == [
        ("SOFTMAX", "op"), ("Convolution (NHWC, QC8) IGEMM", "delegate_op"),
        ("Convolution (NHWC, QC8) DWConv", "delegate_op"), ("Convolution (NHWC, QC8) IGEMM", "delegate_op"),
        ("Global Average Pooling (NWC, QS8)", "delegate_op")]
    assert [r["ms"] for r in rows] == [0.009, 0.6, 0.2, 0.8, 0.191]
    assert rows[0]["name"] == "[MobilenetV1/Predictions/Reshape_1]:32" and rows[0]["subgraph"] == 0
    assert rows[1]["name"] == "Delegate/Convolution (NHWC, QC8) IGEMM:0" and rows[1]["first_ms"] == 0.61
    assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-3)
    assert rows[3]["share"] == pytest.approx(0.8 / 1.8, abs=1e-4)


def test_op_profile_of_builtin_kernels_in_the_older_layout() -> None:
    rows = parse_op_profile(CPU_PROFILE)
    assert [(r["op"], r["ms"], r["kind"]) for r in rows] == [
        ("CONV_2D", 1.1, "op"), ("DEPTHWISE_CONV_2D", 0.4, "op"), ("FULLY_CONNECTED", 0.25, "op"),
        ("SOFTMAX", 0.05, "op")]
    assert rows[2]["name"] == "[logits]:2" and rows[0]["share"] == pytest.approx(1.1 / 1.8, abs=1e-4)


def test_op_profile_keeps_a_delegate_node_that_does_not_profile_its_ops_and_reads_subgraphs() -> None:
    regular = ("Primary graph profile:\n"
               + _table("Run Order", [("TfLiteGpuDelegateV2", 3.0, 2.5, "[logits]:40"),
                                      ("WHILE", 0.5, 0.5, "[loop]:41")])
               + "Timings (microseconds): count=50 first=3500 curr=3000 min=2900 max=3600 avg=3000 std=80\n\n"
               + "Subgraph (index: 1, name: body) profile:\n"
               + _table("Run Order", [("ADD", 0.1, 0.1, "[i]:0")]))
    rows = parse_op_profile(_profile_output(regular))
    assert [(r["op"], r["kind"], r["subgraph"]) for r in rows] == [
        ("TfLiteGpuDelegateV2", "delegate", 0), ("WHILE", "op", 0), ("ADD", "op", 1)]


@pytest.mark.parametrize("text, message", [
    (TIMINGS.replace("@AVG@", "300"), "no operator profile"),
    ("INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n== Run Order ==\nnot a header\n",
     "unexpected operator profile header"),
    ("INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n", "no Run Order rows"),
])
def test_op_profile_refuses_what_it_cannot_read(text: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        parse_op_profile(text)


# --- one-line errors ---------------------------------------------------------------------------------------------

def test_no_adb_on_path_says_so(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PipelineError, match="^adb not found on PATH; install Android SDK platform-tools"):
        AdbMeasurer(SERIAL).time(MODEL)


@pytest.mark.parametrize("devices, message", [
    ("List of devices attached\n\n", rf"no Android device {SERIAL} \(adb devices lists: none\)"),
    ("* daemon not running; starting now at tcp:5037\n* daemon started successfully\nList of devices attached\n"
     "emulator-5554\tdevice\n\n", r"adb devices lists: emulator-5554 \(device\)"),
    (f"List of devices attached\n{SERIAL}\tunauthorized\n\n", "is unauthorized; unlock the phone and accept"),
    (f"List of devices attached\n{SERIAL}\toffline\n\n", "is offline; reconnect the cable"),
])
def test_missing_or_unready_device(fake_adb: Path, devices: str, message: str) -> None:
    (fake_adb / "devices").write_text(devices)
    with pytest.raises(PipelineError, match=message):
        AdbMeasurer(SERIAL).time(MODEL)
    assert [c for c in _calls(fake_adb) if "push" in c] == []


def test_missing_binary_says_how_to_push_the_nightly_build(fake_adb: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_ADB_BINARY", "missing")
    with pytest.raises(PipelineError) as error:
        AdbMeasurer(SERIAL).check_device()
    message = str(error.value)
    assert message.startswith(f"no benchmark_model at {BINARY} on {SERIAL}; download TensorFlow's nightly prebuilt")
    assert "/lite/tools/nightly/latest/android_aarch64_benchmark_model (ABI arm64-v8a)" in message
    assert f"`adb -s {SERIAL} push benchmark_model {BINARY}`" in message and "\n" not in message
    (fake_adb / "getprop").write_text("Pixel 2\nGoogle\n9\narmeabi-v7a\n\n")
    with pytest.raises(PipelineError, match="android_arm_benchmark_model"):
        AdbMeasurer(SERIAL).check_device()
    (fake_adb / "getprop").write_text("Emulator\nGoogle\n14\nx86_64\n\n")
    with pytest.raises(PipelineError, match="build TFLite's benchmark_model for its ABI x86_64"):
        AdbMeasurer(SERIAL).check_device()
    monkeypatch.setenv("FAKE_ADB_BINARY", "present")
    with pytest.raises(PipelineError, match=f"is not executable; run `adb -s {SERIAL} shell chmod"):
        AdbMeasurer(SERIAL).check_device()


def test_failing_benchmark_quotes_the_last_stderr_line(fake_adb: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_ADB_EXIT", "1")
    monkeypatch.setenv("FAKE_ADB_STDERR", "ERROR: Failed to apply GPU delegate.")
    with pytest.raises(PipelineError) as error:
        AdbMeasurer(SERIAL, delegate="gpu").time(MODEL)
    assert str(error.value) == (f"adb shell benchmark_model on {SERIAL} failed (exit 1): "
                                "ERROR: Failed to apply GPU delegate.")


def test_garbage_output_is_one_line(fake_adb: Path, tmp_path: Path, monkeypatch) -> None:
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("INFO: STARTING!\nSegmentation fault\n")
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(garbage))
    with pytest.raises(PipelineError, match="printed no timings .*: Segmentation fault$"):
        AdbMeasurer(SERIAL).time(MODEL)


@pytest.mark.parametrize("kwargs, message", [
    ({"serial": "-d"}, "device serial"), ({"serial": "a b"}, "device serial"),
    ({"serial": SERIAL, "delegate": "hexagon"}, "unknown delegate 'hexagon'"),
    ({"serial": SERIAL, "binary": "benchmark_model"}, "absolute path"),
    ({"serial": SERIAL, "workdir": "/data/local/tmp/$(reboot)"}, "absolute path"),
])
def test_bad_arguments_are_refused_before_adb_runs(kwargs: dict, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        AdbMeasurer(**kwargs)


# --- CLI ----------------------------------------------------------------------------------------------------------

def test_build_adb_quick_measures_every_kernel_on_the_phone(fake_adb: Path, tmp_path: Path) -> None:
    out = tmp_path / "phone.json"
    result = invoke("latency", "build", "--adb", SERIAL, "--delegate", "cpu", "--threads", "4", "--quick",
                    "--ops", "ADD", "--out", str(out), "--json")
    summary = json_output(result)
    assert summary["target"] == "cpu-int8" and summary["threads"] == 4 and summary["ops"] == ["ADD", "ADD:uint8"]
    assert summary["measured_by"]["device"] == "Pixel 7" and summary["measured_by"]["target"] == "android-cpu"
    runs = [c for c in _calls(fake_adb) if c[3:4] == [BINARY]]
    assert len(runs) >= summary["kernels"]  # plus the null kernel's re-timings and the fusion probes
    assert all(run[5:7] == ["--num_threads=4", "--use_xnnpack=false"] for run in runs)
    table = load_table(out)
    assert table.meta["measured_by"]["serial"] == SERIAL
    assert table.overhead_ms == pytest.approx(_expected_ms(synthesize(NULL_KERNEL)), abs=0.002)
    kernel, ms = table.rows[0]
    assert ms == pytest.approx(_expected_ms(synthesize(kernel)))


def test_profile_adb_reports_the_phones_own_profiler(fake_adb: Path, reference_dir: Path) -> None:
    model = reference_dir / OFFICIAL_MODEL
    result = json_output(invoke("latency", "profile", str(model), "--adb", SERIAL, "--json"))
    assert result["model"] == OFFICIAL_MODEL and result["device"] == "Pixel 7" and result["target"] == "android-xnnpack"
    assert result["whole_ms"] == pytest.approx(_expected_ms(model.read_bytes()))
    assert result["by_op"] == {"Convolution (NHWC, QC8) IGEMM": 1.4, "Convolution (NHWC, QC8) DWConv": 0.2,
                               "Global Average Pooling (NWC, QS8)": 0.191, "SOFTMAX": 0.009}
    assert {"op", "name", "ms", "share"} <= set(result["kernels"][0])
    assert [c[2] for c in _calls(fake_adb)[3:]] == ["push", "shell", "shell"]  # one push for both runs
    text = invoke("latency", "profile", str(model), "--adb", SERIAL, "--delegate", "cpu", "--top", "2")
    assert text.exit_code == 0, text.output
    assert "on Pixel 7 (android-cpu, 1 thread(s))" in text.output and "slowest 2 ops:" in text.output


def test_cli_errors_are_one_line(fake_adb: Path, tmp_path: Path, reference_dir: Path, monkeypatch) -> None:
    model = str(reference_dir / OFFICIAL_MODEL)
    without_adb = invoke("latency", "profile", model, "--delegate", "gpu")
    assert without_adb.exit_code == 1 and "add --adb SERIAL" in without_adb.output
    (fake_adb / "devices").write_text(f"List of devices attached\n{SERIAL}\tunauthorized\n\n")
    for args in (["profile", model], ["build", "--quick", "--out", str(tmp_path / "t.json")]):
        result = invoke("latency", *args, "--adb", SERIAL)
        assert result.exit_code == 1 and "is unauthorized" in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "t.json.measurements.jsonl").exists()
    monkeypatch.setenv("PATH", str(tmp_path))
    no_adb = invoke("latency", "build", "--quick", "--out", str(tmp_path / "t.json"), "--adb", SERIAL)
    assert no_adb.exit_code == 1 and "adb not found on PATH" in no_adb.output

