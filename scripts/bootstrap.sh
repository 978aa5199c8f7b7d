#!/usr/bin/env bash
# Set up the project in ./.venv: system libraries (when run as root), Python packages, tflpipe itself.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # libusb: tflite-support's compiled modules link it; JDK + JUnit 4: the Android demo's pure-JVM tests.
  need=()
  for pkg in libusb-1.0-0 default-jdk-headless junit4; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# tflite-support pins protobuf<4, which TensorFlow 2.21 cannot use; its metadata writers work without it.
.venv/bin/python -m pip install -q --no-deps "tflite-support==0.4.4"
# Binarized nets (pipeline/stages/binarize.py): larq 0.14 declares numpy<2 but trains with NumPy 2; LCE converts.
.venv/bin/python -m pip install -q --no-deps "larq==0.14.0" "terminaltables==3.1.10" "larq-compute-engine==0.16.0"
.venv/bin/tflpipe --version
