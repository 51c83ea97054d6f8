#!/bin/sh
# Writes random credentials for an overlay's secretGenerator, one KEY=VALUE file per Secret:
#   deploy/k8s/make-secrets.sh deploy/k8s/overlays/prod     -> overlays/prod/secrets/*.env
# An existing file is kept, so running it again never changes a credential; delete a file
# (or edit it) to rotate that credential, then `kubectl apply -k` the overlay (deploy/README.md).
# The files are git-ignored (secrets/.gitignore) and readable by their owner only.
set -eu

overlay=${1:?usage: make-secrets.sh OVERLAY_DIR}
dir="$overlay/secrets"
umask 077
mkdir -p "$dir"

# letters and digits only: the keys end up in URLs and JSON (see the setup scripts)
random() {
  LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c "$1"
}

write() {  # name lines...
  file="$dir/$1.env"
  shift
  if [ -e "$file" ]; then
    echo "kept    $file"
    return
  fi
  printf '%s\n' "$@" >"$file.tmp"
  mv "$file.tmp" "$file"
  echo "wrote   $file"
}

# The object store's administrator: used by the s3-setup Job (and the store) only.
write s3-root "access-key=root-$(random 12)" "secret-key=$(random 40)"
# One S3 user per service, limited to the workbench bucket.
for service in gateway converter quantizer benchmark accuracy; do
  write "s3-$service" "access-key=$service-$(random 12)" "secret-key=$(random 40)"
done
# The gateway's credential towards the workers, and the clients' bearer token.
write workbench-internal-token "token=$(random 48)"
write workbench-auth-token "token=$(random 48)"
# The catalog database: the password of PostgreSQL's workbench role (set when its volume is first
# initialised) and the URL the gateway dials with it (WORKBENCH_DATABASE_URL). For an external
# PostgreSQL, edit url= afterwards (deploy/README.md).
password=$(random 40)
write catalog-database "password=$password" "url=postgresql://workbench:$password@postgres:5432/workbench"
