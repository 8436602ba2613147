#!/bin/sh
# shellcheck shell=sh
# Apply: stage the new haproxy.cfg (new_config, defined by scripts.py), check it, swap it in
# atomically and reload seamlessly. "Applied" means the running workers report the new config's
# identity through the runtime API, not that a file is in place or that a command returned 0.
# Run after lib.sh; the create and update command of HAProxyHost's config.
set -eu
take_host_lock
record_host_before   # normally done by install.sh; here for hosts installed by an older version

config_dir=$(dirname "$HAPROXY_CFG")
mkdir -p "$config_dir"
# A staging file of this run's own, in the config's directory so `mv` is atomic.
staging=$(mktemp "$config_dir/.haproxy.cfg.source-ip-edge.XXXXXX")
trap 'rm -f "$staging"' EXIT
new_config >"$staging"
chmod 644 "$staging"
want=$(config_identity "$staging")
[ -n "$want" ] || fail "the new haproxy.cfg has no 'description' identity line (render it with source-ip-edge)"

if ! check_output=$(check_config "$staging" 2>&1); then
  printf '%s\n' "$check_output" >&2
  fail "haproxy -c rejected the new config; live config and process untouched"
fi
log "haproxy -c: new config is valid"

if [ -e "$HAPROXY_CFG" ] && cmp -s "$staging" "$HAPROXY_CFG"; then
  if haproxy_running && [ "$(loaded_identity)" = "$want" ]; then
    log "haproxy.cfg unchanged and loaded by the running haproxy"
    exit 0
  fi
  log "haproxy.cfg is in place but the running haproxy has not loaded it: loading it now"
  swapped=no
else
  if [ -e "$HAPROXY_CFG" ]; then cp -p "$HAPROXY_CFG" "$PREVIOUS"; fi
  mv -f "$staging" "$HAPROXY_CFG"
  swapped=yes
  log "swapped in the new haproxy.cfg (previous kept at $PREVIOUS)"
fi

if has_systemd && ! systemctl is-enabled --quiet haproxy 2>/dev/null; then
  systemctl enable --quiet haproxy
  log "enabled haproxy.service"
fi
start_or_reload
if wait_until_loaded "$want"; then
  log "haproxy runs the new config ($want)"
  exit 0
fi

# `haproxy -c` does not bind, so a reload can still fail (an address the host lacks): the
# master keeps its old workers. Put the previous file back so the live file is what runs.
if [ "$swapped" = yes ] && [ -e "$PREVIOUS" ]; then
  cp -p "$PREVIOUS" "$staging"
  mv -f "$staging" "$HAPROXY_CFG"
  if haproxy_running && [ "$(loaded_identity)" != "$(config_identity "$HAPROXY_CFG")" ]; then
    start_or_reload || true
    wait_until_loaded "$(config_identity "$HAPROXY_CFG")" || true
  fi
  fail "haproxy did not load the new config (see its log); the previous haproxy.cfg is back in place and running"
fi
[ -s "$START_LOG" ] && cat "$START_LOG" >&2
fail "haproxy did not load the new config (see its log)"
