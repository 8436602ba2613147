#!/bin/sh
# shellcheck shell=sh
# Uninstall (after restore.sh): remove the packages our install added and reset the SELinux
# boolean, as the record says the host had them; then forget the host. Run after lib.sh and
# keepalived_lib.sh. keepalived's packages went with keepalived_restore.sh; a host installed by
# an older version lists them in haproxy's list, so they go here.
set -eu
[ -d "$STATE_DIR" ] || { log "no record of source-ip-edge on this host"; exit 0; }
take_host_lock
manage_haproxy
if [ "$(recorded record)" = ok ]; then
  # Purge also removes the package's conffiles, haproxy.cfg among them: only when the host had
  # no haproxy.cfg of its own before us.
  remove_packages "$INSTALLED"
  was=$(recorded selinux_haproxy_connect_any)
  if [ "$was" = off ] && selinux_enforcing; then
    setsebool -P haproxy_connect_any 0
    log "reset the SELinux boolean haproxy_connect_any to off"
  fi
else
  log "the record of this host before source-ip-edge is missing or lost: packages left installed"
fi
rm -f "$BEFORE" "$KA_BEFORE" "$INSTALLED" "$KA_INSTALLED" "$START_LOG" "$STATE_DIR/lock"
rmdir "$STATE_DIR" 2>/dev/null || true
log "host forgotten"
