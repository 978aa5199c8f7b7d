"""Deploy (with recording fake ssh/scp), the on-board classifier's CPU fallback, and the no-device path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetpu.board import classify as board
from edgetpu.deploy import BOARD_SCRIPT
from pipeline.cli import main

FAKE = """#!{python}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch) -> Path:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    for name in ("ssh", "scp"):
        tool = bin_dir / name
        tool.write_text(FAKE.format(python=sys.executable))
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    return log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_deploy_copies_model_labels_and_script(reference_dir: Path, fake_ssh: Path) -> None:
    model, labels = reference_dir / "split_concat_edgetpu.tflite", reference_dir / "imagenet_labels.txt"
    result = CliRunner().invoke(main, ["edgetpu", "deploy", str(model), "--host", "mendel@coral.local",
                                       "--labels", str(labels), "--port", "2222"])
    assert result.exit_code == 0, result.output
    ssh, scp = _calls(fake_ssh)
    assert ssh == ["ssh", "-p", "2222", "--", "mendel@coral.local", "mkdir -p -- tflpipe"]
    assert scp == ["scp", "-P", "2222", "--", str(BOARD_SCRIPT), str(model), str(labels), "mendel@coral.local:tflpipe/"]
    assert "python3 classify.py --model split_concat_edgetpu.tflite --labels imagenet_labels.txt" in result.output


def test_deploy_run_executes_the_classifier_over_ssh(reference_dir: Path, fake_ssh: Path) -> None:
    result = CliRunner().invoke(main, ["edgetpu", "deploy", str(reference_dir / "split_concat_edgetpu.tflite"),
                                       "--host", "pi@raspberrypi", "--run"])
    assert result.exit_code == 0, result.output
    assert _calls(fake_ssh)[-1][:3] == ["ssh", "--", "pi@raspberrypi"] and "classify.py" in _calls(fake_ssh)[-1][3]


def test_deploy_failures_are_one_line(reference_dir: Path, fake_ssh: Path, monkeypatch) -> None:
    model = str(reference_dir / "split_concat_edgetpu.tflite")
    bad_host = CliRunner().invoke(main, ["edgetpu", "deploy", model, "--host", "me@board; rm -rf /"])
    assert bad_host.exit_code == 1 and "USER@BOARD" in bad_host.output
    monkeypatch.setenv("FAKE_EXIT", "255")
    unreachable = CliRunner().invoke(main, ["edgetpu", "deploy", model, "--host", "me@board"])
    assert unreachable.exit_code == 1 and "ssh to me@board failed (exit 255)" in unreachable.output
    assert len(unreachable.output.strip().splitlines()) == 1


def test_board_script_runs_here_with_cpu_fallback(reference_dir: Path) -> None:
    r = reference_dir
    proc = subprocess.run([sys.executable, str(BOARD_SCRIPT), "--model", str(r / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"),
                           "--cpu-model", str(r / "mobilenet_v1_0.25_128_quant.tflite"), "--labels", str(r / "imagenet_labels.txt"),
                           "--images", str(r / "parrot.jpg"), "--cpu"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "device: cpu" in proc.stdout and "parrot.jpg: macaw" in proc.stdout and "FPS" in proc.stdout


def test_board_script_without_cpu_model_explains(reference_dir: Path) -> None:
    with pytest.raises(SystemExit, match="--cpu-model"):
        board.make_interpreter(str(reference_dir / "split_concat_edgetpu.tflite"), use_tpu=False)


@pytest.mark.skipif(board.load_edgetpu_delegate() is not None, reason="an Edge TPU is attached")
@pytest.mark.parametrize("verb", [["benchmark"], ["run", "--image", "IMAGE"]])
def test_run_and_benchmark_without_a_device_say_so(reference_dir: Path, verb: list[str]) -> None:
    args = [a.replace("IMAGE", str(reference_dir / "parrot.jpg")) for a in verb]
    result = CliRunner().invoke(main, ["edgetpu", args[0], str(reference_dir / "split_concat_edgetpu.tflite"), *args[1:]])
    assert result.exit_code == 1 and "no Edge TPU available" in result.output
