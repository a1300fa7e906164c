# shellcheck shell=bash
# Shared by scripts/compose-up and scripts/compose-down: the project, its state folder and
# how to call Compose. Sourced, not run; the caller has already `set -euo pipefail`.
# shellcheck disable=SC2034  # the variables below are used by the scripts sourcing this

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROJECT=${SLIPWAY_COMPOSE_PROJECT:-slipway-compose}
# Compose turns the name into container, volume and network names.
[[ $PROJECT =~ ^[a-z0-9][a-z0-9_-]{0,62}$ ]] ||
    die "SLIPWAY_COMPOSE_PROJECT '$PROJECT' is not a project name: lowercase letters, digits, - and _"
# Not under $SLIPWAY_HOME: the supervisor narrows every mode there at each start, and dynos
# must reach the log socket folder in here.
STATE=$(realpath -m "${SLIPWAY_COMPOSE_HOME:-/var/lib/slipway-compose/$PROJECT}")
# It is written into Compose's env file and its bind mounts, where quotes, spaces and `$`
# would be read differently by Compose 1 and 2: plain path characters only.
[[ $STATE =~ ^/[A-Za-z0-9/._-]+$ ]] ||
    die "SLIPWAY_COMPOSE_HOME '$STATE' must be a path of letters, digits, '/', '.', '_' and '-'"
CONFIG_DIR=${SLIPWAY_COMPOSE_CONFIG_DIR:-$STATE/cli}
COMPOSE_FILE_PATH="$SLIPWAY_ROOT/compose/docker-compose.yml"
API_PORT=${SLIPWAY_COMPOSE_API_PORT:-5200}
ROUTER_PORT=${SLIPWAY_COMPOSE_ROUTER_PORT:-5280}
ROUTER_HTTPS_PORT=${SLIPWAY_COMPOSE_ROUTER_HTTPS_PORT:-5243}
NATS_NET=${SLIPWAY_COMPOSE_NATS_NET:-127.77.0}
REGISTRY_PORT=${SLIPWAY_COMPOSE_REGISTRY_PORT:-5201}
BUILDER_CONCURRENCY=${SLIPWAY_COMPOSE_BUILDER_CONCURRENCY:-2}

need_root() { [[ $(id -u) == 0 ]] || die "run as root: $1"; }

# Debian's docker-compose (1.x) or the `docker compose` plugin, whichever is installed.
find_compose() {
    if command -v docker-compose >/dev/null; then
        COMPOSE_CMD=(docker-compose)
    elif docker compose version >/dev/null 2>&1; then
        COMPOSE_CMD=(docker compose)
    else
        die "neither docker-compose nor the docker compose plugin is installed (apt-get install docker-compose)"
    fi
    COMPOSE_NAME="${COMPOSE_CMD[*]}"
}

compose() {
    "${COMPOSE_CMD[@]}" --project-name "$PROJECT" --file "$COMPOSE_FILE_PATH" \
        --env-file "$STATE/compose.env" "$@"
}

compose_hint() {
    printf '%s -p %s -f %s --env-file %s' "$COMPOSE_NAME" "$PROJECT" "$COMPOSE_FILE_PATH" "$STATE/compose.env"
}

platform_version() {
    "$SLIPWAY_PY" -c 'import tomllib; print(tomllib.load(open("'"$SLIPWAY_ROOT"'/pyproject.toml", "rb"))["project"]["version"])'
}
