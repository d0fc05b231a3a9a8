#!/usr/bin/env bash
# `ftpgate run` end to end: the lab's client and server namespaces with
# ftpgate as the gateway between them (layout masq: the client is
# masqueraded behind 198.51.100.1). Real clients (curl, lftp, Python ftplib)
# in PASV/PORT/EPSV/EPRT with sha256 checked, a bounce attempt, `ftpgate
# sessions`, /metrics, SIGHUP reloads (good and bad file) during a transfer,
# SIGTERM exit 0, and the start-up checks (missing device, no permission).
#
# Run as root from anywhere:  tests/lab/live-e2e.sh
#   FTPGATE=path     the binary (default target/release/ftpgate; built if missing)
#   FGLAB_NS_C/G/S   namespace names (default fglc/fglw/fgls, apart from lab.sh's own)
# Everything it starts is stopped by PID and the namespaces are removed, also
# on failure or Ctrl-C. The last line is "N passed, N failed".
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export FGLAB_NS_C=${FGLAB_NS_C:-fglc} FGLAB_NS_G=${FGLAB_NS_G:-fglw} FGLAB_NS_S=${FGLAB_NS_S:-fgls}
export FGLAB_STATE=${FGLAB_STATE:-/run/fglab-live}
LAB=$HERE/lab.sh
BIN=${FTPGATE:-$REPO/target/release/ftpgate}
NSC=$FGLAB_NS_C NSG=$FGLAB_NS_G NSS=$FGLAB_NS_S
W=$FGLAB_STATE/e2e
PY=/usr/bin/python3
USER_=fgftp PASS_=fgftp-lab-pw
SERVER=198.51.100.20
ADMIN_SOCK=$W/admin.sock

PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS  $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL  $*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

# shellcheck source=procs.sh
. "$HERE/procs.sh"
lab_on_exit

[[ $EUID -eq 0 ]] || { echo "run as root"; echo "0 passed, 1 failed"; exit 1; }
if [[ ! -x $BIN ]]; then (cd "$REPO" && cargo build --release --bin ftpgate) || { echo "0 passed, 1 failed"; exit 1; }; fi

rm -rf "$W"; mkdir -p "$W"
"$LAB" install >/dev/null 2>&1 || "$LAB" install
"$LAB" up masq 2>/dev/null || { echo "lab up failed"; echo "0 passed, 1 failed"; exit 1; }
"$LAB" servers start vsftpd 2>/dev/null || { echo "vsftpd did not start"; echo "0 passed, 1 failed"; exit 1; }

# As docs/operations.md says: the gateway's addresses belong to ftpgate, not
# to the kernel, and the kernel does not forward.
ip -n "$NSG" addr flush dev veth-gw-in
ip -n "$NSG" addr flush dev veth-gw-out
ip netns exec "$NSG" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0

CFG=$W/gateway.yaml
{ "$LAB" gw-config masq; printf 'admin:\n  listen: "unix:%s"\n' "$ADMIN_SOCK"; printf '%s\n' "${FTPGATE_YAML_EXTRA:-}"; } >"$CFG"
cp "$CFG" "$W/gateway.good.yaml"

admin() { curl -s --max-time 5 --unix-socket "$ADMIN_SOCK" "http://ftpgate$1"; }
metric() { admin /metrics | awk -v k="$1" '$1 == k { print $2 }'; }

# ---------------------------------------------------------------- start-up checks
sed 's/device: veth-gw-out/device: veth-nope/' "$CFG" >"$W/missing.yaml"
out=$(ip netns exec "$NSG" "$BIN" run -c "$W/missing.yaml" --admin off 2>&1); rc=$?
check "missing device: exit 2 naming it ($out)" test $rc -eq 2 -a -n "$(grep -F 'veth-nope: no such network device' <<<"$out")"

if command -v setpriv >/dev/null; then
    cp "$CFG" "$W/nobody.yaml"; chmod 644 "$W/nobody.yaml"; chmod 755 "$W"
    out=$(ip netns exec "$NSG" setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
        "$BIN" run -c "$W/nobody.yaml" --admin off 2>&1); rc=$?
    check "no CAP_NET_RAW: exit 2 with what to do" test $rc -eq 2 -a -n "$(grep -F 'CAP_NET_RAW' <<<"$out")"
fi

# ---------------------------------------------------------------- run
ip netns exec "$NSG" "$BIN" run -c "$CFG" --events "$W/events.jsonl" >"$W/ftpgate.log" 2>&1 </dev/null &
GW_PID=$!
up=""
for _ in $(seq 50); do
    [[ -d /proc/$GW_PID ]] || break
    [[ $(admin /healthz 2>/dev/null) == ok ]] && { up=1; break; }
    sleep 0.1
done
check "ftpgate run starts and /healthz answers ok" test -n "$up"
if [[ -z $up ]]; then tail -20 "$W/ftpgate.log"; echo "$PASSED passed, $((FAILED + 1)) failed"; exit 1; fi
check "start-up warnings: none on a prepared host" test -z "$(grep -i warn "$W/ftpgate.log")"

# ---------------------------------------------------------------- transfers
case_() {
    local name="$*" out
    out=$("$LAB" case vsftpd "$@" 2>&1); local rc=$?
    if ((rc == 0)); then pass "transfer $name"; else fail "transfer $name: $(grep -E '^FAIL' <<<"$out" | head -1)"; fi
}
case_ curl pasv 4 list get:1m.bin get:10m.bin put:1m.bin
case_ curl port 4 list get:1m.bin put:1m.bin
case_ python pasv 4 list get:10m.bin put:1m.bin
case_ python port 4 list get:10m.bin put:1m.bin
case_ lftp pasv 4 list get:1m.bin put:1m.bin
case_ lftp port 4 list get:1m.bin put:1m.bin
case_ python epsv 6 list get:1m.bin put:1m.bin
case_ python eprt 6 list get:1m.bin put:1m.bin
case_ curl eprt 6 list get:1m.bin

check "events: ALG rewrote PORT lines" grep -q '"event":"alg_rewrite"' "$W/events.jsonl"
check "events: NAT mappings logged" grep -q '"event":"nat"' "$W/events.jsonl"
check "events: PASS is masked" bash -c "! grep -q 'fgftp-lab-pw' '$W/events.jsonl'"

# ---------------------------------------------------------------- bounce
cat >"$W/bounce.py" <<'PY'
import ftplib, sys
f = ftplib.FTP()
f.connect(sys.argv[1], 21, timeout=5)
f.login(sys.argv[2], sys.argv[3])
try:
    r = f.sendcmd("PORT 203,0,113,5,0,21")
    print("ACCEPTED", r)
except (ftplib.Error, OSError, EOFError) as e:
    print("BLOCKED", type(e).__name__, e)
PY
out=$(timeout 20 ip netns exec "$NSC" "$PY" "$W/bounce.py" "$SERVER" "$USER_" "$PASS_" 2>&1)
check "bounce (PORT to a third host) is blocked: $out" grep -q '^BLOCKED' <<<"$out"
sleep 0.6
check "bounce: drop event with reason bounce" grep -q '"reason":"bounce"' "$W/events.jsonl"
check "bounce: counted in /metrics" test "$(metric 'ftpgate_ftp_blocked_total{reason="bounce"}')" -ge 1

# ---------------------------------------------------------------- sessions
cat >"$W/hold.py" <<'PY'
import ftplib, sys, time
f = ftplib.FTP()
f.connect(sys.argv[1], 21, timeout=10)
f.login(sys.argv[2], sys.argv[3])
print(f.sendcmd("PASV"), flush=True)
time.sleep(float(sys.argv[4]))
f.quit()
PY
timeout 30 ip netns exec "$NSC" "$PY" -u "$W/hold.py" "$SERVER" "$USER_" "$PASS_" 4 >"$W/hold.out" 2>&1 &
BG_PIDS+=($!)
for _ in $(seq 30); do grep -q '^227' "$W/hold.out" && break; sleep 0.1; done
ip netns exec "$NSG" "$BIN" sessions --admin "unix:$ADMIN_SOCK" --json >"$W/sessions.json" 2>"$W/sessions.err"; rc=$?
check "ftpgate sessions --json exits 0" test $rc -eq 0
check "sessions: the FTP session with its pinhole" "$PY" - "$W/sessions.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
ok = any(f["session"].startswith("192.0.2.10:") and f["pinholes"] for f in s["ftp_sessions"])
nat = any(c.get("nat") and c["nat"]["src"].startswith("198.51.100.1:") and c["ftp"] for c in s["connections"])
sys.exit(0 if ok and nat else 1)
PY
ip netns exec "$NSG" "$BIN" sessions -c "$CFG" >"$W/sessions.txt" 2>&1; rc=$?
check "ftpgate sessions (table, address from -c) shows NAT and pinhole" \
    test $rc -eq 0 -a -n "$(grep -E '^FTP 192\.0\.2\.10:' "$W/sessions.txt")" -a -n "$(grep -F 'pinhole 198.51.100.20:' "$W/sessions.txt")"
wait "${BG_PIDS[-1]}" 2>/dev/null || true

# ---------------------------------------------------------------- reload during a transfer
rm -f "$W/big.bin"
timeout 120 ip netns exec "$NSC" curl -sS --ftp-pasv --disable-epsv --limit-rate 25M --user "$USER_:$PASS_" \
    "ftp://$SERVER/pub/100m.bin" -o "$W/big.bin" 2>"$W/big.err" &
BIG=$!; BG_PIDS+=($BIG)
sleep 1
printf 'interfaces:\n  inside:\n    device: veth-gw-in\n    addresses: [192.0.2.1/24\n' >"$CFG"   # broken YAML
kill -HUP "$GW_PID"; sleep 0.5
check "SIGHUP with a bad file: FILE:LINE:COLUMN logged, config kept" \
    test -n "$(grep -E "ERROR .*$CFG:[0-9]+:[0-9]+: " "$W/ftpgate.log")" -a -n "$(grep -F 'reload refused; the running configuration stays' "$W/ftpgate.log")"
cp "$W/gateway.good.yaml" "$CFG"
kill -HUP "$GW_PID"; sleep 0.5
check "SIGHUP with a good file: reloaded" grep -q "configuration reloaded" "$W/ftpgate.log"
check "reload counters: 1 ok, 1 failed" test "$(metric 'ftpgate_reloads_total{result="ok"}')" = 1 -a "$(metric 'ftpgate_reloads_total{result="failed"}')" = 1
wait $BIG; rc=$?
want=$(awk '$2 == "100m.bin" { print $1 }' /var/lib/fglab/manifest 2>/dev/null)
got=$(sha256sum <"$W/big.bin" 2>/dev/null | cut -d' ' -f1)
check "100 MB RETR across two reloads completes with sha256 intact (curl rc $rc)" test $rc -eq 0 -a -n "$want" -a "$got" = "$want"

# ---------------------------------------------------------------- metrics
m=$(admin /metrics)
check "/metrics: frames forwarded > 0" test "$(awk '$1 == "ftpgate_frames_forwarded_total" { print $2 }' <<<"$m")" -gt 0
check "/metrics: no oversized frames on prepared links" test -z "$(grep -E '^ftpgate_frames_oversized_total.* [1-9]' <<<"$m")"
check "/metrics: ALG rewrites counted" test "$(awk '$1 == "ftpgate_alg_rewrites_total" { print $2 }' <<<"$m")" -gt 0
check "/metrics: table fill ratio present" grep -q '^ftpgate_table_fill_ratio ' <<<"$m"

# ---------------------------------------------------------------- shutdown
kill -TERM "$GW_PID"
rc=0; wait "$GW_PID" || rc=$?
GW_PID=""
check "SIGTERM: exit 0 (rc $rc)" test $rc -eq 0
check "SIGTERM: admin socket removed" test ! -e "$ADMIN_SOCK"
check "SIGTERM: summary logged" grep -q "stopped: frames" "$W/ftpgate.log"

# ---------------------------------------------------------------- oversized frames
# GRO left on must be warned about at start. Frames larger than the link
# allows (what GRO/GSO produce; here jumbo frames from a client with MTU
# 9000) must be dropped and counted without harming the process. (Leaving
# tx checksum offload on at the client instead breaks even the handshake:
# its frames carry partial checksums; docs/operations.md.)
ip netns exec "$NSG" ethtool -K veth-gw-in gro on >/dev/null 2>&1
ip -n "$NSC" link set eth0 mtu 9000
ip -n "$NSG" link set veth-gw-in mtu 9000
ip netns exec "$NSG" "$BIN" run -c "$CFG" --log-format json >"$W/ftpgate-offload.log" 2>&1 </dev/null &
GW_PID=$!
for _ in $(seq 50); do [[ $(admin /healthz 2>/dev/null) == ok ]] && break; sleep 0.1; done
if [[ ${FTPGATE_YAML_EXTRA:-} == *pnet* ]]; then
    check "GRO on (pnet datapath): start-up warning with the ethtool command" grep -q 'ethtool -K veth-gw-in gro off gso off tso off tx off' "$W/ftpgate-offload.log"
else
    check "GRO on (ring datapath, GSO-aware): no offload warning" bash -c "! grep -q 'offloads on' '$W/ftpgate-offload.log'"
fi
check "MTU mismatch: start-up warning" grep -q 'veth-gw-in: device MTU 9000 differs from the configured 1500' "$W/ftpgate-offload.log"
ip netns exec "$NSC" ping -c 3 -i 0.2 -W 1 -s 4000 "$SERVER" >/dev/null 2>&1
big=$(admin /metrics | awk '$1 ~ /^ftpgate_frames_oversized_total\{interface="inside".*direction="rx"/ { print $2 }')
check "oversized frames dropped and counted ($big), process alive" test "${big:-0}" -ge 3 -a -d "/proc/$GW_PID"
check "oversized frames: warning logged" grep -q 'larger than MTU 1500' "$W/ftpgate-offload.log"
kill -TERM "$GW_PID"; rc=0; wait "$GW_PID" || rc=$?; GW_PID=""
check "after oversized frames: SIGTERM still exits 0" test $rc -eq 0
check "--log-format json: every stderr line is a JSON object" "$PY" -c '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines and all(isinstance(json.loads(l), dict) for l in lines)' "$W/ftpgate-offload.log"
ip netns exec "$NSG" ethtool -K veth-gw-in gro off >/dev/null 2>&1
ip -n "$NSC" link set eth0 mtu 1500
ip -n "$NSG" link set veth-gw-in mtu 1500

# ---------------------------------------------------------------- offloads on
# The ring datapath takes GRO/GSO super-frames (PACKET_VNET_HDR) and partial
# checksums, and hands TCP super-frames back to the kernel to cut: with every
# offload on, on every link (veth defaults), transfers must still be intact.
if [[ ${FTPGATE_YAML_EXTRA:-} != *pnet* ]]; then
    OFFL=("$NSC eth0" "$NSG veth-gw-in" "$NSG veth-gw-out" "$FGLAB_NS_S eth0")
    for d in "${OFFL[@]}"; do set -- $d; ip netns exec "$1" ethtool -K "$2" gro on gso on tso on tx on >/dev/null 2>&1; done
    ip netns exec "$NSG" "$BIN" run -c "$CFG" --admin off >"$W/ftpgate-gso.log" 2>&1 </dev/null &
    GW_PID=$!
    sleep 1
    want=$(awk '$2 == "100m.bin" { print $1 }' /var/lib/fglab/manifest 2>/dev/null)
    for mode in pasv port; do
        rm -f "$W/gso.bin"
        flag=--ftp-pasv; [[ $mode == port ]] && flag="--ftp-port -"
        timeout 120 ip netns exec "$NSC" curl -sS $flag --user "$USER_:$PASS_" "ftp://$SERVER/pub/100m.bin" -o "$W/gso.bin" 2>"$W/gso.err"; rc=$?
        got=$(sha256sum <"$W/gso.bin" 2>/dev/null | cut -d' ' -f1)
        check "offloads on everywhere: 100 MB RETR ($mode) intact (curl rc $rc)" test $rc -eq 0 -a -n "$want" -a "$got" = "$want"
    done
    kill -TERM "$GW_PID"; rc=0; wait "$GW_PID" || rc=$?; GW_PID=""
    check "offloads on: SIGTERM exits 0" test $rc -eq 0
    for d in "${OFFL[@]}"; do set -- $d; ip netns exec "$1" ethtool -K "$2" gro off gso off tso off tx off >/dev/null 2>&1; done
fi

echo "log: $W/ftpgate.log, events: $W/events.jsonl"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
