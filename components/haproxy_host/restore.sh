#!/bin/sh
# shellcheck shell=sh
# Restore: put the host's haproxy.cfg and service back as the record says they were before us
# (restore_managed_file, lib.sh). Without a trustworthy record it keeps what is live and says so.
# Run after lib.sh; HAProxyHost's delete command.
set -eu
if [ ! -d "$STATE_DIR" ]; then
  log "no record of this host before source-ip-edge ($BEFORE): keeping the live haproxy.cfg and service as they are"
  exit 0
fi
take_host_lock
manage_haproxy
if ! record_trusted; then
  rm -f "$MANAGED_PREVIOUS"
  exit 0
fi
restore_managed_file
rm -f "$SERVER_STATE_FILE"   # ours (lib.sh, save_server_state), whatever haproxy.cfg the host runs now
log "host restored to its record"
