#!/usr/bin/env bash
# Ensures PostgreSQL (127.0.0.1:5432), NATS with JetStream (127.0.0.1:4222)
# and Redis (127.0.0.1:6379) answer, so that the defaults
#   DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432
#   NATS_URL=nats://127.0.0.1:4222
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
nats_up() { tcp_open 4222; }
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

start_nats() {
    as_root mkdir -p /var/lib/nats-server
    as_root start-stop-daemon --start --oknodo --background --exec "$NATS_BIN" -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server \
        -l /var/log/nats-server.log
}

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
