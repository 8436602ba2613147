#!/bin/sh
# shellcheck shell=sh
# Restore keepalived as the record says it was before us: the host's own keepalived.conf back (or
# ours removed), the service running or stopped, enabled or not, our check script gone. Without a
# trustworthy record it keeps what is live. Stopping keepalived gives the VIP up at once (it sends
# priority 0), so the other host takes it over. Run after lib.sh and keepalived_lib.sh; the delete
# command of HAProxyHost's keepalived, which runs before haproxy.cfg is restored.
set -eu
if [ ! -e "$KA_BEFORE" ]; then
  log "no record of keepalived before source-ip-edge ($KA_BEFORE): keeping keepalived as it is"
  exit 0
fi
take_host_lock
if [ "$(ka_before record)" != ok ]; then
  log "the record of keepalived before source-ip-edge is lost: keeping the live keepalived.conf and service"
  [ -e "$KA_ORIGINAL" ] && log "the keepalived.conf saved before source-ip-edge is still at $KA_ORIGINAL"
  rm -f "$KA_PREVIOUS" "$KA_BEFORE"
  exit 0
fi

changed=no
if [ "$(ka_before config_existed)" = yes ]; then
  if [ ! -e "$KA_ORIGINAL" ]; then
    log "the saved original $KA_ORIGINAL is gone: keeping the live keepalived.conf" >&2
  elif ! { [ -e "$KEEPALIVED_CONF" ] && cmp -s "$KA_ORIGINAL" "$KEEPALIVED_CONF"; }; then
    staging=$(mktemp "$(dirname "$KEEPALIVED_CONF")/.keepalived.conf.source-ip-edge.XXXXXX")
    cp -p "$KA_ORIGINAL" "$staging"
    mv -f "$staging" "$KEEPALIVED_CONF"
    changed=yes
    log "restored the original keepalived.conf"
  fi
elif [ -e "$KEEPALIVED_CONF" ]; then
  if head -n 1 "$KEEPALIVED_CONF" | grep -qF "$MARKER"; then
    rm -f "$KEEPALIVED_CONF"
    changed=yes
    log "removed our keepalived.conf (the host had none before)"
  else
    log "keepalived.conf is not ours any more (no '$MARKER' line): keeping it"
  fi
fi

if [ "$(ka_before was_running)" = yes ] && [ -e "$KEEPALIVED_CONF" ]; then
  if ! keepalived_running || [ "$changed" = yes ]; then keepalived_start_or_reload; fi
  log "keepalived left running, as it was before"
else
  keepalived_stop
fi
if has_systemd; then
  if [ "$(ka_before was_enabled)" = yes ]; then systemctl enable --quiet keepalived 2>/dev/null || true
  else systemctl disable --quiet keepalived 2>/dev/null || true; fi
fi
if ! grep -qsF "$CHECK_SCRIPT" "$KEEPALIVED_CONF"; then rm -f "$CHECK_SCRIPT" "$LOADED_FILE"; fi
rm -f "$KA_PREVIOUS" "$KA_ORIGINAL" "$KA_BEFORE"
log "keepalived restored to its record"
