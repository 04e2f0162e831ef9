#!/usr/bin/env bash
# Runs kache's whole test suite on a fresh machine that has only the Rust toolchain:
# installs `just` if missing, provisions the local control plane (cached after the first
# build), then runs `just ci`.
set -euo pipefail
cd "$(dirname "$0")/.."
# `cargo install` puts binaries here; make sure a fresh shell finds them.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! command -v just >/dev/null; then
    echo "[test-all] installing just (once)" >&2
    cargo install just --locked
fi
just ci
