#!/bin/sh
# shellcheck shell=sh
# Restore keepalived as the record says it was before us (restore_managed_file, lib.sh): the
# host's own keepalived.conf back (or ours removed), the service running or stopped, enabled or
# not, our check script gone, and the packages installed for it removed: so removing haproxy.vip
# from a stack puts its hosts back as they were before the VIP, as destroy does. Without a
# trustworthy record it keeps what is live. Stopping keepalived gives the VIP up at once (it sends
# priority 0), so the other host takes it over.
# Run after lib.sh and keepalived_lib.sh; the delete command of HAProxyHost's keepalived, which
# runs before haproxy.cfg is restored.
set -eu
if [ ! -e "$KA_BEFORE" ]; then
  log "no record of keepalived before source-ip-edge ($KA_BEFORE): keeping keepalived as it is"
  exit 0
fi
take_host_lock
manage_keepalived
if ! record_trusted; then
  rm -f "$MANAGED_PREVIOUS" "$KA_BEFORE"
  exit 0
fi
restore_managed_file
if ! grep -qsF "$CHECK_SCRIPT" "$KEEPALIVED_CONF"; then rm -f "$CHECK_SCRIPT" "$LOADED_FILE"; fi
remove_packages "$KA_INSTALLED"
rm -f "$KA_BEFORE"
log "keepalived restored to its record"
