#!/bin/sh
# Container entrypoint: backfill Redis, then become the indicator service (the image's
# CMD, or compose's `command:`) only when the cache is ready. See docs/deploy.md.
#
#   LIVERMORE_CONFIG         the TOML file of backfill options (default /etc/livermore/livermore.toml)
#   LIVERMORE_REPORT         where the report JSON goes (default /tmp/livermore-report.json)
#   LIVERMORE_ALLOW_PARTIAL  1: start the service also when some series are short (exit 3)
#
# Exit codes are livermore-nb's: 2 configuration, 3 not ready (or stopped by SIGTERM),
# 4 Redis unreachable, 5 key rejected; once the service runs, they are the service's.
set -u

config="${LIVERMORE_CONFIG:-/etc/livermore/livermore.toml}"
report="${LIVERMORE_REPORT:-/tmp/livermore-report.json}"
if [ "$#" -eq 0 ]; then
    echo "entrypoint: no service command to start after the backfill" >&2
    exit 2
fi

livermore-nb backfill --config "$config" --report "$report" &
child=$!
# `docker stop` sends SIGTERM to PID 1 (this shell, or the shell under `init: true`):
# pass it on, so the backfill stops cleanly (written series stay) and reports exit 3.
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do  # wait returned early for a trapped signal
    status=0
    wait "$child" || status=$?
done
trap - TERM INT

if [ "$status" -eq 3 ] && [ "${LIVERMORE_ALLOW_PARTIAL:-0}" = 1 ]; then
    echo "entrypoint: some series are short or failed; starting anyway (LIVERMORE_ALLOW_PARTIAL=1)" >&2
elif [ "$status" -ne 0 ]; then
    echo "entrypoint: backfill exited $status; not starting $1 (report: $report)" >&2
    exit "$status"
fi
exec "$@"
