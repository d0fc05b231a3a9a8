# Sourced by the lab's test scripts (live-e2e.sh, soak.sh, bench/run.sh):
# stopping the processes a script started, by PID, and (lab_on_exit) the
# lab's removal when the script ends, also on failure or Ctrl-C. Expects
# LAB (the path of lab.sh) to be set before lab_on_exit.

# A process's start time (clock ticks since boot; empty once it is gone):
# with it, a PID the kernel has since given to another process is left alone.
start_time() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0; s=${s##*) }; set -- $s; echo "${20}"; }

# stop_pid PID [START]: TERM, up to 5 s, then KILL.
stop_pid() {
    local pid=$1 st=${2:-} i
    [[ -n $pid && -d /proc/$pid ]] || return 0
    [[ -z $st || $(start_time "$pid") == "$st" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do [[ -d /proc/$pid ]] || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

# Background helpers go in BG_PIDS, the gateway (when the script runs it
# itself) in GW_PID; at exit both are stopped and the lab comes down.
BG_PIDS=() GW_PID=""
lab_cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${BG_PIDS[@]}"; do stop_pid "$p"; done
    stop_pid "$GW_PID"
    "$LAB" down >/dev/null 2>&1 || true
    exit $rc
}
lab_on_exit() {
    trap lab_cleanup EXIT
    trap 'exit 130' INT TERM
}
