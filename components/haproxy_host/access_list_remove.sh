#!/bin/sh
# shellcheck shell=sh
# Access list removal: deletes the list file (and its previous copy) if it is ours. Runs after the
# config's update or restore, so no haproxy.cfg left on the host names it.
# Parameters: LIST_NAME, LIST_FILE. Run after lib.sh; the delete command of the allow-list and deny-list.
set -eu
[ -d "$STATE_DIR" ] || exit 0
take_host_lock
rm -f "$LIST_FILE.source-ip-edge.prev"
if [ -e "$LIST_FILE" ]; then
  if head -n 1 "$LIST_FILE" | grep -qF "$MARKER"; then
    rm -f "$LIST_FILE"
    log "removed the $LIST_NAME list ($LIST_FILE)"
  else
    log "$LIST_FILE is not ours (no '$MARKER' line): keeping it"
  fi
fi
