#!/bin/sh
# shellcheck shell=sh disable=SC2034 # the paths it sets are used by the scripts sent after it
# keepalived's part of the host record and service, for an HA pair with a VIP: sent after lib.sh
# with install.sh, uninstall.sh, keepalived_apply.sh and keepalived_restore.sh. POSIX sh.
#
# Parameters (set by scripts.py before lib.sh):
#   KEEPALIVED_CONF     the live keepalived.conf the service reads
#   KEEPALIVED_PIDFILE  keepalived's pid file where no systemd runs it (Debian: /run/keepalived.pid)
#   CHECK_SCRIPT        the vrrp_script keepalived.conf runs (keepalived_conf.py)
#   LOADED_FILE         where that script writes the identity of the config keepalived runs

KA_BEFORE=$STATE_DIR/keepalived.before                 # the record of keepalived before us
KA_ORIGINAL=$KEEPALIVED_CONF.source-ip-edge.orig       # beside the config: outlives a lost state dir
KA_PREVIOUS=$KEEPALIVED_CONF.source-ip-edge.prev

ka_before() { sed -n "s/^$1=//p" "$KA_BEFORE" 2>/dev/null; }

keepalived_pid() {
  [ -s "$KEEPALIVED_PIDFILE" ] || return 1
  pid=$(head -n 1 "$KEEPALIVED_PIDFILE" | tr -cd '0-9')
  [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = keepalived ] && echo "$pid"
}

keepalived_running() {
  if has_systemd; then systemctl is-active --quiet keepalived; else keepalived_pid >/dev/null; fi
}

# Like record_host_before, for keepalived: once, before our install or our first config.
record_keepalived_before() {
  [ -e "$KA_BEFORE" ] && return 0
  mkdir -p "$STATE_DIR"
  if [ -e "$KA_ORIGINAL" ] || { [ -e "$KEEPALIVED_CONF" ] && head -n 1 "$KEEPALIVED_CONF" | grep -qF "$MARKER"; }; then
    printf 'record=lost\n' >"$KA_BEFORE.tmp"
    mv "$KA_BEFORE.tmp" "$KA_BEFORE"
    log "WARNING: keepalived was configured by source-ip-edge before but its record ($KA_BEFORE) is gone:" \
      "destroy will keep the live keepalived.conf and service" >&2
    return 0
  fi
  package=no; config_existed=no; was_running=no; was_enabled=no
  if package_installed keepalived; then package=yes; fi
  if [ -e "$KEEPALIVED_CONF" ]; then
    config_existed=yes
    [ -e "$KA_ORIGINAL" ] || cp -p "$KEEPALIVED_CONF" "$KA_ORIGINAL"
  fi
  if [ "$package" = yes ] && keepalived_running; then was_running=yes; fi
  if has_systemd && systemctl is-enabled --quiet keepalived 2>/dev/null; then was_enabled=yes; fi
  printf 'record=ok\npackage=%s\nconfig_existed=%s\nwas_running=%s\nwas_enabled=%s\n' \
    "$package" "$config_existed" "$was_running" "$was_enabled" >"$KA_BEFORE.tmp"
  mv "$KA_BEFORE.tmp" "$KA_BEFORE"
  log "recorded keepalived before us: installed: $package, config: $config_existed, running: $was_running, enabled: $was_enabled"
}

# keepalived re-reads its config on SIGHUP; Debian's unit: ExecReload=/bin/kill -HUP $MAINPID,
# which returns 0 whatever keepalived makes of the file: wait_until_keepalived_runs verifies.
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

# The identity of the config keepalived runs: its vrrp_script, started by keepalived with the
# identity as an argument, writes it to LOADED_FILE at every run (each second).
keepalived_loaded_identity() { cat "$LOADED_FILE" 2>/dev/null || true; }

wait_until_keepalived_runs() { wait_for_identity keepalived_loaded_identity "$1" 150; }
