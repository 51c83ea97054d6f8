#!/bin/sh
# Writes SeaweedFS's S3 identities file ($OUT, passed to `weed server -s3.config`) from the
# same Secrets the services read: $KEYS_DIR/<name>/{access-key,secret-key}. "root" is the
# administrator (the s3-setup Job creates the bucket with it); every other name is a service,
# allowed to list, read and write the bucket $BUCKET and nothing else.
# Runs as an init container, so a rotated key takes effect when the pod restarts, which a
# change of the generated Secrets' names causes on `kubectl apply`.
# Keys are written into JSON unescaped: they must not contain '"' or '\'.
set -eu

: "${BUCKET:?}" "${OUT:?}"
KEYS_DIR=${KEYS_DIR:-/keys}

read_key() { tr -d '\r\n' <"$1"; }

identity() {  # name access-key secret-key actions...
  name=$1 access_key=$2 secret_key=$3
  shift 3
  actions=""
  for action in "$@"; do
    actions="${actions:+$actions, }\"$action\""
  done
  printf '    {"name": "%s", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], "actions": [%s]}' \
    "$name" "$access_key" "$secret_key" "$actions"
}

umask 077
{
  echo '{'
  echo '  "identities": ['
  identity root "$(read_key "$KEYS_DIR/root/access-key")" "$(read_key "$KEYS_DIR/root/secret-key")" \
    Admin Read Write List Tagging
  for dir in "$KEYS_DIR"/*/; do
    service=$(basename "$dir")
    [ "$service" = root ] && continue
    echo ','
    identity "$service" "$(read_key "$dir/access-key")" "$(read_key "$dir/secret-key")" \
      "Read:$BUCKET" "Write:$BUCKET" "List:$BUCKET" "Tagging:$BUCKET"
  done
  echo
  echo '  ]'
  echo '}'
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT"
