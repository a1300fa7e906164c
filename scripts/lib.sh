# shellcheck shell=bash
# Shared by scripts/up and scripts/down: where things live, messages, process checks.
# Sourced, not run; the caller has already `set -euo pipefail`.
# shellcheck disable=SC2034  # the variables below are used by the scripts sourcing this

SLIPWAY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Absolute, so the supervisor and every service agree on it whatever their working folder.
SLIPWAY_HOME="$(realpath -m "${SLIPWAY_HOME:-$SLIPWAY_ROOT/var}")"
export SLIPWAY_HOME
SLIPWAY_VENV="$SLIPWAY_ROOT/.venv"
SLIPWAY_PY="$SLIPWAY_VENV/bin/python"
SLIPWAY_RUN="$SLIPWAY_HOME/run"
SLIPWAY_LOGS="$SLIPWAY_HOME/logs"
SUPERVISOR_PIDFILE="$SLIPWAY_RUN/supervisor.pid"
SUPERVISOR_MODULE="slipway.libs.supervisor"

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Print the last lines of a log file, indented, to stderr (for failure messages).
show_log_tail() {
    local file=$1 lines=${2:-20}
    [[ -s $file ]] || return 0
    printf -- '--- last %s lines of %s ---\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" | sed 's/^/    /' >&2
}

# True if PID is a running process (zombies count as gone) whose command line contains TEXT.
pid_runs() {
    local pid=$1 text=$2 cmdline
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ -n $cmdline && $cmdline == *"$text"* ]]
}

# The running supervisor's pid, from its pidfile; fails if none runs.
supervisor_pid() {
    local pid
    [[ -r $SUPERVISOR_PIDFILE ]] || return 1
    read -r pid <"$SUPERVISOR_PIDFILE" || return 1
    pid_runs "$pid" "$SUPERVISOR_MODULE" || return 1
    printf '%s\n' "$pid"
}

# Wait up to TIMEOUT seconds for PID to exit; fails if it still runs.
wait_for_exit() {
    local pid=$1 timeout=$2 waited=0
    while pid_runs "$pid" ""; do
        ((waited >= timeout * 10)) && return 1
        sleep 0.1
        waited=$((waited + 1))
    done
}

# The kernel's start time of PID (field 22 of /proc/PID/stat); with the pid, a unique identity.
process_start_time() {
    local stat fields
    stat=$(<"/proc/$1/stat") || return 1
    # Fields after the command name, which may itself contain spaces and parentheses.
    read -r -a fields <<<"${stat##*) }"
    printf '%s\n' "${fields[19]}"
}

# Stop processes a supervisor left behind when it was itself killed (SIGKILL, OOM): each child
# pidfile holds "<pid> <start time>", so a pid since recycled by another process is spared.
# Each gets SIGTERM and a few seconds, as the supervisor would have given it, then SIGKILL.
reap_leftovers() {
    local file pid started nats="$SLIPWAY_RUN/nats-server.pid" files=()
    [[ -d $SLIPWAY_RUN ]] || return 0
    # The services first and nats-server last, as the supervisor itself would.
    for file in "$SLIPWAY_RUN"/*.pid; do
        [[ -e $file && $file != "$SUPERVISOR_PIDFILE" && $file != "$nats" ]] && files+=("$file")
    done
    [[ -e $nats ]] && files+=("$nats")
    for file in "${files[@]}"; do
        read -r pid started <"$file" || true
        if pid_runs "$pid" "" && [[ $(process_start_time "$pid" 2>/dev/null) == "$started" ]]; then
            note "stopping leftover $(basename "$file" .pid) (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            wait_for_exit "$pid" 10 || true
            # Children lead their own process group: take whatever they started too.
            kill -KILL -- "-$pid" 2>/dev/null || true
            wait_for_exit "$pid" 5 || warn "pid $pid survived SIGKILL"
        fi
        rm -f "$file"
    done
}

# Remove a pidfile left by a supervisor that was killed. Only while holding its lock: a
# supervisor that is starting holds it too, and then the file is not stale.
remove_stale_pidfile() {
    [[ -e $SUPERVISOR_PIDFILE ]] || return 0
    flock --nonblock "$SUPERVISOR_PIDFILE" rm -f "$SUPERVISOR_PIDFILE" 2>/dev/null || true
}
