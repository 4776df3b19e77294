#!/usr/bin/env bash
# bench/run.sh: atoll against the servers people use, measured by clients
# nobody here wrote, each server a process of its own started the way users
# start servers, in one run and one report.
#
#   bench/run.sh                     # the full run (about 10 minutes per condition)
#   bench/run.sh --quick             # a short smoke run of every part
#   bench/run.sh --sched same,own,quota,pin,hog   # every scheduling condition
#
# Every server (atoll's examples and every peer) is started fresh for each
# measurement, as its own process, by default in its own session (`setsid`:
# Linux gives each session its own scheduling group, as a terminal, an SSH
# session, a service or a container would); the load runs in another
# process from this script's session. --sched runs every row under each
# scheduling condition (see sched_describe below).
#
# Parts, each alternating atoll and its peers within every repetition:
#   echo     examples/pingpong (64-byte closed-loop ping-pong, 100 and 1,000
#            conns) against examples/echo (atoll, library defaults),
#            examples/peer_echo --kind tokio and --kind std (a thread per
#            connection)
#   redis    redis-benchmark -t ping / set / get -c 50, without and with
#            -P 16: examples/mini_redis vs redis-server
#   http     wrk -t2 -c100 --latency (-t1 when pinned): examples/http_hello vs nginx vs hyper
#            (examples/peer_hyper_hello)
#   idle     examples/echo holding 2k, 5k, 10k, 18k idle connections
#            (examples/idle_client): server RSS per connection, and the echo
#            rate of 100 active connections with and without 18k idle ones
#   blocking handlers that block 1 and 10 ms per request, 100 and 1,000
#            clients: echo --delay-ms vs peer_echo --kind std --delay-ms (a
#            thread per connection) vs --kind tokio --delay-ms
#            (spawn_blocking); and slow-beside-fast: http_hello under wrk
#            -c100 on GET / alone, then beside 10 clients on GET /sleep/100
#   metrics  the cost of the `metrics` feature: examples/pingpong (64 B,
#            100 conns) against examples/metrics (the echo server with
#            Metrics::publish and the Prometheus exporter's recorder
#            installed) and examples/echo (no recorder), both with the
#            library's defaults, twice as many repetitions as the others
#            (a ratio near 1 is what is measured)
#
# Every row reports the rate, p50 and p99, and from /proc, for atoll and for
# each peer: context switches per request, server CPU microseconds per
# request, and the server's thread count at the end of the measured window;
# beside the ratio of the medians, the range of the per-repetition ratios.
#
# It writes the tables, with the date, the machine, the conditions and the
# commands, to docs/PERFORMANCE.md (--quick writes
# target/bench/PERFORMANCE-quick.md, a subset of parts
# target/bench/PERFORMANCE-partial.md). Raw outputs of every tool go to
# target/bench/logs/. Missing tools are installed with apt-get. Loopback
# only; every process it starts (servers, loads, hogs) is stopped by PID on
# exit, and the cgroup it creates is removed.
#
# `cargo bench --bench echo` runs server and client in one process: it is a
# micro-benchmark of the library, not run here.
#
# Environment: ATOLL_BENCH_WORKERS (worker threads: passed to atoll as
# --workers only when set; the peers' threads, default one per core),
# ATOLL_BENCH_ACCEPTORS (atoll acceptor threads: passed as --acceptors only
# when set). Unset, atoll runs with its library defaults.
# ATOLL_BENCH_BASELINE (a directory with another build's examples, such as
# an older commit's target/release/examples): the echo part then also runs
# that build's echo, alternating with this one, as an "atoll baseline" peer
# row, for a before-and-after ratio from one run.
set -euo pipefail

ALL_PARTS="echo,redis,http,idle,blocking,metrics"
ALL_SCHEDS="same,own,quota,pin,hog"

usage() {
    cat <<'EOF'
usage: bench/run.sh [--quick] [--reps N] [--parts LIST] [--sched LIST]

  --quick       short smoke run: 1 repetition, short durations; writes
                target/bench/PERFORMANCE-quick.md, not docs/PERFORMANCE.md
  --reps N      repetitions of every measurement [3; 1 with --quick]
  --parts LIST  comma-separated subset of echo,redis,http,idle,blocking,metrics
                [all]
                (a subset writes target/bench/PERFORMANCE-partial.md)
  --sched LIST  comma-separated subset of same,own,quota,pin,hog [own]:
                the scheduling conditions every row runs under
                  same   server started from this script's session
                  own    server started with setsid (its own session)
                  quota  own, in a cgroup v1 cpu group with a 1-CPU quota (root)
                  pin    own, server on CPU 0 (taskset), load on CPU 1 (one thread)
                  hog    own, with a CPU hog in a third session during the load
EOF
}

# list_ok LIST ALLOWED: LIST is a comma-separated subset of ALLOWED.
list_ok() {
    local item
    [[ -n $1 && $1 != *,, && $1 != ,* && $1 != *, ]] || return 1
    for item in ${1//,/ }; do
        [[ ,$2, == *,$item,* ]] || return 1
    done
}

QUICK=0
REPS=""
PARTS=$ALL_PARTS
SCHED_LIST=own
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        --reps)
            [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || { usage >&2; exit 2; }
            REPS=$2
            shift
            ;;
        --parts)
            [[ $# -ge 2 ]] && list_ok "$2" "$ALL_PARTS" || { usage >&2; exit 2; }
            PARTS=$2
            shift
            ;;
        --sched)
            [[ $# -ge 2 ]] && list_ok "$2" "$ALL_SCHEDS" || { usage >&2; exit 2; }
            SCHED_LIST=$2
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
# The conditions in the order given, each once.
SCHEDS=()
for s in ${SCHED_LIST//,/ }; do
    [[ " ${SCHEDS[*]} " == *" $s "* ]] || SCHEDS+=("$s")
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }
part() { [[ ,$PARTS, == *,$1,* ]]; }

CORES=$(nproc)
CLK_TCK=$(getconf CLK_TCK)
# atoll runs with the library's defaults unless the environment says
# otherwise: that is what users run.
ATOLL_FLAGS=()
if [[ -n ${ATOLL_BENCH_WORKERS:-} ]]; then
    [[ $ATOLL_BENCH_WORKERS =~ ^[1-9][0-9]*$ ]] || die "ATOLL_BENCH_WORKERS must be a positive integer"
    ATOLL_FLAGS+=(--workers "$ATOLL_BENCH_WORKERS")
fi
if [[ -n ${ATOLL_BENCH_ACCEPTORS:-} ]]; then
    [[ $ATOLL_BENCH_ACCEPTORS =~ ^[1-9][0-9]*$ ]] || die "ATOLL_BENCH_ACCEPTORS must be a positive integer"
    ATOLL_FLAGS+=(--acceptors "$ATOLL_BENCH_ACCEPTORS")
fi
BASELINE=${ATOLL_BENCH_BASELINE:-}
if [[ -n $BASELINE ]]; then
    [[ -x $BASELINE/echo ]] || die "ATOLL_BENCH_BASELINE: no echo example in $BASELINE"
fi
# The peers get as many threads as the machine has cores (tokio's own
# default), or ATOLL_BENCH_WORKERS.
PEER_WORKERS=${ATOLL_BENCH_WORKERS:-$CORES}
if ((QUICK)); then
    REPS=${REPS:-1} ECHO_SECS=1 REDIS_N=20000 WRK_SECS=2 ACTIVE_SECS=1 SBF_SECS=2
else
    REPS=${REPS:-3} ECHO_SECS=3 REDIS_N=200000 WRK_SECS=10 ACTIVE_SECS=5 SBF_SECS=10
fi
WARMUP_MS=500
ACTIVE_CONNS=100
ECHO_CONNS=(100 1000)
BLOCK_DELAYS=(1 10)
BLOCK_CLIENTS=(100 1000)
SLOW_MS=100
SLOW_CLIENTS=10
if ((QUICK)); then
    REPORT=target/bench/PERFORMANCE-quick.md
elif [[ $PARTS != "$ALL_PARTS" ]]; then
    REPORT=target/bench/PERFORMANCE-partial.md
else
    REPORT=docs/PERFORMANCE.md
fi

# ---------------------------------------------------------------------------
# Tools: install what is missing, then check everything is there.

find_tool() {
    command -v "$1" 2>/dev/null && return 0
    local dir
    for dir in /usr/sbin /sbin /usr/local/sbin; do
        [[ -x $dir/$1 ]] && { echo "$dir/$1"; return 0; }
    done
    return 1
}

package_of() {
    case $1 in
        redis-server) echo redis-server ;;
        redis-benchmark | redis-cli) echo redis-tools ;;
        wrk) echo wrk ;;
        nginx) echo nginx ;;
        setsid | taskset) echo util-linux ;;
        ps) echo procps ;;
        openssl) echo openssl ;;
    esac
}

install_missing() {
    local tool pkgs=()
    for tool in redis-server redis-benchmark redis-cli wrk nginx setsid taskset ps openssl; do
        if ! find_tool "$tool" >/dev/null; then
            local pkg
            pkg=$(package_of "$tool")
            [[ " ${pkgs[*]} " == *" $pkg "* ]] || pkgs+=("$pkg")
        fi
    done
    ((${#pkgs[@]})) || return 0
    command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get to install them"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "missing ${pkgs[*]}: run as root or install sudo"
        sudo=(sudo)
    fi
    say "installing ${pkgs[*]} with apt-get"
    timeout 600 "${sudo[@]}" apt-get update -q
    timeout 900 "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}"
}

install_missing
for tool in cargo nproc getconf uname mkfifo timeout awk sed sort ps setsid date; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
REDIS_SERVER=$(find_tool redis-server) || die "redis-server not found"
REDIS_BENCHMARK=$(find_tool redis-benchmark) || die "redis-benchmark not found"
REDIS_CLI=$(find_tool redis-cli) || die "redis-cli not found"
WRK=$(find_tool wrk) || die "wrk not found"
NGINX=$(find_tool nginx) || die "nginx not found"

# Idle connections need descriptors, and so do 1,000 clients: take the hard
# limit (the servers inherit it).
HARD_NOFILE=$(ulimit -Hn)
if [[ $HARD_NOFILE == unlimited ]]; then HARD_NOFILE=1048576; fi
ulimit -n "$HARD_NOFILE" 2>/dev/null || true
NOFILE=$(ulimit -n)
IDLE_MAX=$((NOFILE - 2000 < 18000 ? NOFILE - 2000 : 18000))
((IDLE_MAX >= 1000)) || die "descriptor limit $NOFILE is too low for the idle part"
IDLE_LEVELS=()
for level in 2000 5000 10000; do
    if ((level < IDLE_MAX)); then IDLE_LEVELS+=("$level"); fi
done
IDLE_LEVELS+=("$IDLE_MAX")

# ---------------------------------------------------------------------------
# Processes: every one started is remembered by PID and stopped on exit.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/atoll-bench.XXXXXX")
LOGS=$ROOT/target/bench/logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
PIDS=()
LAST_PID=""
LAST_ADDR=""
CTL=""
HOG_PID=""
# The cgroup of the quota condition; created by cgroup_create.
CGROUP=/sys/fs/cgroup/cpu/atoll-bench-$$
CGROUP_MADE=0

stop_pid() {
    local pid=$1 i children
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    children=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "PID $pid did not stop in 10 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        for i in $children; do kill -KILL "$i" 2>/dev/null || true; done
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$? i
    trap - EXIT INT TERM
    if [[ -n $CTL ]]; then exec {CTL}>&-; fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
    done
    if ((CGROUP_MADE)); then cgroup_remove; fi
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_bg NAME CMD...: runs CMD in the background, stdout and stderr to
# $LOGS/NAME.out and .err; sets LAST_PID. A background job of this
# non-interactive script stays in the script's process group, so a
# `setsid` at the front of CMD never needs to fork: LAST_PID is the
# command's own PID (verify_condition checks it).
start_bg() {
    local name=$1
    shift
    # Created here, not by the child, so that readers never race its start.
    : >"$LOGS/$name.out"
    : >"$LOGS/$name.err"
    "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# stop_started PID: stops a process started by start_bg before the end.
stop_started() {
    stop_pid "$1"
    local kept=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

# wait_listening NAME PID: waits (30 s at most) for `listening on ADDR` and
# sets LAST_ADDR; returns 1 if the process exited first.
wait_listening() {
    local name=$1 pid=$2 i line
    for ((i = 0; i < 300; i++)); do
        line=$(sed -n 's/^listening on //p' "$LOGS/$name.out" | head -n 1)
        if [[ -n $line ]]; then
            LAST_ADDR=$line
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    die "$name did not print 'listening on' within 30 s"
}

# free_port: a loopback port nothing listens on, below the ephemeral range.
free_port() {
    local i p
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 10000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free loopback port found"
}

# http_get PORT [PATH]: the response to GET PATH (5 s at most).
http_get() {
    # shellcheck disable=SC2016 # $1 and $2 expand in the inner shell
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" &&
        printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$2" >&3 &&
        cat <&3' _ "$1" "${2:-/}" 2>/dev/null || true
}

# now_us: the time in microseconds, without a fork (the sampling below must
# stay prompt on a machine the load saturates).
now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }

# ---------------------------------------------------------------------------
# Scheduling conditions. SCHED is the current one; SERVER_WRAP is put in
# front of every server's command, LOAD_WRAP in front of every load's.

SCHED=""
WHY=""
SERVER_WRAP=()
LOAD_WRAP=() LOAD_THREADS=2
# How the command lines below name the load's thread count.
LOAD_T="T = 1 when pinned, else 2"
RAN_SCHEDS=()

# sched_describe COND: how the condition is set up, for the report.
sched_describe() {
    case $1 in
        same) echo "each server is started as a background job of bench/run.sh, in the script's own session, where the load also runs: server and load share one scheduling group (autogroup)" ;;
        own) echo "each server is started with \`setsid\`, in a session (and so an autogroup) of its own; the load runs from the script's session" ;;
        quota) echo "each server is started with \`setsid\` and placed, before it execs (so every thread and child process it creates follows), in the cgroup v1 cpu group $CGROUP with cpu.cfs_period_us = cpu.cfs_quota_us = 100000: at most one CPU's worth of time per 100 ms; the group is removed afterwards" ;;
        pin) echo "each server is started with \`setsid taskset -c 0\` (all its threads on CPU 0), and the load with \`taskset -c 1\` (CPU 1) and one thread (\`pingpong --threads 1\`, \`wrk -t1\`, \`idle_client --clients 1\`): two load threads on one CPU would wait for each other, and add those waits to every server's latencies" ;;
        hog) echo "each server is started with \`setsid\`; while each load runs, a CPU hog \`setsid sh -c 'while :; do :; done'\` runs in a third session (under \`timeout\` as a bound, stopped by PID after the row)" ;;
    esac
}

# sched_unavailable COND: why COND cannot be set up here, or nothing.
sched_unavailable() {
    case $1 in
        quota)
            if ((EUID != 0)); then
                echo "creating a cgroup needs root"
            elif [[ ! -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
                echo "no cgroup v1 cpu controller at /sys/fs/cgroup/cpu"
            fi
            ;;
        pin)
            if ((CORES < 2)); then
                echo "pinning server and load apart needs 2 CPUs; nproc says $CORES"
            elif ! command -v taskset >/dev/null; then
                echo "taskset not found"
            elif ! taskset -c 0 true 2>/dev/null || ! taskset -c 1 true 2>/dev/null; then
                echo "this script may not run on both CPU 0 and CPU 1"
            fi
            ;;
    esac
}

# cgroup_create: the one-CPU cpu group of the quota condition; returns 1,
# with the reason in WHY, if the kernel refuses.
cgroup_create() {
    mkdir "$CGROUP" 2>/dev/null || { WHY="cannot create $CGROUP"; return 1; }
    CGROUP_MADE=1
    { echo 100000 >"$CGROUP/cpu.cfs_period_us" && echo 100000 >"$CGROUP/cpu.cfs_quota_us"; } 2>/dev/null ||
        { WHY="cannot set the quota of $CGROUP"; return 1; }
}

# cgroup_remove: removes the group once the processes in it are gone (an
# exiting process leaves it a little after its PID stops answering).
cgroup_remove() {
    ((CGROUP_MADE)) || return 0
    local i
    for ((i = 0; i < 50; i++)); do
        rmdir "$CGROUP" 2>/dev/null && { CGROUP_MADE=0; return 0; }
        [[ -d $CGROUP ]] || { CGROUP_MADE=0; return 0; }
        sleep 0.1
    done
    say "could not remove $CGROUP (tasks: $(tr '\n' ' ' <"$CGROUP/tasks" 2>/dev/null))"
}

# sched_begin COND: sets up COND; returns 1 (with a note) if it cannot.
sched_begin() {
    SCHED=$1
    WHY=$(sched_unavailable "$SCHED")
    if [[ -z $WHY && $SCHED == quota ]]; then
        cgroup_create || true
    fi
    if [[ -n $WHY ]]; then
        note "condition $SCHED skipped: $WHY"
        cgroup_remove
        return 1
    fi
    LOAD_WRAP=() LOAD_THREADS=2
    case $SCHED in
        same) SERVER_WRAP=() ;;
        own | hog) SERVER_WRAP=(setsid) ;;
        # One load thread on the load's one CPU: a second would wait for
        # the first, and its waits would show in every server's latencies.
        pin) SERVER_WRAP=(setsid taskset -c 0) LOAD_WRAP=(taskset -c 1) LOAD_THREADS=1 ;;
        # shellcheck disable=SC2016 # $$, $0 and $@ expand in the inner shell
        quota) SERVER_WRAP=(setsid sh -c 'echo $$ >"$0" && exec "$@"' "$CGROUP/cgroup.procs") ;;
    esac
    say "condition $SCHED: $(sched_describe "$SCHED")"
}

sched_end() {
    [[ $SCHED != quota ]] || cgroup_remove
    RAN_SCHEDS+=("$SCHED")
}

# session_of PID: the session id (field 6 of /proc/PID/stat).
session_of() { awk '{ sub(/.*\) /, ""); print $4 }' "/proc/$1/stat" 2>/dev/null; }

# verify_condition PID NAME: the server really runs under the condition; a
# failure here is a bug of this script, not a result.
verify_condition() {
    local pid=$1 name=$2 sid
    sid=$(session_of "$pid")
    case $SCHED in
        same) [[ $sid == "$(session_of $$)" ]] || die "$name (PID $pid) is not in the script's session" ;;
        *) [[ $sid == "$pid" ]] || die "$name (PID $pid) does not lead a session of its own (session $sid)" ;;
    esac
    case $SCHED in
        pin)
            [[ $(taskset -cp "$pid" 2>/dev/null | sed 's/.*: *//') == 0 ]] ||
                die "$name (PID $pid) is not pinned to CPU 0: $(taskset -cp "$pid" 2>&1)"
            ;;
        quota)
            grep -Eq "^[0-9]+:([^:]*,)?cpu(,[^:]*)?:/atoll-bench-$$\$" "/proc/$pid/cgroup" ||
                die "$name (PID $pid) is not in $CGROUP: $(grep cpu "/proc/$pid/cgroup" | tr '\n' ' ')"
            ;;
    esac
}

# hog_start SECS / hog_stop: the hog condition's CPU hog in a third session,
# around one load; `timeout` bounds it should this script be killed outright.
hog_start() {
    [[ $SCHED == hog ]] || return 0
    start_bg "hog" setsid timeout -s KILL "$(($1 + 120))" sh -c 'while :; do :; done'
    HOG_PID=$LAST_PID
}

hog_stop() {
    [[ -n $HOG_PID ]] || return 0
    stop_started "$HOG_PID"
    HOG_PID=""
}

# ---------------------------------------------------------------------------
# Costs from /proc: context switches and CPU time of a server over the
# measured window.

# sample PID: "US CTX TICKS THREADS" now: CTX the voluntary and involuntary
# context switches summed over the threads of PID and of its children
# (nginx's workers, forked by its main thread), TICKS their utime + stime
# (fields 14 and 15 of /proc/PID/stat, in clock ticks), THREADS their
# threads, US the time halfway through the reading. A thread that exits
# inside the window takes its switches with it: servers whose threads come
# and go (a pool shrinking, std's thread per connection closing) may be
# undercounted, never overcounted. Builtins and one pipeline: every fork
# waits for a CPU the load keeps busy.
sample() {
    local pid=$1 kids="" p files=() t1 t2
    t1=$(now_us)
    read -r -d '' kids <"/proc/$pid/task/$pid/children" 2>/dev/null || true
    for p in "$pid" $kids; do
        files+=("/proc/$p/stat" /proc/"$p"/task/*/status)
    done
    # cat, not awk on the files: a thread may exit between the glob and the
    # read, and cat reads on where mawk would stop.
    cat "${files[@]}" 2>/dev/null | awk -v t1="$t1" -v t2="$(now_us)" '
        /^[0-9]+ \(/ { sub(/^[0-9]+ \(.*\) /, ""); ticks += $12 + $13; next }
        /^Tgid:/ { threads++ }
        /^(non)?voluntary_ctxt_switches:/ { ctx += $2 }
        END { printf "%.0f %d %d %d\n", (t1 + t2) / 2, ctx, ticks, threads }'
}

# task_count PID: the threads of PID (0 once it is gone).
task_count() {
    local tasks=(/proc/"$1"/task/[0-9]*)
    [[ -e ${tasks[0]} ]] || { echo 0; return 0; }
    echo "${#tasks[@]}"
}

# child_of PID: the first child of PID (the load under `timeout`), waiting
# 5 s at most for it to appear.
child_of() {
    local i c
    for ((i = 0; i < 500; i++)); do
        c=$(ps -o pid= --ppid "$1" 2>/dev/null | head -n 1 | tr -d ' ' || true)
        [[ -n $c ]] && { echo "$c"; return 0; }
        sleep 0.01
    done
    return 1
}

# wait_load_started PID BASE: waits (60 s at most) until the load process
# PID runs more than BASE threads. pingpong and idle_client connect every
# connection first (1,000 connects can take seconds when a listen backlog
# overflows and SYNs are retried), and pingpong waits for one answer on
# each (a thread per connection accepts slowly beside a thousand busy
# threads: it took 6 s to serve all of 1,000 clients of a 10 ms handler),
# then they start their warm-up clock and spawn their client threads at
# once: the new threads mark the start of the warm-up. Returns 1 if the
# load exited or the time ran out.
wait_load_started() {
    local pid=$1 base=$2 i n
    for ((i = 0; i < 3000; i++)); do
        n=$(task_count "$pid")
        ((n > base)) && return 0
        ((n > 0)) || return 1
        sleep 0.02
    done
    return 1
}

# load_started_at PID: when (now_us clock) the newest thread of PID other
# than its main one started, from the kernel's record (field 22 of its
# stat, clock ticks since boot, against /proc/uptime): exact however late
# this script, starved of CPU by the load and a hog, noticed the thread.
load_started_at() {
    local pid=$1 task tid stat fields newest=-1 up now
    for task in /proc/"$pid"/task/[0-9]*; do
        tid=${task##*/}
        [[ $tid != "$pid" ]] || continue
        read -r stat <"$task/stat" 2>/dev/null || continue
        read -r -a fields <<<"${stat##*) }"
        ((fields[19] > newest)) && newest=${fields[19]}
    done
    ((newest >= 0)) || return 1
    read -r up _ </proc/uptime
    now=$(now_us)
    echo $((now - (${up%.*} * 1000000 + 10#${up#*.} * 10000 - newest * 1000000 / CLK_TCK)))
}

# sleep_until US: sleeps until the clock reads US (now_us), if it is ahead.
sleep_until() {
    local d=$(($1 - $(now_us)))
    if ((d > 0)); then sleep "$((d / 1000000)).$(printf '%06d' $((d % 1000000)))"; fi
}

# sample_window NAME PID LOAD_PID LOAD_BASE SECS: samples the server PID
# inside the load's measured window, into BEFORE and AFTER. The load's
# window starts when its warm-up ends (see wait_load_started; dated by
# load_started_at) and lasts SECS; the samples are taken at fixed deadlines
# from the start of the warm-up (not after relative sleeps, whose overheads
# add up), inward from each end by a margin: a tenth of SECS (0.15 s at
# least) at the start, twice that at the end, where the sampling itself (a
# thousand status files on a busy machine) could otherwise push the sample
# past the load's end.
# The rate times the sampled window's length gives its requests. A window
# that still overran the load (its client threads, which end with its
# measure, gone by the end of the last sample) is noted. (The server's
# connection count is no test: a server busy with 1,000 threads may still
# be accepting connections that wait in its listen backlog.)
BEFORE="" AFTER=""
sample_window() {
    local name=$1 pid=$2 load=$3 base=$4 secs=$5 t0 margin
    wait_load_started "$load" "$base" ||
        note "$name: the load did not start its clients within 60 s (or it exited): its costs may be off"
    t0=$(load_started_at "$load") || t0=$(now_us)
    margin=$(awk -v s="$secs" 'BEGIN { m = s / 10; if (m < 0.15) m = 0.15; printf "%d", m * 1e6 }')
    sleep_until $((t0 + WARMUP_MS * 1000 + margin))
    BEFORE=$(sample "$pid")
    sleep_until $((t0 + WARMUP_MS * 1000 + secs * 1000000 - 2 * margin))
    AFTER=$(sample "$pid")
    if (($(task_count "$load") <= base)); then
        note "$name: the sampled window ended $(((${AFTER%% *} - t0) / 1000)) ms after the warm-up started, after the load's measure: its costs may be off"
    fi
}

# costs BEFORE AFTER RATE COUNT: "CS_PER_REQ CPU_US_PER_REQ THREADS" from two
# samples; requests are COUNT if positive, else RATE x the window's length.
costs() {
    awk -v a="$1" -v b="$2" -v rate="$3" -v count="$4" -v hz="$CLK_TCK" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        n = (count + 0 > 0) ? count + 0 : rate * (y[1] - x[1]) / 1e6
        if (n <= 0) { print "- - " y[4]; exit }
        printf "%.3f %.2f %d\n", (y[2] - x[2]) / n, (y[3] - x[3]) * 1e6 / hz / n, y[4]
    }'
}

# ---------------------------------------------------------------------------
# Results: one line per measurement in $RESULTS:
#   section, condition, workload, role (a: atoll, p: peer), server, rate/s,
#   p50 us, p99 us, context switches per request, CPU us per request,
#   server threads. A rate of "skipped" marks a row that could not run.

RESULTS=$TMP/results.tsv
RSS_FILE=$TMP/rss.tsv
: >"$RESULTS"
: >"$RSS_FILE"
NOTES=()
COMMANDS=()
note() { NOTES+=("$*"); say "note: $*"; }
# note_once TEXT: a note that repeated rows would otherwise say again.
note_once() { [[ " ${NOTES[*]-} " == *"$*"* ]] || note "$*"; }
command_once() { [[ " ${COMMANDS[*]-} " == *"$*"* ]] || COMMANDS+=("$*"); }

# record SECTION WORKLOAD ROLE SERVER: the current window (W_RATE, W_P50,
# W_P99, W_COSTS) under the current condition.
record() {
    local cs cpu threads
    read -r cs cpu threads <<<"$W_COSTS"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$SCHED" "$2" "$3" "$4" \
        "$W_RATE" "$W_P50" "$W_P99" "$cs" "$cpu" "$threads" >>"$RESULTS"
}

record_skipped() {
    printf '%s\t%s\t%s\t%s\t%s\tskipped\t-\t-\t-\t-\t-\n' "$1" "$SCHED" "$2" "$3" "$4" >>"$RESULTS"
}

# order REP A B...: the servers in the order of repetition REP (the list
# rotated by REP - 1, so each goes first in turn).
order() {
    local rep=$1
    shift
    local n=$# i
    local all=("$@")
    for ((i = 0; i < n; i++)); do
        printf '%s\n' "${all[(i + rep - 1) % n]}"
    done
}

# logname TEXT...: a log file name from words.
logname() { local IFS=-; echo "$*" | tr -c 'A-Za-z0-9_.\n-' '_'; }

# ---------------------------------------------------------------------------
# Build

# Anything else running shares the cores with the benchmark: say so.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

EXAMPLES=(echo idle_client peer_hyper_hello mini_redis http_hello peer_echo pingpong tls_echo udp_echo metrics)
BUILT=()
# The feature only adds a module to the library: the other examples run the
# same code with it, and examples/metrics needs it.
BUILD_FEATURES=(--features metrics)
say "building release binaries"
if timeout 3600 cargo build --release --examples "${BUILD_FEATURES[@]}"; then
    for ex in "${EXAMPLES[@]}"; do
        if [[ -f examples/$ex.rs ]]; then BUILT+=("$ex"); fi
    done
else
    note "cargo build --release --examples --features metrics failed; building the benchmark's examples one by one"
    for ex in "${EXAMPLES[@]}"; do
        [[ -f examples/$ex.rs ]] || continue
        if timeout 3600 cargo build --release --example "$ex" "${BUILD_FEATURES[@]}"; then
            BUILT+=("$ex")
        else
            note "examples/$ex.rs does not build"
        fi
    done
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[[ -n $TARGET_DIR ]] || TARGET_DIR=$ROOT/target
# The servers run from copies, so that a build during the run (of an edited
# example, say) cannot swap a binary under the benchmark.
BIN=$TMP/bin
mkdir -p "$BIN"
for ex in "${BUILT[@]}"; do
    cp "$TARGET_DIR/release/examples/$ex" "$BIN/$ex"
done
have_example() { [[ -x $BIN/$1 ]]; }

# ---------------------------------------------------------------------------
# Servers. start_server NAME CMD... starts CMD under the current condition
# and waits for `listening on ADDR`; sets SERVER_PID and SERVER_PORT, or
# returns 1 if the server exited first (its stderr is in $LOGS/NAME.err).

SERVER_PID=""
SERVER_PORT=""
PINGPONG_FLAGS=()
TLS_CERT="" TLS_KEY=""

start_server() {
    local name=$1
    shift
    start_bg "$name" "${SERVER_WRAP[@]}" "$@"
    SERVER_PID=$LAST_PID
    if ! wait_listening "$name" "$SERVER_PID"; then
        stop_started "$SERVER_PID"
        return 1
    fi
    SERVER_PORT=${LAST_ADDR##*:}
    verify_condition "$SERVER_PID" "$name"
}

server_failed() { die "$1 exited: $(tail -n 5 "$LOGS/$1.err")"; }

# echo_cmd KIND DELAY_MS: sets SERVER_CMD to the echo server KIND (atoll,
# tokio, std), blocking DELAY_MS before each echo if not 0.
echo_cmd() {
    local delay=()
    if (($2 > 0)); then delay=(--delay-ms "$2"); fi
    case $1 in
        atoll) SERVER_CMD=("$BIN/echo" --port 0 --read-timeout-ms 0 --num-connections 0 "${ATOLL_FLAGS[@]}" "${delay[@]}") ;;
        baseline) SERVER_CMD=("$BASELINE/echo" --port 0 --read-timeout-ms 0 --num-connections 0 "${ATOLL_FLAGS[@]}" "${delay[@]}") ;;
        tokio) SERVER_CMD=("$BIN/peer_echo" --kind tokio --port 0 --workers "$PEER_WORKERS" "${delay[@]}") ;;
        std) SERVER_CMD=("$BIN/peer_echo" --kind std --port 0 "${delay[@]}") ;;
        atoll-tls) SERVER_CMD=("$BIN/tls_echo" --port 0 --cert "$TLS_CERT" --key "$TLS_KEY") ;;
        tokio-tls) SERVER_CMD=("$BIN/peer_echo" --kind tokio-tls --port 0 --workers "$PEER_WORKERS" --cert "$TLS_CERT" --key "$TLS_KEY") ;;
        atoll-udp) SERVER_CMD=("$BIN/udp_echo" --port 0 --per-peer) ;;
        # The metrics part: the same echo with and without a recorder, both
        # with the library's defaults (examples/metrics takes no others).
        atoll-metrics) SERVER_CMD=("$BIN/metrics" --port 0 --metrics-port 0 "${ATOLL_FLAGS[@]}") ;;
        atoll-plain) SERVER_CMD=("$BIN/echo" --port 0 "${ATOLL_FLAGS[@]}") ;;
        tokio-udp) SERVER_CMD=("$BIN/peer_echo" --kind tokio-udp --port 0 --workers "$PEER_WORKERS") ;;
    esac
    local shown="${SERVER_CMD[*]}"
    if (($2 > 0)); then shown="${shown% "$2"} MS  # MS = ${BLOCK_DELAYS[*]}"; fi
    command_once "$shown"
}

# start_redis NAME: redis-server on a free port, answering PING.
start_redis() {
    local name=$1 attempt port i
    for attempt in 1 2 3; do
        port=$(free_port)
        start_bg "$name" "${SERVER_WRAP[@]}" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 \
            --save '' --appendonly no --daemonize no
        SERVER_PID=$LAST_PID
        for ((i = 0; i < 300; i++)); do
            if [[ $(timeout 2 "$REDIS_CLI" -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; then
                SERVER_PORT=$port
                verify_condition "$SERVER_PID" "$name"
                return 0
            fi
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        stop_started "$SERVER_PID"
        say "redis-server did not start on port $port (attempt $attempt)"
    done
    die "redis-server did not start: $(tail -n 5 "$LOGS/$name.out")"
}

# start_nginx NAME: nginx (master and $PEER_WORKERS workers) on a free port,
# answering Hello, World!
start_nginx() {
    local name=$1 dir=$TMP/nginx attempt port i
    mkdir -p "$dir"
    for attempt in 1 2 3; do
        port=$(free_port)
        cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $PEER_WORKERS;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$port;
        default_type text/plain;
        location / { return 200 'Hello, World!'; }
    }
}
EOF
        start_bg "$name" "${SERVER_WRAP[@]}" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
        SERVER_PID=$LAST_PID
        for ((i = 0; i < 300; i++)); do
            if [[ $(http_get "$port") == *"Hello, World!" ]]; then
                SERVER_PORT=$port
                cp "$dir/nginx.conf" "$LOGS/nginx.conf"
                verify_condition "$SERVER_PID" "$name"
                return 0
            fi
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        stop_started "$SERVER_PID"
        say "nginx did not start on port $port (attempt $attempt): $(tail -n 3 "$dir/error.log" 2>/dev/null)"
    done
    die "nginx did not start"
}

# ---------------------------------------------------------------------------
# Loads. Each runs one measured window against the server SERVER_PID and
# sets W_RATE, W_P50, W_P99 (microseconds) and W_COSTS (see costs).

W_RATE="" W_P50="" W_P99="" W_COSTS=""

# kv FILE KEY: the value of KEY=VALUE in the last line of FILE holding it.
kv() { awk -v k="$2" '{ for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) v = substr($i, length(k) + 2) } END { print v }' "$1"; }

# pingpong_window NAME ADDR CONNS SECS: pingpong against ADDR; the server
# is sampled when the warm-up ends and when the measure ends. Returns 1
# (with a note) if the load or the server failed.
pingpong_window() {
    local name=$1 addr=$2 conns=$3 secs=$4 lp rc=0 errors
    hog_start "$secs"
    start_bg "$name.load" "${LOAD_WRAP[@]}" timeout $((secs + 120)) \
        "$BIN/pingpong" --addr "$addr" --conns "$conns" --secs "$secs" --warmup-ms "$WARMUP_MS" \
        --threads "$LOAD_THREADS" "${PINGPONG_FLAGS[@]}"
    lp=$LAST_PID
    # $lp is timeout's PID; pingpong is its child and starts with 1 thread.
    sample_window "$name" "$SERVER_PID" "$(child_of "$lp" || echo "$lp")" 1 "$secs"
    wait "$lp" || rc=$?
    stop_started "$lp"
    hog_stop
    if ((rc != 0)) || ! kill -0 "$SERVER_PID" 2>/dev/null; then
        note "$name: pingpong exited with status $rc$(kill -0 "$SERVER_PID" 2>/dev/null || echo ', the server died'): $(tail -n 2 "$LOGS/$name.load.err" "$LOGS/$name.err" 2>/dev/null | tr '\n' ' ')"
        return 1
    fi
    W_RATE=$(kv "$LOGS/$name.load.out" rate)
    W_P50=$(kv "$LOGS/$name.load.out" p50_us)
    W_P99=$(kv "$LOGS/$name.load.out" p99_us)
    errors=$(kv "$LOGS/$name.load.out" errors)
    [[ -n $W_RATE ]] || { note "$name: no result line from pingpong"; return 1; }
    [[ $errors == 0 ]] || note "$name: $errors connections failed"
    # A server that leaves some connections waiting while it answers the
    # others quickly shows here, not in the rate or the latencies.
    [[ $(kv "$LOGS/$name.load.out" fewest) != 0 ]] || note "$name: at least one connection completed no round trip in the measured window"
    W_COSTS=$(costs "$BEFORE" "$AFTER" "$W_RATE" 0)
    say "    rate=$W_RATE p50_us=$W_P50 p99_us=$W_P99 (cs/req cpu_us/req threads: $W_COSTS)"
}

# wrk_window NAME ARGS...: one wrk run (with --latency) against the server;
# the server is sampled at the start and end of wrk's run, and the costs
# divided by the requests wrk counted.
wrk_window() {
    local name=$1 before after out count
    shift
    out=$LOGS/$name.wrk.txt
    before=$(sample "$SERVER_PID")
    timeout $((WRK_SECS + SBF_SECS + 60)) "${LOAD_WRAP[@]}" "$WRK" "$@" >"$out" 2>&1 ||
        note "$name: wrk failed or timed out"
    after=$(sample "$SERVER_PID")
    read -r W_RATE W_P50 W_P99 count < <(awk -v srv="$name" '
        function us(v) {
            if (v ~ /us$/) return v + 0
            if (v ~ /ms$/) return v * 1000
            if (v ~ /s$/) return v * 1000000
            return v + 0
        }
        $1 == "50%" { p50 = us($2) }
        $1 == "99%" { p99 = us($2) }
        $2 == "requests" && $3 == "in" { count = $1 }
        $1 == "Requests/sec:" { rate = $2 }
        /Socket errors|Non-2xx/ { print srv ": " $0 > "/dev/stderr" }
        END { printf "%s %.1f %.1f %s\n", (rate == "" ? "-" : rate), p50, p99, count + 0 }
    ' "$out" 2>>"$TMP/wrk-warnings")
    [[ $W_RATE != - ]] || { note "$name: no result from wrk"; return 1; }
    W_COSTS=$(costs "$before" "$after" "$W_RATE" "$count")
    say "    rate=$W_RATE p50_us=$W_P50 p99_us=$W_P99 (cs/req cpu_us/req threads: $W_COSTS)"
}

# ---------------------------------------------------------------------------
# echo: pingpong against atoll's echo, tokio and std, 100 and 1,000 conns

# echo_row SECTION WORKLOAD ROLE SERVER KIND DELAY CONNS REP: starts the echo
# server KIND, runs one pingpong window, records it, stops the server.
echo_row() {
    local section=$1 workload=$2 role=$3 server=$4 kind=$5 delay=$6 conns=$7 rep=$8 name
    name=$(logname "$section" "$SCHED" "$kind" "d$delay" "c$conns" "rep$rep")
    echo_cmd "$kind" "$delay"
    say "$section ($SCHED): rep $rep/$REPS, $server, $conns conns"
    if ! start_server "$name" "${SERVER_CMD[@]}"; then
        if [[ $kind == atoll ]] && grep -q 'unknown option' "$LOGS/$name.err"; then
            # --delay-ms is new: an older echo refuses it.
            note_once "$section: examples/echo has no --delay-ms yet ($(head -n 1 "$LOGS/$name.err")): its rows are skipped"
            record_skipped "$section" "$workload" "$role" "$server"
            return 0
        fi
        server_failed "$name"
    fi
    PINGPONG_FLAGS=()
    case $kind in
        *-tls) PINGPONG_FLAGS=(--tls) ;;
        *-udp) PINGPONG_FLAGS=(--udp) ;;
    esac
    if pingpong_window "$name" "$LAST_ADDR" "$conns" "$ECHO_SECS"; then
        record "$section" "$workload" "$role" "$server"
    fi
    stop_started "$SERVER_PID"
}

# make_tls_cert: a self-signed P-256 certificate for the TLS echo rows.
make_tls_cert() {
    TLS_CERT=$TMP/cert.pem TLS_KEY=$TMP/key.pem
    [[ -s $TLS_CERT ]] && return 0
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj /CN=localhost -days 2 -keyout "$TLS_KEY" -out "$TLS_CERT" 2>"$LOGS/openssl.err"
}

echo_part() {
    if ! have_example echo || ! have_example peer_echo || ! have_example pingpong; then
        note_once "echo: examples/echo, peer_echo or pingpong is missing or does not build: part skipped"
        return 0
    fi
    command_once "$BIN/pingpong --addr ADDR --conns N --secs $ECHO_SECS --warmup-ms $WARMUP_MS --threads T  # N = ${ECHO_CONNS[*]}; $LOAD_T"
    local rep conns kind
    for ((rep = 1; rep <= REPS; rep++)); do
        for conns in "${ECHO_CONNS[@]}"; do
            while read -r kind; do
                case $kind in
                    atoll) echo_row echo "echo 64 B, $conns conns" a echo atoll 0 "$conns" "$rep" ;;
                    tokio) echo_row echo "echo 64 B, $conns conns" p "tokio $PEER_WORKERS workers" tokio 0 "$conns" "$rep" ;;
                    std) echo_row echo "echo 64 B, $conns conns" p "std thread/conn" std 0 "$conns" "$rep" ;;
                    baseline) echo_row echo "echo 64 B, $conns conns" p "atoll baseline" baseline 0 "$conns" "$rep" ;;
                esac
            done < <(order "$rep" atoll tokio std ${BASELINE:+baseline})
        done
        # TLS and UDP echo, 100 clients: tls_echo and udp_echo (one
        # session per client socket) against tokio-native-tls and tokio
        # UDP sockets.
        if have_example tls_echo && make_tls_cert; then
            while read -r kind; do
                case $kind in
                    atoll-tls) echo_row echo "TLS echo 64 B, 100 conns" a tls_echo atoll-tls 0 100 "$rep" ;;
                    tokio-tls) echo_row echo "TLS echo 64 B, 100 conns" p "tokio-native-tls $PEER_WORKERS workers" tokio-tls 0 100 "$rep" ;;
                esac
            done < <(order "$rep" atoll-tls tokio-tls)
        fi
        if have_example udp_echo; then
            while read -r kind; do
                case $kind in
                    atoll-udp) echo_row echo "UDP echo 64 B, 100 sockets" a "udp_echo --per-peer" atoll-udp 0 100 "$rep" ;;
                    tokio-udp) echo_row echo "UDP echo 64 B, 100 sockets" p "tokio UDP $PEER_WORKERS sockets" tokio-udp 0 100 "$rep" ;;
                esac
            done < <(order "$rep" atoll-udp tokio-udp)
        fi
    done
}

# ---------------------------------------------------------------------------
# redis: mini_redis vs redis-server

# redis_window NAME ROLE SERVER PIPELINE TESTS: one redis-benchmark run of
# TESTS (ping, set or get) against SERVER_PORT, recorded row by row; the
# server is sampled at the start and end of the run, and the costs divided
# by every request of the run (-n for each test it reports).
redis_window() {
    local name=$1 role=$2 server=$3 pipeline=$4 tests=$5 out before after suffix="" tests_run
    local args=(-h 127.0.0.1 -p "$SERVER_PORT" -t "$tests" -c 50 -n "$REDIS_N" -q --csv)
    if ((pipeline > 1)); then args+=(-P "$pipeline"); suffix=" -P $pipeline"; fi
    out=$LOGS/$name.csv
    hog_start $((REDIS_N / 1000 + 60))
    before=$(sample "$SERVER_PID")
    timeout 900 "${LOAD_WRAP[@]}" "$REDIS_BENCHMARK" "${args[@]}" >"$out" 2>"$out.err" ||
        note "$name: redis-benchmark failed or timed out"
    after=$(sample "$SERVER_PID")
    hog_stop
    tr -d '\r' <"$out" | sed 's/"//g' | awk -F, '$1 != "test" && NF >= 7 && $2 ~ /^[0-9.]+$/' >"$out.rows"
    tests_run=$(wc -l <"$out.rows")
    ((tests_run > 0)) || { note "$name: no result from redis-benchmark"; return 0; }
    W_COSTS=$(costs "$before" "$after" 0 $((tests_run * REDIS_N)))
    local test rate p50 p99
    while IFS=, read -r test rate _ _ p50 _ p99 _; do
        W_RATE=$rate
        W_P50=$(awk -v v="$p50" 'BEGIN { printf "%.1f", v * 1000 }')
        W_P99=$(awk -v v="$p99" 'BEGIN { printf "%.1f", v * 1000 }')
        record redis "redis $test$suffix" "$role" "$server"
        say "    $test$suffix rate=$W_RATE p50_us=$W_P50 p99_us=$W_P99 (cs/req cpu_us/req threads: $W_COSTS)"
    done <"$out.rows"
}

# redis_server_run SERVER REP PIPELINE: starts SERVER, runs the three
# redis-benchmark windows, stops it.
redis_server_run() {
    local server=$1 rep=$2 pipeline=$3 name role tests
    name=$(logname redis "$SCHED" "$server" "P$pipeline" "rep$rep")
    say "redis ($SCHED): rep $rep/$REPS, $server -P $pipeline"
    if [[ $server == mini_redis ]]; then
        start_server "$name" "$BIN/mini_redis" --port 0 "${ATOLL_FLAGS[@]}" || server_failed "$name"
        [[ $(timeout 5 "$REDIS_CLI" -h 127.0.0.1 -p "$SERVER_PORT" set bench:check ok) == OK &&
            $(timeout 5 "$REDIS_CLI" -h 127.0.0.1 -p "$SERVER_PORT" get bench:check) == ok ]] ||
            die "mini_redis does not answer SET/GET through redis-cli"
        role=a
    else
        start_redis "$name"
        role=p
    fi
    for tests in ping set get; do
        redis_window "$name-$tests" "$role" "$server" "$pipeline" "$tests"
    done
    stop_started "$SERVER_PID"
}

redis_part() {
    if ! have_example mini_redis; then
        note_once "redis: examples/mini_redis.rs is missing or does not build: part skipped"
        return 0
    fi
    command_once "$BIN/mini_redis --port 0 ${ATOLL_FLAGS[*]}"
    command_once "redis-server --port PORT --bind 127.0.0.1 --save '' --appendonly no --daemonize no  # $("$REDIS_SERVER" --version | awk '{ sub(/v=/, "", $3); print $3 }')"
    command_once "redis-benchmark -h 127.0.0.1 -p PORT -t TEST -c 50 -n $REDIS_N -q --csv [-P 16]  # TEST = ping, set, get, one run each"
    local rep pipeline server
    for ((rep = 1; rep <= REPS; rep++)); do
        for pipeline in 1 16; do
            while read -r server; do
                redis_server_run "$server" "$rep" "$pipeline"
            done < <(order "$rep" mini_redis redis-server)
        done
    done
}

# ---------------------------------------------------------------------------
# http: http_hello vs nginx vs hyper

# http_row SERVER REP: starts SERVER, one wrk run, recorded, stopped.
http_row() {
    local server=$1 rep=$2 name role
    name=$(logname http "$SCHED" "$server" "rep$rep")
    say "http ($SCHED): rep $rep/$REPS, $server"
    case $server in
        http_hello)
            start_server "$name" "$BIN/http_hello" --port 0 "${ATOLL_FLAGS[@]}" || server_failed "$name"
            role=a
            ;;
        hyper)
            start_server "$name" "$BIN/peer_hyper_hello" --port 0 --workers "$PEER_WORKERS" || server_failed "$name"
            role=p
            ;;
        nginx)
            start_nginx "$name"
            role=p
            ;;
    esac
    [[ $(http_get "$SERVER_PORT") == *"Hello, World!" ]] || die "$server does not answer Hello, World!"
    hog_start "$WRK_SECS"
    if wrk_window "$name" "-t$LOAD_THREADS" -c100 "-d${WRK_SECS}s" --latency "http://127.0.0.1:$SERVER_PORT/"; then
        record http "wrk -t$LOAD_THREADS -c100 -d${WRK_SECS}s" "$role" "$server"
    fi
    hog_stop
    stop_started "$SERVER_PID"
}

http_part() {
    if ! have_example http_hello || ! have_example peer_hyper_hello; then
        note_once "http: examples/http_hello.rs or peer_hyper_hello.rs is missing or does not build: part skipped"
        return 0
    fi
    command_once "$BIN/http_hello --port 0 ${ATOLL_FLAGS[*]}"
    command_once "$BIN/peer_hyper_hello --port 0 --workers $PEER_WORKERS"
    command_once "nginx -p TMP -c TMP/nginx.conf -e TMP/error.log  # $("$NGINX" -v 2>&1 | sed 's/.*: //'); config: worker_processes $PEER_WORKERS, access_log off, keepalive_requests 100000000, return 200 'Hello, World!'"
    command_once "wrk -tT -c100 -d${WRK_SECS}s --latency http://127.0.0.1:PORT/  # $LOAD_T"
    local rep server
    for ((rep = 1; rep <= REPS; rep++)); do
        while read -r server; do
            http_row "$server" "$rep"
        done < <(order "$rep" http_hello nginx hyper)
    done
}

# ---------------------------------------------------------------------------
# idle: RSS per idle connection; active echo beside 18k idle connections

IDLE_OUT=""
IDLE_LINES=0
IDLE_PID=""
IDLE_ANSWER=""

# idle_send COMMAND / idle_wait TIMEOUT: a command to idle_client, and its
# one-line answer (IDLE_ANSWER).
idle_send() { printf '%s\n' "$1" >&"$CTL"; }

idle_wait() {
    local limit=$1 i n
    for ((i = 0; i < limit * 10; i++)); do
        n=$(wc -l <"$IDLE_OUT")
        if ((n > IDLE_LINES)); then
            IDLE_LINES=$((IDLE_LINES + 1))
            IDLE_ANSWER=$(sed -n "${IDLE_LINES}p" "$IDLE_OUT")
            say "idle: $IDLE_ANSWER"
            return 0
        fi
        kill -0 "$IDLE_PID" 2>/dev/null || die "idle_client exited: $(tail -n 5 "${IDLE_OUT%.out}.err")"
        sleep 0.1
    done
    die "idle_client did not answer within $limit s"
}

idle_cmd() { idle_send "$1"; idle_wait "$2"; }

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# active_run ROLE NAME: one active measure, recorded; the server is sampled
# inside idle_client's measure (500 ms of warm-up, like pingpong's).
active_run() {
    local errors base
    hog_start "$ACTIVE_SECS"
    base=$(task_count "$IDLE_PID")
    idle_send "active $ACTIVE_CONNS $ACTIVE_SECS"
    sample_window "idle ($SCHED) $2" "$SERVER_PID" "$IDLE_PID" "$base" "$ACTIVE_SECS"
    idle_wait $((ACTIVE_SECS + 60))
    hog_stop
    W_RATE=$(sed -n 's/.* rt\/s=\([0-9.]*\).*/\1/p' <<<"$IDLE_ANSWER")
    W_P50=$(sed -n 's/.* p50_us=\([0-9.]*\).*/\1/p' <<<"$IDLE_ANSWER")
    W_P99=$(sed -n 's/.* p99_us=\([0-9.]*\).*/\1/p' <<<"$IDLE_ANSWER")
    errors=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<<"$IDLE_ANSWER")
    [[ -n $W_RATE ]] || die "idle_client: cannot read '$IDLE_ANSWER'"
    [[ $errors == 0 ]] || note "idle ($SCHED): $IDLE_ANSWER"
    W_COSTS=$(costs "$BEFORE" "$AFTER" "$W_RATE" 0)
    record idle "echo 64 B, $ACTIVE_CONNS active conns" "$1" "$2"
}

RSS_DONE=0
idle_part() {
    if ! have_example echo || ! have_example idle_client; then
        note_once "idle: examples/echo or idle_client is missing or does not build: part skipped"
        return 0
    fi
    say "idle ($SCHED): echo server, idle connections up to $IDLE_MAX (descriptor limit $NOFILE)"
    local name echo_pid level rep i
    name=$(logname idle "$SCHED" echo)
    echo_cmd atoll 0
    start_server "$name" "${SERVER_CMD[@]}" || server_failed "$name"
    echo_pid=$SERVER_PID
    # Commands go to idle_client through a FIFO; closing it makes the client
    # exit. The client opens it before the writer is opened here, so it does
    # not inherit the writing end.
    local fifo=$TMP/$name.ctl
    mkfifo "$fifo"
    IDLE_OUT=$LOGS/$name.idle_client.out
    IDLE_LINES=0
    (exec "${LOAD_WRAP[@]}" "$BIN/idle_client" --addr "$LAST_ADDR" --clients "$LOAD_THREADS" <"$fifo" \
        >"$IDLE_OUT" 2>"${IDLE_OUT%.out}.err") &
    IDLE_PID=$!
    PIDS+=("$IDLE_PID")
    exec {CTL}>"$fifo"
    command_once "$BIN/idle_client --addr ADDR --clients T ($LOAD_T), then on its stdin: active $ACTIVE_CONNS $ACTIVE_SECS / idle N (N = ${IDLE_LEVELS[*]}); VmRSS from /proc/PID/status"
    local without="echo, no idle" with="echo, $IDLE_MAX idle"
    # The first active run also warms the server up before the baseline RSS.
    active_run p "$without"
    if ((!RSS_DONE)); then
        # Memory does not depend on scheduling: the levels are measured under
        # the first condition only.
        sleep 0.5
        printf '0\t%s\n' "$(rss_kb "$echo_pid")" >>"$RSS_FILE"
        for level in "${IDLE_LEVELS[@]}"; do
            idle_cmd "idle $level" 300
            sleep 0.5
            printf '%s\t%s\n' "$level" "$(rss_kb "$echo_pid")" >>"$RSS_FILE"
        done
        RSS_DONE=1
        RSS_SCHED=$SCHED
    else
        idle_cmd "idle $IDLE_MAX" 300
    fi
    active_run a "$with"
    for ((rep = 2; rep <= REPS; rep++)); do
        idle_cmd "idle 0" 300
        active_run p "$without"
        idle_cmd "idle $IDLE_MAX" 300
        active_run a "$with"
    done
    exec {CTL}>&-
    CTL=""
    for ((i = 0; i < 300; i++)); do kill -0 "$IDLE_PID" 2>/dev/null || break; sleep 0.1; done
    stop_started "$IDLE_PID"
    stop_started "$echo_pid"
}

# ---------------------------------------------------------------------------
# blocking: handlers that block, and a slow path beside a fast one

SLEEP_ROUTE=""  # ok, or why GET /sleep/MS cannot be measured

# probe_sleep_route: whether http_hello sleeps on GET /sleep/SLOW_MS (the
# route is new: an older http_hello answers 404, or Hello at once).
probe_sleep_route() {
    local t0 t1 response status ms
    t0=$(now_us)
    response=$(http_get "$SERVER_PORT" "/sleep/$SLOW_MS")
    t1=$(now_us)
    ms=$(((t1 - t0) / 1000))
    status=$(head -n 1 <<<"$response" | awk '{ print $2 }')
    if [[ $status == 404 ]]; then
        SLEEP_ROUTE="http_hello answers GET /sleep/$SLOW_MS with 404"
    elif [[ $status != 200 ]]; then
        SLEEP_ROUTE="http_hello answers GET /sleep/$SLOW_MS with '$(head -n 1 <<<"$response" | tr -d '\r')'"
    elif ((ms < SLOW_MS * 9 / 10)); then
        SLEEP_ROUTE="http_hello answers GET /sleep/$SLOW_MS in $ms ms: it does not sleep"
    else
        SLEEP_ROUTE=ok
    fi
}

# sbf_row VARIANT REP: slow-beside-fast, the fast wrk alone or beside the
# slow one, against a fresh http_hello.
sbf_row() {
    local variant=$1 rep=$2 name workload="slow beside fast: wrk -t1 -c100 -d${SBF_SECS}s GET /" slow_pid="" rc=0
    name=$(logname blocking "$SCHED" sbf "$variant" "rep$rep")
    say "blocking ($SCHED): rep $rep/$REPS, http_hello fast path $variant"
    start_server "$name" "$BIN/http_hello" --port 0 "${ATOLL_FLAGS[@]}" || server_failed "$name"
    [[ -n $SLEEP_ROUTE ]] || probe_sleep_route
    if [[ $SLEEP_ROUTE != ok ]]; then
        note_once "blocking: slow-beside-fast skipped: $SLEEP_ROUTE"
        [[ $variant == alone ]] && record_skipped blocking "$workload" a "http_hello + $SLOW_CLIENTS slow"
        stop_started "$SERVER_PID"
        return 0
    fi
    hog_start $((SBF_SECS + 2))
    if [[ $variant == beside ]]; then
        # The slow clients start first and outlast the fast ones, so that the
        # whole fast window runs beside them.
        start_bg "$name.slow" "${LOAD_WRAP[@]}" timeout $((SBF_SECS + 60)) "$WRK" -t1 "-c$SLOW_CLIENTS" \
            "-d$((SBF_SECS + 2))s" "http://127.0.0.1:$SERVER_PORT/sleep/$SLOW_MS"
        slow_pid=$LAST_PID
        sleep 0.5
    fi
    if wrk_window "$name" -t1 -c100 "-d${SBF_SECS}s" --latency "http://127.0.0.1:$SERVER_PORT/"; then
        if [[ $variant == beside ]]; then
            record blocking "$workload" a "http_hello + $SLOW_CLIENTS slow"
        else
            record blocking "$workload" p "http_hello alone"
        fi
    fi
    if [[ -n $slow_pid ]]; then
        wait "$slow_pid" || rc=$?
        stop_started "$slow_pid"
        ((rc == 0)) || note "$name: the slow wrk exited with status $rc"
        say "    slow clients: $(grep -E '^Requests/sec' "$LOGS/$name.slow.out" || echo 'no result')"
    fi
    hog_stop
    stop_started "$SERVER_PID"
}

blocking_part() {
    if ! have_example echo || ! have_example peer_echo || ! have_example pingpong; then
        note_once "blocking: examples/echo, peer_echo or pingpong is missing or does not build: echo rows skipped"
    else
        command_once "$BIN/pingpong --addr ADDR --conns N --secs $ECHO_SECS --warmup-ms $WARMUP_MS --threads T  # N = ${BLOCK_CLIENTS[*]}; $LOAD_T"
        local rep ms conns kind workload
        for ((rep = 1; rep <= REPS; rep++)); do
            for ms in "${BLOCK_DELAYS[@]}"; do
                for conns in "${BLOCK_CLIENTS[@]}"; do
                    workload="blocking $ms ms, $conns clients"
                    while read -r kind; do
                        case $kind in
                            atoll) echo_row blocking "$workload" a "echo --delay-ms $ms" atoll "$ms" "$conns" "$rep" ;;
                            std) echo_row blocking "$workload" p "std thread/conn" std "$ms" "$conns" "$rep" ;;
                            tokio) echo_row blocking "$workload" p "tokio spawn_blocking" tokio "$ms" "$conns" "$rep" ;;
                        esac
                    done < <(order "$rep" atoll std tokio)
                done
            done
        done
    fi
    if ! have_example http_hello; then
        note_once "blocking: examples/http_hello.rs is missing or does not build: slow-beside-fast skipped"
        return 0
    fi
    command_once "$BIN/http_hello --port 0 ${ATOLL_FLAGS[*]}"
    command_once "wrk -t1 -c100 -d${SBF_SECS}s --latency http://127.0.0.1:PORT/  # fast, alone and beside: wrk -t1 -c$SLOW_CLIENTS -d$((SBF_SECS + 2))s http://127.0.0.1:PORT/sleep/$SLOW_MS  # slow, started 0.5 s before"
    local variant
    for ((rep = 1; rep <= REPS; rep++)); do
        while read -r variant; do
            sbf_row "$variant" "$rep"
        done < <(order "$rep" alone beside)
    done
}

# ---------------------------------------------------------------------------
# metrics: the echo server with the metrics recorder against without

metrics_part() {
    if ! have_example metrics || ! have_example echo || ! have_example pingpong; then
        note_once "metrics: examples/metrics, echo or pingpong is missing or does not build: part skipped"
        return 0
    fi
    command_once "$BIN/pingpong --addr ADDR --conns $ACTIVE_CONNS --secs $ECHO_SECS --warmup-ms $WARMUP_MS --threads T  # the metrics part; $LOAD_T"
    local rep kind workload="echo 64 B, $ACTIVE_CONNS conns, metrics recorder vs none"
    # Twice the repetitions (echo_row counts them out of REPS too).
    local REPS=$((2 * REPS))
    for ((rep = 1; rep <= REPS; rep++)); do
        while read -r kind; do
            case $kind in
                atoll-metrics) echo_row metrics "$workload" a "metrics (Prometheus recorder)" atoll-metrics 0 "$ACTIVE_CONNS" "$rep" ;;
                atoll-plain) echo_row metrics "$workload" p "echo (no recorder)" atoll-plain 0 "$ACTIVE_CONNS" "$rep" ;;
            esac
        done < <(order "$rep" atoll-metrics atoll-plain)
    done
}

# ---------------------------------------------------------------------------
# The run: every part under every condition.

for cond in "${SCHEDS[@]}"; do
    sched_begin "$cond" || continue
    if part echo; then echo_part; fi
    if part redis; then redis_part; fi
    if part http; then http_part; fi
    if part idle; then idle_part; fi
    if part blocking; then blocking_part; fi
    if part metrics; then metrics_part; fi
    sched_end
done
if [[ -s $TMP/wrk-warnings ]]; then
    while read -r line; do note "$line"; done < <(sort -u "$TMP/wrk-warnings")
fi

# ---------------------------------------------------------------------------
# The tables

# table COND: the medians of the rows measured under COND, atoll beside
# each peer.
table() {
    awk -F'\t' -v cond="$1" '
    function median(s,    n, a, i, j, t) {
        n = split(s, a, " ")
        for (i = 2; i <= n; i++) {
            t = a[i] + 0
            for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
            a[j + 1] = t
        }
        if (n % 2) return a[(n + 1) / 2]
        return (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function lat(v) { return v >= 100 ? sprintf("%.0f", v) : sprintf("%.1f", v) }
    # cells K: rate, p50, p99, switches, CPU and threads of server key K.
    function cells(k) {
        if (k == "" || skipped[k]) return "skipped | - | - | - | - | -"
        return sprintf("%.0f | %s | %s | %s | %s | %s", median(rate[k]), lat(median(p50[k])), \
            lat(median(p99[k])), costv(cs[k], "%.2f"), costv(cpu[k], "%.1f"), costv(thr[k], "%.0f"))
    }
    function costv(s, f) { return s ~ /[0-9]/ ? sprintf(f, median(s)) : "-" }
    function ratio(x, y) { return (x != "" && y != "" && y + 0 > 0) ? sprintf("%.2fx", x / y) : "-" }
    # spread KA KP: the lowest and highest of the per-repetition rate
    # ratios, each repetition of atoll over the same repetition of the
    # peer (measured one after the other, in alternating order).
    function spread(ka, kp,    na, np, a, b, i, r, lo, hi) {
        if (ka == "" || skipped[ka] || skipped[kp]) return "-"
        na = split(rate[ka], a, " "); np = split(rate[kp], b, " ")
        if (np < na) na = np
        for (i = 1; i <= na; i++) {
            if (b[i] + 0 <= 0) continue
            r = a[i] / b[i]
            if (lo == "" || r < lo) lo = r
            if (hi == "" || r > hi) hi = r
        }
        return lo == "" ? "-" : sprintf("%.2f-%.2f", lo, hi)
    }
    $2 == cond {
        w = $3
        if (!(w in seen)) { seen[w] = 1; order[++nw] = w }
        k = w SUBSEP $5
        if (!(k in known)) {
            known[k] = 1
            if ($4 == "a") atoll[w] = $5
            else { np[w]++; peer[w, np[w]] = $5 }
        }
        if ($6 == "skipped") { skipped[k] = 1; next }
        rate[k] = rate[k] " " $6; p50[k] = p50[k] " " $7; p99[k] = p99[k] " " $8
        if ($9 != "-") { cs[k] = cs[k] " " $9; cpu[k] = cpu[k] " " $10; thr[k] = thr[k] " " $11 }
    }
    END {
        print "| workload | atoll | rate/s | p50 us | p99 us | cs/req | CPU us/req | threads | peer | rate/s | p50 us | p99 us | cs/req | CPU us/req | threads | rate atoll/peer | per repetition | p99 atoll/peer |"
        print "|---|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        for (i = 1; i <= nw; i++) {
            w = order[i]; a = atoll[w]; ka = (a == "") ? "" : w SUBSEP a
            ar = ""; a99 = ""
            if (ka != "" && !skipped[ka]) { ar = median(rate[ka]); a99 = median(p99[ka]) }
            if (np[w] == 0) {
                printf "| %s | %s | %s | - | - | - | - | - | - | - | - | - | - |\n", w, a, cells(ka)
                continue
            }
            for (j = 1; j <= np[w]; j++) {
                p = peer[w, j]; kp = w SUBSEP p
                pr = ""; p99v = ""
                if (!skipped[kp]) { pr = median(rate[kp]); p99v = median(p99[kp]) }
                printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", w, (a == "" ? "-" : a), \
                    (a == "" ? "- | - | - | - | - | -" : cells(ka)), p, cells(kp), ratio(ar, pr), spread(ka, kp), \
                    ratio(a99, p99v)
            }
        }
    }' "$RESULTS"
}

TABLES=""
for cond in "${RAN_SCHEDS[@]}"; do
    TABLES+="### $cond"$'\n\n'"$(sched_describe "$cond")."$'\n\n'"$(table "$cond")"$'\n\n'
done

RSS_TABLE=""
LINEAR=""
if [[ -s $RSS_FILE ]]; then
    RSS_TABLE=$(awk -F'\t' '
        NR == 1 { base = $2; print "| idle conns | server VmRSS | over baseline | per connection | per connection since previous level |"; print "|--:|--:|--:|--:|--:|"; printf "| 0 | %.1f MiB | | | |\n", $2 / 1024; pn = 0; pr = $2; next }
        {
            per = ($2 - base) * 1024 / $1
            marg = ($2 - pr) * 1024 / ($1 - pn)
            printf "| %d | %.1f MiB | %.1f MiB | %.0f B | %.0f B |\n", $1, $2 / 1024, ($2 - base) / 1024, per, marg
            pn = $1; pr = $2
        }' "$RSS_FILE")
    LINEAR=$(awk -F'\t' '
        NR == 1 { base = $2; pn = 0; pr = $2; next }
        { m[++n] = ($2 - pr) * 1024 / ($1 - pn); pn = $1; pr = $2; last = $1; lrss = $2 }
        END {
            overall = (lrss - base) * 1024 / last
            lo = m[1]; hi = m[1]
            for (i = 2; i <= n; i++) { if (m[i] < lo) lo = m[i]; if (m[i] > hi) hi = m[i] }
            verdict = (lo >= 0.67 * overall && hi <= 1.5 * overall) ? "linear" : "not linear"
            printf "%s: %.0f B per idle connection at %d; the cost of each step between levels ranges %.0f to %.0f B (linear: every step within 0.67 to 1.5 times the overall figure)", verdict, overall, last, lo, hi
        }' "$RSS_FILE")
fi

DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
MEM=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || true)
AUTOGROUP=$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo unknown)
MACHINE="$CORES cores (nproc) shared by the clients and the servers, ${CPU:-unknown CPU}, ${MEM:-unknown memory}, Linux $(uname -r), sched_autogroup_enabled=$AUTOGROUP"
version_of() { awk -v n="$1" '$0 == "name = \"" n "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock 2>/dev/null; }
PEERS="redis-server $("$REDIS_SERVER" --version | awk '{ sub(/v=/, "", $3); print $3 }'), $("$NGINX" -v 2>&1 | sed 's/.*: //'), $("$WRK" --version 2>&1 | head -n 1 | awk '{ print $1, $2 }'), $("$REDIS_BENCHMARK" --version 2>&1 | head -n 1), tokio $(version_of tokio), hyper $(version_of hyper), hyper-util $(version_of hyper-util)"
if ((${#ATOLL_FLAGS[@]})); then
    ATOLL_SETTINGS="atoll ${ATOLL_FLAGS[*]}"
else
    ATOLL_SETTINGS="atoll with the library's defaults (no --workers, no --acceptors)"
fi
SETTINGS="$REPS repetitions, medians shown; $ATOLL_SETTINGS; tokio and hyper $PEER_WORKERS workers, nginx $PEER_WORKERS worker processes, redis-server its single thread; echo and blocking $ECHO_SECS s per run after $WARMUP_MS ms of warm-up, redis-benchmark -n $REDIS_N, wrk -d${WRK_SECS}s, slow-beside-fast -d${SBF_SECS}s, active echo $ACTIVE_SECS s; conditions: ${RAN_SCHEDS[*]:-none}"

{
    echo
    echo "atoll vs peers, $DATE, $MACHINE"
    echo "medians of $REPS repetitions; rate ratio above 1 and p99 ratio below 1 favour atoll"
    echo
    printf '%s' "$TABLES"
    if [[ -n $RSS_TABLE ]]; then
        echo "$RSS_TABLE"
        echo
        echo "$LINEAR"
    fi
    if ((${#NOTES[@]})); then
        echo
        printf -- '- %s\n' "${NOTES[@]}"
    fi
}

QUICK_FLAG=""
if ((QUICK)); then QUICK_FLAG=" --quick"; fi
mkdir -p "$(dirname "$REPORT")"
{
    echo "# Performance"
    echo
    echo "The latest report of \`bench/run.sh$QUICK_FLAG --parts $PARTS --sched $(IFS=,; echo "${SCHEDS[*]}")\`, written by it: run it again rather than edit this file."
    echo
    echo "- Date: $DATE"
    echo "- Machine: $MACHINE"
    echo "- Load average (1, 5, 15 min) before the build: $LOAD_START; at the end: $LOAD_END (the benchmark itself keeps about 2 busy; more means something else shared the cores)"
    echo "- Peers: $PEERS"
    echo "- Settings: $SETTINGS"
    echo
    echo "Every server is a process of its own, started fresh for each measurement; the load is another process, started from the script's session. \`cargo bench --bench echo\` (server and client in one process) is a micro-benchmark of the library and is not what these figures come from."
    echo
    echo "## Scheduling conditions"
    echo
    for cond in "${SCHEDS[@]}"; do
        if [[ " ${RAN_SCHEDS[*]-} " == *" $cond "* ]]; then
            echo "- \`$cond\`: $(sched_describe "$cond")."
        else
            echo "- \`$cond\`: skipped ($(printf '%s\n' "${NOTES[@]}" | sed -n "s/^condition $cond skipped: //p" | head -n 1))."
        fi
    done
    echo
    echo "## Results"
    echo
    echo "Rates are per second (round trips for echo and blocking, requests for redis and http); latencies in microseconds. The ratios are atoll's figure over the peer's: a rate ratio above 1 and a p99 ratio below 1 favour atoll. \"per repetition\" is the lowest and the highest rate ratio of one repetition of atoll over the same repetition of the peer (the two measured one after the other): how far a single pair may stray from the ratio of the medians beside it. In the idle rows the \"peer\" is the same echo server without the idle connections; in the slow-beside-fast row it is http_hello's fast path without the slow clients, so the rate ratio is the fast path's rate beside the slow clients over its rate alone (target 0.9 or more); in the metrics row the atoll server is examples/metrics (the echo server publishing its metrics to the Prometheus exporter's recorder) and the peer examples/echo without a recorder, both with the library's defaults, so the rate ratio is the rate with the recorder over the rate without (target 0.97 or more) and the metrics rows have twice the repetitions."
    echo
    echo "cs/req: the server's voluntary and involuntary context switches (summed over /proc/PID/task/*/status, and over nginx's worker processes) per request; CPU us/req: its utime + stime (/proc/PID/stat) per request; both over the measured window: for pingpong and idle_client, inside their measure (from the end of the 500 ms warm-up, counted from when the load has connected every connection, had one answer on each (pingpong), and started its client threads, to the end of the measure, moved inward by a tenth of the measure (0.15 s at least) at the start and twice that at the end; requests = rate x the sampled window), for wrk and redis-benchmark (no warm-up flag) their whole run, divided by the requests they count (where the three redis-benchmark runs ping, set, get each get their own window). threads: the server's threads at the end of the window. Threads that exit inside the window take their switches with them, so a server whose threads come and go may be undercounted."
    echo
    printf '%s' "$TABLES"
    if [[ -n $RSS_TABLE ]]; then
        echo "## Idle connections"
        echo
        echo "The echo example's VmRSS (\`/proc/PID/status\`) after a warm-up (one active run), then holding each number of idle connections (condition \`${RSS_SCHED:-}\`); each idle connection made one 1-byte round trip when opened, then stayed silent."
        echo
        echo "$RSS_TABLE"
        echo
        echo "$LINEAR."
        echo
    fi
    if ((${#NOTES[@]})); then
        echo "## Notes"
        echo
        printf -- '- %s\n' "${NOTES[@]}"
        echo
    fi
    echo "## Commands"
    echo
    echo "Binaries are built by \`cargo build --release --examples --features metrics\`; every server listens on 127.0.0.1 and all run on the same cores as their clients. Each server command runs behind its condition's wrapper:"
    echo
    echo '```text'
    echo "same:  SERVER &"
    echo "own:   setsid SERVER &"
    echo "quota: setsid sh -c 'echo \$\$ >/sys/fs/cgroup/cpu/atoll-bench-PID/cgroup.procs && exec \"\$@\"' SERVER &   # cpu.cfs_period_us = cpu.cfs_quota_us = 100000"
    echo "pin:   setsid taskset -c 0 SERVER &   # and every load: taskset -c 1 LOAD"
    echo "hog:   setsid SERVER &   # and while each load runs: setsid timeout -s KILL SECS sh -c 'while :; do :; done' &"
    echo '```'
    echo
    echo '```text'
    printf '%s\n' "${COMMANDS[@]}" | sed "s|$BIN/|target/release/examples/|g; s/  *\$//"
    echo '```'
} >"$REPORT"
say "wrote $REPORT; raw outputs in ${LOGS#"$ROOT"/}"
