#!/bin/sh
# shellcheck shell=sh
# Uninstall (after restore.sh): remove the packages our install added and reset the SELinux
# boolean, as the record says the host had them; then forget the host. Run after lib.sh.
set -eu
[ -d "$STATE_DIR" ] || { log "no record of source-ip-edge on this host"; exit 0; }
take_host_lock
manage_haproxy
if [ "$(recorded record)" = ok ]; then
  if [ -s "$INSTALLED" ]; then
    packages=$(tr '\n' ' ' <"$INSTALLED")
    if command -v apt-get >/dev/null 2>&1; then
      # Purge also removes the package's conffiles, haproxy.cfg among them: only when the
      # host had no haproxy.cfg of its own before us.
      how=purge
      [ "$(recorded config_existed)" = yes ] && how=remove
      # shellcheck disable=SC2086 # one word per package
      DEBIAN_FRONTEND=noninteractive apt-get "$how" -y -q $packages >/dev/null
    else
      # shellcheck disable=SC2086 # one word per package
      dnf remove -y -q $packages >/dev/null
    fi
    log "removed the packages source-ip-edge installed: $packages"
  fi
  was=$(recorded selinux_haproxy_connect_any)
  if [ "$was" = off ] && selinux_enforcing; then
    setsebool -P haproxy_connect_any 0
    log "reset the SELinux boolean haproxy_connect_any to off"
  fi
else
  log "the record of this host before source-ip-edge is missing or lost: packages left installed"
fi
rm -f "$BEFORE" "$KA_BEFORE" "$INSTALLED" "$START_LOG" "$STATE_DIR/lock"
rmdir "$STATE_DIR" 2>/dev/null || true
log "host forgotten"
