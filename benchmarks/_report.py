"""Each benchmark owns one marked section of BENCHMARKS.md and rewrites only that section."""
from __future__ import annotations

import argparse
import os
import platform
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
_HEADER = "# Benchmarks\n\nEach section is written by the script it names; re-run the script to refresh it.\n"


def machine_line() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md atomically."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = f"{begin}\n{markdown.rstrip()}\n\n_Measured {stamp} on {machine_line()}._\n{end}"
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".BENCHMARKS.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def int_options(doc: str, **options: tuple[int, str]) -> argparse.Namespace:
    """Parse a benchmark's integer options (``name=(default, help)``); the script's docstring is its description."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, (default, help) in options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default, help=help)
    return parser.parse_args()
