#!/bin/sh
# shellcheck shell=sh disable=SC2034 # the paths it sets are used by the scripts sent after it
# Functions shared by install.sh, apply.sh, restore.sh and uninstall.sh. scripts.py sends each
# command as: its parameters (upper-case variables, below), this file, then the script itself.
# POSIX sh only: a host may be a minimal Debian without bash extras or procps.
#
# Parameters (set by scripts.py before this file):
#   HAPROXY_CFG      the live haproxy.cfg the service reads
#   STATE_DIR        the record of the host before us, and our lock
#   PIDFILE          the master's pid file (the Debian and RHEL units use /run/haproxy.pid)
#   STATS_SOCKET     haproxy.cfg's `stats socket`: the runtime API that says what is loaded
#   SERVICE_MANAGER  auto | systemd | pidfile (auto: systemd when it is PID 1, sd_booted(3))
#   CONF_D           a directory the host's unit loads after haproxy.cfg (RHEL), if it exists

PATH=$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin  # sbin may be missing over SSH
export PATH
umask 022
BEFORE=$STATE_DIR/before            # the record of the host before us (see record_host_before)
INSTALLED=$STATE_DIR/installed      # packages our install added, removed again by uninstall.sh
START_LOG=$STATE_DIR/start.log
ORIGINAL=$HAPROXY_CFG.source-ip-edge.orig   # beside the config: outlives a lost state dir
PREVIOUS=$HAPROXY_CFG.source-ip-edge.prev
MARKER='# Managed by source-ip-edge'        # the first line of every haproxy.cfg we render

log() { echo "source-ip-edge: $*"; }
fail() { echo "source-ip-edge: $*" >&2; exit 1; }

has_systemd() {
  case "$SERVICE_MANAGER" in
    systemd) return 0 ;;
    pidfile) return 1 ;;
    *) [ -d /run/systemd/system ] ;;
  esac
}

# One run at a time on a host: two applies must never interleave (flock(1), util-linux).
take_host_lock() {
  mkdir -p "$STATE_DIR"
  chmod 700 "$STATE_DIR"
  exec 9>>"$STATE_DIR/lock"
  if ! flock -n 9; then
    log "another source-ip-edge run holds the host lock; waiting for it"
    flock -w 600 9 || fail "the host lock $STATE_DIR/lock was not released within 600 s"
  fi
}

# kill -0 also succeeds on a zombie that init has not reaped yet.
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# The master pid from the pidfile, if that process is alive and is haproxy.
master_pid() {
  [ -s "$PIDFILE" ] || return 1
  pid=$(head -n 1 "$PIDFILE" | tr -cd '0-9')
  [ -n "$pid" ] || return 1
  alive "$pid" || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = haproxy ] || return 1
  echo "$pid"
}

# Only a master-worker reloads on USR2; USR2 would kill a legacy daemon.
is_master_worker() {
  tr '\000' '\n' <"/proc/$1/cmdline" | grep -qx -e '-W' -e '-Ws' && return 0
  grep -qE '^[[:space:]]*master-worker([[:space:]]|$)' "$HAPROXY_CFG" 2>/dev/null
}

haproxy_running() {
  if has_systemd; then systemctl is-active --quiet haproxy; else master_pid >/dev/null; fi
}

package_installed() {
  if command -v dpkg-query >/dev/null 2>&1; then
    [ "$(dpkg-query -W -f '${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
  elif command -v rpm >/dev/null 2>&1; then
    rpm -q "$1" >/dev/null 2>&1
  else
    command -v "$1" >/dev/null 2>&1
  fi
}

selinux_enforcing() { command -v getenforce >/dev/null 2>&1 && [ "$(getenforce)" = Enforcing ]; }

# Writes the record of the host as it is now, once, before anything of ours touches it.
# A host whose haproxy.cfg is already ours (or that has our saved original) but no record lost
# its state directory: then nothing is recorded as "before", restore keeps what is live.
record_host_before() {
  [ -e "$BEFORE" ] && return 0
  if [ -e "$ORIGINAL" ] || { [ -e "$HAPROXY_CFG" ] && head -n 1 "$HAPROXY_CFG" | grep -qF "$MARKER"; }; then
    printf 'record=lost\n' >"$BEFORE.tmp"
    mv "$BEFORE.tmp" "$BEFORE"
    log "WARNING: this host ran source-ip-edge before but its record ($BEFORE) is gone:" \
      "destroy will keep the live config and service instead of guessing what the host had" >&2
    return 0
  fi
  package=no; config_existed=no; config_sha256=-; was_running=no; was_enabled=no; selinux_connect_any=-
  if package_installed haproxy; then package=yes; fi
  if [ -e "$HAPROXY_CFG" ]; then
    config_existed=yes
    config_sha256=$(sha256sum "$HAPROXY_CFG" | cut -d' ' -f1)
    [ -e "$ORIGINAL" ] || cp -p "$HAPROXY_CFG" "$ORIGINAL"
  fi
  if [ "$package" = yes ] && haproxy_running; then was_running=yes; fi
  if has_systemd && systemctl is-enabled --quiet haproxy 2>/dev/null; then was_enabled=yes; fi
  if selinux_enforcing; then selinux_connect_any=$(getsebool haproxy_connect_any | sed 's/.*--> //'); fi
  printf 'record=ok\npackage=%s\nconfig_existed=%s\nconfig_sha256=%s\nwas_running=%s\nwas_enabled=%s\nselinux_haproxy_connect_any=%s\n' \
    "$package" "$config_existed" "$config_sha256" "$was_running" "$was_enabled" "$selinux_connect_any" >"$BEFORE.tmp"
  mv "$BEFORE.tmp" "$BEFORE"
  log "recorded the host before us: haproxy installed: $package, config: $config_existed, running: $was_running, enabled: $was_enabled"
}

before() { sed -n "s/^$1=//p" "$BEFORE" 2>/dev/null; }

# The identity line of a config we rendered ("description source-ip-edge sha256=..."), which
# the runtime API's `show info` reports for the config the running workers loaded.
config_identity() { sed -n 's/^[[:space:]]*description[[:space:]]\{1,\}//p' "$1" | head -n 1; }

loaded_identity() {
  [ -S "$STATS_SOCKET" ] || return 0
  echo "show info" | socat -t 2 stdio "UNIX-CONNECT:$STATS_SOCKET" 2>/dev/null | sed -n 's/^description: //p'
}

# Polls the function named $1 until it prints $2, for at most $3 tenths of a second.
wait_for_identity() {
  i=0
  while [ "$i" -lt "$3" ]; do
    [ "$("$1")" = "$2" ] && return 0
    i=$((i + 1)); sleep 0.1
  done
  return 1
}

# Polls the runtime API until the running workers report `identity`: a reload is done only
# when they do (systemctl reload returns 0 even when the new workers fail; DESIGN.md).
wait_until_loaded() { wait_for_identity loaded_identity "$1" 100; }

# `haproxy -c` on a file together with the directory the host's unit also loads (RHEL: conf.d).
check_config() {
  if [ -n "$CONF_D" ] && [ -d "$CONF_D" ]; then
    haproxy -c -f "$1" -f "$CONF_D"
  else
    haproxy -c -f "$1"
  fi
}

start_master() {
  conf_d_args=""
  if [ -n "$CONF_D" ] && [ -d "$CONF_D" ]; then conf_d_args="-f $CONF_D"; fi
  # shellcheck disable=SC2086 # conf_d_args is empty or two words
  # 9>&-: the daemon must not inherit the host lock, or it would hold it for its lifetime.
  if ! haproxy -W -D -p "$PIDFILE" -f "$HAPROXY_CFG" $conf_d_args "$@" >"$START_LOG" 2>&1 </dev/null 9>&-; then
    cat "$START_LOG" >&2
    return 1
  fi
  i=0
  until pid=$(master_pid); do
    i=$((i + 1))
    if [ "$i" -ge 100 ]; then log "haproxy started but wrote no live pid to $PIDFILE" >&2; return 1; fi
    sleep 0.1
  done
  log "started haproxy master-worker (master pid $pid)"
}

stop_master() {
  pid=$(master_pid) || return 0
  kill -USR1 "$pid"   # soft stop: listeners close, open connections finish
  i=0
  while alive "$pid"; do
    i=$((i + 1))
    if [ "$i" -eq 100 ]; then kill -TERM "$pid" 2>/dev/null || true; fi
    if [ "$i" -ge 150 ]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
    sleep 0.1
  done
  rm -f "$PIDFILE"
  log "stopped haproxy (master pid $pid)"
}

# Starts haproxy, or reloads it seamlessly (never a restart: that drops connections).
start_or_reload() {
  # The runtime API's directory; the packages' tmpfiles.d makes it at boot, not always at install.
  mkdir -p "$(dirname "$STATS_SOCKET")"
  if has_systemd; then
    if systemctl is-active --quiet haproxy; then systemctl reload haproxy 9>&-
    else systemctl start haproxy 9>&-; fi
  elif pid=$(master_pid); then
    if is_master_worker "$pid"; then
      kill -USR2 "$pid"
    else
      # A legacy daemon (e.g. Debian's sysvinit script) cannot reload in place: a new
      # master-worker takes over its sockets and soft-stops it.
      log "haproxy $pid is not master-worker: starting a master-worker that replaces it gracefully"
      start_master -sf "$pid"
    fi
  else
    start_master
  fi
}

service_stop() {
  if has_systemd; then
    if systemctl is-active --quiet haproxy; then systemctl stop haproxy; log "stopped haproxy.service"; fi
  else
    stop_master
  fi
}
