#!/bin/sh
# shellcheck shell=sh disable=SC2034 # the paths it sets are used by the scripts sent after it
# Functions shared by every host script: the host lock, the packages, haproxy's service, and one
# "managed file" (a config file of ours that a service runs: haproxy.cfg, keepalived.conf) staged,
# checked, swapped, reloaded, verified, rolled back, and restored on destroy. scripts.py sends each
# command as: its parameters (upper-case variables, below), this file, then the script itself.
# POSIX sh only: a host may be a minimal Debian without bash extras or procps.
#
# Parameters (set by scripts.py before this file):
#   HAPROXY_CFG      the live haproxy.cfg the service reads
#   STATE_DIR        the record of the host before us, and our lock
#   PIDFILE          the master's pid file (the Debian and RHEL units use /run/haproxy.pid)
#   STATS_SOCKET     haproxy.cfg's `stats socket`: the runtime API that says what is loaded
#   SERVER_STATE_FILE haproxy.cfg's `server-state-file`: the servers' states, saved before a reload
#   SERVICE_MANAGER  auto | systemd | pidfile (auto: systemd when it is PID 1, sd_booted(3))
#   CONF_D           a directory the host's unit loads after haproxy.cfg (RHEL), if it exists

PATH=$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin  # sbin may be missing over SSH
export PATH
umask 022
BEFORE=$STATE_DIR/before            # the record of the host before us (see record_before)
INSTALLED=$STATE_DIR/installed      # packages our install added, removed again by uninstall.sh
START_LOG=$STATE_DIR/start.log
MARKER='# Managed by source-ip-edge'        # the first line of every file we write

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

# --- packages ---------------------------------------------------------------------------------

# install_packages "NAME..." LIST: installs the missing ones of those packages with the host's
# package manager and appends every package that adds (dependencies too) to the file LIST, from
# which remove_packages takes them off again. Nothing when they are there.
install_packages() {
  missing=""
  for p in $1; do package_installed "$p" || missing="$missing $p"; done
  if [ -z "$missing" ]; then log "$1 already installed"; return 0; fi
  if command -v apt-get >/dev/null 2>&1; then
    dpkg-query -W -f '${binary:Package}\n' | sort >"$STATE_DIR/packages.before"
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      # Exit 101 = "action forbidden" (invoke-rc.d(8)): the package's postinst does not start
      # the service; apply_managed_file starts it once the config is ours and checked.
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      policy=/usr/sbin/policy-rc.d
    fi
    log "apt-get update; apt-get install$missing"
    # shellcheck disable=SC2086 # one word per package
    # </dev/null: a command's stdin may be a secret (keepalived_apply.sh's password), never theirs.
    if ! { apt-get update -q </dev/null >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing </dev/null >/dev/null; }; then
      rm -f "$policy"
      fail "apt-get could not install$missing"
    fi
    rm -f "$policy"
    dpkg-query -W -f '${binary:Package}\n' | sort | comm -13 "$STATE_DIR/packages.before" - >>"$2"
  elif command -v dnf >/dev/null 2>&1; then
    rpm -qa --qf '%{NAME}\n' | sort >"$STATE_DIR/packages.before"
    log "dnf install$missing"
    # shellcheck disable=SC2086 # one word per package
    dnf install -y -q $missing </dev/null >/dev/null
    rpm -qa --qf '%{NAME}\n' | sort | comm -13 "$STATE_DIR/packages.before" - >>"$2"
  else
    fail "no apt-get or dnf on this host; install$missing yourself"
  fi
  rm -f "$STATE_DIR/packages.before"
  log "installed$missing"
}

# remove_packages LIST: removes the packages install_packages listed in LIST, then LIST. Purged
# (with their conffiles) unless the record of the selected managed file says the host had that
# file before us: then removed, so the host's own file stays.
remove_packages() {
  [ -s "$1" ] || { rm -f "$1"; return 0; }
  packages=$(tr '\n' ' ' <"$1")
  if command -v apt-get >/dev/null 2>&1; then
    how=purge
    [ "$(recorded config_existed)" = yes ] && how=remove
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get "$how" -y -q $packages >/dev/null
  else
    # shellcheck disable=SC2086 # one word per package
    dnf remove -y -q $packages >/dev/null
  fi
  rm -f "$1"
  log "removed the packages source-ip-edge installed: $packages"
}

# --- a managed file: one of our config files and the service that runs it -----------------------
# `manage_haproxy` (below) or `manage_keepalived` (keepalived_lib.sh) selects the file; the
# functions after this work on it. The service SERVICE provides:
#   SERVICE_check FILE          the service's own check of FILE (haproxy -c, keepalived -t)
#   SERVICE_file_identity FILE  the identity written in FILE
#   SERVICE_loaded_identity     the identity of the file the running service loaded (empty if none)
#   SERVICE_running             the service runs
#   SERVICE_start_or_reload     start it, or reload it in place (never a restart)
#   SERVICE_stop
#   SERVICE_record_extra        lines of its own for the record (key=value), maybe none

# manage SERVICE FILE RECORD CHECK WAIT [START_LOG]: CHECK names the check in messages; WAIT is
# how long a reload may take, in tenths of a second; START_LOG is printed when a start fails.
manage() {
  MANAGED=$1 MANAGED_FILE=$2 MANAGED_RECORD=$3 MANAGED_CHECK=$4 MANAGED_WAIT=$5 MANAGED_START_LOG=${6:-}
  MANAGED_NAME=$(basename "$MANAGED_FILE")
  MANAGED_ORIGINAL=$MANAGED_FILE.source-ip-edge.orig   # beside the file: outlives a lost state dir
  MANAGED_PREVIOUS=$MANAGED_FILE.source-ip-edge.prev
}

recorded() { sed -n "s/^$1=//p" "$MANAGED_RECORD" 2>/dev/null; }

# Writes the record of the service as it is now, once, before anything of ours touches it.
# A host whose file is already ours (or that has our saved original) but no record lost its
# state directory: then nothing is recorded as "before", and restore keeps what is live.
record_before() {
  [ -e "$MANAGED_RECORD" ] && return 0
  mkdir -p "$STATE_DIR"
  if [ -e "$MANAGED_ORIGINAL" ] || { [ -e "$MANAGED_FILE" ] && head -n 1 "$MANAGED_FILE" | grep -qF "$MARKER"; }; then
    printf 'record=lost\n' >"$MANAGED_RECORD.tmp"
    mv "$MANAGED_RECORD.tmp" "$MANAGED_RECORD"
    log "WARNING: this host ran source-ip-edge's $MANAGED before but its record ($MANAGED_RECORD) is gone:" \
      "destroy will keep the live $MANAGED_NAME and service instead of guessing what the host had" >&2
    return 0
  fi
  package=no; config_existed=no; was_running=no; was_enabled=no
  if package_installed "$MANAGED"; then package=yes; fi
  if [ -e "$MANAGED_FILE" ]; then
    config_existed=yes
    [ -e "$MANAGED_ORIGINAL" ] || cp -p "$MANAGED_FILE" "$MANAGED_ORIGINAL"
  fi
  if [ "$package" = yes ] && "${MANAGED}_running"; then was_running=yes; fi
  if has_systemd && systemctl is-enabled --quiet "$MANAGED" 2>/dev/null; then was_enabled=yes; fi
  { printf 'record=ok\npackage=%s\nconfig_existed=%s\nwas_running=%s\nwas_enabled=%s\n' \
      "$package" "$config_existed" "$was_running" "$was_enabled"
    "${MANAGED}_record_extra"; } >"$MANAGED_RECORD.tmp"
  mv "$MANAGED_RECORD.tmp" "$MANAGED_RECORD"
  log "recorded $MANAGED before us: installed: $package, config: $config_existed, running: $was_running, enabled: $was_enabled"
}

# A staging file of this run's own, in the file's directory so `mv` is atomic.
staging_file() {
  mkdir -p "$(dirname "$MANAGED_FILE")"
  mktemp "$(dirname "$MANAGED_FILE")/.$MANAGED_NAME.source-ip-edge.XXXXXX"
}

# Shows the check's output without a secret the caller put in SECRET_TEXT (the VRRP password).
without_secret() {
  if [ -n "${SECRET_TEXT:-}" ]; then grep -vF -e "$SECRET_TEXT" || true; else cat; fi
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

# apply_managed_file STAGING IDENTITY: checks the staged file, swaps it in atomically (the previous
# kept), enables the service and starts or reloads it. "Applied" means the running service reports
# IDENTITY, not that a file is in place or that a command returned 0 (the Debian units' reloads
# return 0 whatever the service makes of the file; docs/design.md). Otherwise the previous file goes
# back and runs again, and the script fails. Exits the script.
apply_managed_file() {
  staging=$1 want=$2
  if ! check_output=$("${MANAGED}_check" "$staging" 2>&1); then
    printf '%s\n' "$check_output" | without_secret >&2
    fail "$MANAGED_CHECK rejected the new config; live config and service untouched"
  fi
  log "$MANAGED_CHECK: new $MANAGED_NAME is valid"

  if [ -e "$MANAGED_FILE" ] && cmp -s "$staging" "$MANAGED_FILE"; then
    if "${MANAGED}_running" && [ "$("${MANAGED}_loaded_identity")" = "$want" ]; then
      log "$MANAGED_NAME unchanged and loaded by the running $MANAGED"
      exit 0
    fi
    log "$MANAGED_NAME is in place but the running $MANAGED has not loaded it: loading it now"
    swapped=no
  else
    if [ -e "$MANAGED_FILE" ]; then cp -p "$MANAGED_FILE" "$MANAGED_PREVIOUS"; fi
    mv -f "$staging" "$MANAGED_FILE"
    swapped=yes
    log "swapped in the new $MANAGED_NAME (previous kept at $MANAGED_PREVIOUS)"
  fi

  if has_systemd && ! systemctl is-enabled --quiet "$MANAGED" 2>/dev/null; then
    systemctl enable --quiet "$MANAGED"
    log "enabled $MANAGED.service"
  fi
  "${MANAGED}_start_or_reload"
  if wait_for_identity "${MANAGED}_loaded_identity" "$want" "$MANAGED_WAIT"; then
    log "$MANAGED runs the new config ($want)"
    exit 0
  fi

  # The check does not do everything the service does (`haproxy -c` does not bind): the service
  # may keep running the old file, or stop. Put the previous file back so the live file is what runs.
  if [ "$swapped" = yes ] && [ -e "$MANAGED_PREVIOUS" ]; then
    cp -p "$MANAGED_PREVIOUS" "$staging"
    mv -f "$staging" "$MANAGED_FILE"
    previous=$("${MANAGED}_file_identity" "$MANAGED_FILE")
    if ! "${MANAGED}_running" || [ "$("${MANAGED}_loaded_identity")" != "$previous" ]; then
      "${MANAGED}_start_or_reload" || true
      wait_for_identity "${MANAGED}_loaded_identity" "$previous" "$MANAGED_WAIT" || true
    fi
    fail "$MANAGED did not load the new config within $((MANAGED_WAIT / 10)) s (see its log); the previous $MANAGED_NAME is back in place and running"
  fi
  if [ -n "$MANAGED_START_LOG" ] && [ -s "$MANAGED_START_LOG" ]; then cat "$MANAGED_START_LOG" >&2; fi
  fail "$MANAGED did not load the new config within $((MANAGED_WAIT / 10)) s (see its log)"
}

# Whether the record can be trusted to restore from; says so when it cannot (missing or lost),
# and then restore keeps what is live: it never deletes a file or stops a service it cannot
# prove is ours.
record_trusted() {
  [ "$(recorded record)" = ok ] && return 0
  log "the record of $MANAGED before source-ip-edge is missing or lost: keeping the live $MANAGED_NAME and service as they are"
  if [ -e "$MANAGED_ORIGINAL" ]; then log "the $MANAGED_NAME saved before source-ip-edge is still at $MANAGED_ORIGINAL"; fi
  return 1
}

# Puts the file and its service back as the (trusted) record says they were before us: the
# original file back, or ours removed; running or stopped, enabled or not.
restore_managed_file() {
  changed=no
  if [ "$(recorded config_existed)" = yes ]; then
    if [ ! -e "$MANAGED_ORIGINAL" ]; then
      log "the saved original $MANAGED_ORIGINAL is gone: keeping the live $MANAGED_NAME" >&2
    elif ! { [ -e "$MANAGED_FILE" ] && cmp -s "$MANAGED_ORIGINAL" "$MANAGED_FILE"; }; then
      staging=$(staging_file)
      cp -p "$MANAGED_ORIGINAL" "$staging"
      mv -f "$staging" "$MANAGED_FILE"
      changed=yes
      log "restored the original $MANAGED_NAME"
    fi
  elif [ -e "$MANAGED_FILE" ]; then
    if head -n 1 "$MANAGED_FILE" | grep -qF "$MARKER"; then
      rm -f "$MANAGED_FILE"
      changed=yes
      log "removed our $MANAGED_NAME (the host had none before)"
    else
      log "$MANAGED_NAME is not ours any more (no '$MARKER' line): keeping it"
    fi
  fi

  if [ "$(recorded was_running)" = yes ] && [ -e "$MANAGED_FILE" ]; then
    if ! "${MANAGED}_running" || [ "$changed" = yes ]; then "${MANAGED}_start_or_reload"; fi
    log "$MANAGED left running, as it was before"
  else
    "${MANAGED}_stop"
  fi
  if has_systemd; then
    if [ "$(recorded was_enabled)" = yes ]; then systemctl enable --quiet "$MANAGED" 2>/dev/null || true
    else systemctl disable --quiet "$MANAGED" 2>/dev/null || true; fi
  fi
  rm -f "$MANAGED_PREVIOUS" "$MANAGED_ORIGINAL"
}

# --- haproxy: haproxy.cfg, and the service that runs it ------------------------------------------

manage_haproxy() { manage haproxy "$HAPROXY_CFG" "$BEFORE" "haproxy -c" 100 "$START_LOG"; }

haproxy_running() {
  if has_systemd; then systemctl is-active --quiet haproxy; else master_pid >/dev/null; fi
}

# RHEL family: uninstall.sh resets the boolean install.sh set, from the record.
haproxy_record_extra() {
  config_sha256=-; selinux_connect_any=-
  if [ -e "$HAPROXY_CFG" ]; then config_sha256=$(sha256sum "$HAPROXY_CFG" | cut -d' ' -f1); fi
  if selinux_enforcing; then selinux_connect_any=$(getsebool haproxy_connect_any | sed 's/.*--> //'); fi
  printf 'config_sha256=%s\nselinux_haproxy_connect_any=%s\n' "$config_sha256" "$selinux_connect_any"
}

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

# The identity line of a config we rendered ("description source-ip-edge sha256=..."), which
# the runtime API's `show info` reports for the config the running workers loaded.
haproxy_file_identity() { sed -n 's/^[[:space:]]*description[[:space:]]\{1,\}//p' "$1" | head -n 1; }

haproxy_loaded_identity() {
  [ -S "$STATS_SOCKET" ] || return 0
  echo "show info" | socat -t 2 stdio "UNIX-CONNECT:$STATS_SOCKET" 2>/dev/null | sed -n 's/^description: //p'
}

# `haproxy -c` on a file together with the directory the host's unit also loads (RHEL: conf.d).
# Before a host's first start it warns that the server-state file is missing (save_server_state
# makes it at the start); the apply shows the check's output only when the check fails.
haproxy_check() {
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

# The servers haproxy.cfg ($1) defines, a line each: backend, server, address, port, check port
# ("-" when the config names none). Reads the layout source-ip-edge renders.
config_servers() {
  awk '
    $1 == "backend" || $1 == "listen" { be = $2; check_port = "-"; next }
    $1 == "global" || $1 == "defaults" || $1 == "frontend" { be = ""; next }
    be != "" && $1 == "default-server" { for (i = 2; i < NF; i++) if ($i == "port") check_port = $(i + 1); next }
    be != "" && $1 == "server" {
      address = $3; port = $3
      sub(/:[0-9]+$/, "", address); gsub(/^\[|\]$/, "", address); sub(/^.*:/, "", port)
      server_check_port = check_port
      for (i = 4; i < NF; i++) if ($i == "port") server_check_port = $(i + 1)
      print be, $2, address, port, server_check_port
    }' "$1"
}

# Saves the running workers' server states (`show servers state`) where haproxy.cfg's
# server-state-file says, for the new workers to start from: a gateway node that is DOWN stays
# DOWN across the reload instead of getting visitors until its first check fails. Only the lines
# of servers the live haproxy.cfg defines with the same address, port and check port are kept:
# HAProxy applies a state's port over the config's (haproxy/haproxy#1412, #3296), so a server
# whose config changed must start from its config. Without a runtime API to ask, the file holds
# the format version alone, which HAProxy reads as "no states" without a warning.
save_server_state() {
  mkdir -p "$(dirname "$SERVER_STATE_FILE")"
  rm -f "$SERVER_STATE_FILE.tmp"
  config_servers "$HAPROXY_CFG" >"$SERVER_STATE_FILE.servers"
  if [ -S "$STATS_SOCKET" ]; then
    echo "show servers state" | socat -t 2 stdio "UNIX-CONNECT:$STATS_SOCKET" 2>/dev/null | awk '
      NR == FNR { keep[$0] = 1; next }
      FNR == 1 { if ($0 != "1") exit; print; next }
      /^#/ { for (i = 2; i <= NF; i++) column[$i] = i - 1; print; next }
      ($(column["be_name"]) " " $(column["srv_name"]) " " $(column["srv_addr"]) " " \
       $(column["srv_port"]) " " $(column["srv_check_port"])) in keep' \
      "$SERVER_STATE_FILE.servers" - >"$SERVER_STATE_FILE.tmp" || true
  fi
  [ -s "$SERVER_STATE_FILE.tmp" ] || echo 1 >"$SERVER_STATE_FILE.tmp"
  mv -f "$SERVER_STATE_FILE.tmp" "$SERVER_STATE_FILE"
  rm -f "$SERVER_STATE_FILE.servers"
}

# Starts haproxy, or reloads it seamlessly (never a restart: that drops connections).
haproxy_start_or_reload() {
  # The runtime API's directory; the packages' tmpfiles.d makes it at boot, not always at install.
  mkdir -p "$(dirname "$STATS_SOCKET")"
  save_server_state
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

haproxy_stop() {
  if has_systemd; then
    if systemctl is-active --quiet haproxy; then systemctl stop haproxy; log "stopped haproxy.service"; fi
  else
    stop_master
  fi
}
