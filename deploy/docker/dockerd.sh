#!/usr/bin/env bash
# Start/stop a Docker engine for tests and `make test`, touching only what we started.
#
#   deploy/docker/dockerd.sh install # apt-get docker.io + debootstrap when missing (root)
#   deploy/docker/dockerd.sh start   # no-op when an engine already answers `docker info`
#   deploy/docker/dockerd.sh stop    # stops the engine only if `start` launched it
#   deploy/docker/dockerd.sh status
#
# Why a pidfile: several engineers (and CI jobs) share one machine; an engine that was
# already running belongs to someone else and must survive our `stop`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE_DIR="${AZR_DOCKERD_STATE:-$ROOT/.scratch/dockerd}"
PIDFILE="$STATE_DIR/dockerd.pid"
LOG="$STATE_DIR/dockerd.log"
START_TIMEOUT_S="${AZR_DOCKERD_TIMEOUT_S:-60}"

engine_answers() { docker info >/dev/null 2>&1; }

we_own_running_engine() {
    [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

install() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if ((${#missing[@]} == 0)); then
        echo "dockerd: docker.io and debootstrap are installed"
        return 0
    fi
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "dockerd: missing ${missing[*]}; install them (needs root and apt-get)" >&2
        return 1
    fi
    echo "dockerd: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

start() {
    if engine_answers; then
        echo "dockerd: an engine is already running; leaving it alone"
        return 0
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        echo "dockerd: not installed (apt-get install -y docker.io)" >&2
        return 1
    fi
    mkdir -p "$STATE_DIR"
    if we_own_running_engine; then
        echo "dockerd: ours (pid $(cat "$PIDFILE")) is starting; waiting"
    else
        # A stale socket/pidfile from a killed engine makes dockerd refuse to start.
        rm -f "$PIDFILE" /var/run/docker.pid
        # setsid: the engine must outlive the shell (make recipe, CI step) that started it.
        setsid dockerd >"$LOG" 2>&1 </dev/null 9>&- &
        echo $! >"$PIDFILE"
        echo "dockerd: started pid $(cat "$PIDFILE"), log $LOG"
    fi
    local waited=0
    until engine_answers; do
        if ! we_own_running_engine; then
            echo "dockerd: exited during start; last log lines:" >&2
            tail -n 20 "$LOG" >&2 || true
            rm -f "$PIDFILE"
            return 1
        fi
        if ((waited >= START_TIMEOUT_S * 10)); then
            echo "dockerd: no answer after ${START_TIMEOUT_S}s; see $LOG" >&2
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    echo "dockerd: ready"
}

stop() {
    if [[ ! -f "$PIDFILE" ]]; then
        echo "dockerd: not started by us; nothing to stop"
        return 0
    fi
    local pid
    pid="$(cat "$PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        # dockerd stops its containers first (default 10 s grace each, in parallel).
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "dockerd: pid $pid ignored SIGTERM for 30s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "dockerd: stopped pid $pid"
    else
        echo "dockerd: pid $pid already gone"
    fi
    rm -f "$PIDFILE"
}

status() {
    if engine_answers; then
        if we_own_running_engine; then
            echo "running (ours, pid $(cat "$PIDFILE"))"
        else
            echo "running (not ours)"
        fi
    else
        echo "not running"
        return 1
    fi
}

mkdir -p "$STATE_DIR"
# Concurrent callers (parallel test sessions, make) must not both launch an engine.
exec 9>"$STATE_DIR/dockerd.lock"
flock 9

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
