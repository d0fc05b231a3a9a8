#!/usr/bin/env bash
# Record a fresh set of kernel-gateway sessions in the lab and compare
# `ftpgate replay` of each with what the kernel sent (tests/differential.rs).
# The committed recordings in pcaps/kernel are compared by `cargo test`
# already; this shows the comparison holds for sessions recorded right now.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d /tmp/fg-diff.XXXXXX)
trap 'rm -rf "$out"' EXIT
tests/lab/lab.sh install
tests/lab/lab.sh record-set "$out"
cp pcaps/kernel/masq.yaml pcaps/kernel/published.yaml "$out"/ 2>/dev/null || true
FTPGATE_DIFF_DIR="$out" cargo test --locked --test differential -- --nocapture 2>&1
