#!/bin/sh
# shellcheck shell=sh
# Apply: stage the new haproxy.cfg (new_config, defined by scripts.py), check it (`haproxy -c`),
# swap it in atomically and reload seamlessly, rolled back unless the running workers report the
# new config's identity through the runtime API (apply_managed_file, lib.sh).
# Run after lib.sh; the create and update command of HAProxyHost's config.
set -eu
take_host_lock
manage_haproxy
record_before   # normally done by install.sh; here for hosts installed by an older version

staging=$(staging_file)
trap 'rm -f "$staging"' EXIT
new_config >"$staging"
chmod 644 "$staging"
want=$(haproxy_file_identity "$staging")
[ -n "$want" ] || fail "the new haproxy.cfg has no 'description' identity line (render it with source-ip-edge)"
apply_managed_file "$staging" "$want"
