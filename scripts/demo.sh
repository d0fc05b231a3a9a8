#!/usr/bin/env bash
# Build ftpgate and replay a bundled capture with the built-in default
# configuration: an active-mode FTP session (vsftpd, Python ftplib) recorded
# in the project's lab. Output goes to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
    echo "demo.sh: cargo is not installed; install Rust with rustup (https://rustup.rs) and run again" >&2
    exit 2
fi
capture=${1:-pcaps/demo/vsftpd-port-v4.lan.pcapng}
cargo build --release --locked --quiet
mkdir -p out
./target/release/ftpgate replay "$capture" -o out/replay.pcapng --events out/events.jsonl
echo
echo "What the FTP ALG did (from out/events.jsonl):"
grep -E '"event":"(ftp_command|alg_rewrite|pinhole_open|pinhole_use|drop|reset)"' out/events.jsonl \
    | grep -vE '"line":"(USER|PASS|TYPE|CWD|SYST|FEAT|QUIT)' | head -n 20
echo
echo "Frames the gateway would send: out/replay.pcapng (one interface block per gateway interface)."
