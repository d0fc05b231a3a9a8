#!/usr/bin/env bash
# The ftpgate FTP lab: three network namespaces (client, gateway, server),
# real FTP servers and clients, and a pluggable gateway in the middle
# (the Linux kernel's FTP helper today, `ftpgate run` later).
# Run as root. See docs/lab.md for the topology and the reasons behind the
# settings below.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$LAB_DIR/../.." && pwd)

# Namespace names carry a fixed prefix so they cannot clash with anything else
# on the host; `down` only ever touches these three.
NS_C=${FGLAB_NS_C:-fgc} NS_G=${FGLAB_NS_G:-fgw} NS_S=${FGLAB_NS_S:-fgs}   # overridable so two labs can coexist
GW_IN=veth-gw-in GW_OUT=veth-gw-out

STATE=${FGLAB_STATE:-/run/fglab}             # pids, configs, logs of the running lab
DATA=${FGLAB_DATA:-/var/lib/fglab}           # server tree and client work files
CACHE=${FGLAB_CACHE:-$LAB_DIR/.cache}        # unpacked proftpd / pure-ftpd
PY=/usr/bin/python3                          # Debian's python, not a pyenv shim

FTP_USER=fgftp FTP_PASS=fgftp-lab-pw
FTP_HOME=$DATA/srv
FILES=(0b.bin 1k.bin 1m.bin 10m.bin 100m.bin)
declare -A FILE_SIZE=([0b.bin]=0 [1k.bin]=1024 [1m.bin]=1048576 [10m.bin]=10485760 [100m.bin]=104857600)

# Fixed addresses per LAB.md. The gateway never changes; the hosts swap sides
# between the two layouts.
GW_IN4=192.0.2.1   GW_IN6=2001:db8:1::1   GW_IN_MAC=02:66:67:00:01:01
GW_OUT4=198.51.100.1 GW_OUT6=2001:db8:2::1 GW_OUT_MAC=02:66:67:00:02:01

log()  { printf '[lab] %s\n' "$*" >&2; }
die()  { printf '[lab] error: %s\n' "$*" >&2; exit 1; }
need_root() { [[ $EUID -eq 0 ]] || die "run as root"; }

# --------------------------------------------------------------------------
# Layout: which host sits on which side.
# masq:      client inside (192.0.2.10), server outside (198.51.100.20),
#            the gateway masquerades the client.
# published: server inside (192.0.2.20), client outside (198.51.100.10),
#            the gateway DNATs its outside address port 21 to the server.
# --------------------------------------------------------------------------
set_layout() {
    LAYOUT=$1
    case $LAYOUT in
    masq)
        C4=192.0.2.10 C6=2001:db8:1::10 C_MAC=02:66:67:00:01:10 C_SIDE=in
        S4=198.51.100.20 S6=2001:db8:2::20 S_MAC=02:66:67:00:02:20 S_SIDE=out
        T4=$S4 T6=$S6 ;;               # what the client dials
    published)
        C4=198.51.100.10 C6=2001:db8:2::10 C_MAC=02:66:67:00:02:10 C_SIDE=out
        S4=192.0.2.20 S6=2001:db8:1::20 S_MAC=02:66:67:00:01:20 S_SIDE=in
        T4=$GW_OUT4 T6=$GW_OUT6 ;;
    *) die "unknown layout '$LAYOUT' (masq|published)" ;;
    esac
}

current_layout() {
    [[ -f $STATE/layout ]] || die "lab is not up (run: lab.sh up [masq|published])"
    set_layout "$(cat "$STATE/layout")"
}

# --------------------------------------------------------------------------
# install
# --------------------------------------------------------------------------
pkg_installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

cmd_install() {
    need_root
    local want=(vsftpd lftp curl tcpdump tshark nftables iproute2 ethtool conntrack python3 openssl procps iputils-ping)
    # `install --bench`: what bench/run.sh needs besides (a load generator
    # and a second packet-reading program to compare replay with).
    local bench=0
    [[ ${1:-} != --bench ]] || { bench=1; want+=(iperf3); }
    local missing=() p
    for p in "${want[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends)
    local updated=
    if ((${#missing[@]})); then
        log "installing: ${missing[*]}"
        # tshark asks whether non-root users may capture; answer no, silently.
        echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
        apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null
        updated=1
        "${apt[@]}" install "${missing[@]}" >/dev/null
    fi
    if ((bench)) && ! pkg_installed suricata; then
        # Debian 12 ships suricata only in bookworm-backports, which apt pins
        # at priority 100: adding it installs nothing else from there.
        local bpo=/etc/apt/sources.list.d/fglab-bookworm-backports.sources
        if [[ ! -f $bpo ]] && grep -qs bookworm /etc/os-release; then
            printf '%s\n' "# Added by ftpgate tests/lab/lab.sh install --bench (suricata for bench/run.sh)" \
                "Types: deb" "URIs: http://deb.debian.org/debian" "Suites: bookworm-backports" "Components: main" \
                "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" >"$bpo"
        fi
        log "installing: suricata"
        apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null
        updated=1
        local target=()
        [[ -f $bpo ]] && target=(-t bookworm-backports)
        "${apt[@]}" "${target[@]}" install suricata >/dev/null
    fi
    # proftpd-core, pure-ftpd and vsftpd all "Conflict: ftp-server", so the
    # two that are not apt-installed are unpacked into the cache instead.
    mkdir -p "$CACHE/debs"
    local name bin libs=()
    for name in proftpd-core pure-ftpd; do
        case $name in proftpd-core) bin=$CACHE/proftpd/usr/sbin/proftpd ;; pure-ftpd) bin=$CACHE/pure-ftpd/usr/sbin/pure-ftpd ;; esac
        if [[ ! -x $bin ]]; then
            [[ -n $updated ]] || { apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null; updated=1; }
            rm -f "$CACHE/debs/${name}"_*.deb
            (cd "$CACHE/debs" && apt-get -q download "$name" >/dev/null 2>&1) || die "apt-get download $name failed"
            local dir=$CACHE/${name%-core}
            rm -rf "$dir"; mkdir -p "$dir"
            dpkg-deb -x "$CACHE/debs/${name}"_*.deb "$dir"
        fi
        # Their shared-library dependencies, taken from the package's own Depends line.
        local deb
        deb=$(ls "$CACHE/debs/${name}"_*.deb)
        while read -r p; do
            [[ $p == lib* ]] && ! pkg_installed "$p" && libs+=("$p")
        done < <(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -E 's/\(.*\)//; s/\|.*//; s/[[:space:]]//g')
    done
    if ((${#libs[@]})); then
        log "installing libraries: ${libs[*]}"
        [[ -n $updated ]] || apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null
        "${apt[@]}" install "${libs[@]}" >/dev/null
    fi
    "$CACHE/proftpd/usr/sbin/proftpd" -v >/dev/null || die "unpacked proftpd does not run"
    "$CACHE/pure-ftpd/usr/sbin/pure-ftpd" --help >/dev/null 2>&1 || [[ $? -ne 127 ]] || die "unpacked pure-ftpd does not run"
    ldd "$CACHE/pure-ftpd/usr/sbin/pure-ftpd" "$CACHE/proftpd/usr/sbin/proftpd" | grep -q 'not found' && die "missing libraries for unpacked servers"
    log "install: all tools present"
}

# --------------------------------------------------------------------------
# namespaces and links
# --------------------------------------------------------------------------
# Foreground only: a backgrounded shell function is a subshell, and its $!
# would not be the program's PID. Background jobs use `ip netns exec`, which
# execs the program, so $! is the program itself.
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# A process's start time (clock ticks since boot): with the PID it names one
# process for good, even across exec, and never a later one that reuses the PID.
proc_start() {
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    read -ra fields <<<"${stat##*) }"
    echo "${fields[19]}"
}

# Remembers a process we started: "PID STARTTIME NAME" in a pidfile.
remember_pid() { echo "$2 $(proc_start "$2") $3" >>"$1"; }

# Stops a process we started, by PID, after checking that the PID is still
# that process.
kill_pid() {
    local pid=$1 start=${2:-} i
    [[ -n $pid && -d /proc/$pid ]] || return 0
    if [[ -n $start && $(proc_start "$pid") != "$start" ]]; then return 0; fi
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do proc_gone "$pid" && return 0; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
}

# Gone or a zombie: a server started by an earlier lab.sh run is reaped by
# PID 1, which may take its time.
proc_gone() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
    [[ -z $st || $st == Z ]]
}

kill_pidfile() {
    local f=$1 pid start name
    [[ -f $f ]] || return 0
    while read -r pid start name; do kill_pid "$pid" "$start"; done <"$f"
    rm -f "$f"
}

cmd_down() {
    need_root
    kill_pidfile "$STATE/gw.pids"
    kill_pidfile "$STATE/server.pids"
    kill_pidfile "$STATE/capture.pids"
    local ns pid
    for ns in $NS_C $NS_G $NS_S; do
        ns_exists "$ns" || continue
        # Anything still running inside our own namespaces was started by
        # this lab (servers' session children, a stray client): end each by PID.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill_pid "$pid"; done
        ip netns del "$ns"
    done
    for ns in $NS_C $NS_G $NS_S; do rm -rf "/etc/netns/$ns"; done
    rmdir /etc/netns 2>/dev/null || true     # only if the lab's were the only ones
    rm -f "$STATE/layout" "$STATE/server.name" "$STATE/gw.mode" "$STATE/keep.pids"
    [[ ${1:-} == quiet ]] || log "down: namespaces $NS_C $NS_G $NS_S removed"
}

ns_prepare() {
    local ns=$1
    ip netns add "$ns"
    mkdir -p "/etc/netns/$ns"
    echo "nameserver 127.0.0.1" >"/etc/netns/$ns/resolv.conf"
    cat >"/etc/netns/$ns/hosts" <<HOSTS
127.0.0.1 localhost
127.0.1.1 $(hostname)
::1 localhost
$C4 client
$C6 client
$S4 server
$S6 server
HOSTS
    nsx "$ns" ip link set lo up
    # No DAD (addresses usable at once), no router solicitations, and no
    # link-local addresses: with static neighbours nothing but the test
    # traffic crosses the links, so recordings hold only FTP.
    nsx "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
        net.ipv6.conf.all.router_solicitations=0 net.ipv6.conf.default.router_solicitations=0 \
        net.ipv6.conf.default.addr_gen_mode=1 net.ipv6.conf.all.addr_gen_mode=1
    # Joining the solicited-node groups of new addresses sends MLD reports
    # for a second or two; nothing here listens to them, and they would
    # show up in recordings made right after `up`.
    nsx "$ns" nft -f - <<NFT
table inet fglab_quiet {
  chain output { type filter hook output priority filter; policy accept;
    icmpv6 type { mld-listener-report, mld2-listener-report, nd-router-solicit } drop
  }
}
NFT
}

# Offloads off on both ends of every link: with TSO/GSO and tx checksum
# offload on, AF_PACKET on the gateway sees 64 KB super-frames with partial
# checksums, which a userspace gateway can neither forward nor record as
# they are on a wire (LAB.md).
offloads_off() { nsx "$1" ethtool -K "$2" gro off gso off tso off tx off >/dev/null 2>&1 || nsx "$1" ethtool -K "$2" gro off gso off tso off tx off; }

cmd_up() {
    need_root
    local layout=${1:-masq}
    set_layout "$layout"
    [[ -x $PY ]] || die "$PY missing (run: lab.sh install)"
    cmd_down quiet
    local prev_teardown=$TEARDOWN_ON_EXIT
    TEARDOWN_ON_EXIT=1
    mkdir -p "$STATE"
    local ns
    for ns in $NS_C $NS_G $NS_S; do ns_prepare "$ns"; done

    local in_ns out_ns in_mac out_mac
    if [[ $C_SIDE == in ]]; then in_ns=$NS_C out_ns=$NS_S in_mac=$C_MAC out_mac=$S_MAC
    else in_ns=$NS_S out_ns=$NS_C in_mac=$S_MAC out_mac=$C_MAC; fi
    # Created directly in their namespaces: the names never exist on the host.
    ip link add "$GW_IN" netns $NS_G address $GW_IN_MAC type veth peer name eth0 netns "$in_ns" address "$in_mac"
    ip link add "$GW_OUT" netns $NS_G address $GW_OUT_MAC type veth peer name eth0 netns "$out_ns" address "$out_mac"
    offloads_off $NS_G $GW_IN; offloads_off $NS_G $GW_OUT
    offloads_off "$in_ns" eth0; offloads_off "$out_ns" eth0

    nsx $NS_G ip addr add $GW_IN4/24 dev $GW_IN
    nsx $NS_G ip addr add $GW_IN6/64 dev $GW_IN nodad
    nsx $NS_G ip addr add $GW_OUT4/24 dev $GW_OUT
    nsx $NS_G ip addr add $GW_OUT6/64 dev $GW_OUT nodad
    nsx $NS_G ip link set $GW_IN up
    nsx $NS_G ip link set $GW_OUT up

    local host a4 a6 mac gw4 gw6 gwmac gwdev
    for host in C S; do
        if [[ $host == C ]]; then ns=$NS_C a4=$C4 a6=$C6 mac=$C_MAC side=$C_SIDE
        else ns=$NS_S a4=$S4 a6=$S6 mac=$S_MAC side=$S_SIDE; fi
        if [[ $side == in ]]; then gw4=$GW_IN4 gw6=$GW_IN6 gwmac=$GW_IN_MAC gwdev=$GW_IN
        else gw4=$GW_OUT4 gw6=$GW_OUT6 gwmac=$GW_OUT_MAC gwdev=$GW_OUT; fi
        nsx "$ns" ip addr add "$a4/24" dev eth0
        nsx "$ns" ip addr add "$a6/64" dev eth0 nodad
        nsx "$ns" ip link set eth0 up
        nsx "$ns" ip route add default via "$gw4"
        nsx "$ns" ip -6 route add default via "$gw6"
        # Static neighbours: no ARP/ND in recordings, and IPv6 works
        # without link-local addresses.
        nsx "$ns" ip neigh replace "$gw4" lladdr "$gwmac" dev eth0 nud permanent
        nsx "$ns" ip -6 neigh replace "$gw6" lladdr "$gwmac" dev eth0 nud permanent
        nsx $NS_G ip neigh replace "$a4" lladdr "$mac" dev "$gwdev" nud permanent
        nsx $NS_G ip -6 neigh replace "$a6" lladdr "$mac" dev "$gwdev" nud permanent
    done
    echo "$LAYOUT" >"$STATE/layout"
    TEARDOWN_ON_EXIT=$prev_teardown
    log "up: layout $LAYOUT (client $C4/$C6, server $S4/$S6, client dials $T4/$T6); no gateway yet (lab.sh gw kernel)"
}

# --------------------------------------------------------------------------
# the gateway in the middle
# --------------------------------------------------------------------------
gw_reset() {
    kill_pidfile "$STATE/gw.pids"
    nsx $NS_G nft delete table inet fglab 2>/dev/null || true
    nsx $NS_G nft delete table netdev fglab 2>/dev/null || true
    nsx $NS_G conntrack -F >/dev/null 2>&1 || true
    nsx $NS_G conntrack -X >/dev/null 2>&1 || true   # expectations
    nsx $NS_G sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
    rm -f "$STATE/gw.mode"
}

kernel_ruleset() {
    local helper=$1
    local setrule='tcp dport 21 ct state new ct helper set "ftp-standard"'
    [[ $helper == yes ]] || setrule="# no helper (--no-helper)"
    local dnat="" fwd_pub=""
    if [[ $LAYOUT == published ]]; then
        dnat="iifname \"$GW_OUT\" ip daddr $GW_OUT4 tcp dport 21 dnat ip to $S4:21
    iifname \"$GW_OUT\" ip6 daddr $GW_OUT6 tcp dport 21 dnat ip6 to [$S6]:21"
        fwd_pub="iifname \"$GW_OUT\" oifname \"$GW_IN\" ip daddr $S4 tcp dport 21 ct state new accept
    iifname \"$GW_OUT\" oifname \"$GW_IN\" ip6 daddr $S6 tcp dport 21 ct state new accept"
    fi
    cat <<NFT
table inet fglab {
  ct helper ftp-standard { type "ftp" protocol tcp; l3proto inet; }
  chain dstnat { type nat hook prerouting priority dstnat; policy accept;
    $dnat
  }
  chain prerouting { type filter hook prerouting priority filter; policy accept;
    $setrule
  }
  chain input { type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
    meta l4proto { icmp, ipv6-icmp } accept
  }
  chain forward { type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state invalid drop
    iifname "$GW_IN" oifname "$GW_OUT" tcp dport 21 ct state new accept
    $fwd_pub
    meta l4proto { icmp, ipv6-icmp } accept
  }
  chain srcnat { type nat hook postrouting priority srcnat; policy accept;
    oifname "$GW_OUT" ip saddr 192.0.2.0/24 masquerade
    oifname "$GW_OUT" ip6 saddr 2001:db8:1::/64 masquerade
  }
}
NFT
}

gw_kernel() {
    local helper=yes
    [[ ${1:-} == --no-helper ]] && helper=no
    current_layout
    gw_reset
    kernel_ruleset $helper >"$STATE/gw-kernel.nft"
    nsx $NS_G nft -f "$STATE/gw-kernel.nft"
    nsx $NS_G sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    echo "kernel helper=$helper" >"$STATE/gw.mode"
    log "gw: kernel, layout $LAYOUT, ftp helper $helper"
}

# The lab's topology as an ftpgate configuration (docs CONTRACT.md), for
# `ftpgate run` here and `ftpgate replay -c` on recordings.
ftpgate_config() {
    local layout=$1
    set_layout "$layout"
    cat <<YAML
# ftpgate configuration for the lab's '$layout' layout (generated by tests/lab/lab.sh gw-config)
interfaces:
  inside:
    device: $GW_IN
    addresses: [$GW_IN4/24, "$GW_IN6/64"]
    # the lab's veth MAC here is $GW_IN_MAC (the source of the kernel's frames in recordings)
  outside:
    device: $GW_OUT
    addresses: [$GW_OUT4/24, "$GW_OUT6/64"]
    # the lab's veth MAC here is $GW_OUT_MAC
nat:
  masquerade:
    - {from: inside, to: outside}
YAML
    # The kernel's masquerade keeps the client's source port when it is free;
    # so must ftpgate for its output to be compared with the kernel's.
    echo "  ports: preserve"
    if [[ $layout == published ]]; then cat <<YAML
  forward:
    - {on: outside, protocol: tcp, port: 21, to: "$S4:21"}
    - {on: outside, protocol: tcp, port: 21, to: "[$S6]:21"}
YAML
    fi
    cat <<YAML
ftp:
  control_ports: [21]
policy:
  default: deny
  rules:
    - {name: lan-to-ftp, action: allow, from: inside, to: outside, protocol: tcp, ports: [21]}
YAML
    if [[ $layout == published ]]; then cat <<YAML
    - {name: published-ftp, action: allow, from: outside, to: inside, destination: ["$S4/32", "$S6/128"], protocol: tcp, ports: [21]}
YAML
    fi
}

# A userspace gateway: the kernel stops forwarding and must not answer for
# the gateway's addresses itself (it would RST connections the gateway owns).
gw_ftpgate() {
    current_layout
    local cfg="" bin=${FTPGATE:-ftpgate} extra=()
    while (($#)); do
        case $1 in
        -c|--config) cfg=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --events) extra+=(--events "$2"); shift 2 ;;      # passed to `ftpgate run`
        --admin) extra+=(--admin "$2"); shift 2 ;;
        *) die "gw ftpgate: unknown argument $1" ;;
        esac
    done
    command -v "$bin" >/dev/null || [[ -x $bin ]] || die "gw ftpgate: '$bin' not found (set FTPGATE=path or --bin)"
    gw_reset
    if [[ -z $cfg ]]; then cfg=$STATE/ftpgate-$LAYOUT.yaml; ftpgate_config "$LAYOUT" >"$cfg"; fi
    # The kernel drops every frame on the gateway's devices at ingress,
    # after packet sockets (ftpgate's) have had their copy and before its own
    # IP layer looks at it (docs/operations.md, step 2). The input rule is for
    # anything that gets past that (another device).
    nsx $NS_G nft -f - <<NFT
table netdev fglab {
  chain in_inside { type filter hook ingress device "$GW_IN" priority filter; policy drop; }
  chain in_outside { type filter hook ingress device "$GW_OUT" priority filter; policy drop; }
}
table inet fglab {
  chain input { type filter hook input priority filter; policy drop; iif lo accept; }
}
NFT
    ip netns exec $NS_G "$bin" run -c "$cfg" "${extra[@]}" </dev/null >>"$STATE/ftpgate.log" 2>&1 &
    local pid=$!
    remember_pid "$STATE/gw.pids" "$pid" "$(basename "$bin")"
    sleep 1
    [[ -d /proc/$pid ]] || { tail -5 "$STATE/ftpgate.log" >&2; die "gw ftpgate: exited at once (log: $STATE/ftpgate.log)"; }
    echo "ftpgate $cfg" >"$STATE/gw.mode"
    log "gw: ftpgate pid $pid, config $cfg, log $STATE/ftpgate.log"
}

cmd_gw() {
    need_root
    local what=${1:-}; shift || true
    case $what in
    kernel) gw_kernel "$@" ;;
    ftpgate) gw_ftpgate "$@" ;;
    off) current_layout; gw_reset; log "gw: off (nothing forwards)" ;;
    *) die "usage: lab.sh gw kernel [--no-helper] | ftpgate [-c CONFIG] [--bin PATH] [--events FILE] [--admin ADDR] | off" ;;
    esac
}

# --------------------------------------------------------------------------
# FTP user, test tree, servers
# --------------------------------------------------------------------------
ensure_user() {
    if ! id "$FTP_USER" >/dev/null 2>&1; then
        useradd -M -d "$FTP_HOME" -s /bin/bash -c "ftpgate lab" "$FTP_USER"
    fi
    # SHA-512 crypt with the minimum 1000 rounds: Debian's default yescrypt
    # costs ~55 ms per login, which would dominate short sessions.
    local hash
    hash=$("$PY" -W ignore -c 'import crypt,sys; print(crypt.crypt(sys.argv[1], "$6$rounds=1000$fglabsalt$"))' "$FTP_PASS" 2>/dev/null) \
        || hash=$(openssl passwd -6 -salt fglabsalt "$FTP_PASS")
    [[ $(getent shadow "$FTP_USER" | cut -d: -f2) == "$hash" ]] || usermod -p "$hash" "$FTP_USER"
}

ensure_tree() {
    mkdir -p "$FTP_HOME/pub" "$FTP_HOME/upload" "$DATA/csrc"
    chmod 755 "$DATA" "$FTP_HOME"
    local f
    for f in "${FILES[@]}"; do
        # Server files and the client's upload originals are different random data.
        [[ -f $FTP_HOME/pub/$f && $(stat -c %s "$FTP_HOME/pub/$f") == "${FILE_SIZE[$f]}" ]] \
            || head -c "${FILE_SIZE[$f]}" /dev/urandom >"$FTP_HOME/pub/$f"
        [[ -f $DATA/csrc/$f && $(stat -c %s "$DATA/csrc/$f") == "${FILE_SIZE[$f]}" ]] \
            || head -c "${FILE_SIZE[$f]}" /dev/urandom >"$DATA/csrc/$f"
    done
    if [[ ! -f $DATA/manifest || $(find "$FTP_HOME/pub" "$DATA/csrc" -newer "$DATA/manifest" | wc -l) -gt 0 ]]; then
        (cd "$FTP_HOME/pub" && sha256sum "${FILES[@]}") >"$DATA/manifest"
        (cd "$DATA/csrc" && sha256sum "${FILES[@]}") >"$DATA/csrc.manifest"
    fi
    chown -R "$FTP_USER:" "$FTP_HOME"
    chmod 755 "$FTP_HOME/pub" "$FTP_HOME/upload"
}

# start one server process inside the server namespace and remember it
spawn_server() {
    local name=$1 logf=$2; shift 2
    ip netns exec $NS_S "$@" </dev/null >>"$logf" 2>&1 &
    remember_pid "$STATE/server.pids" $! "$name"
}

wait_listen() {
    local i
    for i in $(seq 60); do
        if nsx $NS_S ss -Hltn "( sport = :21 )" | grep -q "$S4:21\|0.0.0.0:21\|\*:21" &&
           nsx $NS_S ss -Hltn "( sport = :21 )" | grep -q "\[$S6\]:21\|\[::\]:21\|\*:21"; then return 0; fi
        sleep 0.1
    done
    return 1
}

server_stop() {
    kill_pidfile "$STATE/server.pids"
    rm -f "$STATE/server.name"
    local pid
    if ns_exists $NS_S; then
        # Session children of the listener, e.g. vsftpd's per-connection
        # processes; not those a caller listed in keep.pids (the soak's
        # background sinks, which outlive a change of server; `down` ends them).
        for pid in $(ip netns pids $NS_S 2>/dev/null); do
            grep -q "^$pid $(proc_start "$pid") " "$STATE/keep.pids" 2>/dev/null || kill_pid "$pid"
        done
        # vsftpd binds port 20 for active data; leftovers make the next bind fail.
        nsx $NS_S ss -K -tan '( sport = :20 )' >/dev/null 2>&1 || true
    fi
}

server_start() {
    local name=$1
    current_layout
    ensure_user; ensure_tree
    server_stop
    local d=$STATE/$name
    rm -rf "$d"; mkdir -p "$d"
    case $name in
    vsftpd)
        mkdir -p /var/run/vsftpd/empty
        local fam
        for fam in 4 6; do
            {
                if [[ $fam == 4 ]]; then echo "listen=YES"; echo "listen_ipv6=NO"; echo "listen_address=$S4"
                else echo "listen=NO"; echo "listen_ipv6=YES"; echo "listen_address6=$S6"; fi
                cat <<CONF
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
pam_service_name=vsftpd
secure_chroot_dir=/var/run/vsftpd/empty
seccomp_sandbox=NO
port_promiscuous=NO
pasv_promiscuous=NO
connect_from_port_20=YES
pasv_min_port=40000
pasv_max_port=40999
ssl_enable=NO
xferlog_enable=YES
vsftpd_log_file=$d/vsftpd-v$fam.log
ftpd_banner=fglab vsftpd
CONF
            } >"$d/vsftpd-v$fam.conf"
            spawn_server vsftpd "$d/stderr.log" vsftpd "$d/vsftpd-v$fam.conf"
        done ;;
    proftpd)
        cat >"$d/proftpd.conf" <<CONF
ServerName "fglab proftpd"
ServerType standalone
DefaultServer on
Port 21
UseIPv6 on
DefaultAddress $S4 $S6
User nobody
Group nogroup
Umask 022
ScoreboardFile $d/proftpd.scoreboard
PidFile $d/proftpd.pid
SystemLog $d/proftpd.log
TransferLog $d/xferlog
WtmpLog off
AuthPAM off
AuthOrder mod_auth_unix.c
RequireValidShell off
UseFtpUsers off
UseReverseDNS off
DelayEngine off
PassivePorts 40000 40999
AllowOverwrite on
<Limit LOGIN>
  AllowAll
</Limit>
CONF
        spawn_server proftpd "$d/stderr.log" "$CACHE/proftpd/usr/sbin/proftpd" -n -q -c "$d/proftpd.conf" ;;
    pure-ftpd)
        # -l unix: system accounts; -E: no anonymous; -H: no reverse DNS.
        spawn_server pure-ftpd "$d/stderr.log" "$CACHE/pure-ftpd/usr/sbin/pure-ftpd" \
            -l unix -E -H -p 40000:40999 -O "clf:$d/transfer.log" -g "$d/pure-ftpd.pid" ;;
    *) die "unknown server '$name' (vsftpd|proftpd|pure-ftpd)" ;;
    esac
    if ! wait_listen; then
        tail -5 "$d/stderr.log" >&2 || true
        server_stop
        die "$name did not start listening on port 21 (logs in $d)"
    fi
    echo "$name" >"$STATE/server.name"
    log "server: $name running (pids $(cut -d' ' -f1 "$STATE/server.pids" | tr '\n' ' ')), logs in $d"
}

cmd_servers() {
    need_root
    case ${1:-} in
    start) [[ -n ${2:-} ]] || die "usage: lab.sh servers start vsftpd|proftpd|pure-ftpd"; server_start "$2" ;;
    stop) server_stop; log "server: stopped" ;;
    status) if [[ -f $STATE/server.name ]]; then echo "$(cat "$STATE/server.name"): $(cut -d" " -f1 "$STATE/server.pids" | tr '\n' ' ')"; else echo "no server"; fi ;;
    *) die "usage: lab.sh servers start NAME | stop | status" ;;
    esac
}

# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-15}

# Prints why CLIENT cannot do MODE over FAMILY, or nothing when it can.
unsupported_reason() {
    local client=$1 mode=$2 fam=$3
    if [[ $fam == 6 && ( $mode == pasv || $mode == port ) ]]; then
        echo "PASV/PORT carry only IPv4 addresses (RFC 2428: EPSV/EPRT over IPv6)"
    elif [[ $client == lftp && $mode == eprt && $fam == 4 ]]; then
        echo "not supported by client: lftp cannot send EPRT over IPv4"
    fi
}

lftp_script() {
    local mode=$1 host=$2 outdir=$3 tag=$4; shift 4
    cat <<LFTP
set cmd:fail-exit yes
set ftp:ssl-allow no
set net:timeout $CLIENT_TIMEOUT
set net:max-retries 1
set net:persist-retries 0
set net:reconnect-interval-base 1
set ftp:use-site-utime no
set ftp:use-site-utime2 no
set xfer:clobber on
LFTP
    case $mode in
    pasv) echo "set ftp:passive-mode on"; echo "set ftp:prefer-epsv no" ;;
    epsv) echo "set ftp:passive-mode on"; echo "set ftp:prefer-epsv yes" ;;
    port|eprt) echo "set ftp:passive-mode off" ;;
    esac
    echo "open -u $FTP_USER,$FTP_PASS ftp://$host"
    local op
    for op in "$@"; do
        case $op in
        list) echo "ls pub > $outdir/list.txt" ;;
        get:*) echo "get pub/${op#get:} -o $outdir/${op#get:}" ;;
        put:*) echo "put $DATA/csrc/${op#put:} -o upload/$tag-${op#put:}" ;;
        esac
    done
    echo "bye"
}

# Runs one client session (curl: one for downloads, one for uploads) in the
# client namespace; the protocol transcript goes to OUTDIR/transcript.log.
client_exec() {
    local client=$1 mode=$2 fam=$3 outdir=$4 tag=$5; shift 5
    local host urlh
    if [[ $fam == 4 ]]; then host=$T4 urlh=$T4; else host=$T6 urlh="[$T6]"; fi
    local t=$outdir/transcript.log op rc=0
    case $client in
    python)
        local args=(--host "$host" --user "$FTP_USER" --password "$FTP_PASS" --mode "$mode" --timeout "$CLIENT_TIMEOUT")
        for op in "$@"; do
            case $op in
            list) args+=(--list pub "$outdir/list.txt") ;;
            get:*) args+=(--get "pub/${op#get:}" "$outdir/${op#get:}") ;;
            put:*) args+=(--put "$DATA/csrc/${op#put:}" "upload/$tag-${op#put:}") ;;
            esac
        done
        timeout 300 ip netns exec $NS_C "$PY" -u "$LAB_DIR/ftpclient.py" "${args[@]}" >"$t" 2>&1 || rc=$? ;;
    lftp)
        lftp_script "$mode" "$urlh" "$outdir" "$tag" "$@" >"$outdir/lftp.cmds"
        timeout 300 ip netns exec $NS_C lftp -d -f "$outdir/lftp.cmds" >"$t" 2>&1 || rc=$? ;;
    curl)
        local base=(curl -sS -v -g --user "$FTP_USER:$FTP_PASS" --connect-timeout "$CLIENT_TIMEOUT" --max-time 240)
        # curl silently falls back EPSV->PASV and EPRT->PORT; the transcript
        # check below catches a fallback.
        case $mode in
        pasv) base+=(--ftp-pasv --disable-epsv) ;;
        epsv) base+=(--ftp-pasv) ;;
        port) base+=(--ftp-port - --disable-eprt) ;;
        eprt) base+=(--ftp-port -) ;;
        esac
        local gets=() puts=()
        for op in "$@"; do
            case $op in
            list) gets+=("ftp://$urlh/pub/" -o "$outdir/list.txt") ;;
            get:*) gets+=("ftp://$urlh/pub/${op#get:}" -o "$outdir/${op#get:}") ;;
            put:*) puts+=(-T "$DATA/csrc/${op#put:}" "ftp://$urlh/upload/$tag-${op#put:}") ;;
            esac
        done
        : >"$t"
        if ((${#gets[@]})); then timeout 300 ip netns exec $NS_C "${base[@]}" "${gets[@]}" >>"$t" 2>&1 || rc=$?; fi
        if ((rc == 0 && ${#puts[@]})); then timeout 300 ip netns exec $NS_C "${base[@]}" "${puts[@]}" >>"$t" 2>&1 || rc=$?; fi ;;
    *) die "unknown client '$client' (lftp|curl|python)" ;;
    esac
    return $rc
}

# The data-connection commands the client really sent, from its transcript.
data_commands() {
    local client=$1 t=$2
    case $client in
    curl) grep -aoE '^> (PASV|EPSV|PORT|EPRT)' "$t" | cut -c3- || true ;;
    lftp) grep -aoE -- '---> (PASV|EPSV|PORT|EPRT)' "$t" | cut -c6- || true ;;
    python) grep -aoE "\*cmd\* '(PASV|EPSV|PORT|EPRT)" "$t" | cut -c8- || true ;;
    esac | sort -u | tr '\n' ' ' | sed 's/ $//'
}

# One line saying why a session failed: the client's error and the last
# 4xx/5xx reply it saw.
failure_text() {
    local client=$1 t=$2 err reply
    case $client in
    curl) err=$(grep -a '^curl: ' "$t" | tail -1 || true) ;;
    python) err=$(grep -a '^ERROR' "$t" | tail -1 || true) ;;
    lftp) err=$(grep -aE 'failed|[Ee]rror|exceeded' "$t" | grep -av -- '--->' | tail -1 || true) ;;
    esac
    reply=$(grep -aoE "^< [45][0-9][0-9][ -].*|<--- [45][0-9][0-9][ -].*|\*resp\* '[45][0-9][0-9][ -][^']*" "$t" | tail -1 | sed -E "s/^(< |<--- |\*resp\* ')//" || true)
    echo "${err:-no client error line}${reply:+ (last refusal: $reply)}" | tr -d '\r' | cut -c1-200
}

# Checks one finished session: mode used, listing, sha256 of every download
# against the server tree and of every upload on the server against the
# client's original. Prints the first problem; prints nothing when all is well.
verify_case() {
    local client=$1 mode=$2 outdir=$3 tag=$4; shift 4
    local seen want op f sum
    want=${mode^^}
    seen=$(data_commands "$client" "$outdir/transcript.log")
    [[ $seen == "$want" ]] || { echo "client sent data commands '$seen', expected only $want"; return; }
    for op in "$@"; do
        case $op in
        list)
            for f in "${FILES[@]}"; do
                grep -q "$f" "$outdir/list.txt" 2>/dev/null || { echo "listing lacks $f"; return; }
            done ;;
        get:*)
            f=${op#get:}
            [[ -f $outdir/$f ]] || { echo "download $f missing"; return; }
            sum=$(sha256sum <"$outdir/$f" | cut -d' ' -f1)
            grep -q "^$sum  $f\$" "$DATA/manifest" || { echo "download $f: sha256 differs from the server tree ($(stat -c %s "$outdir/$f") bytes)"; return; } ;;
        put:*)
            f=${op#put:}
            [[ -f $FTP_HOME/upload/$tag-$f ]] || { echo "upload $f missing on the server"; return; }
            sum=$(sha256sum <"$FTP_HOME/upload/$tag-$f" | cut -d' ' -f1)
            grep -q "^$sum  $f\$" "$DATA/csrc.manifest" || { echo "upload $f: sha256 on the server differs from the client's original"; return; } ;;
        esac
    done
}

PASSED=0 FAILED=0 UNSUPPORTED=0
CASE_EXPECT=pass     # pass | fail (a contrast case that must fail)

report() {
    local status=$1; shift
    case $status in PASS) PASSED=$((PASSED + 1)) ;; FAIL) FAILED=$((FAILED + 1)) ;; UNSUPPORTED) UNSUPPORTED=$((UNSUPPORTED + 1)) ;; esac
    printf '%-11s %s\n' "$status" "$*"
}

# run_case SERVER CLIENT MODE FAMILY OPS... (layout, gateway and server are
# whatever is running). Prints one PASS/FAIL/UNSUPPORTED line.
run_case() {
    local server=$1 client=$2 mode=$3 fam=$4; shift 4
    local gwname
    gwname=$(sed 's/ helper=yes//; s/ helper=no/-nohelper/; s/ .*//' "$STATE/gw.mode" 2>/dev/null || echo none)
    local tag="$LAYOUT-$server-$client-$mode-v$fam-$gwname"
    # Labs in other namespaces (FGLAB_NS_C) share $DATA: keep their work
    # directories and uploads apart.
    [[ $NS_C == fgc ]] || tag+="-$NS_C"
    local name="$LAYOUT/$gwname $server $client $mode v$fam"
    local why
    why=$(unsupported_reason "$client" "$mode" "$fam")
    if [[ -n $why ]]; then report UNSUPPORTED "$name: $why"; return 0; fi
    local outdir=$DATA/cases/$tag
    rm -rf "$outdir"; mkdir -p "$outdir"
    rm -f "$FTP_HOME/upload/$tag-"*
    local t0=$EPOCHREALTIME rc=0
    client_exec "$client" "$mode" "$fam" "$outdir" "$tag" "$@" || rc=$?
    local secs
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }')
    local what="[${*}] $secs"
    if [[ $CASE_EXPECT == fail ]]; then
        # Must fail, and after a successful login, so the refusal is about
        # the data connection and not a broken lab.
        if ((rc == 0)); then report FAIL "$name: expected to fail without the FTP helper, but succeeded $what"
        elif ! grep -aqE "(^< |<--- |\*resp\* ')230" "$outdir/transcript.log"; then report FAIL "$name: failed before login: $(failure_text "$client" "$outdir/transcript.log")"
        else report PASS "$name: fails as expected: $(failure_text "$client" "$outdir/transcript.log") $secs"; fi
        return 0
    fi
    if ((rc != 0)); then
        report FAIL "$name: client exit $rc: $(failure_text "$client" "$outdir/transcript.log") $what (transcript $outdir/transcript.log)"
        return 0
    fi
    why=$(verify_case "$client" "$mode" "$outdir" "$tag" "$@")
    if [[ -n $why ]]; then report FAIL "$name: $why $what (transcript $outdir/transcript.log)"
    else report PASS "$name $what"; rm -rf "$outdir"; rm -f "$FTP_HOME/upload/$tag-"*; fi
}

# lab.sh case SERVER CLIENT MODE FAMILY [OPS...]: one case on the running lab.
cmd_case() {
    need_root
    (($# >= 4)) || die "usage: lab.sh case SERVER CLIENT pasv|epsv|port|eprt 4|6 [list get:FILE put:FILE ...]"
    current_layout
    [[ $(cat "$STATE/server.name" 2>/dev/null) == "$1" ]] || server_start "$1"
    local server=$1 client=$2 mode=$3 fam=$4; shift 4
    (($#)) || set -- list get:0b.bin get:1k.bin get:1m.bin put:1k.bin put:1m.bin
    run_case "$server" "$client" "$mode" "$fam" "$@"
    ((FAILED == 0)) || exit 1
}

# --------------------------------------------------------------------------
# recording
# --------------------------------------------------------------------------
capture_start() {
    local dir=$1 dev dir_q
    : >"$STATE/capture.pids"
    for dir_q in in out; do
        for dev in $GW_IN $GW_OUT; do
            ip netns exec $NS_G tcpdump -i "$dev" -Q "$dir_q" --immediate-mode -n -s 0 -Z root \
                --time-stamp-precision=nano -w "$dir/$dir_q-$dev.pcap" \
                </dev/null >"$dir/$dir_q-$dev.log" 2>&1 &
            remember_pid "$STATE/capture.pids" $! tcpdump
        done
    done
    local i f ok
    for i in $(seq 100); do
        ok=1
        for f in "$dir"/*.log; do grep -q "listening on" "$f" || ok=0; done
        ((ok)) && return 0
        sleep 0.05
    done
    cat "$dir"/*.log >&2
    die "tcpdump did not start"
}

capture_stop() {
    local pid start name
    [[ -f $STATE/capture.pids ]] || return 0
    # SIGINT lets tcpdump flush and close its file.
    while read -r pid start name; do
        [[ -d /proc/$pid && $(proc_start "$pid") == "$start" ]] && kill -INT "$pid" 2>/dev/null || true
    done <"$STATE/capture.pids"
    kill_pidfile "$STATE/capture.pids"
}

# lab.sh record SERVER CLIENT MODE FAMILY LAYOUT OUTDIR [--reuse] [--name BASE] [OPS...]
cmd_record() {
    need_root
    (($# >= 6)) || die "usage: lab.sh record SERVER CLIENT MODE FAMILY LAYOUT OUTDIR [--reuse] [--name BASE] [--lan-view] [OPS...]"
    local server=$1 client=$2 mode=$3 fam=$4 layout=$5 outdir=$6; shift 6
    local reuse=0 base="" named=0 ops=() lanview=0
    while (($#)); do
        case $1 in
        --reuse) reuse=1; shift ;;
        --lan-view) lanview=1; shift ;;
        --name) base=$2; named=1; shift 2 ;;
        *) ops+=("$1"); shift ;;
        esac
    done
    ((${#ops[@]})) || ops=(list get:1k.bin)
    if ((!named)); then
        base=$server-$mode-v$fam
        [[ $layout == masq ]] || base=$layout-$base
    fi
    local why
    why=$(unsupported_reason "$client" "$mode" "$fam")
    [[ -z $why ]] || die "record: $client $mode v$fam: $why"
    mkdir -p "$outdir"
    outdir=$(cd "$outdir" && pwd)

    if ((reuse)); then
        current_layout
        [[ $LAYOUT == "$layout" ]] || die "record --reuse: the lab runs layout $LAYOUT, not $layout"
        [[ -f $STATE/gw.mode ]] || die "record --reuse: no gateway running (lab.sh gw ...)"
    else
        TEARDOWN_ON_EXIT=1
        cmd_up "$layout"
        gw_kernel
    fi
    [[ $(cat "$STATE/server.name" 2>/dev/null) == "$server" ]] || server_start "$server"

    local raw
    raw=$(mktemp -d "$DATA/rec.XXXXXX")
    capture_start "$raw"
    local tag="rec-$base" rc=0 caseout=$raw/case
    mkdir -p "$caseout"
    rm -f "$FTP_HOME/upload/$tag-"*
    client_exec "$client" "$mode" "$fam" "$caseout" "$tag" "${ops[@]}" || rc=$?
    sleep 0.5     # the last ACKs and FINs
    capture_stop
    if ((rc != 0)); then
        log "record: client failed: $(failure_text "$client" "$caseout/transcript.log") (kept $raw)"
        return 1
    fi
    local why
    why=$(verify_case "$client" "$mode" "$caseout" "$tag" "${ops[@]}")
    [[ -z $why ]] || { log "record: session check failed: $why (kept $raw)"; return 1; }
    local gwmode
    gwmode=$(cat "$STATE/gw.mode")
    local comment="ftpgate lab: layout $layout, gateway $gwmode, server $server, client $client, mode $mode, IPv$fam, ops: ${ops[*]}"
    local n_in n_out
    n_in=$("$PY" "$LAB_DIR/pcapmerge.py" -o "$outdir/$base.in.pcapng" --direction in --comment "$comment; frames arriving at the gateway" \
        "$GW_IN=$raw/in-$GW_IN.pcap" "$GW_OUT=$raw/in-$GW_OUT.pcap" 2>&1)
    n_out=$("$PY" "$LAB_DIR/pcapmerge.py" -o "$outdir/$base.out.pcapng" --direction out --comment "$comment; frames the gateway transmitted" \
        "$GW_IN=$raw/out-$GW_IN.pcap" "$GW_OUT=$raw/out-$GW_OUT.pcap" 2>&1)
    if ((lanview)); then
        # Both directions as seen on the inside link, not named after a
        # device: what a tap beside the client would record (the demo capture).
        "$PY" "$LAB_DIR/pcapmerge.py" -o "$outdir/$base.lan.pcapng" --comment "$comment; both directions on the inside link" \
            "lan=$raw/in-$GW_IN.pcap" "lan=$raw/out-$GW_IN.pcap" >/dev/null
    fi
    rm -rf "$raw"; rm -f "$FTP_HOME/upload/$tag-"*
    log "record: $n_in; ${n_out#"$outdir/"}"
}

# The committed set in pcaps/kernel: every server x mode, IPv4 and IPv6,
# Python client, LIST + 1 KB RETR, through the kernel gateway (masq), plus
# the published layout for vsftpd.
cmd_record_set() {
    need_root
    local outdir=${1:-$REPO_DIR/pcaps/kernel} server mode
    TEARDOWN_ON_EXIT=1
    cmd_up masq
    gw_kernel
    for server in vsftpd proftpd pure-ftpd; do
        server_start "$server"
        for mode in pasv epsv port eprt; do cmd_record "$server" python "$mode" 4 masq "$outdir" --reuse; done
        for mode in epsv eprt; do cmd_record "$server" python "$mode" 6 masq "$outdir" --reuse; done
    done
    cmd_up published
    gw_kernel
    server_start vsftpd
    for mode in pasv port; do cmd_record vsftpd python "$mode" 4 published "$outdir" --reuse --name "published-vsftpd-$mode-v4"; done
    for mode in epsv eprt; do cmd_record vsftpd python "$mode" 6 published "$outdir" --reuse --name "published-vsftpd-$mode-v6"; done
    ftpgate_config masq >"$outdir/masq.yaml"
    ftpgate_config published >"$outdir/published.yaml"
    TEARDOWN_ON_EXIT=0
    cmd_down
}

# --------------------------------------------------------------------------
# the matrix
# --------------------------------------------------------------------------
SERVERS=(${FGLAB_SERVERS:-vsftpd proftpd pure-ftpd})
CLIENTS=(${FGLAB_CLIENTS:-lftp curl python})
BASE_OPS=(list get:0b.bin get:1k.bin get:1m.bin put:0b.bin put:1k.bin put:1m.bin)

# A few cases carry the big files, so the matrix stays within minutes.
extra_ops() {
    local server=$1 client=$2 mode=$3 fam=$4
    case "$server $client $mode $fam" in
    "vsftpd curl epsv 4"|"proftpd lftp port 4") echo get:100m.bin ;;
    "pure-ftpd python eprt 6") echo get:100m.bin put:100m.bin ;;
    *" python "*) echo get:10m.bin put:10m.bin ;;
    esac
}

# Records one session on the running lab and checks the recording: both
# files name their interfaces veth-gw-in / veth-gw-out, and the kernel's
# rewrite is visible between them (arrived with the private address on one
# interface, left with the gateway's outside address on the other).
record_check() {
    local mode=$1 fam=$2 dir base rc=0
    dir=$(mktemp -d "$DATA/reccheck.XXXXXX")
    base=check-$LAYOUT-$mode-v$fam
    local name="$LAYOUT/kernel record vsftpd python $mode v$fam"
    set +e
    (set -e; cmd_record vsftpd python "$mode" "$fam" "$LAYOUT" "$dir" --reuse --name "$base") >"$dir/record.log" 2>&1
    rc=$?
    set -e
    if ((rc != 0)); then report FAIL "$name: record failed: $(grep -a 'error\|failed' "$dir/record.log" | tail -1)"; return 0; fi
    # One tshark pass per file (it takes ~0.4 s to start).
    local f
    for f in in out; do
        tshark -n -r "$dir/$base.$f.pcapng" -T fields -e frame.interface_name -e ftp.request.command \
            -e ftp.request.arg -e ftp.response.code -e ftp.response.arg >"$dir/$f.txt" 2>/dev/null || true
    done
    local ifs_in ifs_out
    ifs_in=$(cut -f1 "$dir/in.txt" | sort -u | tr '\n' ' ')
    ifs_out=$(cut -f1 "$dir/out.txt" | sort -u | tr '\n' ' ')
    if [[ $ifs_in != "$GW_IN $GW_OUT " || $ifs_out != "$GW_IN $GW_OUT " ]]; then
        report FAIL "$name: interface names in/out: '$ifs_in' / '$ifs_out'"; return 0
    fi
    # What the kernel's helper must have rewritten, per layout and mode.
    local key col=3 want_in want_out
    case "$LAYOUT $mode" in
    "masq port") key=PORT want_in="$GW_IN	192,0,2,10," want_out="$GW_OUT	198,51,100,1," ;;
    "masq eprt") key=EPRT want_in="$GW_IN	|2|2001:db8:1::10|" want_out="$GW_OUT	|2|2001:0db8:0002:0000:0000:0000:0000:0001|" ;;
    "published pasv") key=227 col=5 want_in="$GW_IN	Entering Passive Mode (192,0,2,20," want_out="$GW_OUT	Entering Passive Mode (198,51,100,1," ;;
    *) die "record_check: no expectation for $LAYOUT $mode" ;;
    esac
    local got_in got_out
    local pick='$2 == k || $4 == k { print $1 "\t" $c; exit }'
    got_in=$(awk -F'\t' -v k="$key" -v c="$col" "$pick" "$dir/in.txt")
    got_out=$(awk -F'\t' -v k="$key" -v c="$col" "$pick" "$dir/out.txt")
    if [[ $got_in != "$want_in"* ]]; then report FAIL "$name: in-capture shows '$got_in', expected '$want_in...'"
    elif [[ $got_out != "$want_out"* ]]; then report FAIL "$name: out-capture shows '$got_out', expected '$want_out...'"
    else report PASS "$name: recorded $(wc -l <"$dir/in.txt") frames in, $(wc -l <"$dir/out.txt") out; rewrite seen: '${got_in#*	}' on $GW_IN -> '${got_out#*	}' on $GW_OUT"
        rm -rf "$dir"; fi
}

cmd_test() {
    need_root
    local t0=$EPOCHREALTIME server client fam mode
    cmd_install
    TEARDOWN_ON_EXIT=1
    echo "== layout masq: client inside, server outside, kernel gateway masquerading, ftp helper on port 21"
    cmd_up masq
    gw_kernel 2>/dev/null
    for server in "${SERVERS[@]}"; do
        server_start "$server" 2>/dev/null
        for client in "${CLIENTS[@]}"; do
            for fam in 4 6; do
                for mode in pasv epsv port eprt; do
                    # shellcheck disable=SC2046
                    run_case "$server" "$client" "$mode" "$fam" "${BASE_OPS[@]}" $(extra_ops "$server" "$client" "$mode" "$fam")
                done
            done
        done
        # The contrast: without the helper the server refuses the client's
        # private address in PORT/EPRT; with it the kernel rewrites the line.
        gw_kernel --no-helper 2>/dev/null
        CASE_EXPECT=fail CLIENT_TIMEOUT=5
        run_case "$server" python port 4 list get:1k.bin
        run_case "$server" python eprt 6 list get:1k.bin
        run_case "$server" curl port 4 list get:1k.bin
        # Strict filter, no helper: the PASV data connection is not RELATED.
        [[ $server != vsftpd ]] || run_case "$server" python pasv 4 list get:1k.bin
        gw_kernel 2>/dev/null
        CASE_EXPECT=pass CLIENT_TIMEOUT=15
        run_case "$server" python port 4 list get:1k.bin
        run_case "$server" python eprt 6 list get:1k.bin
        run_case "$server" curl port 4 list get:1k.bin
        [[ $server != vsftpd ]] || run_case "$server" python pasv 4 list get:1k.bin
        if [[ $server == vsftpd ]]; then record_check port 4; record_check eprt 6; fi
    done
    server_stop

    echo "== layout published: server inside, client outside, kernel gateway DNAT of $GW_OUT4:21 / [$GW_OUT6]:21"
    cmd_up published
    gw_kernel 2>/dev/null
    for server in "${SERVERS[@]}"; do
        server_start "$server" 2>/dev/null
        for client in curl python; do
            run_case "$server" "$client" pasv 4 list get:1k.bin get:1m.bin put:1m.bin
            run_case "$server" "$client" port 4 list get:1k.bin get:1m.bin put:1m.bin
            run_case "$server" "$client" epsv 6 list get:1k.bin get:1m.bin put:1m.bin
            run_case "$server" "$client" eprt 6 list get:1k.bin get:1m.bin put:1m.bin
        done
        [[ $server != vsftpd ]] || record_check pasv 4
    done
    cmd_down quiet
    TEARDOWN_ON_EXIT=0
    echo "$UNSUPPORTED unsupported (not counted), $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s"
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0)) || exit 1
}

# --------------------------------------------------------------------------
# the matrix with ftpgate as the gateway (`lab.sh test --gw ftpgate`)
# --------------------------------------------------------------------------
# A third host on the outside link, for the bounce and pinhole-stealing
# cases: extra documentation addresses on the outside host's eth0. The IPv6
# one is deprecated (preferred_lft 0) so the host never picks it as a source
# by itself; the attack helper binds to it explicitly. A secondary IPv4
# address is never chosen as a source while the primary exists.
THIRD4=198.51.100.30 THIRD6=2001:db8:2::30 THIRD_PORT=2121
third_host_add() {
    if [[ $C_SIDE == out ]]; then THIRD_NS=$NS_C; else THIRD_NS=$NS_S; fi
    nsx "$THIRD_NS" ip addr replace "$THIRD4/24" dev eth0
    nsx "$THIRD_NS" ip addr replace "$THIRD6/64" dev eth0 nodad preferred_lft 0
}

FG_EVENTS=""        # the running ftpgate's event log
ev_lines() { if [[ -f $FG_EVENTS ]]; then wc -l <"$FG_EVENTS"; else echo 0; fi; }
ev_since() { tail -n +"$(($1 + 1))" "$FG_EVENTS" 2>/dev/null || true; }
# ev_wait N PATTERN: waits (at most 5 s; the log is flushed when idle) until
# an event after line N matches PATTERN; prints the first match.
ev_wait() {
    local n=$1 pat=$2 i line
    for i in $(seq 50); do
        line=$(ev_since "$n" | grep -m1 -E -- "$pat" || true)
        [[ -n $line ]] && { echo "$line"; return 0; }
        sleep 0.1
    done
    return 1
}
# ev_find N FIXED PATTERN: like ev_wait, for an event containing the fixed
# string FIXED (e.g. a session or source) and matching PATTERN.
ev_find() {
    local n=$1 fixed=$2 pat=$3 i line
    for i in $(seq 50); do
        line=$(ev_since "$n" | grep -F -- "$fixed" | grep -m1 -E -- "$pat" || true)
        [[ -n $line ]] && { echo "$line"; return 0; }
        sleep 0.1
    done
    return 1
}
# Waits (at most 5 s) until the event log has been flushed: its size stays
# the same for 0.8 s (ftpgate flushes when its log queue is idle for 0.5 s).
ev_sync() {
    local i same=0 last=-1 size
    for i in $(seq 50); do
        size=$(stat -c %s "$FG_EVENTS" 2>/dev/null || echo 0)
        if [[ $size == "$last" ]]; then same=$((same + 1)); ((same >= 8)) && return 0; else same=0; fi
        last=$size
        sleep 0.1
    done
}
json_field() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2"; }
ep() { if [[ $1 == *:* ]]; then echo "[$1]:$2"; else echo "$1:$2"; fi; }   # "ip:port" as the event log writes it

# Waits (bounded) for a line starting with WORD in FILE.
wait_line() {
    local f=$1 word=$2 secs=${3:-10} i
    for i in $(seq $((secs * 10))); do grep -q "^$word" "$f" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}

ATTACK_PIDS=()
attack_cleanup() {
    local p
    for p in "${ATTACK_PIDS[@]}"; do kill_pid "$p"; done
    ATTACK_PIDS=()
}

# A client in the client namespace sends PORT/EPRT naming the third host,
# which listens on that port in the outside namespace: the command must be
# refused (ftpgate resets the control connection), a `bounce` drop logged,
# and the third host must see no connection.
bounce_case() {
    local server=$1 fam=$2
    local name="$LAYOUT/ftpgate $server bounce v$fam" third line host d
    d=$(mktemp -d "$DATA/bounce.XXXXXX")
    if [[ $fam == 4 ]]; then third=$THIRD4 host=$T4 line="PORT ${THIRD4//./,},$((THIRD_PORT >> 8)),$((THIRD_PORT & 255))"
    else third=$THIRD6 host=$T6 line="EPRT |2|$THIRD6|$THIRD_PORT|"; fi
    local n0; n0=$(ev_lines)
    ip netns exec "$THIRD_NS" "$PY" -u "$LAB_DIR/attack.py" listen "$third" "$THIRD_PORT" 6 >"$d/listen.out" 2>&1 &
    local lpid=$!; ATTACK_PIDS+=("$lpid")
    wait_line "$d/listen.out" READY 5 || { report FAIL "$name: third-host listener did not start: $(cat "$d/listen.out")"; attack_cleanup; return 0; }
    timeout 20 ip netns exec $NS_C "$PY" -u "$LAB_DIR/attack.py" bounce "$host" "$FTP_USER" "$FTP_PASS" "$line" >"$d/client.out" 2>&1 || true
    wait "$lpid" 2>/dev/null || true; attack_cleanup
    local got listened drop
    got=$(grep -v '^CTL' "$d/client.out" | head -1)
    listened=$(grep '^ACCEPTED' "$d/listen.out" || echo "no listener result")
    local ctl
    ctl=$(sed -n 's/^CTL //p' "$d/client.out")
    drop=""
    [[ -z $ctl ]] || drop=$(ev_find "$n0" "\"session\":\"$ctl→" '"event":"drop".*"reason":"bounce"' || true)
    if [[ $got != BLOCKED* ]]; then report FAIL "$name: '$line' was not refused: $got"
    elif [[ $listened != "ACCEPTED 0 "* ]]; then report FAIL "$name: the third host $third received a connection: $listened"
    elif [[ -z $drop ]]; then report FAIL "$name: no drop event with reason bounce in $FG_EVENTS"
    else report PASS "$name: '$line' -> client sees $got; $(ep "$third" "$THIRD_PORT") accepted nothing; logged: $(json_field "$drop" detail)"; rm -rf "$d"; fi
}

# knock: the third host connects to ADDR:PORT; prints "NOTHING ... " or
# "CONNECTED ..." and checks that ftpgate logged a drop of that SYN.
knock() {
    local addr=$1 port=$2 src out
    [[ $addr == *:* ]] && src=$THIRD6 || src=$THIRD4
    out=$(timeout 10 ip netns exec "$THIRD_NS" "$PY" "$LAB_DIR/attack.py" knock "$src" "$addr" "$port" 1 2>&1 || true)
    echo "$out"
}

# The pinhole-stealing case. The client announces a data port and stops;
# the pinhole is read from the `pinhole_open` event; the third host connects
# to it first (must get nothing, and ftpgate must log a drop of its SYN);
# the client then runs LIST (must work, from the announced peer); the third
# host tries again after the pinhole was used (nothing again).
# masq: PORT v4 / EPRT v6 (the pinhole on the gateway's outside address is
# for the server); published: PASV v4 / EPSV v6 (for the outside client).
steal_case() {
    local server=$1 mode=$2 fam=$3
    local name="$LAYOUT/ftpgate $server pinhole-steal $mode v$fam" host d kind
    if [[ $fam == 4 ]]; then host=$T4; else host=$T6; fi
    case $mode in port|eprt) kind=active ;; *) kind=passive ;; esac
    d=$(mktemp -d "$DATA/steal.XXXXXX")
    local n0; n0=$(ev_lines)
    ip netns exec $NS_C "$PY" -u "$LAB_DIR/attack.py" "$kind" "$host" "$FTP_USER" "$FTP_PASS" "$mode" "$d/ctl" >"$d/client.out" 2>&1 &
    local cpid=$!; ATTACK_PIDS+=("$cpid")
    if ! wait_line "$d/client.out" READY 10; then
        report FAIL "$name: client did not get to the data command: $(tail -1 "$d/client.out")"; attack_cleanup; return 0
    fi
    local ph addr port ctl
    ctl=$(sed -n 's/^CTL //p' "$d/client.out")
    if ! ph=$(ev_find "$n0" "\"session\":\"$ctl→" '"event":"pinhole_open"'); then
        report FAIL "$name: no pinhole_open event in $FG_EVENTS"; attack_cleanup; return 0
    fi
    addr=$(json_field "$ph" address) port=$(json_field "$ph" port)
    local early late dropped_early dropped_late
    early=$(knock "$addr" "$port")
    touch "$d/ctl.go"
    wait_line "$d/client.out" DATA 15 || true

    late=$(knock "$addr" "$port")
    touch "$d/ctl.late"
    wait_line "$d/client.out" LATE 5 || true
    wait "$cpid" 2>/dev/null || true
    attack_cleanup
    local src_e src_l
    src_e=$(sed -n 's/.* src=//p' <<<"$early") src_l=$(sed -n 's/.* src=//p' <<<"$late")
    dropped_early="" dropped_late=""
    [[ -z $src_e ]] || dropped_early=$(ev_find "$n0" "\"src\":\"$src_e\"" '"event":"drop"' || true)
    [[ -z $src_l ]] || dropped_late=$(ev_find "$n0" "\"src\":\"$src_l\"" '"event":"drop"' || true)
    local data lateline want_peer
    data=$(grep '^DATA' "$d/client.out" || echo "DATA (none)")
    lateline=$(grep '^LATE' "$d/client.out" || echo "LATE (none)")
    # The data connection must come from the announced peer: the server
    # (masq, active) or, through the gateway's outside address (published).
    if [[ $kind == active ]]; then [[ $fam == 4 ]] && want_peer=$S4 || want_peer=$S6
    else [[ $fam == 4 ]] && want_peer=$T4 || want_peer=$T6; fi
    if [[ $early != NOTHING* ]]; then report FAIL "$name: third host reached pinhole $(ep "$addr" "$port") before the peer: $early"
    elif [[ -z $dropped_early ]]; then report FAIL "$name: no drop event for the early SYN from $src_e"
    elif [[ $data != "DATA peer=$want_peer "*"listing=ok; 226" ]]; then report FAIL "$name: the real transfer failed: $data ($(tail -2 "$d/client.out" | tr '\n' ' '))"
    elif [[ $late != NOTHING* ]]; then report FAIL "$name: third host reached $(ep "$addr" "$port") after use: $late"
    elif [[ -z $dropped_late ]]; then report FAIL "$name: no drop event for the late SYN from $src_l"
    elif [[ $kind == active && $lateline != "LATE none" ]]; then report FAIL "$name: the client's listener saw: $lateline"
    else report PASS "$name: pinhole $(ep "$addr" "$port") for $(json_field "$ph" peer); before: ${early%% src=*} (drop: $(json_field "$dropped_early" reason)); ${data#DATA }; after: ${late%% src=*} (drop: $(json_field "$dropped_late" reason))"
        rm -rf "$d"; fi
}

# vsftpd keeps port_promiscuous=NO (it refuses a PORT naming any host but
# the control peer): an active session through ftpgate works only because
# the PORT/EPRT line was rewritten to the gateway's outside address.
promiscuous_check() {
    local mode=$1 fam=$2 n0 f0 rw before after
    local name="$LAYOUT/ftpgate vsftpd port_promiscuous=NO python $mode v$fam"
    grep -qx 'port_promiscuous=NO' "$STATE/vsftpd/vsftpd-v$fam.conf" || { report FAIL "$name: vsftpd config lacks port_promiscuous=NO"; return 0; }
    ev_sync
    n0=$(ev_lines) f0=$FAILED
    run_case vsftpd python "$mode" "$fam" list get:1k.bin
    if ((FAILED != f0)); then report FAIL "$name: the session failed (line above)"; return 0; fi
    rw=$(ev_wait "$n0" '"event":"alg_rewrite".*"before":"(PORT|EPRT) ' || true)
    before=$(json_field "$rw" before) after=$(json_field "$rw" after)
    if [[ $fam == 4 && $before == "PORT ${C4//./,},"* && $after == "PORT ${GW_OUT4//./,},"* ]] ||
       [[ $fam == 6 && $before == "EPRT |2|$C6|"* && $after == "EPRT |2|$GW_OUT6|"* ]]; then
        report PASS "$name: session passed with '$before' rewritten to '$after'"
    else report FAIL "$name: expected a rewrite of the client's address to the gateway's, got '$before' -> '$after'"; fi
}

# Every drop/reset event in the log, by reason; those the attack cases
# caused (reason bounce, or a SYN from the third host) are expected, anything
# else fails the check (with the first few lines).
events_check() {
    local name="$LAYOUT/ftpgate event log"
    local out rc=0
    out=$("$PY" - "$FG_EVENTS" "$THIRD4" "$THIRD6" <<'PY'
import collections, json, sys
path, t4, t6 = sys.argv[1:4]
caused, other, bad = collections.Counter(), collections.Counter(), []
bounced = set()
for line in open(path):
    e = json.loads(line)
    if e["event"] not in ("drop", "reset"):
        continue
    src = e.get("src", "")
    if e.get("reason") == "bounce":
        bounced.add(e.get("session"))
    if e.get("reason") == "bounce" or e.get("session") in bounced or src.startswith(t4 + ":") or src.startswith("[" + t6 + "]:"):
        caused[e["event"] + ":" + e.get("reason", "")] += 1
    else:
        other[e["event"] + ":" + e.get("reason", "")] += 1
        if len(bad) < 3:
            bad.append(line.strip()[:300])
fmt = lambda c: ", ".join("%s %d" % kv for kv in sorted(c.items())) or "none"
print("caused by the attack cases: %s; other: %s" % (fmt(caused), fmt(other)))
for b in bad:
    print("  " + b)
sys.exit(1 if other else 0)
PY
) || rc=$?
    if ((rc == 0)); then report PASS "$name: drop/reset events $(head -1 <<<"$out")"
    else report FAIL "$name: unexplained drop/reset events: $out"; fi
}

# lab.sh test --gw ftpgate: the same matrix with `ftpgate run` as the gateway,
# both layouts, plus bounce and pinhole-stealing cases and the event log check.
FTPGATE_OPS_PUBLISHED=(list get:0b.bin get:1k.bin get:1m.bin put:0b.bin put:1k.bin put:1m.bin)
cmd_test_ftpgate() {
    need_root
    local t0=$EPOCHREALTIME server client fam mode layout
    local bin=${FTPGATE:-$REPO_DIR/target/release/ftpgate}
    [[ -x $bin ]] || bin=$(command -v "$bin" || true)
    [[ -n $bin && -x $bin ]] || die "test --gw ftpgate: no ftpgate binary (cargo build --release, or FTPGATE=path)"
    cmd_install
    TEARDOWN_ON_EXIT=1
    for layout in masq published; do
        if [[ $layout == masq ]]; then
            echo "== layout masq: client inside, server outside, ftpgate masquerading (binary $bin)"
        else
            echo "== layout published: server inside, client outside, ftpgate forwarding $GW_OUT4:21 / [$GW_OUT6]:21"
        fi
        cmd_up "$layout"
        third_host_add
        FG_EVENTS=$STATE/ftpgate-events-$layout.jsonl
        rm -f "$FG_EVENTS"
        gw_ftpgate --bin "$bin" --events "$FG_EVENTS" --admin "unix:$STATE/ftpgate-admin.sock" 2>/dev/null
        for server in "${SERVERS[@]}"; do
            server_start "$server" 2>/dev/null
            for client in "${CLIENTS[@]}"; do
                for fam in 4 6; do
                    for mode in pasv epsv port eprt; do
                        if [[ $layout == masq ]]; then
                            # shellcheck disable=SC2046
                            run_case "$server" "$client" "$mode" "$fam" "${BASE_OPS[@]}" $(extra_ops "$server" "$client" "$mode" "$fam")
                        else
                            run_case "$server" "$client" "$mode" "$fam" "${FTPGATE_OPS_PUBLISHED[@]}"
                        fi
                    done
                done
            done
            if [[ $layout == masq ]]; then
                [[ $server != vsftpd ]] || { promiscuous_check port 4; promiscuous_check eprt 6; }
                bounce_case "$server" 4
                bounce_case "$server" 6
                steal_case "$server" port 4
                steal_case "$server" eprt 6
            else
                steal_case "$server" pasv 4
                steal_case "$server" epsv 6
            fi
        done
        server_stop
        events_check
        gw_reset
    done
    cmd_down quiet
    TEARDOWN_ON_EXIT=0
    echo "$UNSUPPORTED unsupported (not counted), $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s"
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0)) || exit 1
}

cmd_status() {
    local ns
    for ns in $NS_C $NS_G $NS_S; do ns_exists "$ns" && echo "namespace $ns: up" || echo "namespace $ns: absent"; done
    [[ -f $STATE/layout ]] && echo "layout: $(cat "$STATE/layout")"
    [[ -f $STATE/gw.mode ]] && echo "gateway: $(cat "$STATE/gw.mode")"
    [[ -f $STATE/server.name ]] && echo "server: $(cat "$STATE/server.name") (pids $(cut -d' ' -f1 "$STATE/server.pids" | tr '\n' ' '))"
    return 0
}

# lab.sh exec client|gw|server CMD...: run a command in a lab namespace.
cmd_exec() {
    local ns
    case ${1:-} in client) ns=$NS_C ;; gw|gateway) ns=$NS_G ;; server) ns=$NS_S ;; *) die "usage: lab.sh exec client|gw|server CMD..." ;; esac
    shift
    exec ip netns exec "$ns" "$@"
}

cmd_purge() {
    need_root
    cmd_down
    id "$FTP_USER" >/dev/null 2>&1 && userdel "$FTP_USER"
    rm -rf "$DATA" "$STATE"
    log "purge: lab user, $DATA and $STATE removed (cache $CACHE kept)"
}

usage() {
    cat <<USAGE
usage: lab.sh COMMAND ...   (as root; see docs/lab.md)
  install [--bench]              apt-install the tools; unpack proftpd and pure-ftpd into $CACHE
                                 (--bench: also iperf3 and suricata, for bench/run.sh)
  up [masq|published]            create namespaces $NS_C (client), $NS_G (gateway), $NS_S (server)
  down                           remove them and stop everything the lab started (idempotent)
  gw kernel [--no-helper]        nftables gateway (ftp helper on port 21, masquerade / DNAT, strict filter)
  gw ftpgate [-c CFG] [--bin B]  userspace gateway: kernel forwarding off, 'ftpgate run' in $NS_G
  gw off                         nothing forwards
  gw-config masq|published       print the lab's ftpgate configuration
  servers start vsftpd|proftpd|pure-ftpd | stop | status
  case SERVER CLIENT MODE FAMILY [OPS]   one session on the running lab (OPS: list get:F put:F)
  record SERVER CLIENT MODE FAMILY LAYOUT OUTDIR [--reuse] [--name BASE] [OPS]
                                 capture a session on the gateway: BASE.in.pcapng, BASE.out.pcapng
  record-set [OUTDIR]            remake the committed recordings (default pcaps/kernel)
  test [--gw kernel|ftpgate]     the whole matrix from nothing; last line "N passed, N failed"
                                 (--gw ftpgate: FTPGATE=path, default target/release/ftpgate)
  status | exec client|gw|server CMD... | purge
USAGE
}

# --------------------------------------------------------------------------
TEARDOWN_ON_EXIT=0
on_exit() {
    local rc=$?
    if [[ $TEARDOWN_ON_EXIT == 1 ]]; then
        TEARDOWN_ON_EXIT=0
        capture_stop || true
        cmd_down quiet || true
        log "torn down after ${rc:+exit $rc}"
    fi
    exit $rc
}
set -E
trap on_exit EXIT
trap 'log "failed (line $LINENO): $BASH_COMMAND"' ERR
trap 'exit 130' INT TERM

main() {
    local cmd=${1:-help}; shift || true
    case $cmd in
    install) cmd_install "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    gw) cmd_gw "$@" ;;
    gw-config) ftpgate_config "${1:-masq}" ;;
    servers|server) cmd_servers "$@" ;;
    case) cmd_case "$@" ;;
    record) cmd_record "$@" ;;
    record-set) cmd_record_set "$@" ;;
    test)
        case "${1:-} ${2:-}" in
        " "|"--gw kernel") cmd_test ;;
        "--gw ftpgate") cmd_test_ftpgate ;;
        *) die "usage: lab.sh test [--gw kernel|ftpgate]" ;;
        esac ;;
    status) cmd_status ;;
    exec) cmd_exec "$@" ;;
    purge) cmd_purge ;;
    help|-h|--help) usage ;;
    *) usage >&2; exit 2 ;;
    esac
}
main "$@"
