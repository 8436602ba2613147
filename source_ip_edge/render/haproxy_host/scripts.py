"""Shell scripts the HAProxyHost component runs on each host over SSH.

Pure module: functions from data to POSIX ``sh`` text, no ``pulumi`` import, so
the commands a step will run can be shown (and tested) before they run.

Each script is idempotent: on a converged host it changes nothing. They use
``set -eu``, print one short line per step and never print the configuration's
secrets (the config text is written by a quoted heredoc and never echoed).

The config goes to the host inside the command string as a quoted heredoc, not
base64, so ``pulumi preview --diff`` shows the changed haproxy.cfg lines.

Reload is always seamless, never a restart: ``systemctl reload`` where systemd
runs (the Debian/RHEL unit checks the file, then sends USR2 to the master);
elsewhere the master-worker process (``haproxy -W``) found through its pidfile
gets USR2, re-executes itself and hands its listening sockets to the new
workers; old workers finish their connections. A restart drops connections.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

HEREDOC_DELIMITER = "SOURCE_IP_EDGE_HAPROXY_CFG"
SYSTEMD_RUNTIME_DIR = "/run/systemd/system"  # exists iff systemd is PID 1 (sd_booted(3))
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RemotePaths:
    """Where the scripts keep things on the host; defaults match Debian and RHEL packages."""

    config: str = "/etc/haproxy/haproxy.cfg"
    """The live configuration HAProxy (its unit or our master) reads."""
    staging: str = "/etc/haproxy/haproxy.cfg.source-ip-edge.new"
    """The uploaded config, checked before the swap; same directory so `mv` is atomic."""
    previous: str = "/etc/haproxy/haproxy.cfg.source-ip-edge.prev"
    """The config before the last swap."""
    original: str = "/etc/haproxy/haproxy.cfg.source-ip-edge.orig"
    """What the host had before we ever touched it; restored on destroy."""
    state_dir: str = "/var/lib/source-ip-edge"
    """Records what the host was like before us (config existed, haproxy running/enabled)."""
    pidfile: str = "/run/haproxy.pid"
    """Master pid of the master-worker process when there is no systemd."""


def heredoc_delimiter(text: str) -> str:
    """A heredoc end marker that no line of ``text`` equals."""
    lines = set(text.splitlines())
    delimiter = HEREDOC_DELIMITER
    n = 0
    while delimiter in lines:
        n += 1
        delimiter = f"{HEREDOC_DELIMITER}_{n}"
    return delimiter


def _variables(paths: RemotePaths) -> str:
    q = shlex.quote
    return "\n".join(
        [
            f"CONFIG={q(paths.config)}",
            f"STAGING={q(paths.staging)}",
            f"PREVIOUS={q(paths.previous)}",
            f"ORIGINAL={q(paths.original)}",
            f"STATE_DIR={q(paths.state_dir)}",
            f"PIDFILE={q(paths.pidfile)}",
            'BEFORE="$STATE_DIR/before"',
            'START_LOG="$STATE_DIR/start.log"',
        ]
    )


# Helpers shared by apply and restore. POSIX sh only: the host may be a
# minimal Debian with no bash extras, no procps (pgrep), no systemd.
_FUNCTIONS = r"""
log() { echo "source-ip-edge: $*"; }
has_systemd() { [ -d __SYSTEMD_DIR__ ]; }
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

# True when the process was started in master-worker mode (-W/-Ws or the
# `master-worker` keyword): only such a master reloads on USR2; USR2 would
# kill a legacy daemon.
is_master_worker() {
  tr '\000' '\n' < "/proc/$1/cmdline" | grep -qx -e '-W' -e '-Ws' && return 0
  grep -qE '^[[:space:]]*master-worker([[:space:]]|$)' "$CONFIG" 2>/dev/null
}

children_of() {
  if [ -e "/proc/$1/task/$1/children" ]; then
    cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -v '^$' || true
  else
    for status in /proc/[0-9]*/status; do
      awk -v p="$1" '$1 == "PPid:" && $2 == p { split(FILENAME, f, "/"); print f[3] }' "$status" 2>/dev/null || true
    done
  fi
}

systemd_active() { systemctl is-active --quiet haproxy; }

haproxy_running() {
  if has_systemd; then systemd_active; else master_pid >/dev/null; fi
}

# Seamless reload of the running master; wait until a new worker serves.
reload_master() {
  pid=$(master_pid)
  if ! is_master_worker "$pid"; then
    # A legacy daemon (e.g. Debian's init script) cannot reload in place:
    # start a master-worker that takes over and soft-stops the old process.
    log "haproxy $pid is not master-worker: starting a master-worker that replaces it gracefully"
    start_master -sf "$pid"
    return
  fi
  old_workers=$(children_of "$pid" | tr '\n' ' ')
  kill -USR2 "$pid"
  i=0
  while [ "$i" -lt 100 ]; do
    for w in $(children_of "$pid"); do
      case " $old_workers " in *" $w "*) ;; *)
        log "reloaded haproxy (master pid $pid, new worker pid $w)"; return 0 ;;
      esac
    done
    i=$((i + 1)); sleep 0.1
  done
  log "haproxy master $pid did not start a new worker after USR2" >&2
  return 1
}

start_master() {
  mkdir -p /run/haproxy 2>/dev/null || true  # the stats socket directory Debian's init script creates
  if ! haproxy -W -D -p "$PIDFILE" -f "$CONFIG" "$@" >"$START_LOG" 2>&1 </dev/null; then
    cat "$START_LOG" >&2
    log "haproxy failed to start" >&2
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
""".replace("__SYSTEMD_DIR__", SYSTEMD_RUNTIME_DIR)


def _header(paths: RemotePaths) -> str:
    return f"set -eu\numask 022\nPATH={SAFE_PATH}:$PATH\nexport PATH\n{_variables(paths)}\n{_FUNCTIONS}"


def install_script() -> str:
    """Install HAProxy with the host's package manager; nothing when it is already there.

    It does not start HAProxy: on Debian a temporary policy-rc.d stops the
    package's postinst from starting the service (which would also make the
    host look as if HAProxy ran before us). `apply_script` starts it.
    """
    return r"""set -eu
PATH=__SAFE_PATH__:$PATH
export PATH
if command -v haproxy >/dev/null 2>&1; then
  echo "source-ip-edge: haproxy already installed: $(haproxy -v 2>/dev/null | head -n 1)"
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # Exit status 101 = "action forbidden" (invoke-rc.d(8)): no service start during install.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  echo "source-ip-edge: apt-get update"
  apt-get update -q >/dev/null
  echo "source-ip-edge: apt-get install haproxy"
  apt-get install -y -q --no-install-recommends haproxy >/dev/null
elif command -v dnf >/dev/null 2>&1; then
  echo "source-ip-edge: dnf install haproxy"
  dnf install -y -q haproxy >/dev/null
else
  echo "source-ip-edge: no apt-get or dnf on this host; install haproxy yourself" >&2
  exit 1
fi
echo "source-ip-edge: installed $(haproxy -v 2>/dev/null | head -n 1)"
""".replace("__SAFE_PATH__", SAFE_PATH)


def apply_script(config_text: str, paths: RemotePaths = RemotePaths()) -> str:
    """Upload, check, swap and seamlessly reload ``config_text``. Create and update command.

    A config HAProxy rejects fails here at the check step and leaves the live
    config and the running process untouched.
    """
    if not config_text.endswith("\n"):
        config_text += "\n"
    delimiter = heredoc_delimiter(config_text)
    return (
        _header(paths)
        + r"""
mkdir -p "$STATE_DIR"
chmod 700 "$STATE_DIR"
if [ ! -e "$BEFORE" ]; then
  # First touch: remember what the host was like, so destroy can put it back.
  config_existed=no; was_running=no; was_enabled=no
  if [ -e "$CONFIG" ]; then config_existed=yes; cp -p "$CONFIG" "$ORIGINAL"; fi
  if haproxy_running; then was_running=yes; fi
  if has_systemd && systemctl is-enabled --quiet haproxy 2>/dev/null; then was_enabled=yes; fi
  printf 'config_existed=%s\nwas_running=%s\nwas_enabled=%s\n' \
    "$config_existed" "$was_running" "$was_enabled" > "$BEFORE.tmp"
  mv "$BEFORE.tmp" "$BEFORE"
  log "recorded the host's state before us (config existed: $config_existed, haproxy running: $was_running)"
fi

mkdir -p "$(dirname "$STAGING")"
cat > "$STAGING" <<'"""
        + delimiter
        + "'\n"
        + config_text
        + delimiter
        + "\n"
        + r"""
if ! check_output=$(haproxy -c -f "$STAGING" 2>&1); then
  rm -f "$STAGING"
  printf '%s\n' "$check_output" >&2
  log "haproxy -c rejected the new config; live config and process untouched" >&2
  exit 1
fi
log "haproxy -c: new config is valid"

changed=no
if [ -e "$CONFIG" ] && cmp -s "$STAGING" "$CONFIG"; then
  rm -f "$STAGING"
  log "haproxy.cfg unchanged"
else
  if [ -e "$CONFIG" ]; then cp -p "$CONFIG" "$PREVIOUS"; fi
  mv -f "$STAGING" "$CONFIG"
  changed=yes
  log "swapped in the new haproxy.cfg (previous kept at $PREVIOUS)"
fi

# `haproxy -c` does not bind, so a reload can still fail (e.g. an address the host lacks).
# Then the previous file goes back and is reloaded: the live config stays the one that
# runs, and the next run sees a difference and tries again.
reload_failed() {
  log "reload failed; putting back the previous haproxy.cfg" >&2
  if [ -e "$PREVIOUS" ]; then
    cp -p "$PREVIOUS" "$STAGING"
    mv -f "$STAGING" "$CONFIG"
    if has_systemd; then systemctl reload haproxy || true; else reload_master || true; fi
  fi
  exit 1
}

if has_systemd; then
  if ! systemd_active; then
    systemctl enable --now haproxy
    log "enabled and started haproxy.service"
  elif [ "$changed" = yes ]; then
    systemctl reload haproxy || reload_failed
    log "reloaded haproxy.service"
  else
    log "haproxy.service running"
  fi
elif pid=$(master_pid); then
  if [ "$changed" = yes ]; then
    reload_master || reload_failed
  else
    log "haproxy running (master pid $pid)"
  fi
else
  start_master
fi
"""
    )


def restore_script(paths: RemotePaths = RemotePaths()) -> str:
    """Put back the host's config from before us and leave no process of ours. Delete command."""
    return (
        _header(paths)
        + r"""
if [ ! -e "$BEFORE" ]; then
  log "nothing to restore: this host has no record of source-ip-edge"
  rm -f "$STAGING"
  exit 0
fi
config_existed=$(sed -n 's/^config_existed=//p' "$BEFORE")
was_running=$(sed -n 's/^was_running=//p' "$BEFORE")
was_enabled=$(sed -n 's/^was_enabled=//p' "$BEFORE")

changed=no
if [ "$config_existed" = yes ] && [ -e "$ORIGINAL" ]; then
  if ! { [ -e "$CONFIG" ] && cmp -s "$ORIGINAL" "$CONFIG"; }; then
    cp -p "$ORIGINAL" "$STAGING"
    mv -f "$STAGING" "$CONFIG"
    changed=yes
  fi
  log "restored the original haproxy.cfg"
elif [ -e "$CONFIG" ]; then
  rm -f "$CONFIG"
  changed=yes
  log "removed haproxy.cfg (the host had none before)"
fi

if [ "$was_running" = yes ] && [ -e "$CONFIG" ]; then
  if has_systemd; then
    if ! systemd_active; then systemctl start haproxy
    elif [ "$changed" = yes ]; then systemctl reload haproxy; fi
  elif master_pid >/dev/null; then
    if [ "$changed" = yes ]; then reload_master; fi
  else
    start_master
  fi
  log "haproxy left running, as it was before"
else
  if has_systemd; then
    if systemd_active; then systemctl stop haproxy; log "stopped haproxy.service"; fi
    if [ "$was_enabled" != yes ]; then systemctl disable --quiet haproxy 2>/dev/null || true; fi
  else
    stop_master
  fi
fi

rm -f "$STAGING" "$PREVIOUS" "$ORIGINAL" "$BEFORE" "$START_LOG"
rmdir "$STATE_DIR" 2>/dev/null || true
log "host restored"
"""
    )
