#!/bin/sh
# shellcheck shell=sh disable=SC2034 # the paths it sets are used by the scripts sent after it
# keepalived's part of the host record and service, for an HA pair with a VIP: the functions a
# managed file's service provides (lib.sh), for keepalived.conf. Sent after lib.sh with install.sh,
# uninstall.sh, keepalived_apply.sh and keepalived_restore.sh. POSIX sh.
#
# Parameters (set by scripts.py before lib.sh):
#   KEEPALIVED_CONF     the live keepalived.conf the service reads
#   KEEPALIVED_PIDFILE  keepalived's pid file where no systemd runs it (Debian: /run/keepalived.pid)
#   CHECK_SCRIPT        the vrrp_script keepalived.conf runs (keepalived_conf.py)
#   LOADED_FILE         where that script writes the identity of the config keepalived runs

KA_BEFORE=$STATE_DIR/keepalived.before   # the record of keepalived before us
KA_INSTALLED=$STATE_DIR/keepalived.installed   # packages installed for keepalived, removed with it

# keepalived's reload is verified through its vrrp_script, which runs each second: 15 s.
manage_keepalived() { manage keepalived "$KEEPALIVED_CONF" "$KA_BEFORE" "keepalived -t" 150; }

keepalived_check() { keepalived -t -f "$1"; }

keepalived_record_extra() { :; }

keepalived_pid() {
  [ -s "$KEEPALIVED_PIDFILE" ] || return 1
  pid=$(head -n 1 "$KEEPALIVED_PIDFILE" | tr -cd '0-9')
  [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = keepalived ] && echo "$pid"
}

keepalived_running() {
  if has_systemd; then systemctl is-active --quiet keepalived; else keepalived_pid >/dev/null; fi
}

# keepalived re-reads its config on SIGHUP; Debian's unit: ExecReload=/bin/kill -HUP $MAINPID,
# which returns 0 whatever keepalived makes of the file: apply_managed_file verifies.
keepalived_start_or_reload() {
  if has_systemd; then
    if systemctl is-active --quiet keepalived; then systemctl reload keepalived 9>&-
    else systemctl start keepalived 9>&-; fi
  elif pid=$(keepalived_pid); then
    kill -HUP "$pid"
  else
    keepalived --use-file="$KEEPALIVED_CONF" --pid="$KEEPALIVED_PIDFILE" 9>&- </dev/null >/dev/null 2>&1
  fi
}

keepalived_stop() {
  if has_systemd; then
    if systemctl is-active --quiet keepalived; then systemctl stop keepalived; log "stopped keepalived.service"; fi
  elif pid=$(keepalived_pid); then
    kill -TERM "$pid"
    i=0
    while alive "$pid" && [ "$i" -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
    log "stopped keepalived (pid $pid)"
  fi
}

# The identity keepalived_apply.sh writes into the file, as one of keepalived's own definitions.
# shellcheck disable=SC2016 # a literal $: the definition's name
keepalived_file_identity() { sed -n 's/^\$SOURCE_IP_EDGE_IDENTITY=//p' "$1" | head -n 1; }

# The identity of the config keepalived runs: its vrrp_script, started by keepalived with the
# identity as an argument, writes it to LOADED_FILE at every run (each second).
keepalived_loaded_identity() { cat "$LOADED_FILE" 2>/dev/null || true; }
