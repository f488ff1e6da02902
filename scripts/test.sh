#!/usr/bin/env bash
# Install what is needed and run the whole test suite, on SQLite and on PostgreSQL.
# Extra arguments go to pytest, e.g. scripts/test.sh -k events
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh" "[test]"
# anvil (a local EVM) and solc (to compile the test token) come from npm.
if [ ! -x node_modules/.bin/anvil ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm ci` trips over the optional per-platform packages of @foundry-rs/anvil; install
  # honours package-lock.json all the same.
  npm install --no-audit --no-fund --loglevel=error
fi
# Headless Chromium and its driver (Debian's) for the page test (tests/web).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
  fi
fi
# PostgreSQL at 127.0.0.1:5432 (database `test`); start the local cluster if it is down.
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
# NATS with JetStream at 127.0.0.1:4222 (the stream consumer's tests); start it if it is down.
if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && [ -x /usr/sbin/nats-server ]; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  for _ in $(seq 1 30); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 1; done
fi
# Both engines: their tests run at once, in two pytest processes (about half the wall time on
# two cores; each has its own databases, ports and chain).  METERING_TEST_DATABASES=sqlite
# (or postgresql) runs one engine in this one process.
if [ -n "${METERING_TEST_DATABASES:-}" ] || [ "$(nproc)" -lt 2 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
logs=$(mktemp -d)
METERING_TEST_ONLY=postgresql,none .venv/bin/python -m pytest "$@" > "$logs/postgresql" 2>&1 &
other=$!
trap 'kill "$other" 2>/dev/null || true' INT TERM
set +e
echo "== SQLite (PostgreSQL and the tests without a database run alongside; their output follows)"
METERING_TEST_ONLY=sqlite .venv/bin/python -m pytest "$@"
first=$?
wait "$other"
second=$?
set -e
echo "== PostgreSQL, and the tests without a database"
cat "$logs/postgresql"
rm -rf "$logs"
# 5 is pytest's "no tests collected": a selection (-k, a path) may fall in one half only.
if [ "$first" = 5 ] && [ "$second" = 5 ]; then exit 5; fi
for rc in "$first" "$second"; do
  if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then exit "$rc"; fi
done
