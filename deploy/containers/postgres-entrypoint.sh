#!/bin/sh
# The official postgres image's first-start behaviour, reduced to what the manifests use: on an
# empty $PGDATA, initdb with $POSTGRES_USER as superuser and $POSTGRES_PASSWORD (scram-sha-256
# over TCP, trust on the local socket only), create $POSTGRES_DB; then run the server on all
# interfaces. Runs as the postgres user (the pod's runAsUser), never as root.
set -eu
: "${POSTGRES_PASSWORD:?}" "${PGDATA:?}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of flags, as in the official image
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    ${POSTGRES_INITDB_ARGS:-} >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    # a socket-only server, so nothing outside sees the database before it exists
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start >/dev/null
    createdb --host=/var/run/postgresql --username="$user" "$db"
    pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
  fi
  echo "initialised $PGDATA (user $user, database $db)"
fi
# the socket where the official image keeps it (pgserver's build says /tmp)
exec "$@" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql
