#!/usr/bin/env bash
# python-sdk.sh: makes the virtual environment with the OpenTelemetry Python
# SDK and its OTLP exporters (from PyPI) that `cli/tests/otlp.rs` runs
# tests/otlp/export_logs.py with; cached in ~/.cache/rsigma/otel-venv.
# Prints the venv's python. Run by .ci/run.
set -euo pipefail
VERSION=1.27.0
VENV=${RSIGMA_CACHE:-$HOME/.cache/rsigma}/otel-venv
STAMP=$VENV/.rsigma-otel-$VERSION
if [[ ! -f $STAMP ]]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "opentelemetry-sdk==$VERSION" "opentelemetry-exporter-otlp==$VERSION" >&2
    touch "$STAMP"
fi
echo "$VENV/bin/python"
