"""The Android demo's pure-JVM module: compiled and unit-tested with javac + JUnit 4, no Gradle.

Its golden vectors come from ``pipeline.targets.android.frames`` and the reference model; the second test checks
the committed files still equal what Python produces, so the two sides cannot drift apart silently.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE = REPO_ROOT / "android_demo/imagecore"
JUNIT_JARS = [Path("/usr/share/java/junit4.jar"), Path("/usr/share/java/hamcrest-core.jar")]  # Debian: junit4


def _toolchain() -> tuple[str, str, str]:
    javac, java = shutil.which("javac"), shutil.which("java")
    missing = [n for n, p in (("javac", javac), ("java", java)) if not p] + [str(j) for j in JUNIT_JARS if not j.is_file()]
    if missing:
        message = f"JDK/JUnit missing ({', '.join(missing)}): apt-get install default-jdk-headless junit4"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return javac, java, os.pathsep.join(map(str, JUNIT_JARS))


def _load_make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", REPO_ROOT / "android_demo/tools/make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_jvm_module_compiles_and_its_tests_pass(tmp_path):
    javac, java, junit = _toolchain()
    main_src = sorted(map(str, (MODULE / "src/main/java").rglob("*.java")))
    test_src = sorted(map(str, (MODULE / "src/test/java").rglob("*.java")))
    classes = tmp_path / "classes"
    compiled = subprocess.run(
        [javac, "--release", "11", "-Xlint:all", "-Werror", "-d", str(classes), "-cp", junit, *main_src, *test_src],
        capture_output=True, text=True,
    )
    assert compiled.returncode == 0, compiled.stderr
    test_classes = [Path(p).relative_to(MODULE / "src/test/java").with_suffix("").as_posix().replace("/", ".") for p in test_src]
    cp = os.pathsep.join([str(classes), str(MODULE / "src/test/resources"), junit])
    ran = subprocess.run([java, "-cp", cp, "org.junit.runner.JUnitCore", *test_classes], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert "OK (" in ran.stdout


def test_committed_golden_vectors_equal_what_python_produces_now(reference_dir):
    make_golden = _load_make_golden()
    golden = make_golden.GOLDEN_DIR
    cases = make_golden.build_cases(reference_dir)
    assert (golden / "cases.txt").read_text().split() == list(cases)
    for name, files in cases.items():
        for suffix in ("frame", "input"):
            assert gzip.decompress((golden / f"{name}.{suffix}.gz").read_bytes()) == files[suffix], f"{name}.{suffix}"
        committed = (golden / f"{name}.properties").read_bytes()
        if "output" not in files:
            assert committed == files["properties"], name
            continue
        old = np.frombuffer(gzip.decompress((golden / f"{name}.output.gz").read_bytes()), np.uint8).astype(int)
        new = np.frombuffer(files["output"], np.uint8).astype(int)
        if np.array_equal(old, new):
            assert committed == files["properties"], name
        else:  # another LiteRT build may round an int8 kernel differently: allow one quantum, same top-1
            assert np.abs(old - new).max() <= 1 and old.argmax() == new.argmax(), f"{name}: model output moved"
