#!/usr/bin/env bash
# bench/run.sh: atoll against the servers people use, measured by clients
# nobody here wrote, in one run and one table.
#
#   bench/run.sh            # the full run (about 6 minutes on 2 cores)
#   bench/run.sh --quick    # a short smoke run of every part
#
# Parts, each alternating atoll and its peers within every repetition:
#   echo   cargo bench --bench echo (plaintext): atoll vs tokio vs std
#          thread-per-connection, 64-byte ping-pong at 100 and 1,000 conns
#   redis  redis-benchmark -t ping,set,get -c 50, without and with -P 16:
#          examples/mini_redis vs redis-server
#   http   wrk -t2 -c100 --latency: examples/http_hello vs nginx vs hyper
#          (examples/peer_hyper_hello)
#   idle   examples/echo holding 2k, 5k, 10k, 18k idle connections
#          (examples/idle_client): server RSS per connection, and the echo
#          rate of 100 active connections with and without 18k idle ones
#
# It prints one table of medians with the ratios atoll / peer and writes it,
# with the date, the machine and the commands, to docs/PERFORMANCE.md
# (--quick writes target/bench/PERFORMANCE-quick.md instead). Raw outputs of
# every tool go to target/bench/logs/. Missing tools are installed with
# apt-get. Loopback only; every process it starts is stopped by PID on exit.
#
# Environment: ATOLL_BENCH_WORKERS (server threads, default 2),
# ATOLL_BENCH_ACCEPTORS (atoll poll threads, default one per core).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/run.sh [--quick] [--reps N] [--parts LIST]

  --quick       short smoke run: 1 repetition, small -n and -d; writes
                target/bench/PERFORMANCE-quick.md, not docs/PERFORMANCE.md
  --reps N      repetitions of every measurement [3; 1 with --quick]
  --parts LIST  comma-separated subset of echo,redis,http,idle [all]
                (a subset writes target/bench/PERFORMANCE-partial.md)
EOF
}

QUICK=0
REPS=""
PARTS="echo,redis,http,idle"
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        --reps)
            [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || { usage >&2; exit 2; }
            REPS=$2
            shift
            ;;
        --parts)
            [[ $# -ge 2 && $2 =~ ^(echo|redis|http|idle)(,(echo|redis|http|idle))*$ ]] || { usage >&2; exit 2; }
            PARTS=$2
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }
part() { [[ ,$PARTS, == *,$1,* ]]; }

CORES=$(nproc)
WORKERS=${ATOLL_BENCH_WORKERS:-2}
ACCEPTORS=${ATOLL_BENCH_ACCEPTORS:-$((CORES < 16 ? CORES : 16))}
[[ $WORKERS =~ ^[1-9][0-9]*$ && $ACCEPTORS =~ ^[1-9][0-9]*$ ]] ||
    die "ATOLL_BENCH_WORKERS and ATOLL_BENCH_ACCEPTORS must be positive integers"
if ((QUICK)); then
    REPS=${REPS:-1} ECHO_SECS=1 REDIS_N=20000 WRK_SECS=2 ACTIVE_SECS=1
else
    REPS=${REPS:-3} ECHO_SECS=3 REDIS_N=200000 WRK_SECS=10 ACTIVE_SECS=5
fi
ACTIVE_CONNS=100
if ((QUICK)); then
    REPORT=target/bench/PERFORMANCE-quick.md
elif [[ $PARTS != "echo,redis,http,idle" ]]; then
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
    esac
}

install_missing() {
    local tool pkgs=()
    for tool in redis-server redis-benchmark redis-cli wrk nginx; do
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
for tool in cargo nproc uname mkfifo timeout awk sed sort ps; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
REDIS_SERVER=$(find_tool redis-server) || die "redis-server not found"
REDIS_BENCHMARK=$(find_tool redis-benchmark) || die "redis-benchmark not found"
REDIS_CLI=$(find_tool redis-cli) || die "redis-cli not found"
WRK=$(find_tool wrk) || die "wrk not found"
NGINX=$(find_tool nginx) || die "nginx not found"

# Idle connections need descriptors: take the hard limit.
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
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_bg NAME CMD...: runs CMD in the background, stdout and stderr to
# $LOGS/NAME.out and .err; sets LAST_PID.
start_bg() {
    local name=$1
    shift
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

# wait_listening NAME PID: waits (30 s at most) for `listening on ADDR`.
wait_listening() {
    local name=$1 pid=$2 i line
    for ((i = 0; i < 300; i++)); do
        line=$(sed -n 's/^listening on //p' "$LOGS/$name.out" | head -n 1)
        if [[ -n $line ]]; then
            LAST_ADDR=$line
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "$name exited: $(tail -n 5 "$LOGS/$name.err")"
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

# http_get PORT: the response to GET / (5 s at most).
http_get() {
    # shellcheck disable=SC2016 # $1 expands in the inner shell
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" &&
        printf "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" >&3 &&
        cat <&3' _ "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------------------
# Results: one line per measurement in $RESULTS:
#   section, workload, role (a: atoll, p: peer), server, rate/s, p50 us, p99 us

RESULTS=$TMP/results.tsv
RSS_FILE=$TMP/rss.tsv
: >"$RESULTS"
: >"$RSS_FILE"
NOTES=()
COMMANDS=()
note() { NOTES+=("$*"); say "note: $*"; }
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

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

# ---------------------------------------------------------------------------
# Build

# Anything else running shares the cores with the benchmark: say so.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

EXAMPLES=(echo idle_client peer_hyper_hello mini_redis http_hello)
BUILT=()
say "building release binaries"
if timeout 3600 cargo build --release --examples; then
    for ex in "${EXAMPLES[@]}"; do
        if [[ -f examples/$ex.rs ]]; then BUILT+=("$ex"); fi
    done
else
    note "cargo build --release --examples failed; building the benchmark's examples one by one"
    for ex in "${EXAMPLES[@]}"; do
        [[ -f examples/$ex.rs ]] || continue
        if timeout 3600 cargo build --release --example "$ex"; then
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
if part echo; then
    timeout 3600 cargo bench --bench echo --no-run
fi

# ---------------------------------------------------------------------------
# echo: cargo bench --bench echo, plaintext part

ECHO_TABLE=""
if part echo; then
    say "echo: cargo bench --bench echo (plaintext), $REPS repetitions of $ECHO_SECS s"
    echo_env=(ATOLL_BENCH_TLS=0 ATOLL_BENCH_TELEMETRY=0 ATOLL_BENCH_CHURN=0 "ATOLL_BENCH_SECS=$ECHO_SECS"
        "ATOLL_BENCH_REPS=$REPS" "ATOLL_BENCH_WORKERS=$WORKERS" "ATOLL_BENCH_ACCEPTORS=$ACCEPTORS")
    COMMANDS+=("${echo_env[*]} cargo bench --bench echo")
    { timeout 3600 env "${echo_env[@]}" cargo bench --bench echo 2>&1 >&3 |
        tee "$LOGS/echo-bench.err" >&2; } 3>"$LOGS/echo-bench.out"
    ECHO_TABLE=$(cat "$LOGS/echo-bench.out")
    awk -v OFS='\t' '
        NF == 6 && $1 ~ /^[0-9]+$/ && $2 ~ /^(atoll|tokio|std)$/ && $3 ~ /^[0-9.]+$/ {
            role = ($2 == "atoll") ? "a" : "p"
            print "echo", "echo 64 B, " $1 " conns", role, $2, $3, $4, $5
            if ($6 + 0 > 0) print "echo: " $2 " at " $1 " conns had " $6 " connection errors" > "/dev/stderr"
        }' "$LOGS/echo-bench.out" >>"$RESULTS"
    grep -q $'^echo\t' "$RESULTS" || note "echo: no table found in the echo bench's output"
fi

# ---------------------------------------------------------------------------
# redis: mini_redis vs redis-server

if part redis; then
    if ! have_example mini_redis; then
        note "redis: examples/mini_redis.rs is missing or does not build: part skipped"
    else
        say "redis: starting redis-server and mini_redis"
        redis_port=""
        for attempt in 1 2 3; do
            port=$(free_port)
            start_bg redis-server "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 \
                --save '' --appendonly no --daemonize no
            pid=$LAST_PID
            for ((i = 0; i < 300; i++)); do
                if [[ $(timeout 2 "$REDIS_CLI" -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; then
                    redis_port=$port
                    break
                fi
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            [[ -n $redis_port ]] && break
            stop_started "$pid"
            say "redis-server did not start on port $port (attempt $attempt)"
        done
        [[ -n $redis_port ]] || die "redis-server did not start: $(tail -n 5 "$LOGS/redis-server.out")"
        start_bg mini_redis "$BIN/mini_redis" --port 0 --workers "$WORKERS" --acceptors "$ACCEPTORS"
        wait_listening mini_redis "$LAST_PID"
        mini_port=${LAST_ADDR##*:}
        [[ $(timeout 5 "$REDIS_CLI" -h 127.0.0.1 -p "$mini_port" set bench:check ok) == OK &&
            $(timeout 5 "$REDIS_CLI" -h 127.0.0.1 -p "$mini_port" get bench:check) == ok ]] ||
            die "mini_redis does not answer SET/GET through redis-cli"
        COMMANDS+=("$BIN/mini_redis --port 0 --workers $WORKERS --acceptors $ACCEPTORS" \
            "redis-server --port PORT --bind 127.0.0.1 --save '' --appendonly no --daemonize no  # $("$REDIS_SERVER" --version | awk '{ sub(/v=/, "", $3); print $3 }')" \
            "redis-benchmark -h 127.0.0.1 -p PORT -t ping,set,get -c 50 -n $REDIS_N -q --csv [-P 16]")
        for ((rep = 1; rep <= REPS; rep++)); do
            for pipeline in 1 16; do
                while read -r server; do
                    if [[ $server == mini_redis ]]; then port=$mini_port role=a; else port=$redis_port role=p; fi
                    args=(-h 127.0.0.1 -p "$port" -t "ping,set,get" -c 50 -n "$REDIS_N" -q --csv)
                    suffix=""
                    if ((pipeline > 1)); then args+=(-P "$pipeline"); suffix=" -P $pipeline"; fi
                    say "redis: rep $rep/$REPS, $server$suffix"
                    out=$LOGS/redis-$server-P$pipeline-rep$rep.csv
                    timeout 900 "$REDIS_BENCHMARK" "${args[@]}" >"$out" 2>"$out.err" ||
                        note "redis: redis-benchmark against $server$suffix failed or timed out (rep $rep)"
                    tr -d '\r' <"$out" | awk -F, -v OFS='\t' -v srv="$server" -v role="$role" -v sfx="$suffix" '
                        { for (i = 1; i <= NF; i++) gsub(/"/, "", $i) }
                        $1 != "test" && NF >= 7 && $2 ~ /^[0-9.]+$/ {
                            printf "redis\tredis %s%s\t%s\t%s\t%s\t%.1f\t%.1f\n", $1, sfx, role, srv, $2, $5 * 1000, $7 * 1000
                        }' >>"$RESULTS"
                    tail -n 3 "$out" | sed 's/^/    /' >&2
                done < <(order "$rep" mini_redis redis-server)
            done
        done
    fi
fi

# ---------------------------------------------------------------------------
# http: http_hello vs nginx vs hyper

# wrk_run NAME ROLE PORT REP: one wrk run, recorded.
wrk_run() {
    local name=$1 role=$2 port=$3 rep=$4 out
    out=$LOGS/wrk-$name-rep$rep.txt
    say "http: rep $rep/$REPS, $name"
    timeout $((WRK_SECS + 60)) "$WRK" -t2 -c100 "-d${WRK_SECS}s" --latency "http://127.0.0.1:$port/" \
        >"$out" 2>&1 || note "http: wrk against $name failed or timed out (rep $rep)"
    awk -v srv="$name" -v role="$role" -v secs="$WRK_SECS" '
        function us(v) {
            if (v ~ /us$/) return v + 0
            if (v ~ /ms$/) return v * 1000
            if (v ~ /s$/) return v * 1000000
            return v + 0
        }
        $1 == "50%" { p50 = us($2) }
        $1 == "99%" { p99 = us($2) }
        $1 == "Requests/sec:" { rate = $2 }
        /Socket errors|Non-2xx/ { print "http: " srv ": " $0 > "/dev/stderr" }
        END { if (rate != "") printf "http\twrk -t2 -c100 -d%ss\t%s\t%s\t%s\t%.1f\t%.1f\n", secs, role, srv, rate, p50, p99 }
    ' "$out" >>"$RESULTS" 2>>"$TMP/wrk-warnings"
    grep -E '^ +(50|99)%|^Requests/sec' "$out" | sed 's/^/    /' >&2
}

if part http; then
    if ! have_example http_hello; then
        note "http: examples/http_hello.rs is missing or does not build: part skipped"
    else
        say "http: starting http_hello, nginx and hyper"
        start_bg http_hello "$BIN/http_hello" --port 0 --workers "$WORKERS" --acceptors "$ACCEPTORS"
        wait_listening http_hello "$LAST_PID"
        hello_port=${LAST_ADDR##*:}
        start_bg peer_hyper_hello "$BIN/peer_hyper_hello" --port 0 --workers "$WORKERS"
        wait_listening peer_hyper_hello "$LAST_PID"
        hyper_port=${LAST_ADDR##*:}
        nginx_dir=$TMP/nginx
        mkdir -p "$nginx_dir"
        nginx_port=""
        for attempt in 1 2 3; do
            port=$(free_port)
            cat >"$nginx_dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $WORKERS;
pid $nginx_dir/nginx.pid;
error_log $nginx_dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $nginx_dir/body;
    proxy_temp_path $nginx_dir/proxy;
    fastcgi_temp_path $nginx_dir/fastcgi;
    uwsgi_temp_path $nginx_dir/uwsgi;
    scgi_temp_path $nginx_dir/scgi;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$port;
        default_type text/plain;
        location / { return 200 'Hello, World!'; }
    }
}
EOF
            start_bg nginx "$NGINX" -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -e "$nginx_dir/error.log"
            pid=$LAST_PID
            for ((i = 0; i < 300; i++)); do
                if [[ $(http_get "$port") == *"Hello, World!" ]]; then
                    nginx_port=$port
                    break
                fi
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            [[ -n $nginx_port ]] && break
            stop_started "$pid"
            say "nginx did not start on port $port (attempt $attempt): $(tail -n 3 "$nginx_dir/error.log" 2>/dev/null)"
        done
        [[ -n $nginx_port ]] || die "nginx did not start"
        cp "$nginx_dir/nginx.conf" "$LOGS/nginx.conf"
        for pair in "http_hello:$hello_port" "peer_hyper_hello:$hyper_port"; do
            [[ $(http_get "${pair#*:}") == *"Hello, World!" ]] || die "${pair%%:*} does not answer Hello, World!"
        done
        COMMANDS+=("$BIN/http_hello --port 0 --workers $WORKERS --acceptors $ACCEPTORS" \
            "$BIN/peer_hyper_hello --port 0 --workers $WORKERS" \
            "nginx -p TMP -c TMP/nginx.conf -e TMP/error.log  # $("$NGINX" -v 2>&1 | sed 's/.*: //'); config: worker_processes $WORKERS, access_log off, keepalive_requests 100000000, return 200 'Hello, World!'" \
            "wrk -t2 -c100 -d${WRK_SECS}s --latency http://127.0.0.1:PORT/")
        for ((rep = 1; rep <= REPS; rep++)); do
            while read -r server; do
                case $server in
                    http_hello) wrk_run http_hello a "$hello_port" "$rep" ;;
                    nginx) wrk_run nginx p "$nginx_port" "$rep" ;;
                    hyper) wrk_run hyper p "$hyper_port" "$rep" ;;
                esac
            done < <(order "$rep" http_hello nginx hyper)
        done
        if [[ -s $TMP/wrk-warnings ]]; then
            while read -r line; do note "$line"; done < <(sort -u "$TMP/wrk-warnings")
        fi
    fi
fi

# ---------------------------------------------------------------------------
# idle: RSS per idle connection; active echo beside 18k idle connections

IDLE_LINES=0
# idle_cmd COMMAND TIMEOUT: sends a command to idle_client and waits for its
# answer; sets IDLE_ANSWER.
idle_cmd() {
    local cmd=$1 limit=$2 pid=$3 i n
    printf '%s\n' "$cmd" >&"$CTL"
    for ((i = 0; i < limit * 10; i++)); do
        n=$(wc -l <"$LOGS/idle_client.out")
        if ((n > IDLE_LINES)); then
            IDLE_LINES=$((IDLE_LINES + 1))
            IDLE_ANSWER=$(sed -n "${IDLE_LINES}p" "$LOGS/idle_client.out")
            say "idle: $IDLE_ANSWER"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "idle_client exited: $(tail -n 5 "$LOGS/idle_client.err")"
        sleep 0.1
    done
    die "idle_client did not answer '$cmd' within $limit s"
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# active_run ROLE NAME PID: one active measure, recorded.
active_run() {
    idle_cmd "active $ACTIVE_CONNS $ACTIVE_SECS" $((ACTIVE_SECS + 60)) "$3"
    local rate p50 p99 errors
    rate=$(sed -n 's/.* rt\/s=\([0-9.]*\).*/\1/p' <<<"$IDLE_ANSWER")
    p50=$(sed -n 's/.* p50_us=\([0-9.]*\).*/\1/p' <<<"$IDLE_ANSWER")
    p99=$(sed -n 's/.* p99_us=\([0-9.]*\).*/\1/p' <<<"$IDLE_ANSWER")
    errors=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<<"$IDLE_ANSWER")
    [[ -n $rate ]] || die "idle_client: cannot read '$IDLE_ANSWER'"
    [[ $errors == 0 ]] || note "idle: $IDLE_ANSWER"
    record idle "echo 64 B, $ACTIVE_CONNS active conns" "$1" "$2" "$rate" "$p50" "$p99"
}

if part idle; then
    have_example idle_client || die "examples/idle_client did not build"
    say "idle: echo server, idle connections up to $IDLE_MAX (descriptor limit $NOFILE)"
    start_bg echo "$BIN/echo" --port 0 --read-timeout-ms 0 --num-connections 0 \
        --workers "$WORKERS" --acceptors "$ACCEPTORS"
    echo_pid=$LAST_PID
    wait_listening echo "$echo_pid"
    echo_addr=$LAST_ADDR
    # Commands go to idle_client through a FIFO; closing it makes the client
    # exit. The client opens it before the writer is opened here, so it does
    # not inherit the writing end.
    mkfifo "$TMP/idle.ctl"
    (exec "$BIN/idle_client" --addr "$echo_addr" --clients 2 <"$TMP/idle.ctl" \
        >"$LOGS/idle_client.out" 2>"$LOGS/idle_client.err") &
    idle_pid=$!
    PIDS+=("$idle_pid")
    exec {CTL}>"$TMP/idle.ctl"
    COMMANDS+=("$BIN/echo --port 0 --read-timeout-ms 0 --num-connections 0 --workers $WORKERS --acceptors $ACCEPTORS" \
        "$BIN/idle_client --addr ADDR --clients 2, then on its stdin: active $ACTIVE_CONNS $ACTIVE_SECS / idle N (N = ${IDLE_LEVELS[*]}); VmRSS from /proc/PID/status")
    without="echo, no idle"
    with="echo, $IDLE_MAX idle"
    # The first active run also warms the server up before the baseline RSS.
    active_run p "$without" "$idle_pid"
    sleep 0.5
    printf '0\t%s\n' "$(rss_kb "$echo_pid")" >>"$RSS_FILE"
    for level in "${IDLE_LEVELS[@]}"; do
        idle_cmd "idle $level" 300 "$idle_pid"
        sleep 0.5
        printf '%s\t%s\n' "$level" "$(rss_kb "$echo_pid")" >>"$RSS_FILE"
    done
    active_run a "$with" "$idle_pid"
    for ((rep = 2; rep <= REPS; rep++)); do
        idle_cmd "idle 0" 300 "$idle_pid"
        active_run p "$without" "$idle_pid"
        idle_cmd "idle $IDLE_MAX" 300 "$idle_pid"
        active_run a "$with" "$idle_pid"
    done
    exec {CTL}>&-
    CTL=""
    for ((i = 0; i < 300; i++)); do kill -0 "$idle_pid" 2>/dev/null || break; sleep 0.1; done
    stop_started "$idle_pid"
    stop_started "$echo_pid"
fi

# ---------------------------------------------------------------------------
# The table

TABLE=$(awk -F'\t' '
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
    {
        w = $2
        if (!(w in seen)) { seen[w] = 1; order[++nw] = w }
        k = w SUBSEP $4
        if (!(k in rate)) {
            if ($3 == "a") atoll[w] = $4
            else { np[w]++; peer[w, np[w]] = $4 }
        }
        rate[k] = rate[k] " " $5; p50[k] = p50[k] " " $6; p99[k] = p99[k] " " $7
        reps[k]++
    }
    END {
        print "| workload | atoll | rate/s | p50 us | p99 us | peer | rate/s | p50 us | p99 us | rate atoll/peer | p99 atoll/peer |"
        print "|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|"
        for (i = 1; i <= nw; i++) {
            w = order[i]; a = atoll[w]; ka = w SUBSEP a
            if (a == "") { ar = ""; a50 = ""; a99 = "" }
            else { ar = median(rate[ka]); a50 = median(p50[ka]); a99 = median(p99[ka]) }
            for (j = 1; j <= np[w]; j++) {
                p = peer[w, j]; kp = w SUBSEP p
                pr = median(rate[kp]); p50v = median(p50[kp]); p99v = median(p99[kp])
                rr = (a != "" && pr > 0) ? sprintf("%.2fx", ar / pr) : "-"
                lr = (a != "" && p99v > 0) ? sprintf("%.2fx", a99 / p99v) : "-"
                printf "| %s | %s | %s | %s | %s | %s | %.0f | %s | %s | %s | %s |\n", w, \
                    (a == "" ? "-" : a), (a == "" ? "-" : sprintf("%.0f", ar)), \
                    (a == "" ? "-" : lat(a50)), (a == "" ? "-" : lat(a99)), \
                    p, pr, lat(p50v), lat(p99v), rr, lr
            }
        }
    }' "$RESULTS")

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
MACHINE="$CORES cores (nproc) shared by the clients and the servers, ${CPU:-unknown CPU}, ${MEM:-unknown memory}, Linux $(uname -r)"
version_of() { awk -v n="$1" '$0 == "name = \"" n "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock 2>/dev/null; }
PEERS="redis-server $("$REDIS_SERVER" --version | awk '{ sub(/v=/, "", $3); print $3 }'), $("$NGINX" -v 2>&1 | sed 's/.*: //'), $("$WRK" --version 2>&1 | head -n 1 | awk '{ print $1, $2 }'), $("$REDIS_BENCHMARK" --version 2>&1 | head -n 1), tokio $(version_of tokio), hyper $(version_of hyper), hyper-util $(version_of hyper-util)"

{
    echo
    echo "atoll vs peers, $DATE, $MACHINE"
    echo "medians of $REPS repetitions; rate ratio above 1 and p99 ratio below 1 favour atoll"
    echo
    echo "$TABLE"
    if [[ -n $RSS_TABLE ]]; then
        echo
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
    echo "The latest table of \`bench/run.sh$QUICK_FLAG\`, written by it: run it again rather than edit this file."
    echo
    echo "- Date: $DATE"
    echo "- Machine: $MACHINE"
    echo "- Load average (1, 5, 15 min) before the build: $LOAD_START; at the end: $LOAD_END (the benchmark itself keeps about 2 busy; more means something else shared the cores)"
    echo "- Peers: $PEERS"
    echo "- Settings: $REPS repetitions, medians shown; server threads: atoll $WORKERS workers + $ACCEPTORS poll threads, tokio and hyper $WORKERS workers, nginx $WORKERS worker processes, redis-server its single thread; echo $ECHO_SECS s per run, redis-benchmark -n $REDIS_N, wrk -d${WRK_SECS}s, active echo $ACTIVE_SECS s"
    echo
    echo "## Results"
    echo
    echo "Rates are per second (round trips for echo, requests for redis and http); latencies in microseconds. The ratios are atoll's figure over the peer's: a rate ratio above 1 and a p99 ratio below 1 favour atoll. In the idle rows the \"peer\" is the same echo server without the idle connections."
    echo
    echo "$TABLE"
    if [[ -n $RSS_TABLE ]]; then
        echo
        echo "## Idle connections"
        echo
        echo "The echo example's VmRSS (\`/proc/PID/status\`) after a warm-up (one active run), then holding each number of idle connections; each idle connection made one 1-byte round trip when opened, then stayed silent."
        echo
        echo "$RSS_TABLE"
        echo
        echo "$LINEAR."
    fi
    if ((${#NOTES[@]})); then
        echo
        echo "## Notes"
        echo
        printf -- '- %s\n' "${NOTES[@]}"
    fi
    echo
    echo "## Commands"
    echo
    echo "Binaries are built by \`cargo build --release --examples\`; every server listens on 127.0.0.1 and all run on the same cores as their clients."
    echo
    echo '```text'
    printf '%s\n' "${COMMANDS[@]}" | sed "s|$BIN/|target/release/examples/|g"
    echo '```'
    if [[ -n $ECHO_TABLE ]]; then
        echo
        echo "## The echo bench's own output"
        echo
        echo '```text'
        echo "$ECHO_TABLE"
        echo '```'
    fi
} >"$REPORT"
say "wrote $REPORT; raw outputs in ${LOGS#"$ROOT"/}"
