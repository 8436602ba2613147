#!/bin/sh
# shellcheck shell=sh
# Restore: put the host's haproxy.cfg and service back as the record says they were before us.
# Without a trustworthy record it keeps what is live and says so: it never deletes a config or
# stops a haproxy it cannot prove is ours. Run after lib.sh; HAProxyHost's delete command.
set -eu
if [ ! -d "$STATE_DIR" ]; then
  log "no record of this host before source-ip-edge ($BEFORE): keeping the live haproxy.cfg and service as they are"
  exit 0
fi
take_host_lock
if [ "$(before record)" != ok ]; then
  log "the record of this host before source-ip-edge is missing or lost: keeping the live haproxy.cfg and service as they are"
  [ -e "$ORIGINAL" ] && log "the config saved before source-ip-edge is still at $ORIGINAL"
  rm -f "$PREVIOUS"
  exit 0
fi

changed=no
if [ "$(before config_existed)" = yes ]; then
  if [ ! -e "$ORIGINAL" ]; then
    log "the saved original $ORIGINAL is gone: keeping the live haproxy.cfg" >&2
  elif ! { [ -e "$HAPROXY_CFG" ] && cmp -s "$ORIGINAL" "$HAPROXY_CFG"; }; then
    staging=$(mktemp "$(dirname "$HAPROXY_CFG")/.haproxy.cfg.source-ip-edge.XXXXXX")
    cp -p "$ORIGINAL" "$staging"
    mv -f "$staging" "$HAPROXY_CFG"
    changed=yes
    log "restored the original haproxy.cfg"
  fi
elif [ -e "$HAPROXY_CFG" ]; then
  if head -n 1 "$HAPROXY_CFG" | grep -qF "$MARKER"; then
    rm -f "$HAPROXY_CFG"
    changed=yes
    log "removed our haproxy.cfg (the host had none before)"
  else
    log "haproxy.cfg is not ours any more (no '$MARKER' line): keeping it"
  fi
fi

if [ "$(before was_running)" = yes ] && [ -e "$HAPROXY_CFG" ]; then
  if ! haproxy_running || [ "$changed" = yes ]; then start_or_reload; fi
  log "haproxy left running, as it was before"
else
  service_stop
fi
if has_systemd; then
  if [ "$(before was_enabled)" = yes ]; then systemctl enable --quiet haproxy 2>/dev/null || true
  else systemctl disable --quiet haproxy 2>/dev/null || true; fi
fi
rm -f "$PREVIOUS" "$ORIGINAL"
log "host restored to its record"
