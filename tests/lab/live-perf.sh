#!/usr/bin/env bash
# A first live measurement: the same lab run, the kernel gateway (nftables +
# FTP helper) then `ftpgate run`, each carrying
#   - bulk: 1 GB of RETR (10 x 100m.bin over one control connection, PASV), and
#   - short sessions: N x (connect, login, PASV, 1 KB RETR, QUIT) from one
#     Python ftplib loop,
# and prints the ratios. Offloads are off on every link in both cases (the
# lab's setting; ftpgate needs it), so the kernel numbers are the "all off"
# row of LAB.md, not its default-offload row.
#
# Run as root:  tests/lab/live-perf.sh [SESSIONS]   (default 200)
# The last line is "N passed, N failed" (a pass = both gateways completed).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export FGLAB_NS_C=${FGLAB_NS_C:-fglc} FGLAB_NS_G=${FGLAB_NS_G:-fglw} FGLAB_NS_S=${FGLAB_NS_S:-fgls}
export FGLAB_STATE=${FGLAB_STATE:-/run/fglab-live}
LAB=$HERE/lab.sh
BIN=${FTPGATE:-$REPO/target/release/ftpgate}
NSC=$FGLAB_NS_C NSG=$FGLAB_NS_G
W=$FGLAB_STATE/perf
SESSIONS=${1:-200}
SERVER=198.51.100.20 USER_=fgftp PASS_=fgftp-lab-pw

PASSED=0 FAILED=0 GW_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $GW_PID && -d /proc/$GW_PID ]]; then kill -TERM "$GW_PID"; wait "$GW_PID" 2>/dev/null; fi
    "$LAB" down >/dev/null 2>&1 || true
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$W"; mkdir -p "$W"
"$LAB" up masq 2>/dev/null && "$LAB" servers start vsftpd 2>/dev/null || { echo "lab failed"; echo "0 passed, 1 failed"; exit 1; }

cat >"$W/short.py" <<'PY'
import ftplib, io, sys, time
host, user, pw, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.monotonic(); ok = 0
for _ in range(n):
    f = ftplib.FTP()
    f.connect(host, 21, timeout=10)
    f.login(user, pw)
    buf = io.BytesIO()
    f.retrbinary("RETR pub/1k.bin", buf.write)
    f.quit()
    ok += len(buf.getvalue()) == 1024
dt = time.monotonic() - t0
print(f"{ok} {dt:.3f}")
PY

# bulk NAME -> MB/s over 1 GB
bulk() {
    local urls=() i
    for i in $(seq 10); do urls+=("ftp://$SERVER/pub/100m.bin" -o /dev/null); done
    local t0=$EPOCHREALTIME
    timeout 600 ip netns exec "$NSC" curl -sS --ftp-pasv --disable-epsv --user "$USER_:$PASS_" "${urls[@]}" 2>"$W/bulk.err" || return 1
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", 1000 / (b - a) }'   # 10 x 100 MiB ~ 1000 MB
}
# short -> sessions/s
short() {
    local out
    out=$(timeout 600 ip netns exec "$NSC" /usr/bin/python3 "$W/short.py" "$SERVER" "$USER_" "$PASS_" "$SESSIONS" 2>"$W/short.err") || return 1
    read -r ok secs <<<"$out"
    [[ $ok == "$SESSIONS" ]] || return 1
    awk -v n="$SESSIONS" -v s="$secs" 'BEGIN { printf "%.1f", n / s }'
}

declare -A R
measure() {
    local gw=$1 b s
    b=$(bulk) || { echo "FAIL  $gw bulk: $(tail -1 "$W/bulk.err")"; FAILED=$((FAILED + 1)); return; }
    s=$(short) || { echo "FAIL  $gw short sessions: $(tail -1 "$W/short.err")"; FAILED=$((FAILED + 1)); return; }
    R[$gw.bulk]=$b R[$gw.short]=$s
    echo "PASS  $gw: 1 GB RETR at $b MB/s; $SESSIONS short sessions at $s/s"
    PASSED=$((PASSED + 1))
}

"$LAB" gw kernel 2>/dev/null
measure kernel

"$LAB" gw off 2>/dev/null
ip -n "$NSG" addr flush dev veth-gw-in
ip -n "$NSG" addr flush dev veth-gw-out
"$LAB" gw-config masq >"$W/gw.yaml"; echo 'admin: {listen: off}' >>"$W/gw.yaml"
ip netns exec "$NSG" "$BIN" run -c "$W/gw.yaml" >"$W/ftpgate.log" 2>&1 </dev/null &
GW_PID=$!
sleep 1
measure ftpgate
kill -TERM "$GW_PID"; wait "$GW_PID"; GW_PID=""

if [[ -n ${R[kernel.bulk]:-} && -n ${R[ftpgate.bulk]:-} ]]; then
    awk -v fb="${R[ftpgate.bulk]}" -v kb="${R[kernel.bulk]}" -v fs="${R[ftpgate.short]}" -v ks="${R[kernel.short]}" \
        'BEGIN { printf "ratio ftpgate/kernel: bulk %.2f, short sessions %.2f\n", fb / kb, fs / ks }'
fi
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
