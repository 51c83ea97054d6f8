#!/bin/sh
# Provisions MinIO for Workbench; run by the s3-setup Job (image minio/mc).
#   - the bucket $BUCKET
#   - the policy workbench-bucket: list that bucket, read/write/delete its objects, multipart
#   - one user per service, keys from $KEYS_DIR/<service>/{access-key,secret-key}, with that
#     policy attached ($KEYS_DIR/root holds the administrator's keys, used to do all this)
# Idempotent: every run converges to the same state, and a changed secret key is applied.
# The administrator's keys go into a URL (MC_HOST_s3): they must not contain '@', ':' or '/'.
set -eu

: "${S3_ENDPOINT:?}" "${BUCKET:?}"
KEYS_DIR=${KEYS_DIR:-/keys}
POLICY=workbench-bucket

read_key() { tr -d '\r\n' <"$1"; }

MC_HOST_s3="http://$(read_key "$KEYS_DIR/root/access-key"):$(read_key "$KEYS_DIR/root/secret-key")@${S3_ENDPOINT}"
export MC_HOST_s3

echo "waiting for MinIO at ${S3_ENDPOINT}"
until mc ls s3 >/dev/null 2>&1; do
  sleep 2
done

mc mb --ignore-existing "s3/${BUCKET}"

policy_file="${TMPDIR:-/tmp}/${POLICY}.json"
cat >"$policy_file" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::${BUCKET}"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::${BUCKET}/*"]
    }
  ]
}
JSON
# create replaces a policy of the same name
mc admin policy create s3 "$POLICY" "$policy_file"

for dir in "$KEYS_DIR"/*/; do
  service=$(basename "$dir")
  [ "$service" = root ] && continue
  access_key=$(read_key "$dir/access-key")
  # add also updates the secret key of an existing user
  mc admin user add s3 "$access_key" "$(read_key "$dir/secret-key")" >/dev/null
  # attaching an attached policy is an error; the check below is what counts
  mc admin policy attach s3 "$POLICY" --user "$access_key" >/dev/null 2>&1 || true
  if ! mc admin user info s3 "$access_key" | grep -q "$POLICY"; then
    echo "policy $POLICY is not attached to the $service user ($access_key)" >&2
    exit 1
  fi
  echo "user for $service: ready"
done
echo "bucket ${BUCKET}: ready"
