#!/usr/bin/env bash
# Ensures PostgreSQL (127.0.0.1:5432), NATS with JetStream and accounts (127.0.0.1:4222)
# and Redis (127.0.0.1:6379) answer, so that the defaults
#   DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432
#   NATS_URL=nats://brain:brain-local@127.0.0.1:4222
#   REDIS_URL=redis://127.0.0.1:6379
# work. Targets Debian 12 with or without systemd (containers, CI).
# Idempotent: when everything already answers it only checks.
set -euo pipefail

# Generous because a first start may include initdb and a JetStream recovery.
WAIT_SECONDS=${SERVICES_WAIT_SECONDS:-30}

# Non-root PATH on Debian lacks the sbin directories, where nats-server lives.
NATS_BIN=$(command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server)

say() { echo "$*" >&2; }
die() {
    say "services.sh: $*"
    exit 1
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# A connect with a timeout, because a filtered port would otherwise hang.
tcp_open() {
    timeout 1 bash -c ":> /dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# pg_isready also tells "accepting connections" from "port open but still
# starting up", which a bare connect does not.
postgres_up() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p 5432 -t 1
    else
        tcp_open 5432
    fi
}
nats_up() { tcp_open "$NATS_PORT"; }
redis_up() { tcp_open 6379; }

postgres_installed() { command -v pg_ctlcluster >/dev/null 2>&1; }
nats_installed() { [[ -x $NATS_BIN ]]; }
redis_installed() { command -v redis-server >/dev/null 2>&1; }

apt_updated=0
apt_install() {
    if [[ $apt_updated -eq 0 ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" >&2
}

# Newest version directory under $1, or nothing (not an error) if none.
newest_version() {
    local d
    for d in "$1"/*/; do
        if [[ -d $d ]]; then basename "$d"; fi
    done | sort -V | tail -1
}

start_postgres() {
    local ver
    ver=$(newest_version /etc/postgresql)
    if [[ -z $ver ]]; then
        # Package postinst skips creating the cluster in some images.
        ver=$(newest_version /usr/lib/postgresql)
        [[ -n $ver ]] || die "postgres: no server version under /usr/lib/postgresql"
    fi
    if [[ ! -d /etc/postgresql/$ver/main ]]; then
        as_root pg_createcluster "$ver" main >&2
    fi
    # --skip-systemctl-redirect: works the same with and without systemd.
    # The package's postinst may already have started it (sysv init script).
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main status >/dev/null 2>&1 &&
        return 0
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 ||
        die "postgres: 'pg_ctlcluster $ver main start' failed (is another cluster on a different port?)"
}

start_redis() {
    as_root mkdir -p /var/lib/redis /var/log/redis
    # No persistence: this is a scratch instance for development and tests.
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
        --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2
}

# --- NATS accounts ----------------------------------------------------------------------
# Only BRAiN may publish on BRAiN's subjects: the local NATS runs with the accounts of
# nats/nats-server.conf (what docker compose runs), so a local process without the
# credentials can neither publish an event nor touch the stream. The local passwords are
# fixed and documented, for development and tests only: user `brain` / `brain-local` (the
# default NATS_URL and the tests' URL carry it) and `reader` / `reader-local`.
#
# A NATS that answers on the port without asking for credentials (its INFO line lacks
# "auth_required":true) and is the Debian nats-server started with flags alone (no config
# file: how this script used to start it) is stopped and started again with the accounts.
# Anything else answering anonymously is refused rather than touched. JetStream keeps streams
# per account: streams made anonymously stay on disk under $G, unused, and BRAiN's relay
# publishes the log again into its account's stream. A NATS that asks for credentials and
# takes the local ones is left alone (its accounts reloaded if this repository's changed,
# when this script started it).
#
# SERVICES_NATS_PORT, SERVICES_NATS_STORE_DIR, SERVICES_NATS_CONF_DIR, SERVICES_NATS_LOG and
# SERVICES_NATS_PID_FILE move all of it elsewhere (a second NATS beside the first, to try this
# script on without disturbing anyone).
NATS_PORT=${SERVICES_NATS_PORT:-4222}
NATS_STORE_DIR=${SERVICES_NATS_STORE_DIR:-/var/lib/nats-server}
NATS_CONF_DIR=${SERVICES_NATS_CONF_DIR:-/etc/brain/nats}
NATS_LOG=${SERVICES_NATS_LOG:-/var/log/nats-server.log}
NATS_PID_FILE=${SERVICES_NATS_PID_FILE:-/run/brain-nats-server.pid}
NATS_LOCAL_PASSWORD=brain-local
NATS_LOCAL_READER_PASSWORD=reader-local
NATS_REPO_CONF="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/nats/nats-server.conf"

# The server's config, where it outlives this checkout: the repository's accounts
# (nats-server.conf, included unchanged) with the local listener and store. Succeeds when it
# wrote something new.
nats_write_config() {
    local local_conf
    local_conf=$(
        cat <<CONF
# Written by scripts/services.sh: the local NATS for development and tests. The accounts and
# users come from nats-server.conf (docker compose's), included unchanged; the passwords from
# the environment services.sh starts the server with (brain-local, reader-local).
include "nats-server.conf"
listen: "127.0.0.1:$NATS_PORT"
# No monitoring port locally.
http: 0
jetstream {
  store_dir: "$NATS_STORE_DIR"
}
CONF
    )
    as_root mkdir -p "$NATS_CONF_DIR" "$NATS_STORE_DIR"
    if as_root cmp -s "$NATS_REPO_CONF" "$NATS_CONF_DIR/nats-server.conf" &&
        [[ $(as_root cat "$NATS_CONF_DIR/nats-server.local.conf" 2>/dev/null) == "$local_conf" ]]; then
        return 1
    fi
    as_root cp "$NATS_REPO_CONF" "$NATS_CONF_DIR/nats-server.conf"
    printf '%s\n' "$local_conf" | as_root tee "$NATS_CONF_DIR/nats-server.local.conf" >/dev/null
}

start_nats() {
    nats_write_config || true
    as_root env BRAIN_NATS_PASSWORD="$NATS_LOCAL_PASSWORD" \
        BRAIN_NATS_READER_PASSWORD="$NATS_LOCAL_READER_PASSWORD" \
        start-stop-daemon --start --oknodo --background \
        --pidfile "$NATS_PID_FILE" --make-pidfile --exec "$NATS_BIN" -- \
        -c "$NATS_CONF_DIR/nats-server.local.conf" -l "$NATS_LOG"
}

# The server's first line (INFO {...}), or nothing.
nats_info() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT && head -n1 <&3" 2>/dev/null || true
}

# The server's answer to a CONNECT (as `brain` when $1 is "login") and a PING: PONG, or
# -ERR 'Authorization Violation'.
nats_hello() {
    local connect='{"verbose":false}'
    if [[ ${1:-} == login ]]; then
        connect="{\"verbose\":false,\"user\":\"brain\",\"pass\":\"$NATS_LOCAL_PASSWORD\"}"
    fi
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT && head -n1 <&3 >/dev/null &&
        printf 'CONNECT %s\r\nPING\r\n' '$connect' >&3 && head -n1 <&3" 2>/dev/null |
        tr -d '\r' || true
}

# The process listening on the port.
nats_listener_pid() {
    { as_root ss -Hltnp "sport = :$NATS_PORT" 2>/dev/null || true; } |
        { grep -o 'pid=[0-9]*' || true; } | head -1 | cut -d= -f2
}

# Whether process $1 is the Debian nats-server run with flags alone (no config file).
nats_restartable() {
    local pid=$1 exe args
    exe=$(as_root readlink -f "/proc/$pid/exe" 2>/dev/null) || return 1
    [[ $exe == "$(readlink -f "$NATS_BIN")" ]] || return 1
    args=$(as_root cat "/proc/$pid/cmdline" | tr '\0' ' ')
    [[ " $args " != *" -c "* && " $args " != *" --config "* && " $args " != *" -config "* ]]
}

# Makes sure the NATS on the port asks for credentials and takes the local ones.
nats_accounts() {
    local pid deadline
    if [[ $(nats_info) == *'"auth_required":true'* ]]; then
        [[ $(nats_hello login) == PONG ]] ||
            die "nats: 127.0.0.1:$NATS_PORT asks for credentials other than the local ones; set NATS_URL and BRAIN_TEST_NATS_URL to its own"
        # Started by this script, and this repository's accounts changed: reload them.
        pid=$(nats_listener_pid)
        if [[ -n $pid && $(as_root cat "$NATS_PID_FILE" 2>/dev/null) == "$pid" ]] &&
            nats_write_config; then
            as_root kill -HUP "$pid"
            say "nats: accounts reloaded from nats/nats-server.conf"
        fi
        return 0
    fi
    pid=$(nats_listener_pid)
    if [[ -z $pid ]] || ! nats_restartable "$pid"; then
        die "nats: 127.0.0.1:$NATS_PORT accepts anonymous clients and is not the local nats-server this script may restart; stop it (or start it with nats/nats-server.conf), then run this again"
    fi
    say "nats: anonymous clients accepted; restarting it with accounts (pid $pid)"
    as_root kill -TERM "$pid"
    deadline=$((SECONDS + WAIT_SECONDS))
    while as_root kill -0 "$pid" 2>/dev/null || nats_up; do
        ((SECONDS < deadline)) || die "nats: pid $pid did not stop within ${WAIT_SECONDS}s"
        sleep 0.2
    done
    start_nats
    wait_up nats
    [[ $(nats_hello) == *'Authorization Violation'* ]] ||
        die "nats: restarted, but it still accepts anonymous clients (see $NATS_LOG)"
    [[ $(nats_hello login) == PONG ]] ||
        die "nats: restarted, but it refuses the local brain login (see $NATS_LOG)"
    if [[ -d "$NATS_STORE_DIR/jetstream/\$G" ]]; then
        say "nats: streams made anonymously stay unused under $NATS_STORE_DIR/jetstream/\$G"
    fi
    say "nats: accounts on (brain / $NATS_LOCAL_PASSWORD, reader / $NATS_LOCAL_READER_PASSWORD)"
}
# --- end of NATS accounts ---------------------------------------------------------------

wait_up() {
    local name=$1 deadline=$((SECONDS + WAIT_SECONDS))
    until "${name}_up"; do
        ((SECONDS < deadline)) ||
            die "$name: not answering after ${WAIT_SECONDS}s (see its log under /var/log)"
        sleep 0.2
    done
}

declare -A package=([postgres]=postgresql [nats]=nats-server [redis]=redis-server)
declare -A status=()
services=(postgres nats redis)

# Start everything first and wait afterwards, so start-ups overlap.
for svc in "${services[@]}"; do
    if "${svc}_up"; then
        status[$svc]=answering
        continue
    fi
    status[$svc]=started
    if ! "${svc}_installed"; then
        apt_install "${package[$svc]}"
        status[$svc]="installed, started"
    fi
    "start_$svc"
done

for svc in "${services[@]}"; do
    [[ ${status[$svc]} == answering ]] || wait_up "$svc"
    say "$svc: ${status[$svc]}"
done
nats_accounts

# Tools the integration tests run beside the services: libfaketime gives a test worker a
# wall clock that runs behind (lease decisions must not depend on it).
if ! command -v faketime >/dev/null 2>&1; then
    apt_install faketime
    say "faketime: installed"
fi
# Headless Chromium and its WebDriver server, for the tests and benches that drive the web
# console in a browser (src/bench/webdriver.rs). Debian packages them separately.
browser_pkgs=()
command -v chromium >/dev/null 2>&1 || browser_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || browser_pkgs+=(chromium-driver)
if [[ ${#browser_pkgs[@]} -gt 0 ]]; then
    apt_install "${browser_pkgs[@]}"
    say "${browser_pkgs[*]}: installed"
fi
# The official OpenAI Python client, to test BRAiN's own /v1/chat/completions with.
if ! python3 -c 'import openai' >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check openai >/dev/null 2>&1 \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages openai
    say "python openai client: installed"
fi
# The NATS Python client, for examples/analytics_subscriber.py (an outside subscriber, which
# its integration test runs as the reader user). Pinned: the example relies on its API.
NATS_PY_VERSION=2.16.0
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('nats-py') != '$NATS_PY_VERSION')" >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check "nats-py==$NATS_PY_VERSION" >/dev/null 2>&1 \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "nats-py==$NATS_PY_VERSION"
    say "python nats client: nats-py $NATS_PY_VERSION installed"
fi

# MCP for its tests, from no one here (pinned, so the tests' expectations hold):
# - the official Python SDK, whose client drives BRAiN's own MCP server, and the reference
#   `mcp-server-time` server (stdio) that agents use as a tool;
# - the reference `@modelcontextprotocol/server-everything` (stdio and streamable HTTP),
#   from npm into $BRAIN_TEST_MCP_DIR (the tests look there for
#   node_modules/.bin/mcp-server-everything).
MCP_PY_VERSION=2.3.0
MCP_TIME_VERSION=2026.10.19
MCP_EVERYTHING_VERSION=2026.8.31
BRAIN_TEST_MCP_DIR=${BRAIN_TEST_MCP_DIR:-/opt/brain-test/mcp}
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$MCP_PY_VERSION' or m.version('mcp-server-time') != '$MCP_TIME_VERSION')" >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check "mcp==$MCP_PY_VERSION" "mcp-server-time==$MCP_TIME_VERSION" >/dev/null 2>&1 \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "mcp==$MCP_PY_VERSION" "mcp-server-time==$MCP_TIME_VERSION"
    say "python mcp: mcp $MCP_PY_VERSION and mcp-server-time $MCP_TIME_VERSION installed"
fi
everything_pkg=$BRAIN_TEST_MCP_DIR/node_modules/@modelcontextprotocol/server-everything/package.json
if ! grep -q "\"version\": \"$MCP_EVERYTHING_VERSION\"" "$everything_pkg" 2>/dev/null; then
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    as_root mkdir -p "$BRAIN_TEST_MCP_DIR"
    (cd "$BRAIN_TEST_MCP_DIR" && as_root npm install --silent --no-audit --no-fund \
        "@modelcontextprotocol/server-everything@$MCP_EVERYTHING_VERSION" >&2)
    say "mcp-server-everything: $MCP_EVERYTHING_VERSION installed in $BRAIN_TEST_MCP_DIR"
fi

# The URL must work whether pg_hba says trust or scram-sha-256, so the role
# needs the password even where it is not checked.
pg_login() {
    PGPASSWORD=postgres PGCONNECT_TIMEOUT=3 psql -X -q -w -h 127.0.0.1 -p 5432 \
        -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1
}

set_pg_password() {
    local sql="ALTER USER postgres PASSWORD 'postgres'"
    # Over the socket first: needs no privileges where local auth is trust.
    psql -X -q -w -h /var/run/postgresql -U postgres -d postgres -c "$sql" \
        >/dev/null 2>&1 && return 0
    # Peer auth as the postgres OS user (Debian's default for the socket).
    if [[ $EUID -eq 0 ]]; then
        (cd / && su postgres -s /bin/sh -c "psql -X -q -c \"$sql\"") >/dev/null
    elif command -v sudo >/dev/null 2>&1; then
        (cd / && sudo -u postgres psql -X -q -c "$sql") >/dev/null
    else
        return 1
    fi
}

if ! command -v psql >/dev/null 2>&1; then
    say "postgres: psql not found, password login not checked"
elif ! pg_login; then
    set_pg_password || true
    pg_login ||
        die "postgres: cannot log in as postgres/postgres over TCP; check pg_hba.conf"
    say "postgres: password for role postgres set"
fi

# --- The command user (run_command's sandbox) ---------------------------------------------
# The agents' run_command runs every program as this unprivileged user of its own, never as
# the serve; without it, commands are refused. Same name as BRAIN_COMMAND_USER.
COMMAND_USER=${BRAIN_COMMAND_USER:-brain-cmd}
if ! id -u "$COMMAND_USER" >/dev/null 2>&1; then
    as_root useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$COMMAND_USER"
    say "$COMMAND_USER: created (the user run_command runs programs as)"
fi
# --- end of the command user ---------------------------------------------------------------
