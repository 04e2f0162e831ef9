#!/usr/bin/env bash
# Provisions the legacy control plane (etcd, and kube-apiserver built from Debian's source).
# The script itself lives in kache-testenv, which embeds it; this runs it from a checkout.
set -euo pipefail
exec bash "$(dirname "$0")/../crates/kache-testenv/provision/legacy.sh" "$@"
