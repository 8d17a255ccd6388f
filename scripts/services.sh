# Test services, started on 127.0.0.1 on ports of their own, each in a data
# folder of its own under $Q8S_SERVICES_DIR. Sourced by scripts/test.
# Every install goes through Debian's packages; every start is idempotent.

# Outside the clone: the postgres user must be able to reach its data folder,
# and a clone under /root is closed to it. One folder per clone.
services_dir="${Q8S_SERVICES_DIR:-${TMPDIR:-/tmp}/q8s-services-$(printf %s "$repo" | md5sum | cut -c1-8)}"
mkdir -p "$services_dir"
chmod 755 "$services_dir"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

apt_install() {
  echo "installing $* from Debian's packages" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether the process whose id is in file $1 is running.
running() {
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Runs a readiness check until it succeeds, for up to 20 s; then fails.
wait_until() {
  for _ in $(seq 1 100); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# Runs a command as the user that owns the PostgreSQL data: postgres refuses root.
as_pg_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# Installs PostgreSQL if missing, starts it (or finds it running) and exports
# Q8S_TEST_POSTGRES_URL, an admin URL the tests create their databases with.
# With Q8S_PG_PROFILE=bench it starts a second server with PostgreSQL's default
# durability (fsync and synchronous commit on), for figures that mean something.
start_postgres() {
  if [ -z "$(postgres_bin)" ] || [ ! -x "$(postgres_bin)/initdb" ]; then
    apt_install postgresql
  fi
  local bin data port
  bin=$(postgres_bin)
  local profile="${Q8S_PG_PROFILE:-test}" settings=""
  data="$services_dir/postgres"
  if [ "$profile" = bench ]; then
    data="$services_dir/postgres-bench"
  else
    # Tests need no durability, and fsync costs them minutes.
    settings="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres: "$data"
    chmod 700 "$data"
    as_pg_user "$bin/initdb" -D "$data" -U q8s --auth=trust -E UTF8 >"$services_dir/postgres-initdb.log" 2>&1 \
      || { cat "$services_dir/postgres-initdb.log" >&2; return 1; }
  fi
  if as_pg_user "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    port=$(sed -n 4p "$data/postmaster.pid")
    echo "PostgreSQL already running on 127.0.0.1:$port ($data)" >&2
  else
    port=$(free_port)
    as_pg_user "$bin/pg_ctl" -D "$data" -w -t 60 -l "$data/server.log" \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$data -c max_connections=300 $settings" \
      start >/dev/null || { cat "$data/server.log" >&2; return 1; }
    [ "$profile" = bench ] || started_postgres="$data"
    echo "PostgreSQL started on 127.0.0.1:$port ($data)" >&2
  fi
  export Q8S_TEST_POSTGRES_URL="postgres://q8s@127.0.0.1:$port/postgres"
  # Each test creates a database of its own; drop those of earlier runs.
  "$bin/psql" -h 127.0.0.1 -p "$port" -U q8s -d postgres -Atqc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'q8s_test_%'" |
    while read -r name; do
      "$bin/psql" -h 127.0.0.1 -p "$port" -U q8s -d postgres -qc "DROP DATABASE \"$name\"" >/dev/null
    done
}

# Installs redis-server if missing, starts one on 127.0.0.1 (or finds ours
# running) with its data in a folder of its own, and exports Q8S_TEST_REDIS_URL.
# The test server keeps an append-only file (tests restart servers and count
# tasks); with Q8S_REDIS_PROFILE=bench a second server runs with redis-server's
# own default persistence, the Redis other task queues are measured on.
start_redis() {
  command -v redis-server >/dev/null || apt_install redis-server
  local profile="${Q8S_REDIS_PROFILE:-test}" data port persistence
  if [ "$profile" = bench ]; then
    data="$services_dir/redis-bench"
    persistence=(--appendonly no)
  else
    data="$services_dir/redis"
    persistence=(--save "" --appendonly yes)
  fi
  mkdir -p "$data"
  if running "$data/redis.pid" && redis-cli -p "$(cat "$data/port")" ping >/dev/null 2>&1; then
    port=$(cat "$data/port")
    echo "Redis already running on 127.0.0.1:$port ($data)" >&2
  else
    port=$(free_port)
    echo "$port" >"$data/port"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$data" --pidfile "$data/redis.pid" \
      --logfile "$data/redis.log" --daemonize yes "${persistence[@]}" --protected-mode yes >/dev/null
    wait_until redis-cli -p "$port" ping || { cat "$data/redis.log" >&2; return 1; }
    [ "$profile" = bench ] || started_redis="$data"
    echo "Redis started on 127.0.0.1:$port ($data)" >&2
  fi
  export Q8S_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
}

# moto's server mode stands in for SQS: a real SQS-compatible HTTP server, from PyPI.
moto_version=5.2.5

moto_answers() {
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$1/moto-api/')" 2>/dev/null
}

# Installs moto's server in a virtualenv of its own (kept across runs, outside
# the clone), starts it on 127.0.0.1 (or finds ours running) and exports
# Q8S_TEST_SQS_ENDPOINT.
start_sqs() {
  local venv="${Q8S_CACHE_DIR:-$HOME/.cache/q8s}/moto-$moto_version" data="$services_dir/sqs" port
  if [ ! -x "$venv/bin/moto_server" ]; then
    echo "installing moto[server]==$moto_version from PyPI into $venv" >&2
    rm -rf "$venv"
    # Debian's own python3 needs its venv module from a package of its own.
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && rm -rf "$venv" && python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$moto_version" >&2
  fi
  mkdir -p "$data"
  if running "$data/moto.pid" && moto_answers "$(cat "$data/port")"; then
    port=$(cat "$data/port")
    echo "SQS (moto) already running on 127.0.0.1:$port ($data)" >&2
  else
    port=$(free_port)
    echo "$port" >"$data/port"
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$data/moto.log" 2>&1 &
    echo $! >"$data/moto.pid"
    wait_until moto_answers "$port" || { cat "$data/moto.log" >&2; return 1; }
    started_sqs="$data"
    echo "SQS (moto) started on 127.0.0.1:$port ($data)" >&2
  fi
  export Q8S_TEST_SQS_ENDPOINT="http://127.0.0.1:$port"
}

# A Python tool from PyPI in a virtualenv of its own, kept across runs outside
# the clone; prints the virtualenv's python. pypi_tool PACKAGE VERSION MODULE
pypi_tool() {
  local package=$1 version=$2 module=$3
  local venv="${Q8S_CACHE_DIR:-$HOME/.cache/q8s}/$package-$version"
  if ! "$venv/bin/python" -c "import $module" 2>/dev/null; then
    echo "installing $package==$version from PyPI into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && rm -rf "$venv" && python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q --disable-pip-version-check "$package==$version" >&2
  fi
  echo "$venv/bin/python"
}

# The Prometheus client library's own exposition parser checks /metrics in
# the tests; exports Q8S_TEST_PROMETHEUS_PYTHON, the python that has it.
install_prometheus_parser() {
  Q8S_TEST_PROMETHEUS_PYTHON=$(pypi_tool prometheus-client 0.26.0 prometheus_client)
  export Q8S_TEST_PROMETHEUS_PYTHON
}

# cronsim, an independent cron implementation that follows Debian's (Vixie)
# cron, is the oracle of the cron differential test; exports
# Q8S_TEST_CRONSIM_PYTHON, the python that has it.
install_cron_oracle() {
  Q8S_TEST_CRONSIM_PYTHON=$(pypi_tool cronsim 2.8 cronsim)
  export Q8S_TEST_CRONSIM_PYTHON
}

# Stops what this run started, and nothing else.
stop_services() {
  if [ -n "${started_sqs:-}" ] && [ -f "$started_sqs/moto.pid" ]; then
    kill "$(cat "$started_sqs/moto.pid")" 2>/dev/null || true
  fi
  if [ -n "${started_redis:-}" ] && [ -f "$started_redis/redis.pid" ]; then
    kill "$(cat "$started_redis/redis.pid")" 2>/dev/null || true
  fi
  if [ -n "${started_postgres:-}" ]; then
    as_pg_user "$(postgres_bin)/pg_ctl" -D "$started_postgres" -m fast -w stop >/dev/null 2>&1 || true
  fi
}
