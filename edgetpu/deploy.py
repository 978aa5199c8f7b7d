"""Copy a model, its labels and the on-board classifier to a Coral Dev Board or Raspberry Pi over ssh/scp.

Host and remote folder end up in command lines run here and in the board's shell, so they are
validated (a host starting with ``-`` would be an ssh option), options end with ``--``, and remote
paths are quoted.
"""
from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.tflite_file import read_model

BOARD_SCRIPT = Path(__file__).with_name("board") / "classify.py"
_HOST = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9_][A-Za-z0-9._-]*")
# What scp's remote side takes literally in both its protocols (SFTP does not unquote, legacy SCP runs a
# shell): no blanks, quotes, globs, ``~`` or ``$``; relative folders are under the login's home.
_REMOTE_DIR = re.compile(r"[A-Za-z0-9_.,+=@%/][A-Za-z0-9_.,+=@%/-]*")


@dataclass
class DeployPlan:
    host: str
    remote_dir: str
    commands: list[list[str]]
    run_command: str  # what to type on the board (or what --run executes over ssh)
    ssh_options: list[str]


def plan_deploy(host: str, model: str | Path, labels: str | Path | None = None, cpu_model: str | Path | None = None,
                remote_dir: str = "tflpipe", port: int | None = None, identity: str | Path | None = None,
                images: str = "images") -> DeployPlan:
    """The ssh/scp commands that put everything the board needs into ``host:remote_dir``."""
    if not _HOST.fullmatch(host):
        raise PipelineError(f"--host must look like USER@BOARD (e.g. mendel@coral.local), got {host!r}")
    if not _REMOTE_DIR.fullmatch(remote_dir):
        raise PipelineError("--remote-dir may hold only letters, digits and . _ , + = @ % / - (not first; a relative "
                            f"folder is under the login's home), got {remote_dir!r}")
    files = [Path(model)] + [Path(p) for p in (labels, cpu_model) if p]
    for path in files:
        if not path.is_file():
            raise PipelineError(f"file not found: {path}")
    read_model(model)
    if cpu_model:
        read_model(cpu_model)
    ssh_opts = (["-p", str(port)] if port else []) + (["-i", str(identity)] if identity else [])
    scp_opts = (["-P", str(port)] if port else []) + (["-i", str(identity)] if identity else [])
    quoted = shlex.quote(remote_dir)
    commands = [
        ["ssh", *ssh_opts, "--", host, f"mkdir -p -- {quoted}"],
        # absolute local paths: scp would take a relative "name:with-colon.tflite" for a remote file
        ["scp", *scp_opts, "--", str(BOARD_SCRIPT), *(str(p.absolute()) for p in files), f"{host}:{quoted}/"],
    ]
    run = [f"cd {quoted} &&", "python3 classify.py", f"--model {shlex.quote(Path(model).name)}"]
    if cpu_model:
        run.append(f"--cpu-model {shlex.quote(Path(cpu_model).name)}")
    if labels:
        run.append(f"--labels {shlex.quote(Path(labels).name)}")
    run.append(f"--images {shlex.quote(images)}")
    return DeployPlan(host, remote_dir, commands, " ".join(run), ssh_opts)


def deploy(plan: DeployPlan, run: bool = False, timeout_s: int = 300) -> list[str]:
    """Execute ``plan`` (and the classifier over ssh when ``run``); returns the remote run's output lines."""
    commands = plan.commands + ([["ssh", *plan.ssh_options, "--", plan.host, plan.run_command]] if run else [])
    output: list[str] = []
    for command in commands:
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except FileNotFoundError:
            raise PipelineError(f"{command[0]} not found on PATH; install an OpenSSH client") from None
        except subprocess.TimeoutExpired:
            raise PipelineError(f"{command[0]} to {plan.host} timed out after {timeout_s} s") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise PipelineError(f"{command[0]} to {plan.host} failed (exit {proc.returncode}): {last}")
        output = proc.stdout.splitlines()
    return output if run else []
