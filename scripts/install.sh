# shellcheck shell=bash
# What scripts/up and scripts/test both need on a fresh Debian machine: the Debian packages,
# the project's .venv, and a Docker engine. Sourced after lib.sh; every step is idempotent.
# shellcheck disable=SC2034  # STAMPS and friends are used by the functions below

# age: the reference age CLI, which tests/crypto/test_age.py checks backups against.
# haproxy: the router (libs/haproxy). nginx, wrk: bench/router.py's other proxy (beside the
# dyno and HAProxy) and its load generator. pebble: the ACME test server (and its DNS, pebble-challtestsrv) that
# tests/network_wirer/haproxy/test_acme.py issues from; tests only, the platform never runs it.
# chromium + chromium-driver: the dashboard's browser tests (tests/dashboard) drive headless Chromium.
# docker-compose: the platform as containers (compose/, scripts/compose-up, tests/compose).
DEBIAN_PACKAGES=(docker.io docker-registry haproxy git debootstrap python3-venv age nginx wrk pebble
    chromium chromium-driver docker-compose)
# The Debian packages of these would start their own copies (the registry on :5000, HAProxy
# on its /etc config, nginx on :80); Slipway runs them itself, configured its
# own way (nginx only inside bench/router.py), so the packaged ones stay off.
PACKAGED_SERVICES=(docker-registry haproxy nginx)
STAMPS="$SLIPWAY_HOME/stamps"

need_root() {
    [[ $EUID -eq 0 ]] || die "$1 needs root: run scripts/up as root (or with sudo)"
}

systemd_runs() { [[ -d /run/systemd/system ]]; }

install_debian_packages() {
    local missing=() pkg policy=/usr/sbin/policy-rc.d placed_policy=false
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        note "Debian packages present: ${DEBIAN_PACKAGES[*]}"
        return
    fi
    need_root "installing ${missing[*]}"
    say "installing ${missing[*]}"
    # While installing, tell Debian's maintainer scripts not to start the packaged registry,
    # HAProxy and nginx (an existing policy is left as it is; the units are disabled below).
    if [[ ! -e $policy ]]; then
        # shellcheck disable=SC2016  # the $a belongs to the policy script, not to us
        printf '#!/bin/sh\n# written by slipway scripts/up while installing packages\n%s\n' \
            'for a; do case "$a" in docker-registry*|haproxy*|nginx*) exit 101;; esac; done; exit 0' \
            >"$policy"
        chmod 755 "$policy"
        placed_policy=true
    fi
    local status=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    } || status=$?
    if $placed_policy; then rm -f "$policy"; fi
    ((status == 0)) || die "apt-get failed (exit $status)"
}

keep_packaged_services_off() {
    local unit
    systemd_runs || return 0 # without systemd nothing starts them on its own
    for unit in "${PACKAGED_SERVICES[@]}"; do
        if systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl is-active --quiet "$unit"; then
            need_root "disabling the packaged $unit service"
            note "disabling the packaged $unit service (Slipway runs its own)"
            systemctl disable --now "$unit" >/dev/null 2>&1 || warn "could not disable $unit"
        fi
    done
}

prepare_venv() {
    local python=${SLIPWAY_PYTHON:-python3} fresh=false stamp="$STAMPS/venv-install" want
    if [[ ! -x $SLIPWAY_PY ]]; then
        command -v "$python" >/dev/null || die "$python not found (apt-get install python3)"
        "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || die "$python is older than 3.11, which Slipway needs"
        say "creating .venv with $("$python" --version 2>&1)"
        "$python" -m venv "$SLIPWAY_VENV"
        fresh=true
    fi
    # What the install depends on: the packaging files and the interpreter it went into.
    want=$(cat pyproject.toml setup.py <(readlink -f "$SLIPWAY_PY") | sha256sum | cut -d' ' -f1)
    if ! $fresh && [[ -r $stamp && $(<"$stamp") == "$want" ]] \
        && "$SLIPWAY_PY" -c "import $SUPERVISOR_MODULE" 2>/dev/null; then
        note ".venv up to date"
        return
    fi
    say "installing Slipway and its Python dependencies into .venv"
    "$SLIPWAY_PY" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    mkdir -p "$STAMPS"
    printf '%s\n' "$want" >"$stamp"
}

start_docker() {
    local log="$SLIPWAY_LOGS/dockerd.log" pid waited=0
    if docker info >/dev/null 2>&1; then
        note "Docker engine answers"
        return
    fi
    need_root "starting the Docker engine"
    if systemd_runs; then
        say "starting the Docker engine (systemctl start docker)"
        systemctl start docker || warn "systemctl start docker failed"
    else
        say "starting the Docker engine (dockerd, log in $log)"
        mkdir -p "$SLIPWAY_LOGS"
        # Its own session, so it outlives this script and scripts/down leaves it running.
        setsid nohup dockerd >>"$log" 2>&1 </dev/null &
        pid=$!
    fi
    until docker info >/dev/null 2>&1; do
        if [[ -n ${pid:-} ]] && ! kill -0 "$pid" 2>/dev/null; then
            show_log_tail "$log"
            die "dockerd exited; see $log"
        fi
        ((waited >= 600)) && { show_log_tail "$log"; die "the Docker engine did not answer within 60s"; }
        sleep 0.1
        waited=$((waited + 1))
    done
    note "Docker engine answers"
}

