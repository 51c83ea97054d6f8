#!/bin/sh
# Provisions SeaweedFS for Workbench; run by the s3-setup Job (image minio/mc) in place of the
# MinIO script. SeaweedFS takes its users from the identities file its pod writes at start
# (identities.sh), so all that is left is the bucket, created with the administrator's keys.
# The keys go into a URL (MC_HOST_s3): they must not contain '@', ':' or '/'.
set -eu

: "${S3_ENDPOINT:?}" "${BUCKET:?}"
KEYS_DIR=${KEYS_DIR:-/keys}

read_key() { tr -d '\r\n' <"$1"; }

MC_HOST_s3="http://$(read_key "$KEYS_DIR/root/access-key"):$(read_key "$KEYS_DIR/root/secret-key")@${S3_ENDPOINT}"
export MC_HOST_s3

echo "waiting for SeaweedFS at ${S3_ENDPOINT}"
until mc ls s3 >/dev/null 2>&1; do
  sleep 2
done

mc mb --ignore-existing "s3/${BUCKET}"
echo "bucket ${BUCKET}: ready"
