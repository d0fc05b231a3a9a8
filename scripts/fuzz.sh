#!/usr/bin/env bash
# Fuzz every target for a fixed time and report executions and crashes.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   scripts/fuzz.sh 600          # ten minutes per target (the documented run)
#   scripts/fuzz.sh 30           # smoke run
#   scripts/fuzz.sh 120 engine   # one target
#
# Targets: ftp_parse line_stream wire config engine (fuzz/fuzz_targets/).
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). The stable
# toolchain is used with RUSTC_BOOTSTRAP=1 for the -Z flags cargo-fuzz
# passes; no nightly toolchain is downloaded. Seeds are regenerated from
# pcaps/ and ../shared/pcaps/public (read in place) into fuzz/corpus/, which
# is not committed. A crash leaves its input in fuzz/artifacts/<target>/ and
# makes the script exit 1; reproduce with
#   fuzz/target/x86_64-unknown-linux-gnu/release/<target> <crash-file>
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ftp_parse line_stream wire config engine)
case "$secs" in ''|*[!0-9]*) echo "fuzz.sh: SECONDS_PER_TARGET must be a number" >&2; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1
triple=$(rustc -vV | sed -n 's/^host: //p')
# No sanitizer: the crate has no unsafe code, and uninstrumented runs are
# several times faster; debug assertions stay on (overflow checks, debug_assert!).
flags=(--sanitizer none --debug-assertions)

echo "== building fuzz targets (${targets[*]})"
for t in "${targets[@]}"; do
    cargo fuzz build "${flags[@]}" "$t" 2>&1 | grep -E '^error|Finished' || true
done
for t in "${targets[@]}"; do
    [ -x "fuzz/target/$triple/release/$t" ] || { echo "fuzz.sh: build of $t failed" >&2; exit 2; }
done

echo "== seeds"
# A plain (uninstrumented) build sharing the main target directory, so it reuses
# what `cargo build` already compiled.
CARGO_TARGET_DIR=target cargo run --quiet --manifest-path fuzz/Cargo.toml --features seedgen --bin seeds -- . fuzz/corpus

echo "== the harness's own tests (its checksum oracle and the crashes it once got wrong)"
CARGO_TARGET_DIR=target cargo test --quiet --manifest-path fuzz/Cargo.toml --lib

max_len() {
    case "$1" in
        engine) echo 16384 ;;
        ftp_parse) echo 1024 ;;
        *) echo 8192 ;;
    esac
}

mkdir -p fuzz/logs
status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    log="fuzz/logs/$t.log"
    echo "== $t for ${secs}s (log: $log)"
    set +e
    "fuzz/target/$triple/release/$t" "fuzz/corpus/$t" \
        -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1 # died without writing an artifact (e.g. out of memory before the first input)
    fi
    if [ "$crashes" -gt 0 ]; then
        status=1
        grep -m 5 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" || true
    fi
    summary+=("$(printf '%-12s %6ss %12s execs %8s/s  cov %6s  corpus %6s  crashes %s' "$t" "$secs" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$corpus" "$crashes")")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "$status" -ne 0 ]; then
    echo "fuzz.sh: crash inputs are in fuzz/artifacts/" >&2
fi
exit "$status"
