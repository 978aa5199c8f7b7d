"""Fuzzing every reader of .tflite files: a damaged file may end in success or a PipelineError, nothing else.

Mutants of small reference models (bit flips, runs of 0x00/0xFF/0x7F/0x80, 32-bit boundary values
where offsets, lengths and indices live, truncations, duplicated chunks) go through ``read_model``,
``inspect``, the Edge TPU and NNAPI checkers and LiteRT (``benchmark``, whose child-process probe
turns a native crash into a PipelineError). Any other exception fails the test with the command
that rebuilds the mutant. The default run is small; ``-m slow`` runs 10,000 mutants.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from edgetpu.check import check as edgetpu_check
from pipeline.core.describe import inspect_model, inspect_text
from pipeline.core.errors import PipelineError
from pipeline.core.litert import benchmark
from pipeline.core.tflite_file import parse_model, read_model
from pipeline.targets import nnapi

SEED_MODELS = ("mobilenet_v1_0.25_128_quant.tflite", "split_concat.tflite", "keras_lstm_mnist_ptq.tflite")
INTERESTING_BYTES = (0x00, 0xFF, 0x7F, 0x80)
INTERESTING_WORDS = (0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE,
                     0xFFFFFFFF)
CRASH = "LiteRT crashed"


def structure_positions(data: bytes, name: str) -> np.ndarray:
    """Byte positions outside the large constant buffers: where a mutation hits offsets, lengths and indices."""
    edges = np.zeros(len(data) + 1, dtype=np.int64)
    for raw in parse_model(data, name).constant_buffers.values():
        if len(raw) >= 64 and (start := data.find(raw)) >= 0:
            edges[start] += 1
            edges[start + len(raw)] -= 1
    return np.flatnonzero(np.cumsum(edges)[:-1] == 0)


def mutate(data: bytes, hot: np.ndarray, rng: random.Random) -> tuple[bytes, list[str]]:
    """One to three random mutations of ``data``, mostly at ``hot`` positions, and what they were."""
    out = bytearray(data)
    done = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        pos = int(hot[rng.randrange(len(hot))]) if rng.random() < 0.8 else rng.randrange(len(out))
        pos = min(pos, len(out) - 1)
        kind = rng.choice(("flip", "bytes", "word", "word", "random", "truncate", "duplicate"))
        if kind == "flip":
            out[pos] ^= 1 << rng.randrange(8)
        elif kind == "bytes":
            size = rng.randint(1, 8)
            out[pos : pos + size] = bytes([rng.choice(INTERESTING_BYTES)]) * len(out[pos : pos + size])
        elif kind == "word":  # offsets, vector lengths and indices are 32-bit little-endian at 4-byte alignment
            pos -= pos % 4
            value = rng.choice(INTERESTING_WORDS + (len(out), len(out) - 4, len(out) + 4))
            out[pos : pos + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")[: len(out) - pos]
        elif kind == "random":
            size = rng.randint(1, 16)
            out[pos : pos + size] = rng.randbytes(len(out[pos : pos + size]))
        elif kind == "truncate":
            del out[max(pos, 1) :]
        else:
            size = rng.randint(1, 64)
            out[rng.randrange(len(out)) : 0] = out[pos : pos + size]
        done.append(f"{kind}@{pos}")
        if len(out) < 2:
            break
    return bytes(out), done


def checks(path: Path) -> list[tuple[str, Callable[[], object]]]:
    """Every public entry point that reads a .tflite file, as (name, call)."""
    return [
        ("read_model", lambda: read_model(path)),
        ("inspect", lambda: inspect_text(inspect_model(path))),
        ("edgetpu.check", lambda: edgetpu_check(path)),
        ("nnapi.check(27)", lambda: nnapi.check(path, 27)),
        ("nnapi.check(30)", lambda: nnapi.check(path, 30)),
    ]


def fuzz(reference_dir: Path, tmp_path: Path, mutants: int, interpreter_runs: int) -> tuple[Counter, list[str]]:
    """Outcome counts of ``mutants`` mutants spread over the seed models, and how to rebuild each failure.

    LiteRT runs on the first ``interpreter_runs`` mutants of each seed that pass ``read_model``.
    """
    seeds = [reference_dir / name for name in SEED_MODELS if (reference_dir / name).is_file()]
    if not seeds:
        pytest.skip("no seed models in the reference directory")
    counts: Counter = Counter()
    failures: list[str] = []
    path = tmp_path / "mutant.tflite"
    for model in seeds:
        data = model.read_bytes()
        hot = structure_positions(data, model.name)
        interpreted = 0
        for seed in range(mutants // len(seeds)):
            rng = random.Random(f"{model.name}/{seed}")
            mutant, how = mutate(data, hot, rng)
            path.write_bytes(mutant)
            where = (f"{model.name} mutant {seed} ({', '.join(how)}): rebuild it with "
                     f"mutate(data, structure_positions(data, name), random.Random('{model.name}/{seed}'))")
            results = [_outcome(name, call, where, failures) for name, call in checks(path)]
            if results[0] == "ok" and interpreted < interpreter_runs:
                interpreted += 1
                counts["interpreter runs"] += 1
                run = partial(benchmark, path, threads=1, runs=1, warmup=0)
                results.append(_outcome("benchmark", run, where, failures))
            counts["mutants"] += 1
            counts["uncaught" if "uncaught" in results else results[0]] += 1  # ok/clean error: read_model's verdict
            counts["contained LiteRT crashes"] += CRASH in results
    return counts, failures


def _outcome(name: str, call: Callable[[], object], where: str, failures: list[str]) -> str:
    """'ok', 'clean error', CRASH (a PipelineError for a crash the probe contained) or 'uncaught'."""
    try:
        call()
    except PipelineError as exc:
        if "\n" in str(exc):
            failures.append(f"{name}: multi-line PipelineError on {where}")
            return "uncaught"
        return CRASH if str(exc).startswith(CRASH) else "clean error"
    except Exception as exc:  # noqa: BLE001 - anything else is what this test exists to find
        failures.append(f"{name} raised {type(exc).__name__}: {str(exc)[:200]} on {where}")
        return "uncaught"
    return "ok"


def report(counts: Counter) -> str:
    keys = ("mutants", "ok", "clean error", "uncaught", "interpreter runs", "contained LiteRT crashes")
    return ", ".join(f"{k}: {counts[k]}" for k in keys)


def test_fuzz_small(reference_dir: Path, tmp_path: Path) -> None:
    counts, failures = fuzz(reference_dir, tmp_path, mutants=600, interpreter_runs=3)
    assert not failures, f"{len(failures)} uncaught ({report(counts)}):\n" + "\n".join(failures[:10])
    assert counts["ok"] and counts["clean error"]  # the mutator reaches both sides of the verification


@pytest.mark.slow
def test_fuzz_long(reference_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    counts, failures = fuzz(reference_dir, tmp_path, mutants=10_002, interpreter_runs=10_002)
    with capsys.disabled():
        print(f"\nfuzz: {report(counts)}")
        print("\n".join(failures[:50]))
    assert not failures and counts["mutants"] >= 10_000
