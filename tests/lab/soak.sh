#!/usr/bin/env bash
# The soak: `ftpgate run` as the lab's gateway (layout masq) carries, for a
# bounded time, a steady mix of FTP sessions (every server in turn, every
# client, every mode, IPv4 and IPv6; every transfer's sha256 checked) and
# background TCP (one long stream at a modest rate plus a short connection
# every 5 s, sha256 on both ends) and UDP (a low packet rate, counted).
# ftpgate's memory (VmRSS) is sampled every 10 s; the event log is kept.
#
#   sudo tests/lab/soak.sh [SECONDS]     (default $SOAK_SECONDS, else 600)
#
# Passes: one per verified FTP session (all its transfers' sha256 equal),
# one per background stream verified, UDP delivery >= 99 %, memory at the end
# <= 1.5 x memory after warm-up, zero drop/reset events (the soak sends no
# bad traffic, so every such event is unexplained), no events lost by the
# logger, SIGTERM exit 0. The report (also written to $SOAK_REPORT, default
# $FGLAB_STATE/soak/report.txt) ends with "N passed, N failed".
#   FTPGATE=path         binary (default target/release/ftpgate; built if missing)
#   FGLAB_NS_C/G/S       namespaces (default fgkc/fgkw/fgks, apart from the other lab runs)
#   SOAK_TCP_RATE        background TCP stream, bytes/s (default 1000000)
#   SOAK_UDP_PPS         background UDP datagrams/s (default 100)
# Everything it starts is stopped by PID, and the lab is removed, also on
# failure or Ctrl-C.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export FGLAB_NS_C=${FGLAB_NS_C:-fgkc} FGLAB_NS_G=${FGLAB_NS_G:-fgkw} FGLAB_NS_S=${FGLAB_NS_S:-fgks}
export FGLAB_STATE=${FGLAB_STATE:-/run/fglab-soak}
LAB=$HERE/lab.sh
BIN=${FTPGATE:-$REPO/target/release/ftpgate}
NSC=$FGLAB_NS_C NSS=$FGLAB_NS_S
W=$FGLAB_STATE/soak
REPORT=${SOAK_REPORT:-$W/report.txt}
DURATION=${1:-${SOAK_SECONDS:-600}}
TCP_RATE=${SOAK_TCP_RATE:-1000000}
UDP_PPS=${SOAK_UDP_PPS:-100}
PY=/usr/bin/python3
S4=198.51.100.20 S6=2001:db8:2::20
declare -A SIZE=([0b.bin]=0 [1k.bin]=1024 [1m.bin]=1048576 [10m.bin]=10485760)

PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); }
fail() { FAILED=$((FAILED + 1)); echo "FAIL  $*" | tee -a "$W/failures.txt"; }

# shellcheck source=procs.sh
. "$HERE/procs.sh"
lab_on_exit

[[ $EUID -eq 0 ]] || { echo "run as root"; echo "0 passed, 1 failed"; exit 1; }
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 30 ]] || { echo "duration must be >= 30 s"; echo "0 passed, 1 failed"; exit 1; }
if [[ ! -x $BIN ]]; then (cd "$REPO" && cargo build --release --bin ftpgate) || { echo "0 passed, 1 failed"; exit 1; }; fi

rm -rf "$W"; mkdir -p "$W" "$(dirname "$REPORT")"
T0=$EPOCHREALTIME
"$LAB" install >/dev/null 2>&1 || "$LAB" install
"$LAB" up masq 2>/dev/null || { echo "lab up failed"; echo "0 passed, 1 failed"; exit 1; }

# The lab's configuration plus rules for the background traffic (the policy
# section is the file's last; its default is deny).
CFG=$W/gateway.yaml
{ "$LAB" gw-config masq
  echo "    - {name: soak-tcp, action: allow, from: inside, to: outside, protocol: tcp, ports: [5201]}"
  echo "    - {name: soak-udp, action: allow, from: inside, to: outside, protocol: udp, ports: [5202]}"
} >"$CFG"
"$BIN" check -c "$CFG" >/dev/null || { echo "soak config invalid"; echo "0 passed, 1 failed"; exit 1; }
EV=$W/events.jsonl ADMIN=$W/admin.sock
FTPGATE=$BIN "$LAB" gw ftpgate -c "$CFG" --events "$EV" --admin "unix:$ADMIN" 2>/dev/null \
    || { echo "ftpgate did not start"; echo "0 passed, 1 failed"; exit 1; }
read -r GW_PID GW_START _ <"$FGLAB_STATE/gw.pids"
"$LAB" servers start vsftpd 2>/dev/null || { echo "vsftpd did not start"; echo "0 passed, 1 failed"; exit 1; }
metric() { curl -s --max-time 5 --unix-socket "$ADMIN" http://ftpgate/metrics | awk -v k="$1" '$1 == k { print $2 }'; }

# ---------------------------------------------------------------- memory
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$GW_PID/status" 2>/dev/null; }
END_AT=$(( $(date +%s) + DURATION ))
(
    t0=$(date +%s)
    while (( $(date +%s) < END_AT + 30 )) && [[ -d /proc/$GW_PID ]]; do
        echo "$(( $(date +%s) - t0 )) $(rss_kb)"
        sleep 10
    done
) >"$W/rss.txt" 2>/dev/null &
BG_PIDS+=($!)

# ---------------------------------------------------------------- background TCP/UDP
# Sinks on the server host, senders on the client host, over IPv4 and IPv6.
BG_SECS=$((DURATION - 10))
for fam in 4 6; do
    [[ $fam == 4 ]] && dst=$S4 || dst=$S6
    ip netns exec "$NSS" "$PY" -u "$HERE/soakbg.py" tcp-sink "$dst" 5201 $((DURATION + 60)) >"$W/tcp-sink-v$fam.txt" 2>&1 &
    BG_PIDS+=($!); eval "TSINK$fam=$!"
    ip netns exec "$NSS" "$PY" -u "$HERE/soakbg.py" udp-sink "$dst" 5202 $((DURATION + 15)) >"$W/udp-sink-v$fam.txt" 2>&1 &
    BG_PIDS+=($!); eval "USINK$fam=$!"
done
# `servers start` ends every other process in the server namespace; these stay.
for v in TSINK4 TSINK6 USINK4 USINK6; do
    echo "${!v} $(awk '{ print $22 }' "/proc/${!v}/stat") soak-sink" >>"$FGLAB_STATE/keep.pids"
done
sleep 0.5
for fam in 4 6; do
    [[ $fam == 4 ]] && dst=$S4 || dst=$S6
    timeout $((DURATION + 90)) ip netns exec "$NSC" "$PY" -u "$HERE/soakbg.py" tcp-send "$dst" 5201 $((TCP_RATE / 2)) "$BG_SECS" >"$W/tcp-send-v$fam.txt" 2>&1 &
    BG_PIDS+=($!); eval "TSEND$fam=$!"
    timeout $((DURATION + 30)) ip netns exec "$NSC" "$PY" -u "$HERE/soakbg.py" udp-send "$dst" 5202 $((UDP_PPS / 2)) "$BG_SECS" >"$W/udp-send-v$fam.txt" 2>&1 &
    BG_PIDS+=($!); eval "USEND$fam=$!"
done

# ---------------------------------------------------------------- FTP
# Phases: one server per phase, in turn. In each phase two loops run side by
# side (python+curl, lftp), each cycling through its clients x modes x
# families with small files, a 10 MB pair every fourth session.
COMBOS=()
for fam in 4 6; do for mode in pasv epsv port eprt; do
    [[ $fam == 6 && ( $mode == pasv || $mode == port ) ]] && continue
    COMBOS+=("$mode $fam")
done; done
ftp_loop() {
    local server=$1 deadline=$2 i=0 c mode fam ops out clients
    shift 2; clients=("$@")
    while (( $(date +%s) < deadline )); do
        for c in "${clients[@]}"; do
            read -r mode fam <<<"${COMBOS[$(( (i / ${#clients[@]}) % ${#COMBOS[@]} ))]}"
            [[ $c == lftp && $mode == eprt && $fam == 4 ]] && mode=port
            ops=(list get:1k.bin get:1m.bin put:1k.bin put:1m.bin)
            (( i % 4 == 3 )) && ops+=(get:10m.bin put:10m.bin)
            out=$(CLIENT_TIMEOUT=15 "$LAB" case "$server" "$c" "$mode" "$fam" "${ops[@]}" 2>&1 | grep -E '^(PASS|FAIL|UNSUPPORTED)' | head -1)
            echo "${out:-FAIL        (no result line) $server $c $mode v$fam} :: ${ops[*]}"
            i=$((i + 1))
            (( $(date +%s) < deadline )) || break
        done
    done
}
NPHASES=3; (( DURATION >= 360 )) && NPHASES=6
PHASE=$(( (DURATION - 15) / NPHASES ))
SERVERS=(vsftpd proftpd pure-ftpd)
for ((p = 0; p < NPHASES; p++)); do
    server=${SERVERS[$((p % 3))]}
    "$LAB" servers start "$server" >/dev/null 2>&1 || { fail "phase $p: $server did not start"; continue; }
    deadline=$(( $(date +%s) + PHASE ))
    ftp_loop "$server" "$deadline" python curl >"$W/ftp-$p-a.txt" 2>&1 &
    la=$!; BG_PIDS+=($la)
    ftp_loop "$server" "$deadline" lftp >"$W/ftp-$p-b.txt" 2>&1 &
    lb=$!; BG_PIDS+=($lb)
    wait "$la" "$lb"
    echo "phase $p ($server): $(cat "$W/ftp-$p-"*.txt | grep -c '^PASS') sessions passed, $(cat "$W/ftp-$p-"*.txt | grep -c '^FAIL') failed" >&2
done
"$LAB" servers stop >/dev/null 2>&1

# ---------------------------------------------------------------- wind down
for v in TSEND4 TSEND6 USEND4 USEND6; do wait "${!v}" 2>/dev/null; done
sleep 2
# The sinks end by their deadline; stopping them early loses their summary
# line, so the UDP sinks get their last seconds and the TCP sinks (which
# print per connection) are stopped.
for v in USINK4 USINK6; do wait "${!v}" 2>/dev/null; done
stop_pid "$TSINK4"; stop_pid "$TSINK6"
sleep 1
EVENTS_DROPPED=$(metric ftpgate_events_dropped_total)
BYTES_FWD=$(curl -s --max-time 5 --unix-socket "$ADMIN" http://ftpgate/metrics | awk '$1 ~ /^ftpgate_bytes_transmitted_total/ { s += $2 } END { printf "%.0f", s }')
FRAMES_FWD=$(metric ftpgate_frames_forwarded_total)
FRAMES_LOST=$(curl -s --max-time 5 --unix-socket "$ADMIN" http://ftpgate/metrics | awk '$1 ~ /^ftpgate_frames_lost_total/ { s += $2 } END { printf "%.0f", s }')
RSS_END=$(rss_kb)
kill -TERM "$GW_PID"; rc=0
for _ in $(seq 100); do [[ -d /proc/$GW_PID ]] || break; sleep 0.1; done
[[ -d /proc/$GW_PID ]] && rc=timeout
stop_pid "${BG_PIDS[0]}"

# ---------------------------------------------------------------- tally
ftp_pass=0 ftp_fail=0 xfers=0 xbytes=0
while IFS= read -r line; do
    case $line in
    PASS*)
        ftp_pass=$((ftp_pass + 1)); pass
        for op in ${line#* :: }; do
            case $op in get:*|put:*) xfers=$((xfers + 1)); xbytes=$((xbytes + ${SIZE[${op#*:}]})) ;; esac
        done ;;
    FAIL*) ftp_fail=$((ftp_fail + 1)); fail "ftp: $line" ;;
    esac
done < <(cat "$W"/ftp-*.txt 2>/dev/null)
((ftp_pass > 0)) || fail "no FTP session passed"

bg_ok=0 bg_bad=0
for fam in 4 6; do
    while read -r _ n sum; do
        [[ $n =~ ^[0-9]+$ ]] || { bg_bad=$((bg_bad + 1)); fail "tcp v$fam sender: $n $sum"; continue; }
        if grep -q "^conn $n $sum\$" "$W/tcp-sink-v$fam.txt"; then bg_ok=$((bg_ok + 1)); pass
        else bg_bad=$((bg_bad + 1)); fail "tcp v$fam: a stream of $n bytes ($sum) did not arrive intact"; fi
    done <"$W/tcp-send-v$fam.txt"
done
((bg_ok > 0)) || fail "no background TCP stream verified"
tcp_bytes=$(cat "$W"/tcp-sink-v*.txt | awk '$1 == "conn" && $2 ~ /^[0-9]+$/ { s += $2 } END { print s + 0 }')

udp_line=""
for fam in 4 6; do
    read -r _ sent _ <"$W/udp-send-v$fam.txt" || sent=0
    read -r _ got _ <"$W/udp-sink-v$fam.txt" || got=0
    udp_line+="v$fam ${got:-0}/${sent:-0} "
    if [[ ${sent:-0} -gt 0 && $(( ${got:-0} * 100 )) -ge $(( sent * 99 )) ]]; then pass
    else fail "udp v$fam: ${got:-0} of ${sent:-0} datagrams arrived (< 99 %)"; fi
done

# Memory: warm-up ends at the first sample at or after min(60 s, a quarter of the run).
WARM_AT=$(( DURATION / 4 < 60 ? DURATION / 4 : 60 ))
read -r rss_start rss_warm rss_max rss_last < <(awk -v w="$WARM_AT" '
    $2 ~ /^[0-9]+$/ { if (!s) s = $2; if (!wm && $1 >= w) wm = $2; if ($2 > m) m = $2; l = $2 }
    END { print s + 0, wm + 0, m + 0, l + 0 }' "$W/rss.txt")
[[ -n $RSS_END ]] || RSS_END=$rss_last
nsamples=$(grep -c . "$W/rss.txt")
if [[ $rss_warm -gt 0 && $(( RSS_END * 2 )) -le $(( rss_warm * 3 )) ]]; then pass
else fail "memory: ${RSS_END} kB at the end > 1.5 x ${rss_warm} kB after warm-up"; fi

# Events: the soak injects nothing bad, so every drop/reset is unexplained.
ev_summary=$("$PY" - "$EV" <<'PY'
import collections, json, sys
c, kinds, bad = collections.Counter(), collections.Counter(), []
ftp = 0
for line in open(sys.argv[1]):
    e = json.loads(line)
    kinds[e["event"]] += 1
    if e["event"] == "connection_new" and e.get("dst", "").endswith(":21"):
        ftp += 1
    if e["event"] in ("drop", "reset"):
        c[e["event"] + ":" + e.get("reason", "?")] += 1
        if len(bad) < 5:
            bad.append(line.strip()[:400])
print(ftp)
print(sum(c.values()))
print(", ".join("%s %d" % kv for kv in sorted(c.items())) or "none")
print(", ".join("%s %d" % kv for kv in sorted(kinds.items())))
for b in bad:
    print("  " + b)
PY
)
ftp_ctl=$(sed -n 1p <<<"$ev_summary") n_err=$(sed -n 2p <<<"$ev_summary")
by_reason=$(sed -n 3p <<<"$ev_summary") kinds=$(sed -n 4p <<<"$ev_summary")
if [[ $n_err == 0 ]]; then pass; else fail "unexplained drop/reset events: $by_reason"$'\n'"$(sed -n '5,$p' <<<"$ev_summary")"; fi
if [[ ${EVENTS_DROPPED:-x} == 0 ]]; then pass; else fail "event logger dropped ${EVENTS_DROPPED:-?} events (the log is incomplete)"; fi
if [[ $rc == 0 ]] && grep -q 'stopped: frames' "$FGLAB_STATE/ftpgate.log"; then pass; else fail "ftpgate did not stop cleanly on SIGTERM ($rc)"; fi

secs=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
{
    echo "ftpgate soak, $(date -u +%Y-%m-%dT%H:%M:%SZ), $DURATION s of traffic ($secs s with set-up), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "binary: $BIN ($(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null))"
    echo "FTP: $ftp_pass sessions verified, $ftp_fail failed ($ftp_ctl control connections seen by ftpgate); $xfers transfers sha256-verified, $((xbytes / 1048576)) MiB"
    echo "FTP mix: $(cat "$W"/ftp-*.txt | awk '{ print $3, $4, $5, $6 }' | sort | uniq -c | wc -l) server/client/mode/family combinations; per server: $(cat "$W"/ftp-*.txt | awk '$1 == "PASS" { n[$3]++ } END { for (s in n) printf "%s %d ", s, n[s] }')"
    echo "background TCP: $bg_ok streams verified, $bg_bad bad, $((tcp_bytes / 1048576)) MiB; UDP received/sent: $udp_line"
    echo "gateway: $FRAMES_FWD frames forwarded, $((BYTES_FWD / 1048576)) MiB transmitted, ${FRAMES_LOST:-?} lost before reading (receive ring full); events: $kinds"
    echo "memory (VmRSS, $nsamples samples every 10 s): start $rss_start kB, after warm-up (${WARM_AT} s) $rss_warm kB, max $rss_max kB, end $RSS_END kB"
    echo "drop/reset events: $n_err ($by_reason); caused by the soak itself: 0 (it sends no bad traffic); events lost by the logger: ${EVENTS_DROPPED:-?}"
    [[ ! -s $W/failures.txt ]] || { echo "failures:"; cat "$W/failures.txt"; }
    echo "files: $W (events.jsonl, rss.txt, ftp-*.txt, tcp-*/udp-*.txt)"
    echo "$PASSED passed, $FAILED failed"
} | tee "$REPORT"
((FAILED == 0))
