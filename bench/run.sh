#!/usr/bin/env bash
# ftpgate against the Linux kernel gateway, side by side on the same FTP lab
# (tests/lab/lab.sh, layout masq: client 192.0.2.10 inside, vsftpd at
# 198.51.100.20 outside), and `ftpgate replay` against tshark and suricata
# on one large capture. Prints every figure for both sides and the ratio
# ftpgate ÷ kernel (or ÷ tool), ends with a markdown table (also written to
# $OUT/results.md) and a last line "N passed, M failed" (a pass: both sides
# completed the measurement).
#
#   sudo bench/run.sh [--quick] [--pin] [--out DIR]
#
#   --quick   500 MB bulk, 10 s windows, 5,000 round trips, a 1 M-frame capture
#             (a few minutes); default: 1 GB, 20 s, 20,000, 20 M frames. Each
#             bulk row is the median of 3 transfers of that size.
#   --pin     the gateway on a core of its own, as on a gateway box: the last
#             CPU runs the gateway (the kernel's forwarding by RPS on its two
#             devices; ftpgate by affinity and the same RPS), the others run
#             the client, the server and their TCP stacks (affinity, and RPS on
#             their links so the gateway's transmit does not run their TCP
#             input inline). Every live row then notes how busy the
#             gateway's core was. Default: everything shares every CPU.
#
# Environment:
#   FTPGATE=PATH             the binary (default target/release/ftpgate)
#   FTPGATE_YAML_EXTRA=TEXT  appended to the generated gateway config, e.g.
#                            $'datapath: {backend: ring, workers: 2}'
#   BENCH_CACHE=DIR          recordings, the capture, helper binaries
#                            (default /var/tmp/ftpgate-bench; the capture is
#                            rebuilt only when missing)
#   BENCH_ALL_OFFLOADS=1     sessions, flows and latency with offloads on too
#                            (default: offloads off only; bulk always does both)
#   BENCH_REPLAY_FRAMES, BENCH_BULK_FILES (x 100 MiB), BENCH_SECS,
#   BENCH_RTT_N, BENCH_SESSION_PROCS, BENCH_FLOWS, BENCH_BULK_REPS   override the sizes
#   BENCH_SKIP="live replay" skip a part
#   BENCH_PIN=1              the same as --pin
# The lab uses its own namespaces (fgbc, fgbw, fgbs) and state dir
# (/run/fglab-bench), so it never touches another lab user's.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export FGLAB_NS_C=${FGLAB_NS_C:-fgbc} FGLAB_NS_G=${FGLAB_NS_G:-fgbw} FGLAB_NS_S=${FGLAB_NS_S:-fgbs}
export FGLAB_STATE=${FGLAB_STATE:-/run/fglab-bench}
LAB=$REPO/tests/lab/lab.sh
NSC=$FGLAB_NS_C NSG=$FGLAB_NS_G NSS=$FGLAB_NS_S
BIN=${FTPGATE:-$REPO/target/release/ftpgate}
CACHE=${BENCH_CACHE:-/var/tmp/ftpgate-bench}
SERVER=198.51.100.20 FTP_USER=fgftp FTP_PASS=fgftp-lab-pw   # lab.sh's
PY=/usr/bin/python3
IPERF_PORT=5201 RTT_PORT=7777

QUICK=0 OUT="" PIN=${BENCH_PIN:-0}
while (($#)); do
    case $1 in
    --quick) QUICK=1; shift ;;
    --pin) PIN=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: bench/run.sh [--quick] [--pin] [--out DIR]" >&2; exit 2 ;;
    esac
done
if ((QUICK)); then
    BULK_FILES=${BENCH_BULK_FILES:-5} SECS=${BENCH_SECS:-10} RTT_N=${BENCH_RTT_N:-5000} REPLAY_FRAMES=${BENCH_REPLAY_FRAMES:-1000000}
else
    BULK_FILES=${BENCH_BULK_FILES:-10} SECS=${BENCH_SECS:-20} RTT_N=${BENCH_RTT_N:-20000} REPLAY_FRAMES=${BENCH_REPLAY_FRAMES:-20000000}
fi
PROCS=${BENCH_SESSION_PROCS:-8} FLOWS=${BENCH_FLOWS:-32} BULK_REPS=${BENCH_BULK_REPS:-3}
SKIP=${BENCH_SKIP:-}
OUT=${OUT:-$CACHE/run-$(date +%Y%m%d-%H%M%S)}

exec 3>&2
log() { printf '[bench] %s\n' "$*" >&3; }   # fd 3: the terminal even inside a step whose stderr is logged
[[ $EUID -eq 0 ]] || { echo "bench/run.sh: run as root" >&2; exit 2; }
(($(nproc) >= 2)) || PIN=0   # nothing to pin to on one CPU
[[ -x $BIN ]] || { echo "bench/run.sh: no ftpgate binary at $BIN (cargo build --release, or FTPGATE=path)" >&2; exit 2; }
mkdir -p "$OUT" "$CACHE" || exit 2
OUT=$(cd "$OUT" && pwd)

# ---------------------------------------------------------------------------
# Processes started here (outside the lab's namespaces): "PID STARTTIME".
# Everything inside the namespaces is ended by `lab.sh down`, by PID.
BG=()
# shellcheck source=../tests/lab/procs.sh
. "$REPO/tests/lab/procs.sh"
remember() { BG+=("$1 $(start_time "$1")"); }
LAB_UP=0
cleanup() {
    local rc=$? e
    trap - EXIT INT TERM
    for e in "${BG[@]}"; do stop_pid $e; done
    if ((LAB_UP)); then "$LAB" down >/dev/null 2>&1 || log "lab.sh down failed"; fi
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------------------
# Results: one row per measurement.
ROWS=() PASSED=0 FAILED=0
declare -A LABEL UNIT REFNAME TARGET BETTER REF FG NOTE
row() {   # KEY LABEL UNIT REFNAME TARGET higher|lower
    ROWS+=("$1"); LABEL[$1]=$2 UNIT[$1]=$3 REFNAME[$1]=$4 TARGET[$1]=$5 BETTER[$1]=$6
    REF[$1]="" FG[$1]="" NOTE[$1]=""
}
note() { NOTE[$1]="${NOTE[$1]:+${NOTE[$1]}; }$2"; }
isnum() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]] && awk -v v="$1" 'BEGIN { exit !(v > 0) }'; }
ratio() { awk -v f="$1" -v r="$2" 'BEGIN { printf "%.2f", f / r }'; }
fmt() {   # a figure with thousands separators and sensible decimals
    isnum "${1:-}" || { echo "failed"; return; }
    awk -v v="$1" 'BEGIN { d = (v >= 100) ? 0 : (v >= 10 ? 1 : 2); s = sprintf("%.*f", d, v);
        split(s, p, "."); i = p[1]; o = ""; while (length(i) > 3) { o = "," substr(i, length(i) - 2) o; i = substr(i, 1, length(i) - 3) }
        printf "%s%s%s", i, o, (d ? "." p[2] : "") }'
}
# One measurement on one side: SIDE ref|fg, KEY, then the command printing
# the figure on its last line of stdout (or failing).
measure() {
    local side=$1 key=$2 v c0; shift 2
    c0=$(gw_cpu_ticks)
    # In this shell, not a subshell: the steps keep state (notes, caches).
    "$@" >"$OUT/.value" 2>>"$OUT/errors.log"
    v=$(tail -1 "$OUT/.value")
    # rtt-p99 reads the figure of the run that rtt-p50 measured.
    if ((PIN)) && [[ $key != replay* && $key != rtt-p99* ]]; then
        local busy
        busy=$(gw_busy "$c0" "$(gw_cpu_ticks)")
        note "$key" "$([[ $side == ref ]] && echo "${REFNAME[$key]}" || echo ftpgate) core busy $busy %"
    fi
    if isnum "$v"; then
        if [[ $side == ref ]]; then REF[$key]=$v; else FG[$key]=$v; fi
        log "  ${LABEL[$key]}: $([[ $side == ref ]] && echo "${REFNAME[$key]}" || echo ftpgate) $(fmt "$v") ${UNIT[$key]}"
    else
        log "  ${LABEL[$key]}: $([[ $side == ref ]] && echo "${REFNAME[$key]}" || echo ftpgate) FAILED: $(tail -1 "$OUT/errors.log" 2>/dev/null)"
    fi
}

# ---------------------------------------------------------------------------
# --pin: which CPU is the gateway's, and the endpoints' prefix (EPX).
GW_CPU=$(($(nproc) - 1)) EP_CPUS="0-$(($(nproc) - 2))"
EPX=()
((PIN)) && EPX=(taskset -c "$EP_CPUS")
rps_mask() {   # CPUs FIRST..LAST as rps_cpus wants them: hex, 32 CPUs per comma-separated group
    local first=$1 last=$2 g c v groups=()
    for ((g = GW_CPU / 32; g >= 0; g--)); do
        v=0
        for ((c = first; c <= last; c++)); do ((c / 32 == g)) && v=$((v | 1 << (c % 32))); done
        groups+=("$(printf '%08x' "$v")")
    done
    (IFS=,; echo "${groups[*]}")
}
GW_MASK=$(rps_mask "$GW_CPU" "$GW_CPU") EP_MASK=$(rps_mask 0 $((GW_CPU - 1)))
gw_cpu_ticks() {   # busy and total jiffies of the gateway's CPU
    awk -v c="cpu$GW_CPU" '$1 == c { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat
}
gw_busy() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; printf "%.0f", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }'; }
rps() { ip netns exec "$1" sh -c "echo $3 >/sys/class/net/$2/queues/rx-0/rps_cpus"; }
pin_lab() {   # after the lab and its servers are up
    rps "$NSG" veth-gw-in "$GW_MASK" && rps "$NSG" veth-gw-out "$GW_MASK" &&
        rps "$NSC" eth0 "$EP_MASK" && rps "$NSS" eth0 "$EP_MASK" || return 1
    local p
    for p in $(ip netns pids "$NSS") $(ip netns pids "$NSC"); do taskset -a -c -p "$EP_CPUS" "$p" >/dev/null || return 1; done
    log "pinned: gateway on CPU $GW_CPU (RPS on its devices; ftpgate by affinity), endpoints on CPUs $EP_CPUS"
}

# ---------------------------------------------------------------------------
# Conditions.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null) ]] || COMMIT="$COMMIT (+ uncommitted changes)"
VERSION=$("$BIN" --version 2>/dev/null | head -1 | sed 's/^ftpgate //')
DATAPATH=${FTPGATE_YAML_EXTRA:-"built-in default (no datapath key in the config)"}
DATAPATH=${DATAPATH//$'\n'/; }

# ---------------------------------------------------------------------------
# Helpers built from source: the ping-pong program and the capture builder.
PINGPONG=$CACHE/bin/pingpong
BIGCAP=${BENCH_BIGCAP:-$REPO/target/release/examples/bigcap}
build_helpers() {
    mkdir -p "$CACHE/bin"
    if [[ ! -x $PINGPONG || $HERE/pingpong.rs -nt $PINGPONG ]]; then
        log "building $PINGPONG (rustc -O)"
        rustc -O --edition 2021 -o "$PINGPONG" "$HERE/pingpong.rs" || return 1
    fi
}

# ---------------------------------------------------------------------------
# The lab and the two gateways.
LINKS=("$NSG veth-gw-in" "$NSG veth-gw-out" "$NSC eth0" "$NSS eth0")
set_offloads() {   # off: the lab's setting; on: veth defaults (tx csum, TSO, GSO on; GRO off)
    local l ns dev
    for l in "${LINKS[@]}"; do
        read -r ns dev <<<"$l"
        if [[ $1 == off ]]; then ip netns exec "$ns" ethtool -K "$dev" gro off gso off tso off tx off >/dev/null 2>&1
        else ip netns exec "$ns" ethtool -K "$dev" tx on tso on gso on gro off >/dev/null 2>&1; fi
    done
    OFFLOADS_NOW=$1
}
offload_state() {   # what ethtool reports on the gateway's inside device
    ip netns exec "$NSG" ethtool -k veth-gw-in 2>/dev/null |
        awk -F': ' '/^(tx-checksumming|tcp-segmentation-offload|generic-segmentation-offload|generic-receive-offload):/ { sub(/ .*/, "", $2); printf "%s%s=%s", n++ ? " " : "", $1, $2 }'
}

GW_NOW=""
gw_kernel() {
    "$LAB" gw kernel 2>>"$OUT/lab.log" || return 1
    # The lab's strict forward policy admits only FTP; the load generators' ports too.
    ip netns exec "$NSG" nft insert rule inet fglab forward iifname veth-gw-in oifname veth-gw-out \
        tcp dport "{ $IPERF_PORT, $RTT_PORT }" ct state new accept || return 1
    GW_NOW=kernel
}
gw_ftpgate() {
    local cfg=$OUT/ftpgate.yaml
    {
        "$LAB" gw-config masq 2>/dev/null
        # gw-config ends with the policy's rule list; the load generators' ports join it.
        echo "    - {name: bench-load, action: allow, from: inside, to: outside, protocol: tcp, ports: [$IPERF_PORT, $RTT_PORT]}"
        echo "admin: {listen: off}"
        [[ -z ${FTPGATE_YAML_EXTRA:-} ]] || printf '%s\n' "$FTPGATE_YAML_EXTRA"
    } >"$cfg"
    GW_LOG_FROM=$(stat -c %s "$FGLAB_STATE/ftpgate.log" 2>/dev/null || echo 0)   # lab.sh appends to it
    "$LAB" gw ftpgate -c "$cfg" --bin "$BIN" 2>>"$OUT/lab.log" || return 1
    if ((PIN)); then
        local p
        for p in $(awk '{ print $1 }' "$FGLAB_STATE/gw.pids"); do taskset -a -c -p "$GW_CPU" "$p" >/dev/null || return 1; done
    fi
    GW_NOW=ftpgate
}
GW_LOG_FROM=0
gw_log_tail() { [[ $GW_NOW != ftpgate ]] || tail -c +$((GW_LOG_FROM + 1)) "$FGLAB_STATE/ftpgate.log" 2>/dev/null | tail -3 | tr '\n' ' ' | cut -c1-300; }

# 1. bulk RETR: BULK_FILES x 100m.bin over one control connection; MB/s.
# The median of BULK_REPS transfers: a single one of a few hundred MB lasts
# about a second here, and the kernel's own figure swung 208-502 MB/s
# between single runs.
bulk() {
    local r v vals=()
    for ((r = 0; r < BULK_REPS; r++)); do
        v=$(bulk_once "$1") || return 1
        vals+=("$v")
    done
    log "    $1 runs: ${vals[*]} MB/s"
    printf '%s\n' "${vals[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
bulk_once() {
    local mode=$1 urls=() i args=(--ftp-pasv --disable-epsv)
    [[ $mode == port ]] && args=(--ftp-port - --disable-eprt)
    for ((i = 0; i < BULK_FILES; i++)); do urls+=("ftp://$SERVER/pub/100m.bin" -o /dev/null); done
    local t0=$EPOCHREALTIME out
    # A stalled transfer (under 1 MB/s for 5 s) ends the row instead of the run.
    out=$(timeout --foreground -k 5 $((BULK_FILES * 30 + 20)) ip netns exec "$NSC" "${EPX[@]}" curl -sS "${args[@]}" --user "$FTP_USER:$FTP_PASS" \
        --connect-timeout 5 --speed-limit 1000000 --speed-time 5 --fail-early -w '%{size_download}\n' "${urls[@]}" 2>"$OUT/curl.err")
    local rc=$? t1=$EPOCHREALTIME
    local bytes
    bytes=$(awk '{ s += $1 } END { print s + 0 }' <<<"$out")
    if ((rc != 0 || bytes != BULK_FILES * 104857600)); then
        echo "bulk $mode via $GW_NOW (offloads $OFFLOADS_NOW): curl exit $rc, $bytes bytes: $(tr '\n' ' ' <"$OUT/curl.err" | cut -c1-200) $(gw_log_tail)" >&2
        return 1
    fi
    awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f\n", b / 1e6 / (z - a) }'
}

# 2. short sessions: PROCS workers for SECS; sessions/s.
sessions() {
    local out ok failed secs
    out=$(timeout --foreground -k 5 $((SECS + 60)) ip netns exec "$NSC" "${EPX[@]}" "$PY" "$HERE/short_sessions.py" "$SERVER" "$FTP_USER" "$FTP_PASS" "$PROCS" "$SECS") \
        || { echo "sessions via $GW_NOW: exit $?: $out $(gw_log_tail)" >&2; return 1; }
    read -r ok failed secs <<<"$(sed -E 's/[a-z]+=//g' <<<"$out")"
    log "    $out"
    ((ok > 0)) || { echo "sessions via $GW_NOW: none completed ($out)" >&2; return 1; }
    ((failed == 0)) || note "sessions" "$GW_NOW: $failed of $((ok + failed)) sessions failed"
    awk -v n="$ok" -v s="$secs" 'BEGIN { printf "%.1f\n", n / s }'
}

# 3. many concurrent flows: iperf3 -P FLOWS; frames/s the gateway's devices
# transmitted over SECS in the middle of the run (both directions, data and ACKs).
gw_tx() {
    ip netns exec "$NSG" cat /sys/class/net/veth-gw-in/statistics/tx_packets /sys/class/net/veth-gw-out/statistics/tx_packets |
        awk '{ s += $1 } END { print s }'
}
flows() {
    local mss=$1 margs=() spid cpid
    [[ $mss == default ]] || margs=(-M "$mss")
    ip netns exec "$NSS" "${EPX[@]}" iperf3 -s -1 -B "$SERVER" -p $IPERF_PORT >"$OUT/iperf3-server.log" 2>&1 &
    spid=$!; remember "$spid"
    local i
    for i in $(seq 50); do ip netns exec "$NSS" ss -Hltn "( sport = :$IPERF_PORT )" | grep -q . && break; sleep 0.1; done
    ip netns exec "$NSC" "${EPX[@]}" timeout $((SECS + 40)) iperf3 -c "$SERVER" -p $IPERF_PORT -P "$FLOWS" "${margs[@]}" -t $((SECS + 4)) \
        --connect-timeout 3000 >"$OUT/iperf3-client.log" 2>&1 &
    cpid=$!; remember "$cpid"
    sleep 2
    local c0 c1 t0 t1
    c0=$(gw_tx) t0=$EPOCHREALTIME
    sleep "$SECS"
    c1=$(gw_tx) t1=$EPOCHREALTIME
    wait "$cpid"; local rc=$?
    stop_pid "$spid"; wait "$spid" 2>/dev/null
    local rate
    rate=$(grep -E 'SUM.*receiver' "$OUT/iperf3-client.log" | awk '{ print $(NF-2), $(NF-1) }')
    if ((rc != 0)); then
        echo "flows mss $mss via $GW_NOW: iperf3 exit $rc: $(tail -1 "$OUT/iperf3-client.log") $(gw_log_tail)" >&2
        return 1
    fi
    log "    iperf3 -P $FLOWS ${margs[*]}: ${rate:-?}"
    awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.0f\n", (b - a) / (e - s) }'
}

# 4. round trips: one connection, RTT_N request/response pairs of 64 bytes.
RTT_LAST=""
rtt() {
    local which=$1 spid out
    if [[ -z $RTT_LAST ]]; then
        ip netns exec "$NSS" "${EPX[@]}" "$PINGPONG" server "$SERVER:$RTT_PORT" >"$OUT/pingpong-server.log" 2>&1 &
        spid=$!; remember "$spid"
        local i
        for i in $(seq 50); do grep -q READY "$OUT/pingpong-server.log" && break; sleep 0.1; done
        out=$(timeout --foreground -k 5 300 ip netns exec "$NSC" "${EPX[@]}" "$PINGPONG" client "$SERVER:$RTT_PORT" "$RTT_N" 64)
        local rc=$?
        stop_pid "$spid"; wait "$spid" 2>/dev/null
        ((rc == 0)) || { echo "round trips via $GW_NOW: exit $rc $(gw_log_tail)" >&2; return 1; }
        log "    $out"
        RTT_LAST=$out
    fi
    sed -nE "s/.*${which}_us=([0-9.]+).*/\1/p" <<<"$RTT_LAST"
}

# Everything but bulk runs at one offload setting unless BENCH_ALL_OFFLOADS=1.
run_live() {
    local off
    for off in off on; do
        row "bulk-pasv-$off" "bulk RETR, passive (PASV), offloads $off, $((BULK_FILES * 100)) MiB, median of $BULK_REPS" "MB/s" kernel "≥ 1.0" higher
        row "bulk-port-$off" "bulk RETR, active (PORT), offloads $off, $((BULK_FILES * 100)) MiB, median of $BULK_REPS" "MB/s" kernel "≥ 1.0" higher
        if [[ $off == off || ${BENCH_ALL_OFFLOADS:-0} == 1 ]]; then
            local sfx=""; [[ $off == off ]] || sfx="-on"
            row "sessions$sfx" "short FTP sessions (login, PASV, 1 KB RETR, QUIT), $PROCS client processes, offloads $off" "sessions/s" kernel "≥ 1.0" higher
            row "flows-small$sfx" "iperf3 -P $FLOWS -M 200 (small frames), gateway tx, offloads $off" "frames/s" kernel "≥ 0.8 (proposal)" higher
            row "flows-large$sfx" "iperf3 -P $FLOWS default MSS (large frames), gateway tx, offloads $off" "frames/s" kernel "≥ 0.8 (proposal)" higher
            row "rtt-p50$sfx" "TCP round trip p50 (64 B, $RTT_N round trips), offloads $off" "µs" kernel "≤ 1.5 (proposal)" lower
            row "rtt-p99$sfx" "TCP round trip p99, offloads $off" "µs" kernel "≤ 2.0 (proposal)" lower
        fi
    done
    for off in off on; do
        set_offloads "$off"
        OFFLOAD_DESC[$off]=$(offload_state)
        log "offloads $off: ${OFFLOAD_DESC[$off]}"
        local gw side
        for gw in kernel ftpgate; do
            side=ref; [[ $gw == ftpgate ]] && side=fg
            log "gateway $gw, offloads $off"
            if ! gw_$gw; then log "  gateway $gw did not start: $(tail -2 "$OUT/lab.log" | tr '\n' ' ')"; continue; fi
            measure $side "bulk-pasv-$off" bulk pasv
            measure $side "bulk-port-$off" bulk port
            if [[ $off == off || ${BENCH_ALL_OFFLOADS:-0} == 1 ]]; then
                local sfx=""; [[ $off == off ]] || sfx="-on"
                measure $side "sessions$sfx" sessions
                measure $side "flows-small$sfx" flows 200
                measure $side "flows-large$sfx" flows default
                RTT_LAST=""
                measure $side "rtt-p50$sfx" rtt p50
                measure $side "rtt-p99$sfx" rtt p99
            fi
        done
    done
    set_offloads off
}

# ---------------------------------------------------------------------------
# 5. replay. Templates: four real sessions recorded on the inside link
# through the kernel gateway (offloads off, so checksums are real), LIST +
# 1 KB RETR each; cloned by examples/bigcap.rs into REPLAY_FRAMES frames.
TEMPLATES=("pasv 4" "port 4" "epsv 6" "eprt 6")
record_templates() {
    local t mode fam name
    mkdir -p "$CACHE/templates"
    for t in "${TEMPLATES[@]}"; do
        read -r mode fam <<<"$t"
        name=vsftpd-$mode-v$fam
        [[ -s $CACHE/templates/$name.lan.pcapng ]] && continue
        log "recording template $name"
        "$LAB" record vsftpd python "$mode" "$fam" masq "$CACHE/templates" --reuse --lan-view --name "$name" list get:1k.bin \
            2>>"$OUT/lab.log" || { log "recording $name failed (see $OUT/lab.log)"; return 1; }
    done
}

# One session start every SPACING µs. ftpgate keeps a closed TCP connection
# for tcp_transitory (2 min, as Linux conntrack) within max_connections (1 M):
# at 3 connections per session, 600 µs keeps ~600 k in the table, where 50 µs
# filled it (a 20 M-frame capture then saw 17 % of its frames dropped).
SPACING=${BENCH_SPACING_US:-600}
CAPTURE="" CAPTURE_FRAMES=""
build_capture() {
    CAPTURE=$CACHE/ftp-$REPLAY_FRAMES-${SPACING}us.pcap
    if [[ ! -s $CAPTURE || ! -s $CAPTURE.info ]]; then
        if [[ ! -x $BIGCAP ]]; then
            log "building the capture builder (cargo build --release --example bigcap)"
            (cd "$REPO" && cargo build --release --example bigcap) >>"$OUT/build.log" 2>&1 || { log "cargo failed (see $OUT/build.log)"; return 1; }
        fi
        local t
        for t in "${TEMPLATES[@]}"; do set -- $t; [[ -s $CACHE/templates/vsftpd-$1-v$2.lan.pcapng ]] || { log "template vsftpd-$1-v$2 missing"; return 1; }; done
        log "building $CAPTURE ($REPLAY_FRAMES frames, one session start every $SPACING µs)"
        timeout --foreground -k 5 3600 "$BIGCAP" "$CAPTURE.tmp" "$REPLAY_FRAMES" "$SPACING" "$CACHE"/templates/vsftpd-*.lan.pcapng >"$CAPTURE.info.tmp" 2>>"$OUT/build.log" \
            || { log "bigcap failed (see $OUT/build.log)"; rm -f "$CAPTURE.tmp"; return 1; }
        mv "$CAPTURE.tmp" "$CAPTURE" && mv "$CAPTURE.info.tmp" "$CAPTURE.info"
    fi
    CAPTURE_FRAMES=$(sed -nE 's/^frames ([0-9]+).*/\1/p' "$CAPTURE.info")
    log "capture: $CAPTURE, $(cat "$CAPTURE.info"), $(du -h "$CAPTURE" | cut -f1)"
}

# TOOL FILE -> "FRAMES SECONDS" (wall clock, whole process), or failure.
timed() {   # NAME OUTFILE CMD... : runs CMD, prints wall seconds; stdout+stderr to OUTFILE
    local name=$1 of=$2; shift 2
    local t0=$EPOCHREALTIME
    /usr/bin/time -f 'maxrss_kb=%M user_s=%U sys_s=%S' -o "$of.time" timeout --foreground -k 5 7200 "$@" >"$of" 2>&1
    local rc=$? t1=$EPOCHREALTIME
    ((rc == 0)) || { echo "$name: exit $rc: $(tail -2 "$of" | tr '\n' ' ')" >&2; return 1; }
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}
replay_ftpgate() {
    local of=$OUT/replay-ftpgate.txt secs n
    secs=$(timed ftpgate "$of" "$BIN" replay -q "$CAPTURE") || return 1
    n=$(sed -nE 's/^frames: ([0-9]+) in.*/\1/p' "$of")
    log "    ftpgate replay (built-in default config: no NAT, FTP inspection on port 21): $n frames in ${secs} s, $(cat "$of.time"); $(grep '^frames:' "$of")"
    check_count ftpgate "$n" || return 1
    local dropped
    dropped=$(sed -nE 's/^frames: .* ([0-9]+) dropped.*/\1/p' "$of")
    # Every session of the capture is a valid one: a drop means the capture
    # outgrew a limit of the default configuration, and ftpgate did less work.
    [[ ${dropped:-0} == 0 ]] || note replay-tshark "ftpgate DROPPED $dropped frames ($(sed -n '/^drops:/,/^events:/p' "$of" | grep -v ':$' | tr -s ' \n' ' '))"
    awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f\n", n / s }'
}
TSHARK_ARGS=()
replay_tshark() {
    local of=$OUT/replay-tshark.txt secs n
    secs=$(timed tshark "$of" tshark -r "$CAPTURE" "${TSHARK_ARGS[@]}") || return 1
    n=$(awk -F'|' '/<>/ { gsub(/ /, "", $3); n = $3 } END { print n }' "$of")
    log "    tshark ${TSHARK_ARGS[*]}: $n frames in ${secs} s, $(cat "$of.time")"
    check_count tshark "$n" || return 1
    awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f\n", n / s }'
}
SURICATA_INFO=""
replay_suricata() {
    local of=$OUT/replay-suricata.txt secs n d
    d=$(mktemp -d "$OUT/suricata.XXXXXX")
    secs=$(timed suricata "$of" suricata -r "$CAPTURE" -l "$d") || { rm -rf "$d"; return 1; }
    n=$(sed -nE 's/.*pcap: read [0-9]+ files?, ([0-9]+) packets.*/\1/p' "$of" | tail -1)
    SURICATA_INFO="runmode autofp (the default for -r), $(sed -nE 's/.*Threads created -> ([^.]*).*/\1/p' "$of" | head -1 | sed 's/ *Engine started//')"
    grep -q 'No rule files match\|no rules were loaded' "$of" && SURICATA_INFO="$SURICATA_INFO; no rule set installed (0 signatures)"
    log "    suricata -r FILE -l TMPDIR (default /etc/suricata/suricata.yaml): $n packets in ${secs} s, $(cat "$of.time"); $SURICATA_INFO"
    rm -rf "$d"
    check_count suricata "$n" || return 1
    awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f\n", n / s }'
}
check_count() {
    [[ $2 == "$CAPTURE_FRAMES" ]] && return 0
    echo "$1 read ${2:-no} frames, the capture holds $CAPTURE_FRAMES" >&2
    return 1
}
run_replay() {
    row replay-tshark "replay: frames/s over $(fmt "$REPLAY_FRAMES") frames, ftpgate replay vs tshark" "frames/s" tshark "≥ 10 (proposal)" higher
    row replay-suricata "replay: frames/s over $(fmt "$REPLAY_FRAMES") frames, ftpgate replay vs suricata" "frames/s" suricata "≥ 10" higher
    build_capture || return 0
    # tshark dissects only when something needs the tree: a tap does (-z
    # io,stat,0: one counter, the frame count), plain -q would read frames
    # without dissecting them. TCP sequence analysis keeps ~600 B per frame;
    # when that would not fit in 60 % of the available memory it is switched
    # off (and the table says so).
    TSHARK_ARGS=(-q -z io,stat,0)
    local avail_kb
    avail_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
    if ((CAPTURE_FRAMES * 700 / 1024 > avail_kb * 6 / 10)); then
        TSHARK_ARGS+=(-o tcp.analyze_sequence_numbers:FALSE)
        note replay-tshark "tshark with tcp.analyze_sequence_numbers off (memory)"
    fi
    log "reading $CAPTURE once into the page cache"
    cat "$CAPTURE" >/dev/null
    measure fg replay-tshark replay_ftpgate
    FG[replay-suricata]=${FG[replay-tshark]}
    measure ref replay-tshark replay_tshark
    measure ref replay-suricata replay_suricata
    note replay-tshark "tshark $(tshark -v 2>/dev/null | head -1 | awk '{ print $3 }'): tshark -r FILE ${TSHARK_ARGS[*]}, 1 thread"
    note replay-suricata "suricata $(suricata -V 2>/dev/null | awk '{ print $5 }'): $SURICATA_INFO"
    note replay-tshark "ftpgate replay -q FILE, built-in config (no NAT, FTP inspection), 2 threads (reading, engine)"
}

# ---------------------------------------------------------------------------
declare -A OFFLOAD_DESC=([off]="" [on]="")
log "output in $OUT; $([[ $QUICK == 1 ]] && echo quick || echo full) mode"
"$LAB" install --bench >>"$OUT/lab.log" 2>&1 || { log "lab.sh install --bench failed (see $OUT/lab.log)"; exit 1; }
build_helpers || { log "could not build the helpers"; exit 1; }

if [[ " $SKIP " != *" live "* ]]; then
    LAB_UP=1
    if "$LAB" up masq 2>>"$OUT/lab.log" && "$LAB" servers start vsftpd 2>>"$OUT/lab.log" &&
        { ((!PIN)) || pin_lab; }; then
        OFFLOADS_NOW=off
        if [[ " $SKIP " != *" replay "* ]]; then gw_kernel && record_templates; fi
        run_live
    else
        log "the lab did not come up (see $OUT/lab.log)"
        row lab "lab setup" "" kernel "" higher
    fi
    "$LAB" down >/dev/null 2>&1; LAB_UP=0
fi
if [[ " $SKIP " != *" replay "* ]]; then
    if [[ ! -d $CACHE/templates ]] || (($(ls "$CACHE"/templates/*.lan.pcapng 2>/dev/null | wc -l) < ${#TEMPLATES[@]})); then
        # Recording needs the lab even when the live part is skipped.
        LAB_UP=1
        "$LAB" up masq 2>>"$OUT/lab.log" && "$LAB" servers start vsftpd 2>>"$OUT/lab.log" && gw_kernel && record_templates
        "$LAB" down >/dev/null 2>&1; LAB_UP=0
    fi
    run_replay
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------
# Report.
{
    echo "Conditions: $(date -u '+%Y-%m-%d %H:%M UTC'); \`bench/run.sh$([[ $QUICK == 1 ]] && echo ' --quick')$( ((PIN)) && echo ' --pin')\`; kernel $(uname -r); CPU $CPU; $(nproc) cores;" \
        "$( ((PIN)) && echo "layout: gateway on CPU $GW_CPU, client and server on CPUs $EP_CPUS (affinity and RPS);" || echo "layout: gateway, client and server share every CPU;")" \
        "load average before $LOAD_BEFORE, after $LOAD_AFTER; ftpgate $VERSION, commit $COMMIT; datapath: $DATAPATH;" \
        "offloads off = ${OFFLOAD_DESC[off]:-n/a}; offloads on = ${OFFLOAD_DESC[on]:-n/a} (all four lab links)."
    echo
    echo "| measurement | unit | kernel / tool | ftpgate | ratio ftpgate ÷ kernel/tool | target (ratio) | notes |"
    echo "|---|---|---|---|---|---|---|"
    for k in "${ROWS[@]}"; do
        r=${REF[$k]} f=${FG[$k]} q="—"
        if isnum "$r" && isnum "$f"; then q="**$(ratio "$f" "$r")**"; PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
        echo "| ${LABEL[$k]} | ${UNIT[$k]} | ${REFNAME[$k]}: $(fmt "$r") | $(fmt "$f") | $q | ${TARGET[$k]} | ${NOTE[$k]} |"
    done
} >"$OUT/results.md"
# The per-frame latency ftpgate adds over the kernel: each round trip crosses the gateway twice.
if isnum "${REF[rtt-p50]:-}" && isnum "${FG[rtt-p50]:-}"; then
    awk -v f="${FG[rtt-p50]}" -v k="${REF[rtt-p50]}" 'BEGIN { printf "\nAdded latency per frame crossing, ftpgate over the kernel (p50): %.1f µs ((%.1f - %.1f) / 2).\n", (f - k) / 2, f, k }' >>"$OUT/results.md"
fi
echo
cat "$OUT/results.md"
echo
echo "(table also in $OUT/results.md; logs in $OUT)"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
